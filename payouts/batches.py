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

At scale a build (and a cancel, which rewrites the same commission rows) takes minutes, so the
pages do neither inside the request: `request_batch` checks the request and leaves a `building`
row for the `payouts.tasks.build_payout_batch` task, `request_cancel` leaves a `cancelling` one
for `payouts.tasks.cancel_payout_batch`. A task holds its batch row's lock (claimed with
`select_for_update(skip_locked=True)`) for as long as it works, so a duplicate delivery finds
the row locked or no longer in progress and does nothing; `sweep_stuck_batches` sends the ones
whose task was lost or whose worker died again. `build_batch` and `cancel_batch` do the same
work synchronously (tests, the benchmark, the shell).
"""

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Exists, Max, OuterRef, Q, Subquery, Sum
from django.urls import reverse
from django.utils import timezone

from accounts import audit, roles
from accounts.errors import ServiceError
from accounts.models import Membership
from accounts.notifications import notify, resolve
from accounts.permissions import can
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

log = logging.getLogger(__name__)

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
    if connection.vendor != "postgresql":
        return  # SQLite (the quickstart) lets one transaction write at a time anyway
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
    if connection.vendor != "postgresql":
        return _debts_portable(network_id)
    sql = _DEBT_SQL.format(commission=Commission._meta.db_table,
                           balance=Balance._meta.db_table, payout=Payout._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(sql, {"network": network_id, "unpaid": list(Commission.UNPAID),
                             "in_flight": list(IN_FLIGHT)})
        return {(partner_id, currency): int(debt) for partner_id, currency, debt in cursor}


def _debts_portable(network_id: int) -> dict[tuple[int, str], int]:
    """The same as _DEBT_SQL with three grouped ORM queries (SQLite has no arrays)."""
    debts = Counter()
    for row in (Commission.objects.filter(network_id=network_id,
                                          status__in=Commission.UNPAID)
                .values("partner_id", "currency").annotate(s=Sum("amount_minor"))):
        debts[(row["partner_id"], row["currency"])] += row["s"]
    for row in Balance.objects.filter(network_id=network_id).values(
            "partner_id", "currency", "amount_minor"):
        debts[(row["partner_id"], row["currency"])] -= row["amount_minor"]
    for row in (Payout.objects.filter(network_id=network_id, status__in=IN_FLIGHT)
                .values("partner_id", "currency").annotate(s=Sum("offset_minor"))):
        debts[(row["partner_id"], row["currency"])] -= row["s"]
    return {key: int(debt) for key, debt in debts.items() if debt > 0}


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
    if connection.vendor != "postgresql":
        ready = Payout.objects.filter(batch=batch, status=Payout.READY,
                                      partner_id=OuterRef("partner_id"),
                                      currency=OuterRef("currency"))
        return (_batchable(batch.network_id, cutoff).filter(Exists(ready))
                .update(payout_id=Subquery(ready.values("pk")[:1])))
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


def approval_subject(batch: PayoutBatch) -> str:
    """The "awaits your approval" notifications, done once anyone approves or cancels."""
    return f"payout_batch:{batch.public_id}:approval"


class CommissionsChanged(ServiceError):
    """A commission was approved, rejected or claimed between the sums and the claim."""


ALREADY_BUILDING = ("A batch is already being built for this network: wait for it to finish "
                    "(the list shows when it is ready).")
LOST_BUILDER = ("Whoever asked for this batch can no longer build batches: someone who can "
                "should build it again.")
UNEXPECTED = ("The build stopped on an unexpected error and nothing was changed. Build the "
              "batch again; if it happens again, tell support.")
GAVE_UP = ("The build did not finish (the worker running it stopped) and nothing was "
           "changed. Build the batch again.")
BUILD_ATTEMPTS = 3  # in one task, when commissions change under the build
STUCK_AFTER = timedelta(minutes=10)  # a build takes ~2 minutes at 500,000 commissions
GIVE_UP_AFTER = timedelta(hours=2)


def _check_build_request(actor, period_end: date) -> None:
    require(actor, roles.PAYOUT_MANAGE)
    if actor.organization.kind != roles.OPERATOR:
        raise ServiceError("Only the network's finance people build payout batches.")
    if period_end > timezone.now().astimezone(UTC).date():
        raise ServiceError("The period cannot end in the future.", field="period_end")


def _building_batch(actor, period_end: date) -> PayoutBatch:
    """The batch row, `building`. The partial unique constraint refuses a second one in the
    network (an IntegrityError that `_refuse_second_build` turns into words); a second
    INSERT racing an uncommitted one waits for it to commit or roll back."""
    return PayoutBatch.objects.create(
        network_id=actor.organization.network_id, period_end=period_end,
        created_by=actor.user, status=PayoutBatch.BUILDING)


def _refuse_second_build(exc: IntegrityError) -> None:
    if getattr(getattr(exc.__cause__, "diag", None), "constraint_name", "") == \
            "one_building_batch_per_network":
        raise ServiceError(ALREADY_BUILDING, field="period_end") from exc


def request_batch(actor, period_end: date) -> PayoutBatch:
    """Ask for a draft batch of the network's approved, unassigned commissions payable by the
    end of `period_end` (UTC). Permission and the period are checked here (a bad request gets
    its message at once); the batch is left `building` and `payouts.tasks.build_payout_batch`
    is queued on commit. Refused while another batch of the network is building."""
    _check_build_request(actor, period_end)
    try:
        with transaction.atomic():
            batch = _building_batch(actor, period_end)
            audit.record("payout_batch.requested", batch, actor=actor,
                         after={"period_end": period_end})
            batch_id = batch.pk
            transaction.on_commit(lambda: _enqueue("build_payout_batch", batch_id))
    except IntegrityError as exc:
        _refuse_second_build(exc)
        raise
    return batch


def build_batch(actor, period_end: date) -> PayoutBatch:
    """Request and build in one transaction (the tests, the benchmark, the shell): returns the
    draft batch, or raises ServiceError (leaving no batch) when there is nothing to pay."""
    _check_build_request(actor, period_end)
    try:
        with transaction.atomic():
            batch = _building_batch(actor, period_end)
            _build(batch, actor)
    except IntegrityError as exc:
        _refuse_second_build(exc)
        raise
    return batch


def _builder(batch: PayoutBatch):
    """The requester's membership, if it may still build batches (the task runs later)."""
    membership = (Membership.objects.select_related("organization__network", "user")
                  .filter(user_id=batch.created_by_id, status=Membership.ACTIVE,
                          organization__network_id=batch.network_id,
                          organization__kind=roles.OPERATOR).first())
    if membership is None or not can(membership, roles.PAYOUT_MANAGE):
        return None
    return membership


def run_build(batch_id: int) -> str | None:
    """The build task's work: build a `building` batch, leaving it `draft` or `build_failed`
    with the reason. Returns the status reached, or None when there was nothing to do (built
    already, or another worker is building it right now and holds its row)."""
    failure = None
    with transaction.atomic():
        batch = (PayoutBatch.objects.select_for_update(skip_locked=True)
                 .filter(pk=batch_id, status=PayoutBatch.BUILDING).first())
        if batch is None:
            return None
        actor = _builder(batch)
        try:
            if actor is None:
                raise ServiceError(LOST_BUILDER)
            for attempt in range(1, BUILD_ATTEMPTS + 1):
                try:
                    with transaction.atomic():
                        _build(batch, actor)
                    break
                except CommissionsChanged:
                    batch.status = PayoutBatch.BUILDING
                    if attempt == BUILD_ATTEMPTS:
                        raise
        except ServiceError as exc:
            _fail(batch, actor, exc.message)
        except Exception as exc:  # noqa: BLE001 - recorded on the batch, raised again below
            failure = exc
            _fail(batch, actor, UNEXPECTED)
    if failure is not None:
        raise failure  # after the commit: the batch says what happened, the logs say why
    return batch.status


def _fail(batch: PayoutBatch, actor, message: str) -> None:
    batch.status, batch.build_error = PayoutBatch.BUILD_FAILED, message
    batch.totals, batch.payout_count, batch.carried_over_count = {}, 0, 0
    batch.save(update_fields=["status", "build_error", "totals", "payout_count",
                              "carried_over_count"])
    audit.record("payout_batch.build_failed", batch, actor=actor,
                 network_id=batch.network_id, after={"error": message})
    if actor is not None:
        user, network_id, url = batch.created_by, batch.network_id, batch_url(batch)
        transaction.on_commit(lambda: notify(
            [user], "payout_batch", network_id=network_id,
            title=f"The payout batch for the period ending {batch.period_end:%-d %B %Y} "
                  f"could not be built", body=message, url=url))


def _build(batch: PayoutBatch, actor) -> None:
    """Gather the network's approved, unassigned commissions payable by the end of the batch's
    period (UTC) into it, leaving it a draft: one payout per partner and currency, net of what
    the partner owes, and a carried-over row (with the reason) for each partner that cannot be
    paid this time. Raises ServiceError when there is nothing to pay; the caller's transaction
    (or savepoint) then rolls everything back."""
    network_id, period_end = batch.network_id, batch.period_end
    cutoff = cutoff_for(period_end)
    _lock_network(network_id)
    groups = _groups(network_id, cutoff)
    if not groups:
        raise ServiceError(_nothing_to_pay(period_end, Counter()), field="period_end")
    debts = _debts(network_id)
    accounts = {a.partner_id: a for a in PayoutAccount.objects.filter(network_id=network_id)}
    profiles = {p.partner_id: p for p in TaxProfile.objects.filter(network_id=network_id)}

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

    batch.status, batch.build_error = PayoutBatch.DRAFT, ""
    batch.totals = dict(sorted(totals.items()))
    batch.payout_count = len(payouts) - sum(reasons.values())
    batch.carried_over_count = sum(reasons.values())
    batch.save(update_fields=["status", "build_error", "totals", "payout_count",
                              "carried_over_count"])
    Payout.objects.bulk_create(payouts)  # one INSERT (UNNEST) however many rows
    expected = sum(p.commission_count for p in payouts if p.status == Payout.READY)
    claimed = _claim(batch, cutoff)
    if claimed != expected:
        # Everything above rolls back; the next try sees a settled picture.
        raise CommissionsChanged("Commissions changed while the batch was being built. "
                                 "Try again.")
    audit.record("payout_batch.created", batch, actor=actor, after={
        "period_end": period_end, "totals": batch.totals,
        "payouts": batch.payout_count, "carried_over": batch.carried_over_count,
        "carry_reasons": dict(reasons), "commissions": expected})
    approvers = members_with(actor.organization_id, roles.OPERATOR, roles.PAYOUT_APPROVE)
    summary = ", ".join(format_money(v, c) for c, v in batch.totals.items())
    creator, url = batch.created_by, batch_url(batch)
    transaction.on_commit(lambda: notify(
        approvers, "payout_batch", network_id=network_id, exclude_user=creator,
        title=f"A payout batch for the period ending {period_end:%-d %B %Y} awaits your "
              f"approval",
        body=f"{batch.payout_count} payout(s): {summary}. Built by "
             f"{creator.get_full_name()}.",
        url=url, subject=approval_subject(batch)))


def _locked(batch: PayoutBatch) -> PayoutBatch:
    if batch.status == PayoutBatch.BUILDING:
        # Its build task holds the row for minutes: refuse now rather than wait for it.
        raise ServiceError("This batch is still being built: only a batch awaiting approval "
                           "can be approved or cancelled.")
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
        resolve(approval_subject(batch))
        batch_id = batch.pk
        transaction.on_commit(lambda: _enqueue_send(batch_id))
    return batch


def _enqueue_send(batch_id: int) -> None:
    from payouts import tasks  # the send task lives with the transfers work

    tasks.send_batch.delay(batch_id)


def _enqueue(task_name: str, batch_id: int) -> None:
    from payouts import tasks

    getattr(tasks, task_name).delay(batch_id)


def request_cancel(actor, batch: PayoutBatch) -> PayoutBatch:
    """Drop a batch awaiting approval: it becomes `cancelling` at once (it can no longer be
    approved) and `payouts.tasks.cancel_payout_batch`, queued on commit, cancels its payouts
    and puts its commissions back in the pool for the next batch."""
    require(actor, roles.PAYOUT_MANAGE, batch)
    with transaction.atomic():
        batch = _locked(batch)
        if batch.status != PayoutBatch.DRAFT:
            raise ServiceError(f"This batch is {batch.get_status_display().lower()}: only a "
                               f"batch awaiting approval can be cancelled.")
        batch.status, batch.cancelled_at = PayoutBatch.CANCELLING, timezone.now()
        batch.save(update_fields=["status", "cancelled_at"])
        audit.record("payout_batch.cancelled", batch, actor=actor,
                     before={"status": PayoutBatch.DRAFT}, after={"status": batch.status})
        resolve(approval_subject(batch))
        batch_id = batch.pk
        transaction.on_commit(lambda: _enqueue("cancel_payout_batch", batch_id))
    return batch


def run_cancel(batch_id: int) -> int | None:
    """The cancel task's work: release a `cancelling` batch's commissions (one UPDATE through
    the commissions' payout index) and cancel its payouts. Returns how many commissions went
    back, or None when there was nothing to do."""
    with transaction.atomic():
        batch = (PayoutBatch.objects.select_for_update(skip_locked=True)
                 .filter(pk=batch_id, status=PayoutBatch.CANCELLING).first())
        if batch is None:
            return None
        # Builds take turns with this: a build running now counts this batch's offsets as
        # in flight, so its debts must not change under it.
        _lock_network(batch.network_id)
        released = Commission.objects.filter(
            payout_id__in=Payout.objects.filter(batch_id=batch.pk).values("pk"),
        ).update(payout=None)
        Payout.objects.filter(batch_id=batch.pk).update(status=Payout.CANCELLED)
        batch.status = PayoutBatch.CANCELLED
        batch.save(update_fields=["status"])
        audit.record("payout_batch.released", batch, network_id=batch.network_id,
                     after={"status": batch.status, "commissions_released": released})
    return released


def cancel_batch(actor, batch: PayoutBatch) -> PayoutBatch:
    """Cancel and release in one go (the tests, the benchmark, the shell)."""
    with transaction.atomic():
        request_cancel(actor, batch)
        run_cancel(batch.pk)
    batch.refresh_from_db()
    return batch


def sweep_stuck_batches() -> dict[str, int]:
    """Batches left in progress (the task was lost, or its worker died and its transaction
    rolled back) are handed to their task again; a build still unfinished after
    GIVE_UP_AFTER fails, with a message, so that the network can build again. Rows a task holds
    right now are skipped (`skip_locked`): they are being worked on."""
    now = timezone.now()
    queued, failed = [], 0
    with transaction.atomic():
        stuck = (PayoutBatch.objects.select_for_update(skip_locked=True, of=("self",))
                 .filter(Q(status=PayoutBatch.BUILDING, created_at__lt=now - STUCK_AFTER)
                         | Q(status=PayoutBatch.CANCELLING,
                             cancelled_at__lt=now - STUCK_AFTER))
                 .select_related("created_by").order_by("pk"))
        for batch in stuck:
            if batch.status == PayoutBatch.BUILDING and batch.created_at < now - GIVE_UP_AFTER:
                _fail(batch, _builder(batch), GAVE_UP)
                failed += 1
                continue
            task = ("build_payout_batch" if batch.status == PayoutBatch.BUILDING
                    else "cancel_payout_batch")
            queued.append((task, batch.pk))
        for task, batch_id in queued:
            transaction.on_commit(lambda t=task, b=batch_id: _enqueue(t, b))
    if queued or failed:
        log.warning("Payout batches stuck in progress: %d sent again, %d failed", len(queued),
                    failed)
    return {"requeued": len(queued), "failed": failed}


def is_creator(membership, batch: PayoutBatch) -> bool:
    return batch.created_by_id == membership.user_id
