"""What a partner sees of an attribution: plain rows (`PartnerRow`, `OwnCandidate`) built from
its own candidate rows only: its referrals, how each was matched and why it was kept or
dropped, and a neutral outcome ("credited to another partner", "credited to no one"). Rendering
the partner side from these rows keeps another partner's name, referral and data out of reach of
its templates.
"""

from dataclasses import dataclass
from datetime import datetime

from accounts import roles
from attribution.attribution_forms import OUTCOMES
from attribution.models import AttributionCandidate
from referrals.models import Program

OUTCOME_LABELS = {**dict(OUTCOMES),
                  "your_org": "Credited to another registration of your organization"}
NEUTRAL_LINES = {
    "other": "Credited to another partner's registration.",
    "none": "Credited to no one: no registration was eligible for this deal.",
    "your_org": "Credited to another registration of your organization.",
}
RULE_LABELS = dict(Program.ATTRIBUTION_RULES)
MATCH_LABELS = {"exact": "Exact: the deal carries the referral id",
                "domain": "Same registrable domain", "fuzzy": "Similar company name",
                "none": "No eligible registration"}


@dataclass(frozen=True)
class OwnCandidate:
    referral_public_id: str
    company_name: str
    submitted_at: datetime | None
    match: str
    reason: str
    credited: bool


@dataclass(frozen=True)
class PartnerRow:
    """One attribution as a partner sees it: the deal, the vendor, and its own side."""

    public_id: str
    deal_details_hidden: bool
    account_name: str
    account_domain: str
    vendor_name: str
    amount_minor: int | None
    currency: str
    stage: str
    closed_at: datetime | None
    status: str
    status_label: str
    rule: str
    match: str
    confidence: int
    decided_at: datetime | None
    decided_by: str
    decision_note: str
    created_at: datetime
    outcome: str  # you | your_org | other | none
    own: tuple[OwnCandidate, ...]

    @property
    def outcome_label(self) -> str:
        return OUTCOME_LABELS[self.outcome]

    @property
    def neutral_line(self) -> str:
        return NEUTRAL_LINES.get(self.outcome, "")

    @property
    def title(self) -> str:
        if self.account_name:
            return self.account_name
        return f"Deal for {self.own[0].company_name}" if self.own else "Won deal"

    @property
    def rule_label(self) -> str:
        return RULE_LABELS.get(self.rule, self.rule)

    @property
    def match_label(self) -> str:
        return MATCH_LABELS.get(self.match, self.match)


def own_candidates(membership):
    """The viewer's candidate rows: its organization's referrals (a rep: the ones it
    submitted) that matched the deal, as in AttributionQuerySet.visible_to."""
    rows = AttributionCandidate.objects.filter(
        partner_id=membership.organization_id).exclude(match="none")
    if membership.role_def.scope == roles.OWN:
        rows = rows.filter(referral__submitted_by_id=membership.user_id)
    return rows.select_related("referral").order_by("referral__submitted_at", "pk")


def partner_outcome(membership, attribution, own) -> str:
    if attribution.partner_id is None:
        return "none"
    if attribution.partner_id != membership.organization_id:
        return "other"
    if any(c.referral_id == attribution.referral_id for c in own):
        return "you"
    return "your_org"  # a rep's colleague's registration won


def partner_row(membership, attribution, own) -> PartnerRow:
    snapshot = attribution.snapshot
    # A deal that carries another registration's id got its name, domain and amount from
    # that registration (the CRM push, the built-in pipeline): they are that partner's data.
    hidden = snapshot.referral_id is not None and snapshot.referral_id not in {
        c.referral_id for c in own}
    return PartnerRow(
        public_id=str(attribution.public_id), deal_details_hidden=hidden,
        account_name="" if hidden else snapshot.account_name,
        account_domain="" if hidden else snapshot.account_domain,
        vendor_name=attribution.vendor.name,
        amount_minor=None if hidden else snapshot.amount_minor,
        currency="" if hidden else snapshot.currency, stage=snapshot.stage,
        closed_at=snapshot.closed_at, status=attribution.status,
        status_label=attribution.get_status_display(), rule=attribution.rule,
        match=attribution.match, confidence=attribution.confidence,
        decided_at=attribution.decided_at,
        decided_by=attribution.decided_by.get_full_name() if attribution.decided_by else "",
        decision_note=attribution.decision_note, created_at=attribution.created_at,
        outcome=partner_outcome(membership, attribution, own),
        own=tuple(OwnCandidate(
            referral_public_id=str(c.referral.public_id), company_name=c.referral.company_name,
            submitted_at=c.referral.submitted_at, match=c.match, reason=c.reason,
            credited=c.referral_id == attribution.referral_id) for c in own))
