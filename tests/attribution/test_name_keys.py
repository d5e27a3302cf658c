"""The fuzzy-name candidate lookup's keys: one typo never separates two words, the SQL twin of
`name_keys` agrees with it, common words are counted per vendor and left out, and the lookup
is served by its index."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import given
from hypothesis import strategies as st

from attribution.models import CommonNameWord
from attribution.name_keys import (
    COMMON_WORD_REFERRALS,
    common_words,
    lookup_keys,
    name_keys,
    refresh_common_words,
    sharing_a_word,
    word_keys,
)
from referrals.models import Referral
from referrals.normalize import normalize_company_name
from tests.referrals.factories import ReferralFactory

WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=4, max_size=14)


def _one_typo(draw, word):
    i = draw(st.integers(0, len(word) - 1))
    letter = draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz"))
    kind = draw(st.sampled_from(["drop", "add", "change", "swap"]))
    if kind == "drop":
        return word[:i] + word[i + 1:]
    if kind == "add":
        return word[:i] + letter + word[i:]
    if kind == "change":
        return word[:i] + letter + word[i + 1:]
    j = min(i + 1, len(word) - 1)
    return word[:i] + word[j] + word[i] + word[j + 1:] if j > i else word


@st.composite
def word_and_typo(draw):
    word = draw(WORDS)
    return word, _one_typo(draw, word)


@given(word_and_typo())
def test_a_word_and_its_typo_always_share_a_key(pair):
    word, typo = pair
    assert word_keys(word) & word_keys(typo)


def test_keys_are_words_and_words_with_a_letter_dropped_prefixed_with_the_vendor():
    assert name_keys(7, "ibm acme") == {"7:ibm", "7:acme", "7:cme", "7:ame", "7:ace", "7:acm"}
    assert name_keys(7, "") == set()
    assert not name_keys(7, "acme") & name_keys(8, "acme")


NAMES = ["", "acme", "ibm", "northwind traders", "acme acme", "a b c", "müller 42",
         "zentrova global logistics", "日本 电气 株式会社", "o neil", "x" * 60]


@pytest.mark.django_db
def test_the_sql_twin_gives_the_same_keys():
    with connection.cursor() as cursor:
        for name in NAMES:
            cursor.execute("SELECT partnerhub_name_keys(%s, %s)", [12, name])
            assert set(cursor.fetchone()[0]) == name_keys(12, name), name


@pytest.mark.django_db
def test_common_words_are_counted_per_vendor_on_non_draft_registrations(world, programs):
    acme = programs["acme"]
    ReferralFactory.create_batch(COMMON_WORD_REFERRALS, program=acme, partner=world.partner,
                                 company_name="Zentrova Logistics Logistics")
    # One registration past the line, but a draft: not counted.
    ReferralFactory(program=acme, partner=world.partner, company_name="Kelbrix Logistics",
                    status="draft")
    refresh_common_words([acme.vendor_id])
    assert common_words(acme.vendor_id) == frozenset()
    ReferralFactory(program=acme, partner=world.partner, company_name="Kelbrix Logistics Inc")
    stale = CommonNameWord.objects.create(vendor_id=acme.vendor_id, word="gone", referrals=500)
    assert refresh_common_words([acme.vendor_id]) == 1
    assert common_words(acme.vendor_id) == {"logistics"}
    assert CommonNameWord.objects.get().referrals == COMMON_WORD_REFERRALS + 1
    assert not CommonNameWord.objects.filter(pk=stale.pk).exists()
    other_vendor = programs["globex"].vendor_id
    assert common_words(other_vendor) == frozenset()


def test_lookup_keys_leave_out_common_words_and_their_typos():
    common = frozenset({"logistics", "global"})
    assert lookup_keys(3, "zentrova logistics", common) == name_keys(3, "zentrova")
    assert lookup_keys(3, "zentrova logistic", common) == name_keys(3, "zentrova")
    assert lookup_keys(3, "global logistic", common) == set()
    assert lookup_keys(3, "global logistic", frozenset()) == name_keys(3, "global logistic")


@pytest.mark.django_db
def test_the_lookup_finds_a_typo_of_a_distinctive_word_through_its_index(world, programs):
    acme = programs["acme"]
    wanted = ReferralFactory(program=acme, partner=world.partner,
                             company_name="Northwind Traders Inc")
    ReferralFactory(program=acme, partner=world.partner, company_name="Southwind Traders")
    ReferralFactory(program=acme, partner=world.partner, company_name="Nortwind Draft",
                    status="draft")
    ReferralFactory(program=programs["globex"], partner=world.partner,
                    company_name="Northwind Traders")
    # A vendor with a few hundred registrations, so that the planner weighs its options.
    Referral.objects.bulk_create(
        ReferralFactory.build(program=acme, partner=world.partner2,
                              submitted_by=world.others["partner2_rep"].user,
                              company_name=f"Kelbrix {n}", normalized_name=f"kelbrix {n}")
        for n in range(400))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE referrals_referral")
    keys = lookup_keys(acme.vendor_id, normalize_company_name("Nortwind"), frozenset())
    with CaptureQueriesContext(connection) as lookup:
        assert sharing_a_word(acme.vendor_id, {"nortwind": keys}) == [
            ("nortwind", wanted.pk, "northwind traders")]
    (sql,) = [q["sql"] for q in lookup.captured_queries if q["sql"].startswith("WITH")]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "referral_name_keys" in plan
