"""What a referral's deals came to, for the referral's page: each closed deal, who it was
credited to and why (in the viewer's words: a partner never learns another partner's name),
and the commission it earned or, in words, why it earned none (not credited, waiting for
review, lost or reopened, no plan in effect, another currency, disputed).

Every row comes through the viewer's scope: attributions through `Attribution.visible_to`,
commissions through `Commission.visible_to`, and only for roles that see money."""

from dataclasses import dataclass

from django.db.models import Exists, OuterRef, Q

from accounts import roles
from accounts.permissions import can
from attribution.models import Attribution, AttributionCandidate, DealSnapshot, Dispute
from attribution.partner_rows import MATCH_LABELS
from payouts import ledger
from payouts.models import Commission


@dataclass
class DealMoney:
    deal: DealSnapshot  # the deal as last reported
    attribution: Attribution | None
    credit: str  # who the deal went to, in the viewer's words
    commission: Commission | None = None
    no_commission: str = ""  # why there is none (money roles only)
    disputed: bool = False


def _credit(membership, attribution, referral, candidate) -> str:
    if attribution is None:
        return "Being attributed: this takes a moment after the deal closes."
    status = attribution.get_status_display().lower()
    if attribution.referral_id == referral.pk:
        how = MATCH_LABELS.get(attribution.match, attribution.match)
        return f"Credited to this referral ({how}; {status})."
    why = f" ({candidate.reason})" if candidate is not None and candidate.reason else ""
    if attribution.referral_id is None:
        return f"Credited to no one{why}."
    if membership.organization.kind == roles.PARTNER:
        same_org = attribution.partner_id == membership.organization_id
        return (f"Credited to another registration of your organization{why}." if same_org
                else f"Credited to another partner's registration{why}.")
    return f"Credited to {attribution.partner.name}'s registration{why}."


def deals_of(membership, referral) -> list[DealMoney]:
    """The referral's closed deals the viewer may see, newest first: deals linked to it (its
    CRM, pipeline or manual deal) and deals it was a candidate for."""
    candidate = AttributionCandidate.objects.filter(attribution_id=OuterRef("pk"),
                                                    referral=referral).exclude(match="none")
    attributions = {(a.provider, a.external_deal_id): a for a in (
        Attribution.objects.visible_to(membership)
        .filter(Q(referral=referral) | Q(Exists(candidate)))
        .select_related("partner", "referral").order_by("-created_at")[:20])}
    linked = {(s.provider, s.external_deal_id) for s in DealSnapshot.objects.filter(
        referral=referral, outcome__in=(DealSnapshot.WON, DealSnapshot.LOST))}
    money = can(membership, roles.COMMISSION_VIEW)
    rows = []
    for key in list(attributions) + sorted(linked - attributions.keys()):
        attribution = attributions.get(key)
        deal = (ledger.newest_snapshot(attribution) if attribution else
                DealSnapshot.objects.filter(vendor_id=referral.vendor_id, provider=key[0],
                                            external_deal_id=key[1])
                .order_by("-received_at", "-pk").first())
        own = (AttributionCandidate.objects.filter(attribution=attribution, referral=referral)
               .first() if attribution else None)
        row = DealMoney(deal, attribution, _credit(membership, attribution, referral, own))
        if attribution is not None:
            row.disputed = Dispute.objects.visible_to(membership).pending().filter(
                attribution=attribution).exists()
        if money and attribution is not None:
            row.commission = (Commission.objects.visible_to(membership)
                              .filter(attribution=attribution)
                              .exclude(status__in=Commission.RETIRED).first())
            if row.commission is None and _sees_commissions_of(membership, attribution):
                row.no_commission = ledger.outlook(attribution, deal).reason or (
                    "It is being computed.")
        rows.append(row)
    return rows


def _sees_commissions_of(membership, attribution) -> bool:
    """A partner hears why its own credited deal earned nothing, not about other partners'."""
    if membership.organization.kind != roles.PARTNER:
        return True
    return attribution.partner_id in (None, membership.organization_id)
