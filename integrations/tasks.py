"""Celery tasks of CRM sync. All take ids and are safe to run twice."""

from celery import shared_task

from integrations import inbound, sync
from integrations.models import CrmConnection
from integrations.providers.base import CrmError


@shared_task(acks_late=True)
def push_connection(connection_id: int) -> dict:
    return sync.push_connection(connection_id)


@shared_task
def push_due() -> int:
    """Safety net (beat): requeue stuck rows and kick every connection with due work."""
    sync.requeue_stuck()
    ids = sync.due_connection_ids()
    for connection_id in ids:
        push_connection.delay(connection_id)
    return len(ids)


@shared_task(bind=True, max_retries=5)
def poll_connection(self, connection_id: int) -> int:
    try:
        return inbound.poll_connection(connection_id)
    except CrmError as exc:
        _retry_if_transient(self, exc)
        return 0


def _retry_if_transient(task, exc: CrmError) -> None:
    """Retry what may pass (429, 5xx, network), honouring Retry-After; a permanent error
    (bad field, deleted record, revoked app) is final and already recorded."""
    if exc.transient:
        countdown = exc.retry_after or 30 * 2 ** task.request.retries
        raise task.retry(exc=exc, countdown=countdown)


@shared_task
def poll_all() -> int:
    ids = list(CrmConnection.objects.live().exclude(provider="builtin")
               .values_list("pk", flat=True))
    for connection_id in ids:
        poll_connection.delay(connection_id)
    return len(ids)


@shared_task(bind=True, max_retries=5)
def fetch_deal(self, connection_id: int, external_deal_id: str) -> bool:
    try:
        return inbound.fetch_and_ingest(connection_id, external_deal_id) is not None
    except CrmError as exc:
        _retry_if_transient(self, exc)
        return False
