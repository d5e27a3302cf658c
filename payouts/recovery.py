"""Recovering what a partner that left the network owes: Stripe transfer reversals on its
newest paid transfers (`recovered` ledger entries). An active partner's debt is netted off its
next payouts instead (payouts.batches).

Before reversing anything on a transfer, what Stripe already reversed on it is read and any part
not in our books is recorded first (`record_reversal`, shared with the `transfer.reversed`
webhook): an earlier attempt whose answer was lost may have reversed money, and the debt may
have changed since. The reversal's idempotency key names the transfer's state (how much was
reversed before it), never the amount wanted, so a double click or a retry from the same state
reverses once; a new state, or a refusal Stripe saved under the key, gets a new key."""

from dataclasses import dataclass

import stripe
from django.db import transaction
from django.db.models import F

from accounts import audit, roles
from accounts.errors import ServiceError
from accounts.models import AuditEvent, Organization
from accounts.services.guards import require
from payouts import ledger, stripe_api
from payouts.models import Balance, LedgerEntry, Payout


@dataclass
class Recovery:
    debt_minor: int
    recovered_minor: int
    reversals: list  # (payout, amount_minor, reversal id; "" for one found already made)


def partner_debt(partner: Organization, currency: str) -> int:
    """What the partner owes in `currency`: clawbacks not yet netted off (ledger.with_owed)."""
    owed = (ledger.with_owed(Balance.objects.filter(partner=partner, currency=currency))
            .values_list("owed", flat=True).first())
    return max(0, owed or 0)


def recover_by_reversal(actor, partner: Organization, currency: str) -> Recovery:
    """Take back what a departed (suspended or rejected) partner owes by reversing its newest
    paid transfers. Only then: an active partner's debt is netted off its next payouts."""
    require(actor, roles.PAYOUT_MANAGE)
    currency = (currency or "").upper()
    if (actor.organization.kind != roles.OPERATOR or partner.kind != roles.PARTNER
            or partner.network_id != actor.organization.network_id):
        raise ServiceError("Partner not found.")
    if partner.status not in (Organization.SUSPENDED, Organization.REJECTED):
        raise ServiceError("The partner is still active: what it owes is netted off its next "
                           "payouts. Reversals are for partners that left the network.")
    debt = partner_debt(partner, currency)
    if debt <= 0:
        raise ServiceError(f"{partner.name} owes nothing in {currency}.")
    client = stripe_api.client()
    recovery = Recovery(debt, 0, [])
    candidates = (Payout.objects.filter(partner=partner, currency=currency, status=Payout.PAID,
                                        reversed_minor__lt=F("amount_minor"))
                  .exclude(stripe_transfer_id="").order_by("-paid_at", "-pk"))
    for payout in candidates:
        try:
            if not _recover_from(client, actor, partner, payout, recovery):
                break
        except stripe.StripeError as error:
            if recovery.reversals:
                break  # keep what was recovered; the rest is reported as still owed
            raise stripe_api.service_error(error, "Stripe refused the reversal") from error
    return recovery


def _recover_from(client, actor, partner, payout: Payout, recovery: Recovery) -> bool:
    """Bring the payout's books up to what Stripe reversed, then reverse what is still owed
    (as far as this transfer allows). False once nothing more is owed."""
    transfer = client.v1.transfers.retrieve(payout.stripe_transfer_id).to_dict()
    already = int(transfer.get("amount_reversed") or 0)
    if already > payout.reversed_minor:  # reversed at Stripe, not in our books yet
        before = payout.reversed_minor
        payout = record_reversal(payout.pk, already, actor=actor)
        recovery.recovered_minor += payout.reversed_minor - before
        recovery.reversals.append((payout, payout.reversed_minor - before, ""))
    owed = partner_debt(partner, payout.currency)  # the books now include what was found
    want = min(owed, payout.amount_minor - max(already, payout.reversed_minor))
    if owed <= 0 or want <= 0:
        return owed > 0
    reversal = _reverse(client, actor, payout, want, already)
    recorded = record_reversal(payout.pk, already + want, actor=actor,
                               reversal_id=reversal["id"])
    recovery.recovered_minor += want
    recovery.reversals.append((recorded, want, reversal["id"]))
    return True


def _reverse(client, actor, payout: Payout, amount: int, already: int) -> dict:
    key = reversal_key(payout, already)
    try:
        return client.v1.transfers.reversals.create(
            payout.stripe_transfer_id,
            {"amount": amount, "metadata": {"payout_id": str(payout.public_id),
                                            "reason": "recovery"}},
            {"idempotency_key": key},
        ).to_dict()
    except stripe.StripeError as error:
        failure = stripe_api.classify(error)
        audit.record("payout.reversal_failed", payout, actor=actor,
                     after={"amount_minor": amount, "code": failure.code,
                            "message": failure.message, "transient": failure.transient,
                            "reversed_before": already, "idempotency_key": key,
                            "answer_saved": failure.answer_saved})
        raise


def reversal_key(payout: Payout, already: int) -> str:
    """`recover-<payout>-after-<amount reversed before>`, with a generation suffix once Stripe
    saved a refusal under it (it would replay that refusal for 24 hours). A refusal reversed
    nothing, and each attempt reads the transfer first, so a new key cannot reverse twice."""
    spent = AuditEvent.objects.filter(
        network_id=payout.network_id, target_type="payout", target_id=str(payout.public_id),
        action="payout.reversal_failed", after__reversed_before=already,
        after__answer_saved=True).count()
    key = f"recover-{payout.public_id}-after-{already}"
    return f"{key}-{spent + 1}" if spent else key


def record_reversal(payout_id: int, total_reversed: int, *, actor=None,
                    reversal_id: str = "") -> Payout:
    """Stripe says `total_reversed` of this payout's transfer has been reversed: post a
    `recovered` entry for the part not recorded yet (our own reversal and its
    `transfer.reversed` webhook may arrive in any order) and mark it reversed when all is."""
    with transaction.atomic():
        payout = Payout.objects.select_for_update().get(pk=payout_id)
        new = min(total_reversed, payout.amount_minor) - payout.reversed_minor
        if new <= 0:
            return payout
        payout.reversed_minor += new
        if payout.reversed_minor >= payout.amount_minor:
            payout.status = Payout.REVERSED
        payout.save(update_fields=["reversed_minor", "status"])
        ledger.post([LedgerEntry(
            network_id=payout.network_id, partner_id=payout.partner_id,
            currency=payout.currency, amount_minor=new, kind=LedgerEntry.RECOVERED,
            payout=payout, actor=getattr(actor, "user", None),
            memo=f"Recovered by reversing transfer {payout.stripe_transfer_id}"
                 + (f" ({reversal_id})" if reversal_id else ""))])
        audit.record("payout.reversed", payout, actor=actor, network_id=payout.network_id,
                     after={"amount_minor": new, "reversed_minor": payout.reversed_minor,
                            "reversal": reversal_id})
    return payout
