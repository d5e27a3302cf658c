"""The attribution decision: which referral (if any) earns a closed-won deal, and why.

`decide(deal, candidates, settings)` is a pure function: no database, no clock, no randomness.
The same inputs give the same decision whatever order the candidates come in, and the decision
lists every candidate with the reason it was kept or dropped, so anyone in scope can read why.

Matching, strongest first: the deal carries our referral id (exact) -> the same registrable
domain -> a similar normalized company name (fuzzy; may need a person's review). A candidate is
eligible when it was accepted, was registered before the deal was created, was protected when
the deal was created, and the deal closed inside the attribution window (calendar days in the
vendor's time zone). Among eligible candidates of the strongest match, the program's rule picks:
first_accepted (default), first_submitted, or last_touch (the latest registration before the
deal was created).
"""

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from rapidfuzz import fuzz

EXACT, DOMAIN, FUZZY, NONE = "exact", "domain", "fuzzy", "none"
MATCH_STRENGTH = {EXACT: 3, DOMAIN: 2, FUZZY: 1}
# Statuses of a registration that was accepted at some point (won/lost/expired come after).
WAS_ACCEPTED = frozenset({"accepted", "won", "lost", "expired"})
RULES = ("first_accepted", "first_submitted", "last_touch")


@dataclass(frozen=True)
class DealFacts:
    external_deal_id: str
    referral_id: str  # our id when the deal carries it, else ""
    domain: str
    normalized_name: str
    deal_created_at: datetime | None
    closed_at: datetime | None


@dataclass(frozen=True)
class CandidateFacts:
    referral_id: str
    partner_id: str
    status: str
    domain: str
    normalized_name: str
    submitted_at: datetime | None
    accepted_at: datetime | None
    protected_until: datetime | None


@dataclass(frozen=True)
class Settings:
    rule: str = "first_accepted"
    window_days: int = 365
    fuzzy_threshold: int = 90
    fuzzy_needs_review: bool = True
    time_zone: str = "UTC"


@dataclass(frozen=True)
class Verdict:
    referral_id: str
    partner_id: str
    match: str  # exact | domain | fuzzy | none
    kept: bool
    reason: str
    score: int = 0


@dataclass(frozen=True)
class Decision:
    referral_id: str | None
    partner_id: str | None
    rule: str
    match: str
    confidence: int
    needs_review: bool
    verdicts: tuple[Verdict, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return {
            "referral_id": self.referral_id, "partner_id": self.partner_id, "rule": self.rule,
            "match": self.match, "confidence": self.confidence,
            "needs_review": self.needs_review,
            "candidates": [v.__dict__ for v in self.verdicts],
        }


def name_score(a: str, b: str) -> int:
    """How alike two normalized company names are, 0-100, whatever the word order."""
    return 100 if a == b else round(fuzz.token_sort_ratio(a, b))


def _match(deal: DealFacts, c: CandidateFacts, threshold: int) -> tuple[str, int]:
    if deal.referral_id and deal.referral_id == c.referral_id:
        return EXACT, 100
    if deal.domain and deal.domain == c.domain:
        return DOMAIN, 100
    if deal.normalized_name and c.normalized_name:
        score = name_score(deal.normalized_name, c.normalized_name)
        if score >= threshold:
            return FUZZY, score
    return NONE, 0


def _day(moment: datetime, tz: ZoneInfo):
    return moment.astimezone(tz).date()


def _ineligible_because(deal: DealFacts, c: CandidateFacts, settings: Settings) -> str | None:
    if c.status not in WAS_ACCEPTED or c.accepted_at is None:
        return f"never accepted (status {c.status})"
    if c.submitted_at is None:
        return "never submitted"
    # A deal without a creation date is judged at its close: never credit a registration
    # made after the deal was already won.
    created = deal.deal_created_at or deal.closed_at
    if created is not None:
        if c.submitted_at > created:
            return "registered after the deal was created"
        # Protection runs from registration to protected_until (an acceptance that came after
        # the deal was created still covers an account registered before it).
        if c.protected_until is None or c.protected_until < created:
            return "not protected when the deal was created"
    if deal.closed_at is not None:
        tz = ZoneInfo(settings.time_zone)
        days = (_day(deal.closed_at, tz) - _day(c.submitted_at, tz)).days
        if days > settings.window_days:
            return (f"deal closed {days} days after registration, outside the "
                    f"{settings.window_days}-day window")
    return None


def _sort_key(rule: str):
    far = datetime.max.replace(tzinfo=ZoneInfo("UTC"))
    if rule == "first_submitted":
        return lambda c: (c.submitted_at or far, c.referral_id)
    if rule == "last_touch":
        # Latest registration first; the referral id breaks ties deterministically.
        return lambda c: (-(c.submitted_at.timestamp() if c.submitted_at else 0), c.referral_id)
    return lambda c: (c.accepted_at or far, c.submitted_at or far, c.referral_id)


def decide(deal: DealFacts, candidates, settings: Settings) -> Decision:
    if settings.rule not in RULES:
        raise ValueError(f"unknown attribution rule {settings.rule!r}")
    ordered = sorted(candidates, key=lambda c: c.referral_id)  # order-independent
    matched = []
    verdicts: dict[str, Verdict] = {}
    for c in ordered:
        kind, score = _match(deal, c, settings.fuzzy_threshold)
        if kind == NONE:
            verdicts[c.referral_id] = Verdict(c.referral_id, c.partner_id, NONE, False,
                                              "does not match the deal's account")
            continue
        reason = _ineligible_because(deal, c, settings)
        if reason:
            verdicts[c.referral_id] = Verdict(c.referral_id, c.partner_id, kind, False, reason,
                                              score)
        else:
            matched.append((kind, score, c))
    if not matched:
        return Decision(None, None, settings.rule, NONE, 0, False,
                        tuple(verdicts[c.referral_id] for c in ordered))
    best = max(MATCH_STRENGTH[kind] for kind, _, _ in matched)
    tier = [(kind, score, c) for kind, score, c in matched if MATCH_STRENGTH[kind] == best]
    for kind, score, c in matched:
        if MATCH_STRENGTH[kind] < best:
            verdicts[c.referral_id] = Verdict(c.referral_id, c.partner_id, kind, False,
                                              f"a stronger match ({tier[0][0]}) exists", score)
    tier.sort(key=lambda item: _sort_key(settings.rule)(item[2]))
    kind, score, winner = tier[0]
    rule_label = settings.rule.replace("_", " ")
    verdicts[winner.referral_id] = Verdict(winner.referral_id, winner.partner_id, kind, True,
                                           f"wins by {rule_label} ({kind} match)", score)
    for other_kind, other_score, c in tier[1:]:
        verdicts[c.referral_id] = Verdict(c.referral_id, c.partner_id, other_kind, False,
                                          f"eligible, but loses by {rule_label}", other_score)
    confidence = {EXACT: 100, DOMAIN: 90, FUZZY: min(80, score - 10)}[kind]
    if len(tier) > 1:
        confidence -= 10  # several partners had a claim
    needs_review = kind == FUZZY and settings.fuzzy_needs_review
    return Decision(winner.referral_id, winner.partner_id, settings.rule, kind,
                    max(confidence, 0), needs_review,
                    tuple(verdicts[c.referral_id] for c in ordered))
