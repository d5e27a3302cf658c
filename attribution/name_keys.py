"""Finding the referrals whose company name could match a deal's: the candidate lookup behind
fuzzy-name attribution (PostgreSQL).

A name's *keys* are its words and, for words of four letters or more, the word with one letter
deleted. Two words one typo apart (a letter dropped, added or changed, or two letters swapped)
always share a key: "northwind" and "nortwind" share "nortwind", "acme" and "acne" share
"ace". PostgreSQL indexes the keys of every non-draft referral (migration 0006: a GIN index on
`partnerhub_name_keys(vendor_id, normalized_name)`, the SQL twin of `name_keys`, keys prefixed
with the vendor), so the referrals sharing a word with a deal are a few index probes away.

A word that many of the vendor's registrations use ("logistics", "solutions") would link a
deal to thousands of look-alikes ("... Logistics") that the score then drops, at a cost of
milliseconds per deal. Those *common words* (`refresh_common_words`: nightly, and before each
backfill) and the words one typo from them are not distinctive, and are left out of the lookup.

So a registration is a fuzzy-name candidate when its name shares a distinctive word with the
deal's, spelled the same or one typo apart; a deal whose name has no distinctive word ("Global
Logistic") looks for registrations that have every one of its words, one typo allowed in each.
The engine then scores the whole names.
"""

from functools import lru_cache

from django.db import connection, transaction

from attribution.models import CommonNameWord
from referrals.models import Referral

KEY_MIN_LETTERS = 4  # shorter words only match as they are ("ibm", not "bm")
# A word more of the vendor's (non-draft) registrations use than this is common.
COMMON_WORD_REFERRALS = 100


def word_keys(word: str) -> set[str]:
    if len(word) < KEY_MIN_LETTERS:
        return {word}
    return {word, *(word[:i] + word[i + 1:] for i in range(len(word)))}


def _prefixed(vendor_id: int, keys) -> set[str]:
    return {f"{vendor_id}:{key}" for key in keys}


def every_word_keys(vendor_id: int, normalized_name: str) -> list[set[str]]:
    """The keys of each of the name's words, for a name without a distinctive word."""
    return [_prefixed(vendor_id, word_keys(word))
            for word in sorted(set(normalized_name.split(" "))) if word]


def name_keys(vendor_id: int, normalized_name: str) -> set[str]:
    """What the index holds for a referral's name (partnerhub_name_keys in SQL, same result:
    a test holds them together)."""
    return set().union(*every_word_keys(vendor_id, normalized_name))


def lookup_keys(vendor_id: int, normalized_name: str, common: frozenset[str]) -> set[str]:
    """The keys to look a deal's name up by: those of its distinctive words. A common word,
    or a word one typo from one ("logistic"), is not distinctive: its keys would fetch every
    "... Logistics". Empty when the name has no distinctive word."""
    shunned = _shunned(common)
    return _prefixed(vendor_id, (key for word in normalized_name.split(" ")
                                 if word and not (keys := word_keys(word)) & shunned
                                 for key in keys))


@lru_cache(maxsize=64)  # a backfill asks once per chunk with the same vendor's words
def _shunned(common: frozenset[str]) -> frozenset[str]:
    return frozenset(k for word in common for k in word_keys(word))


def common_words(vendor_id: int) -> frozenset[str]:
    return frozenset(CommonNameWord.objects.filter(vendor_id=vendor_id)
                     .values_list("word", flat=True))


def refresh_common_words(vendor_ids=None) -> int:
    """Recount which words are common among each vendor's registrations (all vendors when
    `vendor_ids` is None), replacing the vendors' lists in one transaction. One set-based
    statement; returns how many common words there are now. PostgreSQL only (the lookup
    that uses them is)."""
    if connection.vendor != "postgresql":
        return 0
    table = Referral._meta.db_table
    words = CommonNameWord._meta.db_table
    only = "" if vendor_ids is None else " AND r.vendor_id = ANY(%s)"
    params = [] if vendor_ids is None else [list(vendor_ids)]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {words}" + (" WHERE vendor_id = ANY(%s)" if params else ""),
                       params)
        cursor.execute(
            f"INSERT INTO {words} (vendor_id, word, referrals, counted_at)"
            f" SELECT r.vendor_id, w.word, count(*), now() FROM {table} r"
            f" CROSS JOIN LATERAL (SELECT DISTINCT word FROM"
            f"  unnest(string_to_array(r.normalized_name, ' ')) AS word WHERE word <> '') AS w"
            f" WHERE r.status <> 'draft'{only}"
            f" GROUP BY r.vendor_id, w.word HAVING count(*) > %s",
            [*params, COMMON_WORD_REFERRALS])
        return cursor.rowcount


def sharing_a_word(vendor_id: int, keys_by_name: dict[str, set[str]]) -> list[tuple]:
    """(name, id, normalized name): for each name, the vendor's non-draft referrals whose
    name has one of its keys. One statement, one GIN index probe per name. (One probe with
    every key of a chunk would be fewer, but the planner, unable to estimate thousands of
    keys, would scan the table and compare each row's keys with all of them.)"""
    names, keys = [], []
    for name, its_keys in keys_by_name.items():
        names += [name] * len(its_keys)
        keys += sorted(its_keys)
    if not keys:
        return []
    table = Referral._meta.db_table
    # Sent as two newline-separated texts (normalized names and keys hold no newline): the
    # client would otherwise quote thousands of array elements one by one, in Python.
    return _fetch_without_jit(
        f"WITH q AS (SELECT name, array_agg(key) AS keys"
        f" FROM unnest(string_to_array(%s, E'\\n'), string_to_array(%s, E'\\n'))"
        f" AS u(name, key) GROUP BY name)"
        f" SELECT q.name, r.id, r.normalized_name FROM q CROSS JOIN LATERAL ("
        f" SELECT id, normalized_name FROM {table} WHERE vendor_id = %s AND status <> 'draft'"
        f" AND partnerhub_name_keys(vendor_id, normalized_name) && q.keys) AS r",
        ["\n".join(names), "\n".join(keys), vendor_id])


def sharing_every_word(vendor_id: int, name: str) -> list[tuple]:
    """(name, id, normalized name) of the vendor's non-draft referrals whose name has every
    word of `name`, one typo allowed in each: for a name of common words only, where any one
    word would bring thousands (the index intersects the words' lists instead)."""
    groups = every_word_keys(vendor_id, name)
    if not groups:
        return []
    table = Referral._meta.db_table
    shares = " AND ".join(["partnerhub_name_keys(vendor_id, normalized_name) && %s::text[]"]
                          * len(groups))
    return _fetch_without_jit(
        f"SELECT %s, id, normalized_name FROM {table} WHERE vendor_id = %s"
        f" AND status <> 'draft' AND {shares}",
        [name, vendor_id, *(sorted(keys) for keys in groups)])


def _fetch_without_jit(sql: str, params) -> list[tuple]:
    # Compiling these plans (JIT, triggered by the default row estimate of a key probe the
    # planner cannot see into) costs more than running them.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL jit = off")
        cursor.execute(sql, params)
        return cursor.fetchall()
