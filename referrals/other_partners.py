"""Never name the other partner: what a vendor or operator writes to a partner (referral
messages, rejection reasons, dispute texts) must not say which other partner registered the
same account.

Matching the exact full name is not enough ("Brightpath registered it first (see
brightpath.example)" names Brightpath Consulting twice). A text is refused when, normalized
the way company names are (`referrals.normalize`: accents, case, punctuation and legal
suffixes gone), it holds

- a *distinctive word* of another partner's name: a word of three letters or more that is not
  a generic business word ("consulting", "partners", "group") and not a word of the names the
  reader may see anyway (their own organization, the vendor, the customer company);
- the whole normalized name, for names made only of generic words ("Global Solutions Group");
- the other partner's website domain, or its first label ("brightpath" of brightpath.example).

The error names what to remove, so the writer can fix the text before anything is sent.
"""

import re
import unicodedata
from dataclasses import dataclass

from accounts.errors import ServiceError
from referrals.normalize import normalize_company_name

# Words too common in company names to point at one partner.
GENERIC_WORDS = frozenset("""
    a an and the of for in on at by to with de la le les der die das und et y
    agency agencies advisors advisory associates consultancy consultants consulting
    company companies corp group groups holdings partners partner partnership services service
    solutions solution systems system technologies technology tech digital global international
    labs lab studio studios ventures works network networks integrators integration
    management marketing media software cloud data analytics enterprises enterprise
    resources capital industries limited llc inc ltd gmbh co
""".split())
MIN_WORD_LETTERS = 3


@dataclass(frozen=True)
class OtherPartner:
    name: str
    domain: str = ""


def _words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", text or "")
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch)).casefold()
    return re.findall(r"[^\W_]+", folded)


def _distinctive(name: str, known: set[str]) -> set[str]:
    return {w for w in normalize_company_name(name).split()
            if len(w) >= MIN_WORD_LETTERS and w not in GENERIC_WORDS and w not in known}


def _domain_label(domain: str) -> str:
    return domain.split(".", 1)[0].casefold() if domain else ""


def named_partner_words(text: str, partners, *, readers_may_see=()) -> list[str]:
    """The words of `text` that point at one of `partners`, in the order they appear
    (as written), or [] when the text names none of them."""
    if not text or not partners:
        return []
    known = set()
    for name in readers_may_see:
        known |= set(normalize_company_name(name or "").split())
    words = _words(text)
    original = re.findall(r"[^\W_]+", text or "")
    found: list[str] = []

    def add(term):
        if term and term.casefold() not in {f.casefold() for f in found}:
            found.append(term)

    for partner in partners:
        wanted = _distinctive(partner.name, known)
        label = _domain_label(partner.domain)
        if label and len(label) >= MIN_WORD_LETTERS and label not in known \
                and label not in GENERIC_WORDS:
            wanted.add(label)
        for index, word in enumerate(words):
            if word in wanted:
                add(original[index] if len(original) == len(words) else word)
        if partner.domain and re.search(rf"(?<![\w-]){re.escape(partner.domain)}(?![\w-])",
                                        text, re.IGNORECASE):
            add(partner.domain)
        full = normalize_company_name(partner.name)
        if full and full not in known and len(full) >= MIN_WORD_LETTERS and \
                re.search(rf"(?<!\w){re.escape(full)}(?!\w)", " ".join(words)):
            if not (set(full.split()) & wanted):  # already reported word by word
                add(partner.name)
    return found


def check_no_other_partner(text: str, partners, field: str, *, readers_may_see=()) -> None:
    """Refuse a text meant for a partner that names another partner of the same account."""
    found = named_partner_words(text, partners, readers_may_see=readers_may_see)
    if found:
        quoted = ", ".join(f"“{term}”" for term in found)
        raise ServiceError(
            f"Partners read this text: leave out the names of other partners. Remove {quoted} "
            "(write “another partner”).", field=field)


def other_partners_of(referral) -> list[OtherPartner]:
    """The other partners that registered the same account with the referral's vendor: the
    registration it conflicted with, and every registration of the same domain or normalized
    company name, whatever its state."""
    from django.db.models import Q

    from referrals.models import Referral

    same = Q(pk=referral.conflict_with_id) if referral.conflict_with_id else Q(pk__in=[])
    if referral.domain:
        same |= Q(domain=referral.domain)
    if referral.normalized_name:
        same |= Q(normalized_name=referral.normalized_name)
    rows = (Referral.objects.filter(same, vendor_id=referral.vendor_id)
            .exclude(partner_id=referral.partner_id)
            .values_list("partner__name", "partner__website_domain").distinct())
    return [OtherPartner(name, domain or "") for name, domain in rows]


def check_referral_text(text: str, referral, field: str) -> None:
    """The guard for what the vendor writes to the referral's partner."""
    check_no_other_partner(text, other_partners_of(referral), field, readers_may_see=(
        referral.partner.name, referral.vendor.name, referral.company_name))
