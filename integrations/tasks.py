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


@shared_task(autoretry_for=(CrmError,), retry_backoff=True, max_retries=5)
def poll_connection(connection_id: int) -> int:
    return inbound.poll_connection(connection_id)


@shared_task
def poll_all() -> int:
    ids = list(CrmConnection.objects.live().exclude(provider="builtin")
               .values_list("pk", flat=True))
    for connection_id in ids:
        poll_connection.delay(connection_id)
    return len(ids)


@shared_task(autoretry_for=(CrmError,), retry_backoff=True, max_retries=5)
def fetch_deal(connection_id: int, external_deal_id: str) -> bool:
    return inbound.fetch_and_ingest(connection_id, external_deal_id) is not None
