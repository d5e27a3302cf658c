"""Vendor finance approves (or rejects, with a reason) payable commissions, one or many. Once
none is left payable, the vendor's "commissions are ready for approval" notifications are
done for everyone."""

from django.db import transaction
from django.utils import timezone

from accounts import audit, roles
from accounts.errors import ServiceError
from accounts.notifications import notify, resolve
from accounts.services.guards import require
from payouts.ledger import commission_entry, post
from payouts.models import Commission
from referrals.services.events import members_with


def payable_subject(vendor_id: int) -> str:
    """The vendor's "commissions are ready for approval" notifications (payouts.tasks)."""
    return f"commissions_payable:{vendor_id}"


def _resolve_when_none_payable(vendor_id: int) -> None:
    if not Commission.objects.filter(vendor_id=vendor_id, status=Commission.PAYABLE).exists():
        resolve(payable_subject(vendor_id))


@transaction.atomic
def approve_commissions(actor, public_ids) -> int:
    """Approve the payable commissions among `public_ids` that this vendor finance member may
    approve; others (not payable any more, someone else's) are left alone. Returns the count."""
    require(actor, roles.COMMISSION_APPROVE)
    rows = list(Commission.objects.visible_to(actor).select_for_update(of=("self",))
                .filter(public_id__in=list(public_ids), status=Commission.PAYABLE)
                .select_related("partner"))
    now = timezone.now()
    for commission in rows:
        commission.status = Commission.APPROVED
        commission.decided_by, commission.decided_at = actor.user, now
    Commission.objects.bulk_update(rows, ["status", "decided_by", "decided_at"])
    for commission in rows:
        audit.record("commission.approved", commission, actor=actor,
                     after={"amount_minor": commission.amount_minor,
                            "currency": commission.currency})
    for vendor_id in {commission.vendor_id for commission in rows}:
        _resolve_when_none_payable(vendor_id)
    return len(rows)


@transaction.atomic
def reject_commission(actor, commission: Commission, reason: str) -> Commission:
    require(actor, roles.COMMISSION_APPROVE, commission)
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Tell the partner why this commission is rejected.", field="reason")
    commission = Commission.objects.select_for_update().get(pk=commission.pk)
    if commission.status not in (Commission.PAYABLE, Commission.PENDING, Commission.APPROVED):
        raise ServiceError("Only unpaid commissions can be rejected.")
    if commission.payout_id is not None:
        raise ServiceError("This commission is in a payout batch already; ask operator finance "
                           "to take it out first.")
    before = commission.status
    commission.status, commission.rejection_reason = Commission.REJECTED, reason
    commission.decided_by, commission.decided_at = actor.user, timezone.now()
    commission.save(update_fields=["status", "rejection_reason", "decided_by", "decided_at"])
    post([commission_entry(commission, "rejected", -commission.amount_minor,
                           f"Rejected: {reason}", actor=actor.user)])
    audit.record("commission.rejected", commission, actor=actor,
                 before={"status": before}, after={"status": commission.status, "reason": reason})
    _resolve_when_none_payable(commission.vendor_id)
    users = members_with(commission.partner_id, roles.PARTNER, roles.COMMISSION_VIEW)
    transaction.on_commit(lambda: notify(
        users, "commission_rejected", network_id=commission.network_id,
        title=f"A commission on deal {commission.deal_name or commission.external_deal_id} "
              f"was rejected", body=reason, url="/earnings/"))
    return commission
