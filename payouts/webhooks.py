"""Stripe webhooks: verify, store once, apply.

`receive(payload, signature)` checks the `Stripe-Signature` header with the SDK against each
configured secret (the platform endpoint and the Connect endpoint sign with different ones),
stores the event once by its id and processes it right away. Processing is quick (a few rows,
no call to Stripe) and idempotent, so doing it inline keeps the answer honest: Stripe retries
a delivery that failed, and a replay of a processed event is a no-op. An event that failed to
process is still answered 200 (it is stored, so nothing is lost) and kept with its error; the
10-minute payouts sweep processes such events again (`reprocess_pending`), as does a
redelivery.

Handled: `account.updated`, `transfer.created` (adopt a transfer our commit lost),
`transfer.reversed` (record reversals made outside `recover_by_reversal` too), and a connected
account's `payout.paid` / `payout.failed` (its bank payouts).
"""

import json
import logging
from datetime import timedelta

import stripe
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts import audit, roles
from accounts.notifications import notify
from payouts import connect, recovery, stripe_api, transfers
from payouts.models import Payout, PayoutAccount, StripeEvent
from referrals.services.events import members_with

log = logging.getLogger(__name__)
TOLERANCE = 300  # seconds: Stripe's default; older signatures are replays


class BadSignature(Exception):
    pass


def verify(payload: bytes, signature: str | None) -> dict:
    """The event, if one of the configured secrets signed this payload recently."""
    secrets = stripe_api.webhook_secrets()
    if not secrets or not signature:
        raise BadSignature("missing signature or no webhook secret configured")
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, signature, secret, TOLERANCE)
        except stripe.SignatureVerificationError:
            continue
        try:
            event = json.loads(payload)
        except ValueError as error:
            raise BadSignature("payload is not JSON") from error
        if not (isinstance(event, dict) and isinstance(event.get("id"), str)
                and isinstance(event.get("type"), str) and event["id"]):
            raise BadSignature("not an event")
        return event
    raise BadSignature("no secret matches the signature (or it is too old)")


def receive(payload: bytes, signature: str | None) -> StripeEvent | None:
    """Verify and store the event; process it unless it was already. Returns the stored event,
    or None for a replay that was processed before."""
    event = verify(payload, signature)
    try:
        with transaction.atomic():
            stored, created = StripeEvent.objects.get_or_create(
                event_id=event["id"][:100],
                defaults={"type": event["type"][:100],
                          "account": str(event.get("account") or "")[:64],
                          "payload": event})
    except IntegrityError:  # the same event delivered twice at the same moment
        return None
    if not created and stored.processed_at is not None:
        return None
    process(stored.pk)
    return stored


HANDLERS = {}


def handles(*types):
    def register(fn):
        for type_ in types:
            HANDLERS[type_] = fn
        return fn
    return register


def process(event_pk: int) -> None:
    """Apply a stored event (once: the row is locked and marked processed)."""
    with transaction.atomic():
        stored = StripeEvent.objects.select_for_update().filter(pk=event_pk).first()
        if stored is None or stored.processed_at is not None:
            return
        handler = HANDLERS.get(stored.type)
        try:
            with transaction.atomic():
                if handler is not None:
                    handler(stored.payload)
        except Exception as error:  # kept with the event; Stripe's redelivery tries again
            log.exception("Stripe event %s (%s) failed", stored.event_id, stored.type)
            stored.error = f"{error.__class__.__name__}: {error}"[:2000]
            stored.save(update_fields=["error"])
            return
        stored.processed_at, stored.error = timezone.now(), ""
        stored.save(update_fields=["processed_at", "error"])


def reprocess_pending(*, older_than=timedelta(minutes=5), within=timedelta(days=3),
                      limit: int = 100) -> int:
    """Events stored but not applied (their handler failed): try them again."""
    now = timezone.now()
    ids = list(StripeEvent.objects.filter(processed_at__isnull=True,
                                          received_at__lt=now - older_than,
                                          received_at__gte=now - within)
               .order_by("received_at").values_list("pk", flat=True)[:limit])
    for pk in ids:
        process(pk)
    return len(ids)


def _object(event: dict) -> dict:
    return (event.get("data") or {}).get("object") or {}


@handles("account.updated")
def account_updated(event: dict) -> None:
    connect.apply_account_update(_object(event))


def _payout_for(transfer: dict) -> Payout | None:
    payout_id = (transfer.get("metadata") or {}).get("payout_id")
    if payout_id:
        payout = Payout.objects.filter(public_id=payout_id).first() if _uuid(payout_id) else None
        if payout is not None:
            return payout
    return Payout.objects.filter(stripe_transfer_id=transfer.get("id") or "-").first()


def _uuid(value: str) -> bool:
    import uuid

    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


@handles("transfer.created")
def transfer_created(event: dict) -> None:
    """Our own transfers announce themselves; one whose recording was lost (a crash after
    Stripe answered) is recorded here, with everything sending records."""
    transfer = _object(event)
    payout = _payout_for(transfer)
    if payout is None or payout.status in (Payout.PAID, Payout.REVERSED):
        return
    if transfer.get("amount") != payout.amount_minor or \
            (transfer.get("currency") or "").upper() != payout.currency.upper():
        audit.record("payout.transfer_mismatch", payout, network_id=payout.network_id,
                     after={"transfer": transfer.get("id"), "amount": transfer.get("amount"),
                            "currency": transfer.get("currency")})
        return
    transfers.record_transfer(payout.pk, transfer, source="webhook")
    transfers.refresh_batch_status(payout.batch_id)


@handles("transfer.reversed")
def transfer_reversed(event: dict) -> None:
    transfer = _object(event)
    payout = _payout_for(transfer)
    if payout is None or payout.status not in (Payout.PAID, Payout.REVERSED):
        return
    recovery.record_reversal(payout.pk, int(transfer.get("amount_reversed") or 0))


@handles("payout.paid", "payout.failed", "payout.canceled", "payout.updated")
def bank_payout(event: dict) -> None:
    """A connected account's payout to its bank (events carry `account`); platform payouts
    (no `account`) are none of ours."""
    account_id = event.get("account")
    if not account_id:
        return
    obj = _object(event)
    account = (PayoutAccount.objects.select_for_update().filter(stripe_account_id=account_id)
               .first())
    if account is None:
        return
    status = (obj.get("status") or event["type"].split(".", 1)[1])[:20]
    failure = ""
    if status == "failed":
        failure = (obj.get("failure_message") or obj.get("failure_code") or "failed")[:200]
    was_failed = account.last_bank_payout_status == "failed"
    account.last_bank_payout_status, account.last_bank_payout_failure = status, failure
    account.save(update_fields=["last_bank_payout_status", "last_bank_payout_failure"])
    if status == "failed" and not was_failed:
        audit.record("payout_account.bank_payout_failed", account,
                     network_id=account.network_id,
                     after={"payout": obj.get("id"), "failure": failure})
        users = members_with(account.partner_id, roles.PARTNER, roles.PAYOUT_VIEW)
        transaction.on_commit(lambda: notify(
            users, "payout_failed", network_id=account.network_id,
            title="Stripe could not pay out to your bank account",
            body=f"{failure} Update your bank details in Stripe (continue onboarding from "
                 "the payout account page).", url=connect.ACCOUNT_URL))
