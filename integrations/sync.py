"""The push side of CRM sync: an outbox drained by Celery.

`enqueue_push` writes (or re-arms) the referral's SyncRecord inside the caller's transaction
and starts `push_connection` on commit. The task claims due rows with SKIP LOCKED, pushes them
in the provider's batch size under a shared rate limit, and records each outcome. Pushes are
upserts keyed by our referral id, so a retried or repeated push never duplicates anything.
"""

import logging
import random
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from integrations import ratelimit
from integrations.crypto import CredentialsUnreadable
from integrations.models import CrmConnection, SyncAttempt, SyncRecord
from integrations.payloads import payload_for
from integrations.providers.base import CrmError
from integrations.registry import connector_for

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
BASE_DELAY = 15  # seconds; doubles per attempt
MAX_DELAY = 60 * 60
STUCK_AFTER = timedelta(minutes=15)


def live_connection(vendor_id) -> CrmConnection | None:
    return CrmConnection.objects.live().filter(vendor_id=vendor_id).first()


def enqueue_push(referral, event: str) -> SyncRecord | None:
    """Queue `referral` for its vendor's CRM after `event` ("submitted" or "accepted")."""
    connection = live_connection(referral.vendor_id)
    if connection is None:
        return None
    if event == "submitted" and connection.push_on != "submitted":
        return None
    record, created = SyncRecord.objects.select_for_update().get_or_create(
        connection=connection, referral=referral)
    if not created:
        record.status, record.attempts = SyncRecord.PENDING, 0
        record.next_attempt_at, record.last_error = timezone.now(), ""
        record.save(update_fields=["status", "attempts", "next_attempt_at", "last_error",
                                   "updated_at"])
    kick_after_commit(connection.pk)
    return record


def kick_after_commit(connection_id: int, countdown: float = 0) -> None:
    from integrations.tasks import push_connection

    transaction.on_commit(
        lambda: push_connection.apply_async((connection_id,), countdown=countdown))


def backoff(attempts: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, never sooner than the provider asked."""
    delay = min(MAX_DELAY, BASE_DELAY * 2 ** max(0, attempts - 1))
    delay = random.uniform(delay / 2, delay)
    return max(delay, retry_after or 0)


def _claim(connection, size: int) -> list[SyncRecord]:
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            SyncRecord.objects.select_for_update(skip_locked=True)
            .filter(connection=connection, status=SyncRecord.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at", "pk")[:size])
        if rows:
            SyncRecord.objects.filter(pk__in=[r.pk for r in rows]).update(
                status=SyncRecord.RUNNING, updated_at=now)
    for row in rows:
        row.attempts += 1
    return rows


def _release(rows, wait: float) -> None:
    SyncRecord.objects.filter(pk__in=[r.pk for r in rows]).update(
        status=SyncRecord.PENDING, next_attempt_at=timezone.now() + timedelta(seconds=wait))


def push_connection(connection_id: int) -> dict:
    """Drain the connection's due outbox rows. Returns counts; safe to run concurrently and
    to retry (claimed rows are invisible to other runs)."""
    connection = CrmConnection.objects.select_related("vendor").get(pk=connection_id)
    summary = {"pushed": 0, "retry": 0, "failed": 0, "dead": 0, "rate_limited": 0}
    # A connection whose credentials were refused waits (rows stay queued) until a
    # successful "Test connection" re-activates it.
    if connection.status != CrmConnection.ACTIVE:
        return summary
    try:
        connector = connector_for(connection)
    except CredentialsUnreadable:
        from integrations.connections import mark_connection_error

        mark_connection_error(connection, "The saved credentials cannot be read with the "
                                          "configured encryption keys. Connect again.")
        return summary
    calls, per = connector.rate_limit
    while True:
        batch = _claim(connection, connector.batch_size)
        if not batch:
            break
        wait = ratelimit.reserve(connection.pk, calls, per)
        if wait:
            _release(batch, wait)
            summary["rate_limited"] += len(batch)
            from integrations.tasks import push_connection as task

            task.apply_async((connection.pk,), countdown=wait)
            break
        if _push_batch(connection, connector, batch, summary):
            break  # credentials refused: stop before failing every other row too
    return summary


def _push_batch(connection, connector, batch, summary) -> bool:
    """Push one batch and record each outcome. True when the CRM refused our credentials."""
    referrals = {str(r.referral.public_id): r for r in SyncRecord.objects.filter(
        pk__in=[r.pk for r in batch]).select_related("referral", "referral__partner")
        .prefetch_related("referral__assignments__user")}
    attempts = {r.pk: r.attempts for r in batch}
    payloads = [payload_for(r.referral, connection, r.external_ids)
                for r in referrals.values()]
    try:
        results = connector.push(payloads)
    except CrmError as exc:
        results = {p.referral_id: exc for p in payloads}
    except Exception as exc:  # an SDK surprise: retry like a network error, but log it
        log.exception("push to %s failed unexpectedly", connection.provider)
        results = {p.referral_id: CrmError(f"Unexpected error: {exc.__class__.__name__}",
                                           transient=True) for p in payloads}
    auth_error = None
    soonest_retry = None
    attempts_log = []
    now = timezone.now()
    for referral_id, record in referrals.items():
        record.attempts = attempts[record.pk]
        outcome = results.get(referral_id) or CrmError("The CRM did not answer for this row.",
                                                       transient=True)
        if isinstance(outcome, CrmError):
            state = _fail(record, outcome, now)
            summary[state] += 1
            auth_error = auth_error or (outcome if outcome.auth else None)
            if state == "retry":
                delay = (record.next_attempt_at - now).total_seconds()
                soonest_retry = delay if soonest_retry is None else min(soonest_retry, delay)
            attempts_log.append(SyncAttempt(record=record, at=now, outcome=state,
                                            http_status=outcome.status,
                                            message=outcome.message[:2000]))
        else:
            _succeed(record, outcome, now)
            summary["pushed"] += 1
            attempts_log.append(SyncAttempt(record=record, at=now, outcome="ok", message=", ".join(
                f"{k} {v}" for k, v in outcome.external_ids.items())))
    # One transaction (one commit) for the whole batch. Plain per-row UPDATEs: Django's
    # bulk_update compiles a CASE per field and row, which costs more than it saves here.
    fields = ("status", "attempts", "next_attempt_at", "last_error", "external_ids",
              "external_url", "synced_at", "updated_at")
    with transaction.atomic():
        for record in referrals.values():
            SyncRecord.objects.filter(pk=record.pk).update(
                **{name: getattr(record, name) for name in fields})
        SyncAttempt.objects.bulk_create(attempts_log)
        if summary["pushed"]:
            CrmConnection.objects.filter(pk=connection.pk).update(last_success_at=now)
    if auth_error is not None:
        from integrations.connections import mark_connection_error

        mark_connection_error(connection, auth_error.message)
    if soonest_retry is not None and auth_error is None:
        from integrations.tasks import push_connection as task

        task.apply_async((connection.pk,), countdown=max(1, soonest_retry))
    return auth_error is not None


def _succeed(record, result, now) -> None:
    record.status, record.last_error = SyncRecord.DONE, ""
    record.external_ids, record.external_url = result.external_ids, result.url
    record.synced_at = record.updated_at = now


def _fail(record, error: CrmError, now) -> str:
    if error.transient and record.attempts < MAX_ATTEMPTS:
        state, record.status = "retry", SyncRecord.PENDING
        record.next_attempt_at = now + timedelta(seconds=backoff(record.attempts,
                                                                 error.retry_after))
    elif error.transient:
        state, record.status = "dead", SyncRecord.DEAD
    else:
        state, record.status = "failed", SyncRecord.FAILED
    record.last_error = error.message[:2000]
    record.updated_at = now
    return state


def requeue_stuck(now=None) -> int:
    """Rows left RUNNING by a worker that died go back to the queue."""
    now = now or timezone.now()
    return SyncRecord.objects.filter(status=SyncRecord.RUNNING,
                                     updated_at__lt=now - STUCK_AFTER).update(
        status=SyncRecord.PENDING, next_attempt_at=now)


def due_connection_ids(now=None) -> list[int]:
    now = now or timezone.now()
    return list(SyncRecord.objects.filter(status=SyncRecord.PENDING, next_attempt_at__lte=now)
                .values_list("connection_id", flat=True).distinct())
