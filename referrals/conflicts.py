"""Deal-registration conflicts: is this customer account already registered with the vendor?

A match is an active registration (submitted or accepted) of the same vendor with the same
registrable domain, the same normalized company name, or a name at least as similar as the
program's fuzzy threshold (rapidfuzz). Callers hold the vendor lock (see `lock_vendor`) so two
concurrent submissions for one account cannot both pass.
"""

from dataclasses import dataclass, field

from django.contrib.postgres.search import TrigramSimilarity
from django.db import connection
from django.db.models import Q
from rapidfuzz import fuzz

from accounts.models import Organization
from referrals.models import Referral

# Trigram ranking and rapidfuzz disagree at the margin, so score a generous number of the
# closest names (they are light: id and name only).
FUZZY_CANDIDATES = 500


@dataclass
class Match:
    referral: Referral
    reason: str  # "domain" | "name" | "similar name"
    score: int = 100


@dataclass
class ConflictCheck:
    matches: list[Match] = field(default_factory=list)

    def _by(self, partner_id, same: bool):
        return [m for m in self.matches if (m.referral.partner_id == partner_id) == same]

    def own(self, partner_id) -> Match | None:
        own = self._by(partner_id, True)
        return own[0] if own else None

    def accepted(self) -> list[Referral]:
        """The matching registrations that already protect the account."""
        return [m.referral for m in self.matches if m.referral.status == Referral.ACCEPTED]

    def earliest_other(self, partner_id) -> Match | None:
        others = self._by(partner_id, False)
        return min(others, key=lambda m: (m.referral.submitted_at, m.referral.pk)) \
            if others else None


def lock_vendor(vendor_id: int) -> None:
    """Serialize registrations per vendor for the rest of the transaction."""
    Organization.objects.select_for_update().filter(pk=vendor_id).values_list("pk").get()


def similarity(a: str, b: str) -> int:
    return round(fuzz.token_sort_ratio(a, b))


def check_conflicts(*, vendor_id, domain: str, normalized_name: str, threshold: int,
                    exclude_pk=None) -> ConflictCheck:
    active = Referral.objects.active_registrations().filter(vendor_id=vendor_id)
    if exclude_pk:
        active = active.exclude(pk=exclude_pk)
    active = active.only("pk", "public_id", "partner_id", "submitted_at", "protected_until",
                         "status", "domain", "normalized_name", "company_name")
    exact = Q(normalized_name=normalized_name) if normalized_name else Q(pk__in=[])
    if domain:
        exact |= Q(domain=domain)
    result = ConflictCheck()
    seen = set()
    for ref in active.filter(exact).order_by("submitted_at")[:FUZZY_CANDIDATES]:
        reason = "domain" if domain and ref.domain == domain else "name"
        result.matches.append(Match(ref, reason))
        seen.add(ref.pk)
    if normalized_name and threshold < 100:
        # Score light (pk, name) candidates, then load only the rows that match.
        scores = {}
        for pk, name in _fuzzy_candidates(active, normalized_name, threshold):
            if pk not in seen:
                score = similarity(normalized_name, name)
                if score >= threshold:
                    scores[pk] = score
        for ref in active.filter(pk__in=list(scores)).order_by("submitted_at"):
            result.matches.append(Match(ref, "similar name", scores[ref.pk]))
    return result


def trigram_floor(threshold: int) -> float:
    """How similar (pg_trgm) a name must be to be worth scoring with rapidfuzz. A strict
    program threshold lets the index discard more rows; 0.4 still keeps short near-misses
    such as "acmes" / "acme s" (0.44 trigram, 91 rapidfuzz)."""
    return 0.4 if threshold >= 90 else 0.3


def set_trigram_floor(cursor, threshold: int) -> None:
    """Make pg_trgm's `%` use trigram_floor(threshold) for the rest of the transaction (and
    nothing else's setting: `%` reads a session variable)."""
    cursor.execute("SELECT set_config('pg_trgm.similarity_threshold', %s, true)",
                   [str(trigram_floor(threshold))])


def _fuzzy_candidates(active, normalized_name: str, threshold: int):
    if connection.vendor == "postgresql":
        # `%` uses the trigram GIN index on active names; the most similar come first so a
        # crowded vendor cannot push the real match past the candidate limit.
        with connection.cursor() as cursor:
            set_trigram_floor(cursor, threshold)
        return (active.filter(normalized_name__trigram_similar=normalized_name)
                .annotate(similarity=TrigramSimilarity("normalized_name", normalized_name))
                .order_by("-similarity").values_list("pk", "normalized_name")
                [:FUZZY_CANDIDATES])
    return (active.filter(normalized_name__startswith=normalized_name[:3])
            .values_list("pk", "normalized_name")[:FUZZY_CANDIDATES])
