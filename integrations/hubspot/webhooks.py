"""HubSpot webhook deliveries: verify the v3 signature, store each event once, fetch the deal.

HubSpot sends a JSON list of events that name the deal but do not carry its state, so each
new deal event queues `fetch_deal`, which reads the deal and records a snapshot.
"""

import base64
import hashlib
import hmac
import time

from django.db import transaction
from django.http import HttpResponse

from integrations import webhook_input
from integrations.models import WebhookEvent

MAX_AGE_MS = 5 * 60 * 1000
FETCHED_EVENTS = {"deal.creation", "deal.propertyChange", "deal.restore", "deal.merge",
                  "deal.associationChange"}
# HubSpot signs the URI with these characters decoded (its "validating requests" guide).
_DECODED = {"%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
            "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";"}


def handle(request, connection) -> HttpResponse:
    if not _verified(request, connection.credentials.get("client_secret", "")):
        return HttpResponse("Invalid signature.", status=401, content_type="text/plain")
    try:
        events = webhook_input.parse(request.body)
    except webhook_input.BadPayload:
        return HttpResponse("Expected a JSON list of events.", status=400)
    if isinstance(events, dict):
        events = [events]
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        return HttpResponse("Expected a JSON list of events.", status=400)
    store_events(connection, events)
    return HttpResponse(status=204)


def store_events(connection, events: list[dict]) -> list[WebhookEvent]:
    """Store the events not seen before (a replayed delivery stores nothing) and, after
    commit, fetch each deal they name once."""
    from integrations.tasks import fetch_deal

    stored, deals = [], []
    with transaction.atomic():
        for event in events:
            if not str(event.get("eventId", "")).strip():
                continue
            # HubSpot does not promise eventId is unique on its own; with the subscription
            # and the time it is, and a replay still carries all three.
            event_id = ":".join(str(event.get(k, "")).strip()
                                for k in ("subscriptionId", "eventId", "occurredAt"))
            record, created = WebhookEvent.objects.get_or_create(
                connection=connection, event_id=event_id[:200], defaults={"payload": event})
            if not created:
                continue
            stored.append(record)
            object_id = str(event.get("objectId", "")).strip()
            if event.get("subscriptionType") in FETCHED_EVENTS and object_id not in ("", *deals):
                deals.append(object_id)
        for deal_id in deals:
            transaction.on_commit(
                lambda deal_id=deal_id: fetch_deal.delay(connection.pk, deal_id))
    return stored


def _verified(request, secret: str) -> bool:
    signature = request.headers.get("X-HubSpot-Signature-v3", "")
    timestamp = request.headers.get("X-HubSpot-Request-Timestamp", "")
    # ASCII digits of a plausible length: int() of a 400-digit string overflows the clock
    # arithmetic below.
    if not (secret and signature and timestamp.isascii() and timestamp.isdigit()
            and len(timestamp) <= 15):
        return False
    if abs(time.time() * 1000 - int(timestamp)) > MAX_AGE_MS:
        return False  # stale (or from the future): a replayed capture, not HubSpot
    expected = sign(secret, request.method, request.build_absolute_uri(), request.body,
                    timestamp)
    return hmac.compare_digest(expected.encode(), signature.encode())


def sign(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """The v3 signature: base64 HMAC-SHA256 of method + URI + body + timestamp."""
    for encoded, plain in _DECODED.items():
        uri = uri.replace(encoded, plain).replace(encoded.lower(), plain)
    source = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()
