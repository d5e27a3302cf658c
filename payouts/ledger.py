"""The commission ledger: commissions follow attributions, money moves only as entries.

`sync_commission(attribution_id)` is the one place a commission is created or reversed. It
compares what the attribution earns now (partner, amount under the plan version in effect when
the deal was won) with the live commission and appends entries to get from one to the other:

- nothing live, something earned: a new commission (`earned` +amount), pending until the
  holding period ends;
- live, nothing or something else earned: an unpaid one is cancelled (`cancelled` -amount),
  a paid one clawed back (`clawback` -amount: the partner owes it, and the next payouts net it
  off); then the new commission, if any.

A deal that changes (lost, reopened, refunded) after the clawback window leaves the commission
as it is; a person's decision (an overturn) always applies. Running it again changes nothing.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import (
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts import audit
from attribution.models import Attribution, DealSnapshot
from payouts.models import Balance, Commission, LedgerEntry, Payout
from payouts.plans import commission_for, plan_in_effect
from referrals.models import Enrolment


def post(entries: list[LedgerEntry]) -> list[LedgerEntry]:
    """Append entries and move the partners' balances with them, in the caller's
    transaction (the balance rows are locked, so concurrent posts serialize per partner)."""
    if not entries:
        return []
    if not transaction.get_connection().in_atomic_block:
        # An explicit check, not `assert`: that would vanish under `python -O`.
        raise transaction.TransactionManagementError("ledger.post() needs a transaction")
    created = LedgerEntry.objects.bulk_create(entries)
    moves = defaultdict(int)
    for entry in entries:
        moves[(entry.partner_id, entry.currency, entry.network_id)] += entry.amount_minor
    for (partner_id, currency, network_id), amount in sorted(moves.items()):
        balance, _ = Balance.objects.select_for_update().get_or_create(
            partner_id=partner_id, currency=currency, defaults={"network_id": network_id})
        Balance.objects.filter(pk=balance.pk).update(amount_minor=F("amount_minor") + amount,
                                                     updated_at=timezone.now())
    return created


def with_owed(balances: QuerySet) -> QuerySet:
    """Annotate balances with `owed`: what the partner owes from clawbacks in that currency,
    not yet netted off. The balance is its unpaid live commissions minus what it owes, so the
    debt is the one minus the other, less the offsets of its payouts still in flight (already
    promised to the debt). One query; payouts/batches.py computes the same for a whole network
    in one grouped statement."""
    same = {"partner_id": OuterRef("partner_id"), "currency": OuterRef("currency")}

    def total(queryset, field):
        return Coalesce(Subquery(queryset.filter(**same).order_by().values("partner_id")
                                 .annotate(s=Sum(field)).values("s")[:1]), Value(0))

    unpaid = total(Commission.objects.filter(status__in=Commission.UNPAID), "amount_minor")
    in_flight = total(Payout.objects.filter(
        status__in=(Payout.READY, Payout.SENDING, Payout.FAILED)), "offset_minor")
    return balances.annotate(owed=ExpressionWrapper(unpaid - F("amount_minor") - in_flight,
                                                    output_field=IntegerField()))


@dataclass(frozen=True)
class Desired:
    partner_id: int
    referral_id: int
    program_id: int
    plan: object
    amount_minor: int
    currency: str
    basis: dict
    earned_at: object
    deal_amount_minor: int


@dataclass(frozen=True)
class Outlook:
    """What an attribution earns now (`desired`), or in words why it earns nothing."""

    desired: Desired | None
    reason: str = ""


def outlook(attribution: Attribution, snapshot: DealSnapshot) -> Outlook:
    """What the attribution earns now given the deal's newest snapshot, or why nothing (no
    partner, waiting for review, deal not won, no plan in effect, nothing to pay). The
    referral's page shows the reason; `earned_by` is what the ledger acts on."""
    if attribution.partner_id is None or attribution.referral_id is None:
        return Outlook(None, "The deal is not credited to any registration.")
    if attribution.status == Attribution.NEEDS_REVIEW:
        return Outlook(None, "The attribution waits for a person's review.")
    if snapshot.outcome != DealSnapshot.WON:
        return Outlook(None, "The deal was lost." if snapshot.outcome == DealSnapshot.LOST
                       else "The deal was reopened.")
    referral = attribution.referral
    earned_at = snapshot.closed_at or snapshot.received_at
    plan = plan_in_effect(referral.program_id, earned_at)
    if plan is None:
        return Outlook(None, f"No commission plan was in effect on {earned_at:%-d %B %Y}, "
                             "when the deal was won.")
    tier = (Enrolment.objects.filter(program_id=referral.program_id,
                                     partner_id=attribution.partner_id)
            .values_list("tier", flat=True).first()) or "registered"
    earned = commission_for(plan, snapshot.amount_minor, snapshot.currency, tier)
    if earned.amount_minor <= 0:
        return Outlook(None, earned.basis.get("reason") or "The plan pays nothing on this deal.")
    return Outlook(Desired(attribution.partner_id, referral.pk, referral.program_id, plan,
                           earned.amount_minor, earned.currency, earned.basis, earned_at,
                           snapshot.amount_minor or 0))


def earned_by(attribution: Attribution, snapshot: DealSnapshot) -> Desired | None:
    return outlook(attribution, snapshot).desired


def newest_snapshot(attribution: Attribution) -> DealSnapshot:
    """The deal as the CRM last reported it. A person's decision keeps the attribution on the
    snapshot it was decided on, but a deal lost since then still takes the commission back."""
    return (DealSnapshot.objects.filter(vendor_id=attribution.vendor_id,
                                        provider=attribution.provider,
                                        external_deal_id=attribution.external_deal_id)
            .order_by("-received_at", "-pk").first()) or attribution.snapshot


def _same(live: Commission, desired: Desired | None) -> bool:
    if desired is None:
        return False
    if (live.partner_id, live.referral_id) != (desired.partner_id, desired.referral_id):
        return False
    if live.status == Commission.REJECTED:
        return True  # finance said no to this partner's commission on this deal: it stays no
    return (live.amount_minor, live.currency, live.plan_id) == (
        desired.amount_minor, desired.currency, desired.plan.pk)


def _why(attribution: Attribution, outcome: str, live: Commission,
         desired: Desired | None) -> str:
    if attribution.partner_id != live.partner_id or attribution.referral_id != live.referral_id:
        return "attribution changed"
    if outcome == DealSnapshot.LOST:
        return "deal lost"
    if outcome == DealSnapshot.OPEN or attribution.status == Attribution.NEEDS_REVIEW:
        return "deal reopened"
    if desired is None:
        return "nothing earned any more"
    return "deal amount changed"


def sync_commission(attribution_id: int, *, now=None) -> Commission | None:
    """Bring the attribution's commission in line with the attribution. Idempotent; safe to
    run from any number of retried tasks at once (the attribution row is locked)."""
    now = now or timezone.now()
    with transaction.atomic():
        attribution = (Attribution.objects.select_for_update(of=("self",))
                       .select_related("snapshot", "referral").filter(pk=attribution_id).first())
        if attribution is None:
            return None
        live = (Commission.objects.select_for_update()
                .filter(attribution=attribution).exclude(status__in=Commission.RETIRED).first())
        snapshot = newest_snapshot(attribution)
        desired = earned_by(attribution, snapshot)
        if live is not None and _same(live, desired):
            return live
        if live is None and desired is None:
            return None
        if live is not None:
            why = _why(attribution, snapshot.outcome, live, desired)
            by_person = why == "attribution changed"
            if not by_person and now > live.clawback_until:
                # Past the clawback window the partner keeps what it earned.
                return live
            _retire(live, why, now)
        if desired is None:
            return None
        return _create(attribution, desired, now)


def _retire(commission: Commission, why: str, now) -> None:
    entries = []
    if commission.status == Commission.PAID:
        commission.status = Commission.CLAWED_BACK
        entries.append(commission_entry(commission, LedgerEntry.CLAWBACK,
                                        -commission.amount_minor, f"Clawed back: {why}"))
    else:
        if commission.status != Commission.REJECTED:  # a rejection already took it back
            entries.append(commission_entry(commission, LedgerEntry.CANCELLED,
                                            -commission.amount_minor, f"Cancelled: {why}"))
        commission.status = Commission.CANCELLED
    commission.retired_reason, commission.retired_at = why, now
    commission.save(update_fields=["status", "retired_reason", "retired_at"])
    post(entries)
    audit.record(f"commission.{commission.status}", commission, network_id=commission.network_id,
                 after={"reason": why, "amount_minor": commission.amount_minor,
                        "currency": commission.currency})


def _create(attribution: Attribution, desired: Desired, now) -> Commission:
    plan = desired.plan
    payable_at = desired.earned_at + timedelta(days=plan.holding_days)
    commission = Commission(
        network_id=attribution.network_id, vendor_id=attribution.vendor_id,
        partner_id=desired.partner_id, program_id=desired.program_id, plan=plan,
        attribution=attribution, referral_id=desired.referral_id,
        external_deal_id=attribution.external_deal_id,
        deal_name=(attribution.snapshot.account_name or "")[:200],
        deal_amount_minor=desired.deal_amount_minor, amount_minor=desired.amount_minor,
        currency=desired.currency, basis=desired.basis, earned_at=desired.earned_at,
        payable_at=payable_at,
        clawback_until=desired.earned_at + timedelta(days=plan.clawback_days),
        status=Commission.PAYABLE if payable_at <= now else Commission.PENDING)
    commission.save()  # the attribution row lock keeps a second live commission out
    post([commission_entry(commission, LedgerEntry.EARNED, commission.amount_minor,
                           "Commission earned")])
    audit.record("commission.earned", commission, network_id=commission.network_id,
                 after={"amount_minor": commission.amount_minor,
                        "currency": commission.currency, "basis": commission.basis})
    return commission


def commission_entry(commission: Commission, kind: str, amount: int, memo: str, actor=None):
    return LedgerEntry(network_id=commission.network_id, partner_id=commission.partner_id,
                       currency=commission.currency, amount_minor=amount, kind=kind,
                       commission=commission, memo=memo[:200], actor=actor)


def release_due(now=None) -> int:
    """Holding periods that ended: pending -> payable. One conditional UPDATE; safe twice."""
    now = now or timezone.now()
    return Commission.objects.filter(status=Commission.PENDING, payable_at__lte=now).update(
        status=Commission.PAYABLE)
