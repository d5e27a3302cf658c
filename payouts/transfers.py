"""Sending payouts: one Stripe Transfer per payout, exactly once; the batch's status follows.

A payout moves `ready -> sending -> paid` (or `failed`; or `cancelled`). After a transient
failure (Stripe unreachable, 5xx, 429) the payout records when to try again (`next_attempt_at`,
with backoff, SEND_MAX_RETRIES times) and the every-minute sweep sends it then, with a worker or
with eager Celery alike: nothing is raised out of the task, so an eager `.delay()` never loses a
retry. A refusal (or the last transient failure) waits for finance's Retry or Cancel. The rules
that make "exactly once" hold across crashes, retries and duplicate tasks:

1. Claim first: a conditional UPDATE (ready, failed with its automatic attempt due, or sending
   for longer than STUCK_AFTER -> sending, attempts + 1) is committed before Stripe is called,
   so two workers never send the same payout at the same time.
2. One idempotency key per payout (`payout.idempotency_key`): a retry after a lost answer gets
   Stripe's first answer back instead of a second transfer. A Stripe refusal is saved under its
   key and replayed for 24 hours, so after one the next attempt uses a new key generation
   (a refusal created nothing, so a new key cannot pay twice).
3. On any retry (attempts > 1) the batch's transfer_group is searched first for a transfer
   whose metadata names this payout, and that transfer is adopted: this covers retries beyond
   the 24-hour idempotency window and the `transfer.created` webhook racing our own commit.
4. Recording is one transaction on the locked payout row, and the ledger allows one `paid`
   entry per payout.

A batch that started sending gets its status from its payouts in one place,
`refresh_batch_status` (the counts and the rule are in payouts.batch_status), called whenever
one of them changes.
"""

import logging
from dataclasses import asdict
from datetime import timedelta

import stripe
from django.db import transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from accounts import audit, roles
from accounts.errors import ServiceError
from accounts.notifications import notify, resolve
from accounts.services.guards import require
from partnerhub.money import format_money
from payouts import ledger, stripe_api
from payouts.batch_status import (
    UNDER_WAY,
    Progress,
    batch_progress,
    failure_reason,
    failures_subject,
    payouts_text,
)
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

log = logging.getLogger(__name__)

STUCK_AFTER = timedelta(minutes=10)
SEND_MAX_RETRIES = 6  # automatic retries after transient failures (7 attempts in all)
SENDABLE = (Payout.READY, Payout.FAILED)
COMMISSIONS_CHANGED = ("A commission in this payout changed after the batch was built; cancel "
                       "this payout and build a new batch")
EARNINGS_URL = "/earnings/"
ACCOUNT_URL = "/payout-account/"


def send_backoff(failures: int) -> int:
    """Seconds from a failed attempt to the next, after `failures` earlier transient failures
    in a row: 30 s, 1 min, 2 min, 4 min, ... capped at 30 min."""
    return min(30 * 2 ** failures, 30 * 60)


def payout_subject(payout: Payout) -> str:
    """Notifications asking someone to fix what stopped this payout (accounts.notifications)."""
    return f"payout:{payout.public_id}:failed"


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
            # robust: one payout's trouble (an unexpected error) never holds up the others
            transaction.on_commit(lambda pk=payout_id: tasks.send_payout.delay(pk),
                                  robust=True)
    refresh_batch_status(batch_id)
    return ids


def refresh_batch_status(batch_id: int) -> str | None:
    """The one place a batch that started sending gets its status, from its payouts (see
    PayoutBatch); called whenever one of them changes. Returns the status, or None for a batch
    that has not started sending. A change is audited, ends the notices of earlier failures,
    and an outcome is told to whoever built and approved the batch."""
    payouts = Payout.objects.filter(batch_id=batch_id)
    # While transfers are under way (most calls) nothing changes: no lock, two small reads.
    if (PayoutBatch.objects.filter(pk=batch_id, status=PayoutBatch.SENDING).exists()
            and payouts.filter(UNDER_WAY).exists()):
        return PayoutBatch.SENDING
    with transaction.atomic():
        batch = (PayoutBatch.objects.select_for_update()
                 .filter(pk=batch_id, status__in=PayoutBatch.STARTED).first())
        if batch is None:
            return None
        progress = batch_progress(batch_id)
        status = progress.status
        if status == batch.status:
            return status
        before, batch.status = batch.status, status
        fields = ["status"]
        if status in (PayoutBatch.SENT, PayoutBatch.PARTLY_FAILED) and batch.sent_at is None:
            # Sending ended with money out (a finance retry may end it again later).
            batch.sent_at = timezone.now()
            fields.append("sent_at")
        elif status == PayoutBatch.CANCELLED:
            batch.cancelled_at = timezone.now()
            fields.append("cancelled_at")
        batch.save(update_fields=fields)
        audit.record(f"payout_batch.{status}", batch, network_id=batch.network_id,
                     before={"status": before}, after=asdict(progress))
        resolve(failures_subject(batch))
        _tell_outcome(batch, progress)
    return status


def _tell_outcome(batch: PayoutBatch, progress: Progress) -> None:
    paid, failed = progress.paid, progress.failed
    titles = {
        PayoutBatch.SENT: f"Payout batch sent: {payouts_text(paid)} paid",
        PayoutBatch.PARTLY_FAILED: f"Payout batch partly failed: {payouts_text(paid)} paid, "
                                   f"{failed} failed",
        PayoutBatch.FAILED: f"Payout batch failed: {payouts_text(failed)} failed, nothing was "
                            f"paid",
    }
    if batch.status not in titles:
        return  # sending again, or closed by finance cancelling every payout
    body, subject = "", ""
    if failed:
        body = (f"{failure_reason(batch.pk)} Retry or cancel the failed payouts on the batch "
                f"page.")
        subject = failures_subject(batch)
    people = [batch.created_by, batch.approved_by]
    title = titles[batch.status]
    url = reverse("payouts:batch_detail", args=[batch.public_id])
    transaction.on_commit(lambda: notify(people, "payout_batch", network_id=batch.network_id,
                                         title=title, body=body, url=url, subject=subject))



# --- One payout ---------------------------------------------------------------------------

def send_payout(payout_id: int) -> Payout | None:
    """Send one payout (the `send_payout` task). Returns the payout, or None when there was
    nothing to do (already paid, cancelled, being sent by someone else, failed and not due).
    Whatever Stripe answers is recorded on the payout, never raised: a transient failure
    plans the next automatic attempt."""
    now = timezone.now()
    claimable = (Q(status=Payout.READY) | Q(status=Payout.FAILED, next_attempt_at__lte=now)
                 | Q(status=Payout.SENDING, last_attempt_at__lt=now - STUCK_AFTER))
    claimed = (Payout.objects.filter(claimable, pk=payout_id,
                                     batch__status__in=PayoutBatch.STARTED)
               .update(status=Payout.SENDING, attempts=F("attempts") + 1, last_attempt_at=now,
                       next_attempt_at=None))
    if not claimed:
        return None
    payout = Payout.objects.select_related("batch", "partner").get(pk=payout_id)
    blocked = check_sendable(payout)
    if blocked is not None:
        code, message = blocked
        _fail(payout, code, message, notify_partner=code in ("no_account", "account_not_ready",
                                                             "tax_profile"))
    else:
        payout = _transfer(payout)
    refresh_batch_status(payout.batch_id)
    return payout


def _transfer(payout: Payout) -> Payout:
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
        return payout
    except stripe.StripeError as error:
        failure = stripe_api.classify(error)
        _fail(payout, failure.code, failure.message, key_spent=failure.answer_saved,
              transient=failure.transient)
        return payout
    return record_transfer(payout.pk, transfer)


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
        payout.next_attempt_at = None
        payout.save(update_fields=["status", "paid_at", "stripe_transfer_id",
                                   "stripe_account_id", "failure_code", "failure_message",
                                   "next_attempt_at"])
        resolve(payout_subject(payout))
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
    """Record a failed attempt of the claimed payout. After a transient failure the next
    automatic attempt is planned (counted from this attempt's start), until the failures in a
    row pass SEND_MAX_RETRIES."""
    failures = payout.transient_failures + 1 if transient else 0
    retry_at = None
    if transient and failures <= SEND_MAX_RETRIES:
        retry_at = payout.last_attempt_at + timedelta(seconds=send_backoff(failures - 1))
    with transaction.atomic():
        done = Payout.objects.filter(pk=payout.pk, status=Payout.SENDING).update(
            status=Payout.FAILED, failure_code=code[:64], failure_message=message,
            key_generation=F("key_generation") + (1 if key_spent else 0),
            transient_failures=failures, next_attempt_at=retry_at)
        if not done:
            return False  # recorded as paid meanwhile (the webhook)
        payout.status, payout.failure_code, payout.failure_message = Payout.FAILED, code, message
        payout.transient_failures, payout.next_attempt_at = failures, retry_at
        audit.record("payout.failed", payout, network_id=payout.network_id,
                     after={"code": code, "message": message, "transient": transient,
                            "key_spent": key_spent, "attempts": payout.attempts,
                            "next_attempt_at": retry_at})
        if notify_partner:
            users = members_with(payout.partner_id, roles.PARTNER, roles.PAYOUT_VIEW)
            amount = format_money(payout.amount_minor, payout.currency)
            transaction.on_commit(lambda: notify(
                users, "payout_failed", network_id=payout.network_id,
                title=f"We could not send your payout of {amount}", body=message,
                url=ACCOUNT_URL, subject=payout_subject(payout)))
    return True


# --- Finance actions ----------------------------------------------------------------------

def retry_payout(actor, payout: Payout) -> Payout:
    """Finance sends a failed payout again now (after fixing what stopped it, or without
    waiting for its automatic attempt), with a new round of automatic retries. Returns the
    payout as it is after the attempt when Celery runs eagerly (the quickstart), ready while a
    worker has it; whatever Stripe answers is recorded on it, never raised."""
    from payouts import tasks

    require(actor, roles.PAYOUT_MANAGE, payout)
    with transaction.atomic():
        done = (Payout.objects.filter(pk=payout.pk, status=Payout.FAILED,
                                      batch__status__in=PayoutBatch.STARTED)
                .update(status=Payout.READY, next_attempt_at=None, transient_failures=0))
        if not done:
            raise ServiceError("Only a failed payout of a batch being sent can be retried.")
        payout.refresh_from_db()
        audit.record("payout.retried", payout, actor=actor,
                     after={"previous_failure": payout.failure_message})
        refresh_batch_status(payout.batch_id)
        # robust: an unexpected error in an eager run is logged; the payout shows its state
        transaction.on_commit(lambda: tasks.send_payout.delay(payout.pk), robust=True)
    payout.refresh_from_db()
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
            status=Payout.CANCELLED, next_attempt_at=None)
        if not done:
            raise ServiceError("This payout is being sent or was paid meanwhile.")
        resolve(payout_subject(payout))
        released = (Commission.objects.filter(payout_id=payout.pk)
                    .exclude(status=Commission.PAID).update(payout=None))
        payout.refresh_from_db()
        audit.record("payout.cancelled", payout, actor=actor,
                     after={"commissions_released": released,
                            "amount_minor": payout.amount_minor, "currency": payout.currency})
    refresh_batch_status(payout.batch_id)
    return payout


def sweep_stuck(now=None) -> list[int]:
    """The every-minute sweep (beat): sends what should be moving and is not. Failed payouts
    whose automatic attempt is due; payouts left sending for longer than STUCK_AFTER (a worker
    died between the claim and the commit); ready payouts of a batch that started sending
    long ago, and approved batches that never started (lost tasks). The claim, the idempotency
    key and the transfer-group lookup make each of them safe. Returns the payouts sent."""
    from payouts import tasks

    now = now or timezone.now()
    cutoff = now - STUCK_AFTER
    for batch_id in PayoutBatch.objects.filter(
            status=PayoutBatch.APPROVED, approved_at__lt=cutoff).values_list("pk", flat=True):
        _run(tasks.send_batch, batch_id)
    ids = list(Payout.objects.filter(
        Q(status=Payout.FAILED, next_attempt_at__lte=now)
        | Q(status=Payout.SENDING, last_attempt_at__lt=cutoff)
        | Q(status=Payout.READY, batch__status=PayoutBatch.SENDING, batch__approved_at__lt=cutoff)
    ).order_by("pk").values_list("pk", flat=True)[:500])
    for payout_id in ids:
        _run(tasks.send_payout, payout_id)
    for batch_id in PayoutBatch.objects.filter(status=PayoutBatch.SENDING).values_list(
            "pk", flat=True):
        refresh_batch_status(batch_id)
    return ids


def _run(task, item_id: int) -> None:
    """Queue one sweep item (with eager Celery: run it here); one item's unexpected error is
    logged and never stops the others."""
    try:
        task.delay(item_id)
    except Exception:  # noqa: BLE001 - logged with its traceback; the next sweep tries again
        log.exception("The payout sweep could not run %s(%s)", task.name, item_id)
