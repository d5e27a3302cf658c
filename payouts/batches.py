"""Payout batches: operator finance gathers the approved, released commissions of a period into
one batch per network, a second person approves it, and only then does anything move.

Building is set-based, whatever the number of commissions: one aggregate per (partner,
currency), one for what each partner owes, one load each of payout accounts and tax profiles,
one bulk insert of the payouts and one UPDATE that attaches the commissions to them. A
partner's debt in a currency (clawbacks of paid commissions not yet netted off) is

    its unpaid live commissions - its balance - the offsets of its payouts still in flight,

because the balance already counts every earned commission, paid or not, less what was sent
and what was clawed back; in-flight payouts (ready, sending, failed) have netted their offset
but the ledger has not seen it yet.
"""

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db import connection, transaction
from django.db.models import Count, Max, Sum
from django.urls import reverse
from django.utils import timezone

from accounts import audit, roles
from accounts.errors import ServiceError
from accounts.notifications import notify
from accounts.services.guards import require
from partnerhub.money import format_money
from payouts.models import (
    Balance,
    Commission,
    Payout,
    PayoutAccount,
    PayoutBatch,
    TaxProfile,
)
from payouts.tax import profile_problems
from referrals.services.events import members_with

IN_FLIGHT = (Payout.READY, Payout.SENDING, Payout.FAILED)
CARRY_REASONS = {
    Payout.OWES: "Owes more than it earned (clawbacks to net off)",
    Payout.BELOW_MINIMUM: "Below the payout minimum",
    Payout.NO_ACCOUNT: "No payout account",
    Payout.ACCOUNT_NOT_READY: "Payout account cannot receive transfers yet",
    Payout.TAX_PROFILE: "Tax profile incomplete",
}


def cutoff_for(period_end: date) -> datetime:
    """Commissions payable on or before the end of `period_end` (UTC) belong to the period:
    everything strictly before midnight UTC of the next day."""
    return datetime.combine(period_end + timedelta(days=1), time.min, tzinfo=UTC)


@dataclass
class Group:
    partner_id: int
    currency: str
    gross: int
    count: int
    minimum: int
    debt: int = 0

    @property
    def offset(self) -> int:
        return min(max(self.debt, 0), self.gross)

    @property
    def net(self) -> int:
        return self.gross - max(self.debt, 0)


def _lock_network(network_id: int) -> None:
    """Builds of one network take turns: the second sees the first's claimed commissions and
    in-flight offsets. (The UPDATE's `payout IS NULL` keeps a commission in one payout even
    without it.)"""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                       [f"payouts.batches:network:{network_id}"])


def _batchable(network_id: int, cutoff: datetime):
    return Commission.objects.filter(network_id=network_id, status=Commission.APPROVED,
                                     payout__isnull=True, payable_at__lt=cutoff)


def _groups(network_id: int, cutoff: datetime) -> list[Group]:
    rows = (_batchable(network_id, cutoff).order_by().values("partner_id", "currency")
            .annotate(gross=Sum("amount_minor"), count=Count("pk"),
                      minimum=Max("plan__payout_minimum_minor"))
            .order_by("partner_id", "currency"))
    return [Group(r["partner_id"], r["currency"], r["gross"], r["count"], r["minimum"] or 0)
            for r in rows]


_DEBT_SQL = """
SELECT partner_id, currency, SUM(amount) FROM (
    SELECT partner_id, currency, amount_minor AS amount FROM {commission}
     WHERE network_id = %(network)s AND status = ANY(%(unpaid)s)
    UNION ALL
    SELECT partner_id, currency, -amount_minor FROM {balance} WHERE network_id = %(network)s
    UNION ALL
    SELECT partner_id, currency, -offset_minor FROM {payout}
     WHERE network_id = %(network)s AND status = ANY(%(in_flight)s)
) AS movements
GROUP BY partner_id, currency
HAVING SUM(amount) > 0
"""


def _debts(network_id: int) -> dict[tuple[int, str], int]:
    """(partner id, currency) -> what the partner owes, for those who owe anything."""
    sql = _DEBT_SQL.format(commission=Commission._meta.db_table,
                           balance=Balance._meta.db_table, payout=Payout._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(sql, {"network": network_id, "unpaid": list(Commission.UNPAID),
                             "in_flight": list(IN_FLIGHT)})
        return {(partner_id, currency): int(debt) for partner_id, currency, debt in cursor}


def _carry_reason(group: Group, account, profile) -> str:
    if group.net <= 0:
        return Payout.OWES
    if group.net < group.minimum:
        return Payout.BELOW_MINIMUM
    if account is None:
        return Payout.NO_ACCOUNT
    if not account.can_receive_transfers:
        return Payout.ACCOUNT_NOT_READY
    if profile_problems(profile):
        return Payout.TAX_PROFILE
    return ""


_CLAIM_SQL = """
UPDATE {commission} AS c SET payout_id = p.id
  FROM {payout} AS p
 WHERE p.batch_id = %(batch)s AND p.status = %(ready)s
   AND c.network_id = %(network)s AND c.partner_id = p.partner_id AND c.currency = p.currency
   AND c.status = %(approved)s AND c.payout_id IS NULL AND c.payable_at < %(cutoff)s
"""


def _claim(batch: PayoutBatch, cutoff: datetime) -> int:
    sql = _CLAIM_SQL.format(commission=Commission._meta.db_table, payout=Payout._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(sql, {"batch": batch.pk, "ready": Payout.READY,
                             "network": batch.network_id, "approved": Commission.APPROVED,
                             "cutoff": cutoff})
        return cursor.rowcount


def _nothing_to_pay(period_end: date, reasons: Counter) -> str:
    day = f"{period_end:%-d %B %Y}"
    if not reasons:
        return f"No approved commissions are payable on or before {day}: there is nothing to pay."
    words = "; ".join(f"{n} {CARRY_REASONS[reason].lower()}"
                      for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    return (f"Nothing can be paid for the period ending {day}: every partner would be carried "
            f"over ({words}).")


def batch_url(batch: PayoutBatch) -> str:
    return reverse("payouts:batch_detail", args=[batch.public_id])


def build_batch(actor, period_end: date) -> PayoutBatch:
    """Gather the network's approved, unassigned commissions payable by the end of
    `period_end` (UTC) into a draft batch: one payout per partner and currency, net of what
    the partner owes, and a carried-over row (with the reason) for each partner that cannot be
    paid this time. Raises ServiceError when there is nothing to pay."""
    require(actor, roles.PAYOUT_MANAGE)
    if actor.organization.kind != roles.OPERATOR:
        raise ServiceError("Only the network's finance people build payout batches.")
    if period_end > timezone.now().astimezone(UTC).date():
        raise ServiceError("The period cannot end in the future.", field="period_end")
    network_id = actor.organization.network_id
    cutoff = cutoff_for(period_end)
    with transaction.atomic():
        _lock_network(network_id)
        groups = _groups(network_id, cutoff)
        if not groups:
            raise ServiceError(_nothing_to_pay(period_end, Counter()), field="period_end")
        debts = _debts(network_id)
        accounts = {a.partner_id: a for a in PayoutAccount.objects.filter(network_id=network_id)}
        profiles = {p.partner_id: p for p in TaxProfile.objects.filter(network_id=network_id)}

        batch = PayoutBatch(network_id=network_id, period_end=period_end,
                            created_by=actor.user)
        payouts, reasons, totals = [], Counter(), Counter()
        for group in groups:
            group.debt = debts.get((group.partner_id, group.currency), 0)
            account = accounts.get(group.partner_id)
            reason = _carry_reason(group, account, profiles.get(group.partner_id))
            if reason:
                reasons[reason] += 1
            else:
                totals[group.currency] += group.net
            payouts.append(Payout(
                batch=batch, network_id=network_id, partner_id=group.partner_id,
                currency=group.currency, gross_minor=group.gross, offset_minor=group.offset,
                amount_minor=group.gross - group.offset, commission_count=group.count,
                status=Payout.CARRIED_OVER if reason else Payout.READY, carry_reason=reason,
                stripe_account_id="" if reason else account.stripe_account_id))
        if not totals:
            raise ServiceError(_nothing_to_pay(period_end, reasons), field="period_end")

        batch.totals = dict(sorted(totals.items()))
        batch.payout_count = len(payouts) - sum(reasons.values())
        batch.carried_over_count = sum(reasons.values())
        batch.save()
        Payout.objects.bulk_create(payouts)  # one INSERT (UNNEST) however many rows
        expected = sum(p.commission_count for p in payouts if p.status == Payout.READY)
        claimed = _claim(batch, cutoff)
        if claimed != expected:
            # A commission was approved, rejected or claimed between the sums and the claim.
            # Everything above rolls back; the next try sees a settled picture.
            raise ServiceError("Commissions changed while the batch was being built. "
                               "Try again.")
        audit.record("payout_batch.created", batch, actor=actor, after={
            "period_end": period_end, "totals": batch.totals,
            "payouts": batch.payout_count, "carried_over": batch.carried_over_count,
            "carry_reasons": dict(reasons), "commissions": expected})
        approvers = members_with(actor.organization_id, roles.OPERATOR, roles.PAYOUT_APPROVE)
        summary = ", ".join(format_money(v, c) for c, v in batch.totals.items())
        transaction.on_commit(lambda: notify(
            approvers, "payout_batch", network_id=network_id, exclude_user=actor.user,
            title=f"A payout batch for the period ending {period_end:%-d %B %Y} awaits your "
                  f"approval",
            body=f"{batch.payout_count} payout(s): {summary}. Built by "
                 f"{actor.user.get_full_name()}.",
            url=batch_url(batch)))
    return batch


def _locked(batch: PayoutBatch) -> PayoutBatch:
    return PayoutBatch.objects.select_for_update().get(pk=batch.pk)


def approve_batch(actor, batch: PayoutBatch) -> PayoutBatch:
    """The second person's approval: a finance person or admin other than the batch's creator.
    Sending starts after commit."""
    require(actor, roles.PAYOUT_APPROVE, batch)
    with transaction.atomic():
        batch = _locked(batch)
        if batch.status != PayoutBatch.DRAFT:
            raise ServiceError(f"This batch is {batch.get_status_display().lower()}: only a "
                               f"batch awaiting approval can be approved.")
        if batch.created_by_id == actor.user_id:
            raise ServiceError("You built this batch: a second person must approve it.")
        batch.status = PayoutBatch.APPROVED
        batch.approved_by, batch.approved_at = actor.user, timezone.now()
        batch.save(update_fields=["status", "approved_by", "approved_at"])
        audit.record("payout_batch.approved", batch, actor=actor,
                     before={"status": PayoutBatch.DRAFT},
                     after={"status": batch.status, "totals": batch.totals,
                            "payouts": batch.payout_count})
        batch_id = batch.pk
        transaction.on_commit(lambda: _enqueue_send(batch_id))
    return batch


def _enqueue_send(batch_id: int) -> None:
    from payouts import tasks  # the send task lives with the transfers work

    tasks.send_batch.delay(batch_id)


def cancel_batch(actor, batch: PayoutBatch) -> PayoutBatch:
    """Drop a batch awaiting approval: its payouts are cancelled and its commissions go back
    to the pool for the next batch."""
    require(actor, roles.PAYOUT_MANAGE, batch)
    with transaction.atomic():
        batch = _locked(batch)
        if batch.status != PayoutBatch.DRAFT:
            raise ServiceError(f"This batch is {batch.get_status_display().lower()}: only a "
                               f"batch awaiting approval can be cancelled.")
        released = Commission.objects.filter(payout__batch=batch).update(payout=None)
        Payout.objects.filter(batch=batch).update(status=Payout.CANCELLED)
        batch.status, batch.cancelled_at = PayoutBatch.CANCELLED, timezone.now()
        batch.save(update_fields=["status", "cancelled_at"])
        audit.record("payout_batch.cancelled", batch, actor=actor,
                     before={"status": PayoutBatch.DRAFT},
                     after={"status": batch.status, "commissions_released": released})
    return batch


def is_creator(membership, batch: PayoutBatch) -> bool:
    return batch.created_by_id == membership.user_id
