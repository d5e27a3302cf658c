"""Pipedrive webhooks v2: /integrations/webhooks/pipedrive/<token>/.

Pipedrive does not sign deliveries; it sends the HTTP basic auth credentials we chose when the
webhook was registered. Both parts are compared in constant time, and anything that does not
carry them is answered 401 with nothing stored. Deliveries are deduplicated by the event id
(`meta.id`), so a retried delivery is stored once. A v2 deal event carries the whole deal in
`data`, which becomes a snapshot without another API call.
"""

import base64
import binascii
import hmac
import logging

from django.db import DatabaseError, transaction
from django.http import HttpResponse

from integrations import webhook_input
from integrations.inbound import ingest_change
from integrations.models import WebhookEvent
from integrations.pipedrive.connector import deal_change

log = logging.getLogger(__name__)

DEAL_ACTIONS = {"create", "change"}


def handle(request, connection) -> HttpResponse:
    if not _authenticated(request, connection.credentials):
        return HttpResponse(status=401, headers={"WWW-Authenticate": 'Basic realm="PartnerHub"'})
    try:
        body = webhook_input.parse(request.body)
    except webhook_input.BadPayload:
        return HttpResponse("Expected a JSON body.", status=400)
    meta = body.get("meta") if isinstance(body, dict) else None
    if not isinstance(meta, dict) or str(meta.get("version")) != "2.0" or not meta.get("id"):
        # A v1 webhook's meta.id names the object, not the event: it cannot be deduplicated.
        return HttpResponse("Register the webhook with version 2.0.", status=400)
    with transaction.atomic():
        _, created = WebhookEvent.objects.get_or_create(
            connection=connection, event_id=str(meta["id"])[:200], defaults={"payload": body})
        if not created:
            return HttpResponse(status=200)  # a retried delivery: already handled
        deal = body.get("data")
        if meta.get("entity") == "deal" and meta.get("action") in DEAL_ACTIONS \
                and isinstance(deal, dict) and deal.get("id"):
            _ingest(connection, deal, meta["id"])
    return HttpResponse(status=200)


def _ingest(connection, deal: dict, event_id) -> None:
    """Record the deal the authentic event carries. A deal we cannot read (a field of the
    wrong type, an amount out of range) is kept as the stored event and logged, and answered
    200 all the same: Pipedrive would otherwise retry it forever."""
    try:
        with transaction.atomic():
            ingest_change(connection, deal_change(deal, connection.referral_id_field))
    except (ValueError, TypeError, ArithmeticError, AttributeError, DatabaseError) as exc:
        log.warning("pipedrive event %s kept but not applied: %s", event_id, exc)


def _authenticated(request, credentials: dict) -> bool:
    expected_user = credentials.get("webhook_user") or ""
    expected_password = credentials.get("webhook_password") or ""
    if not expected_user or not expected_password:
        log.warning("pipedrive webhook refused: the connection has no webhook credentials")
        return False
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True) \
            .decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    if not sep:
        return False
    # Both comparisons always run, so the timing says nothing about which part was wrong.
    user_ok = hmac.compare_digest(user.encode(), expected_user.encode())
    password_ok = hmac.compare_digest(password.encode(), expected_password.encode())
    return user_ok & password_ok
