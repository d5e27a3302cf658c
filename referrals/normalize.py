"""Normalizing customer companies so that the same account matches however it is typed."""

import re
import unicodedata

from partnerhub.domains import registrable_domain

# Legal-form suffixes dropped from company names (compared after punctuation is removed, so
# "S.A." arrives here as "s a" and "B.V." as "b v").
_LEGAL_SUFFIXES = [
    "incorporated", "inc", "corporation", "corp", "company", "co", "llc", "l l c", "llp",
    "lp", "ltd", "limited", "plc", "gmbh", "gmbh co kg", "co kg", "kg", "ag", "sa", "s a",
    "sas", "s a s", "sarl", "srl", "s r l", "spa", "s p a", "bv", "b v", "nv", "n v", "oy",
    "ab", "as", "a s", "aps", "pty", "pty ltd", "pte", "pte ltd", "kk", "k k", "sl", "s l",
    "sro", "s r o", "sp z o o", "oyj", "se", "ulc",
]
# Longest first, so "pty ltd" goes before "ltd".
_SUFFIX_RE = re.compile(
    r"(?:\s+(?:" + "|".join(re.escape(s) for s in sorted(_LEGAL_SUFFIXES, key=len,
                                                            reverse=True)) + r"))+$"
)
_NON_WORD = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")


def normalize_company_name(name: str) -> str:
    """`Acme, Inc.` / `ACME Inc` / `Acmé Inc.` -> `acme`; `Müller GmbH & Co. KG` -> `muller`."""
    text = unicodedata.normalize("NFKD", name or "")
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = text.replace("&", " ")
    text = _NON_WORD.sub(" ", text)
    text = _SPACES.sub(" ", text).strip()
    stripped = _SUFFIX_RE.sub("", text).strip()
    return stripped or text  # a company literally called "AG" keeps its name


def normalize_domain(website: str) -> str:
    return registrable_domain(website)
