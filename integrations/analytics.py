"""Server-side product analytics (Segment). One function, `track`, that every app calls.

Events leave after the transaction commits, carry ids and business facts only (never contact
details), and go nowhere when SEGMENT_WRITE_KEY is not set.
"""

import logging
import threading

from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)

# Properties that would carry personal contact details: refused outright.
FORBIDDEN_PROPERTIES = frozenset({"email", "phone", "contact_name", "contact_email",
                                  "contact_phone", "contact_title", "name"})

_client = None
_lock = threading.Lock()


def client():
    """The shared Segment client, or None when analytics is disabled."""
    global _client
    if not settings.SEGMENT_WRITE_KEY:
        return None
    with _lock:
        if _client is None:
            from segment.analytics import Client

            _client = Client(
                write_key=settings.SEGMENT_WRITE_KEY,
                host=settings.SEGMENT_HOST or None,
                sync_mode=settings.SEGMENT_SYNC_MODE,
                on_error=lambda error, batch: log.warning("segment delivery failed: %s", error),
            )
        return _client


def reset_client() -> None:
    """Flush and drop the client (worker shutdown; tests that change settings)."""
    global _client
    with _lock:
        if _client is not None:
            _client.flush()
            if _client.consumers:  # sync-mode clients have no consumer threads to join
                _client.shutdown()
        _client = None


def track(event: str, *, user_id=None, organization_id=None, properties: dict | None = None):
    """Record `event` once the current transaction commits."""
    properties = _check(dict(properties or {}))
    if not settings.SEGMENT_WRITE_KEY:
        return
    user = str(user_id) if user_id else None
    group = str(organization_id) if organization_id else None

    def send():
        segment = client()
        if segment is None:
            return
        segment.track(user_id=user, anonymous_id=None if user else "system", event=event,
                      properties=properties, context={"groupId": group} if group else {})

    transaction.on_commit(send)


def _check(properties: dict) -> dict:
    leaked = FORBIDDEN_PROPERTIES & set(properties)
    if leaked:
        raise ValueError(f"analytics events must not carry contact details: {sorted(leaked)}")
    return properties


def identify(user, *, traits: dict | None = None) -> None:
    """Tell Segment who a user is: ids and business traits only (no name, no email)."""
    if not settings.SEGMENT_WRITE_KEY:
        return
    user_id, traits = str(user.public_id), _check(dict(traits or {}))
    transaction.on_commit(lambda: client() and client().identify(user_id=user_id,
                                                                 traits=traits))


def group(user, organization, *, traits: dict | None = None) -> None:
    """Tie a user to their organization (a Segment group) with the organization's facts."""
    if not settings.SEGMENT_WRITE_KEY:
        return
    traits = _check({"kind": organization.kind, "status": organization.status,
                     "country": str(organization.country or ""), **(traits or {})})
    user_id, group_id = str(user.public_id), str(organization.public_id)
    transaction.on_commit(lambda: client() and client().group(user_id=user_id,
                                                              group_id=group_id, traits=traits))
