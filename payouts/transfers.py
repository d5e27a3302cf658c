"""Sending payouts: one Stripe Transfer per payout, exactly once.

A payout moves `ready -> sending -> paid` (or `failed`, retried by the task or by finance; or
`cancelled`). The rules that make "exactly once" hold across crashes, retries and duplicate
tasks:

1. Claim first: a conditional UPDATE (ready|failed, or sending for longer than STUCK_AFTER ->
   sending, attempts + 1) is committed before Stripe is called, so two workers never send the
   same payout at the same time.
2. One idempotency key per payout (`payout.idempotency_key`): a retry after a lost answer gets
   Stripe's first answer back instead of a second transfer. A Stripe refusal is saved under its
   key and replayed for 24 hours, so after one the next attempt uses a new key generation
   (a refusal created nothing, so a new key cannot pay twice).
3. On any retry (attempts > 1) the batch's transfer_group is searched first for a transfer
   whose metadata names this payout, and that transfer is adopted: this covers retries beyond
   the 24-hour idempotency window and the `transfer.created` webhook racing our own commit.
4. Recording is one transaction on the locked payout row, and the ledger allows one `paid`
   entry per payout.
"""

from datetime import timedelta

import stripe
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from accounts import audit, roles
from accounts.errors import ServiceError
from accounts.notifications import notify
from accounts.services.guards import require
from partnerhub.money import format_money
from payouts import ledger, stripe_api
from payouts.models import (
    Commission,
    LedgerEntry,
    Payout,
    PayoutAccount,
    PayoutBatch,
    TaxProfile,
)
from payouts.tax import profile_problems
from referrals.services.events import members_with

STUCK_AFTER = timedelta(minutes=10)
SENDABLE = (Payout.READY, Payout.FAILED)
COMMISSIONS_CHANGED = ("A commission in this payout changed after the batch was built; cancel "
                       "this payout and build a new batch")
EARNINGS_URL = "/earnings/"
ACCOUNT_URL = "/payout-account/"


class TransientFailure(Exception):
    """Stripe could not be reached or asked us to come back later. The payout is recorded as
    failed with the message (finance sees it) and the task tries again with backoff."""

    def __init__(self, failure: stripe_api.Failure):
        super().__init__(failure.message)
        self.failure = failure


# --- Batches ------------------------------------------------------------------------------

def send_batch(batch_id: int) -> list[int]:
    """Start sending an approved batch: SENDING, then one `send_payout` task per ready payout.
    Safe to run twice (a second run re-enqueues what is still ready; the claim keeps each
    payout to one sender)."""
    from payouts import tasks

    with transaction.atomic():
        batch = PayoutBatch.objects.select_for_update().filter(pk=batch_id).first()
        if batch is None or batch.status not in (PayoutBatch.APPROVED, PayoutBatch.SENDING):
            return []
        if batch.status == PayoutBatch.APPROVED:
            batch.status = PayoutBatch.SENDING
            batch.save(update_fields=["status"])
            audit.record("payout_batch.sending", batch, network_id=batch.network_id)
        ids = list(batch.payouts.filter(status=Payout.READY).order_by("pk")
                   .values_list("pk", flat=True))
        for payout_id in ids:
            # robust: one payout's trouble (an eager run's retry) never holds up the others
            transaction.on_commit(lambda pk=payout_id: tasks.send_payout.delay(pk),
                                  robust=True)
    finish_batch(batch_id)
    return ids


def finish_batch(batch_id: int) -> bool:
    """A sending batch with no payout left ready or sending is sent. One conditional UPDATE."""
    left = Payout.objects.filter(batch_id=OuterRef("pk"),
                                 status__in=(Payout.READY, Payout.SENDING))
    with transaction.atomic():
        done = (PayoutBatch.objects.filter(pk=batch_id, status=PayoutBatch.SENDING)
                .filter(~Exists(left)).update(status=PayoutBatch.SENT, sent_at=timezone.now()))
        if done:
            batch = PayoutBatch.objects.select_related("created_by", "approved_by").get(
                pk=batch_id)
            counts = dict(batch.payouts.order_by().values_list("status")
                          .annotate(n=Count("pk")))
            audit.record("payout_batch.sent", batch, network_id=batch.network_id, after=counts)
            failed = counts.get(Payout.FAILED, 0)
            transaction.on_commit(lambda: notify(
                [batch.created_by, batch.approved_by], "payout_batch",
                network_id=batch.network_id,
                title=f"Payout batch sent: {counts.get(Payout.PAID, 0)} paid"
                      + (f", {failed} failed" if failed else ""),
                url=_url("payouts:batch_detail", batch.public_id)))
    return bool(done)


def _url(name: str, *args) -> str:
    """A page of the batches or earnings screens (built alongside this module), if it exists."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return ""


# --- One payout ---------------------------------------------------------------------------

def send_payout(payout_id: int) -> Payout | None:
    """Send one payout (the `send_payout` task). Returns the payout, or None when there was
    nothing to do (already paid, cancelled, being sent by someone else). Raises
    TransientFailure when the task should try again later."""
    now = timezone.now()
    claimable = Q(status__in=SENDABLE) | Q(status=Payout.SENDING,
                                           last_attempt_at__lt=now - STUCK_AFTER)
    claimed = (Payout.objects.filter(claimable, pk=payout_id,
                                     batch__status__in=(PayoutBatch.SENDING, PayoutBatch.SENT))
               .update(status=Payout.SENDING, attempts=F("attempts") + 1, last_attempt_at=now))
    if not claimed:
        return None
    payout = Payout.objects.select_related("batch", "partner").get(pk=payout_id)
    blocked = check_sendable(payout)
    if blocked is not None:
        code, message = blocked
        _fail(payout, code, message, notify_partner=code in ("no_account", "account_not_ready",
                                                             "tax_profile"))
        finish_batch(payout.batch_id)
        return payout
    account = PayoutAccount.objects.get(partner_id=payout.partner_id)
    try:
        client = stripe_api.client()
        transfer = find_transfer(client, payout) if payout.attempts > 1 else None
        if transfer is None:
            transfer = client.v1.transfers.create(
                transfer_params(payout, account), {"idempotency_key": transfer_key(payout)}
            ).to_dict()
    except ServiceError as error:  # no API key on this server
        _fail(payout, "not_configured", error.message)
        finish_batch(payout.batch_id)
        return payout
    except stripe.StripeError as error:
        failure = stripe_api.classify(error)
        _fail(payout, failure.code, failure.message, key_spent=key_spent(error, failure),
              transient=failure.transient)
        finish_batch(payout.batch_id)
        if failure.transient:
            raise TransientFailure(failure) from error
        return payout
    payout = record_transfer(payout.pk, transfer)
    finish_batch(payout.batch_id)
    return payout


def check_sendable(payout: Payout) -> tuple[str, str] | None:
    """Why this payout cannot be sent now, as (code, message), or None."""
    name = payout.partner.name
    account = PayoutAccount.objects.filter(partner_id=payout.partner_id).first()
    if account is None:
        return "no_account", f"{name} has not connected a payout account with Stripe yet."
    if not account.can_receive_transfers:
        why = account.disabled_reason or (
            "onboarding is not finished" if not account.details_submitted
            else "the transfers capability is not active")
        due = f" (due: {', '.join(account.requirements_due[:5])})" \
            if account.requirements_due else ""
        return ("account_not_ready",
                f"{name}'s Stripe account cannot receive transfers yet: {why}{due}.")
    problems = profile_problems(TaxProfile.objects.filter(partner_id=payout.partner_id).first())
    if problems:
        return "tax_profile", f"{name}'s tax profile is incomplete: {' '.join(problems)}"
    rows = list(payout.commissions.values_list("status", "amount_minor", "currency"))
    if (not rows or any(status != Commission.APPROVED or currency != payout.currency
                        for status, _, currency in rows)
            or sum(amount for _, amount, _ in rows) != payout.gross_minor):
        return "commissions_changed", COMMISSIONS_CHANGED
    if payout.amount_minor <= 0:
        return "nothing_to_send", "Nothing to transfer: clawbacks offset the whole payout."
    return None


def transfer_params(payout: Payout, account: PayoutAccount) -> dict:
    return {
        "amount": payout.amount_minor,
        "currency": payout.currency.lower(),
        "destination": account.stripe_account_id,
        "transfer_group": payout.batch.transfer_group,
        "description": f"Partner commissions, batch {payout.batch.public_id}"[:100],
        "metadata": {"payout_id": str(payout.public_id),
                     "batch_id": str(payout.batch.public_id),
                     "partner_id": str(payout.partner.public_id)},
    }


def transfer_key(payout: Payout) -> str:
    """The payout's idempotency key, in a new generation after each answer Stripe saved as a
    refusal (it would replay that refusal for 24 hours)."""
    return payout.transfer_key


def key_spent(error: stripe.StripeError, failure: stripe_api.Failure) -> bool:
    """Did Stripe save this answer under the key? Refusals (4xx after the request ran) and
    5xx answers it marks not worth retrying are replayed; connection errors, rate limits and
    lock timeouts are not."""
    if failure.http_status is None or failure.http_status in (401, 409, 429):
        return False
    if not failure.transient:
        return True
    headers = getattr(error, "headers", None) or {}
    should_retry = next((v for k, v in headers.items() if k.lower() == "stripe-should-retry"),
                        None)
    return should_retry == "false"


def find_transfer(client, payout: Payout) -> dict | None:
    """The transfer Stripe already made for this payout, found in the batch's transfer group
    by the payout id in its metadata."""
    listing = client.v1.transfers.list({"transfer_group": payout.batch.transfer_group,
                                        "limit": 100})
    for transfer in listing.auto_paging_iter():
        transfer = transfer.to_dict()
        if (transfer.get("metadata") or {}).get("payout_id") == str(payout.public_id):
            return transfer
    return None


def record_transfer(payout_id: int, transfer: dict, *, source: str = "api") -> Payout:
    """The transfer exists at Stripe: the payout is paid, its commissions too, and the ledger
    says so. Idempotent (the row lock and the one-paid-entry constraint), shared with the
    `transfer.created` webhook."""
    with transaction.atomic():
        payout = (Payout.objects.select_for_update(of=("self",)).select_related("partner")
                  .get(pk=payout_id))
        if payout.status in (Payout.PAID, Payout.REVERSED):
            return payout
        if payout.status == Payout.CANCELLED:
            # The money left although the payout was cancelled: keep the evidence for finance.
            Payout.objects.filter(pk=payout.pk).update(stripe_transfer_id=transfer["id"])
            audit.record("payout.transfer_after_cancel", payout, network_id=payout.network_id,
                         after={"transfer": transfer["id"], "amount": transfer.get("amount")})
            return payout
        now = timezone.now()
        payout.status, payout.paid_at = Payout.PAID, now
        payout.stripe_transfer_id = transfer["id"]
        payout.stripe_account_id = transfer.get("destination") or ""
        payout.failure_code, payout.failure_message = "", ""
        payout.save(update_fields=["status", "paid_at", "stripe_transfer_id",
                                   "stripe_account_id", "failure_code", "failure_message"])
        Commission.objects.filter(payout=payout, status=Commission.APPROVED).update(
            status=Commission.PAID)
        ledger.post([LedgerEntry(
            network_id=payout.network_id, partner_id=payout.partner_id,
            currency=payout.currency, amount_minor=-payout.amount_minor, kind=LedgerEntry.PAID,
            payout=payout, memo=f"Payout sent (Stripe transfer {transfer['id']})"[:200])])
        audit.record("payout.paid", payout, network_id=payout.network_id,
                     after={"transfer": transfer["id"], "amount_minor": payout.amount_minor,
                            "currency": payout.currency, "attempts": payout.attempts,
                            "source": source})
        users = members_with(payout.partner_id, roles.PARTNER, roles.PAYOUT_VIEW)
        amount = format_money(payout.amount_minor, payout.currency)
        transaction.on_commit(lambda: notify(
            users, "payout_sent", network_id=payout.network_id,
            title=f"{amount} is on its way to your Stripe account",
            body="Stripe pays it out to your bank account on your payout schedule.",
            url=EARNINGS_URL))
    return payout


def _fail(payout: Payout, code: str, message: str, *, transient: bool = False,
          key_spent: bool = False, notify_partner: bool = False) -> bool:
    with transaction.atomic():
        done = Payout.objects.filter(pk=payout.pk, status=Payout.SENDING).update(
            status=Payout.FAILED, failure_code=code[:64], failure_message=message,
            key_generation=F("key_generation") + (1 if key_spent else 0))
        if not done:
            return False  # recorded as paid meanwhile (the webhook)
        payout.status, payout.failure_code, payout.failure_message = Payout.FAILED, code, message
        audit.record("payout.failed", payout, network_id=payout.network_id,
                     after={"code": code, "message": message, "transient": transient,
                            "key_spent": key_spent, "attempts": payout.attempts})
        if notify_partner:
            users = members_with(payout.partner_id, roles.PARTNER, roles.PAYOUT_VIEW)
            amount = format_money(payout.amount_minor, payout.currency)
            transaction.on_commit(lambda: notify(
                users, "payout_failed", network_id=payout.network_id,
                title=f"We could not send your payout of {amount}", body=message,
                url=ACCOUNT_URL))
    return True


# --- Finance actions ----------------------------------------------------------------------

def retry_payout(actor, payout: Payout) -> Payout:
    """Finance sends a failed payout again (after fixing what stopped it)."""
    from payouts import tasks

    require(actor, roles.PAYOUT_MANAGE, payout)
    with transaction.atomic():
        done = (Payout.objects.filter(pk=payout.pk, status=Payout.FAILED,
                                      batch__status__in=(PayoutBatch.SENDING, PayoutBatch.SENT))
                .update(status=Payout.READY))
        if not done:
            raise ServiceError("Only a failed payout of a batch being sent can be retried.")
        payout.refresh_from_db()
        audit.record("payout.retried", payout, actor=actor,
                     after={"previous_failure": payout.failure_message})
        transaction.on_commit(lambda: tasks.send_payout.delay(payout.pk))
    return payout


def cancel_payout(actor, payout: Payout) -> Payout:
    """Finance gives up on a ready or failed payout: it is cancelled and its commissions go
    back to the pool for the next batch. A payout that was attempted is first looked up at
    Stripe: if the transfer was in fact made (a timeout hid it), it is recorded as paid
    instead and the cancel is refused."""
    require(actor, roles.PAYOUT_MANAGE, payout)
    if payout.status not in SENDABLE:
        raise ServiceError("Only a payout that is ready or failed can be cancelled.")
    if payout.attempts and stripe_api.is_configured():
        try:
            found = find_transfer(stripe_api.client(), payout)
        except stripe.StripeError as error:
            raise ServiceError("Could not check with Stripe whether this payout was sent "
                               f"({stripe_api.classify(error).message}); try again.") from error
        if found is not None:
            record_transfer(payout.pk, found, source="cancel_check")
            raise ServiceError("Stripe did make this transfer: the payout is now recorded as "
                               "paid, not cancelled.")
    with transaction.atomic():
        done = Payout.objects.filter(pk=payout.pk, status__in=SENDABLE).update(
            status=Payout.CANCELLED)
        if not done:
            raise ServiceError("This payout is being sent or was paid meanwhile.")
        released = (Commission.objects.filter(payout_id=payout.pk)
                    .exclude(status=Commission.PAID).update(payout=None))
        payout.refresh_from_db()
        audit.record("payout.cancelled", payout, actor=actor,
                     after={"commissions_released": released,
                            "amount_minor": payout.amount_minor, "currency": payout.currency})
    finish_batch(payout.batch_id)
    return payout


def sweep_stuck(now=None) -> list[int]:
    """Payouts left sending for longer than STUCK_AFTER (a worker died between the claim and
    the commit) are sent again; the idempotency key and the transfer-group lookup make that
    safe. Ready payouts of a batch that started sending long ago (a lost task) too."""
    from payouts import tasks

    now = now or timezone.now()
    cutoff = now - STUCK_AFTER
    ids = list(Payout.objects.filter(
        Q(status=Payout.SENDING, last_attempt_at__lt=cutoff)
        | Q(status=Payout.READY, batch__status=PayoutBatch.SENDING, batch__approved_at__lt=cutoff)
    ).order_by("pk").values_list("pk", flat=True)[:500])
    for payout_id in ids:
        tasks.send_payout.delay(payout_id)
    for batch_id in PayoutBatch.objects.filter(status=PayoutBatch.SENDING).values_list(
            "pk", flat=True):
        finish_batch(batch_id)
    return ids
