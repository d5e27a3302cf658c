"""Webhook bodies an attacker or a misbehaving CRM sends (issue 17, findings 4 and 5): never a
500, nothing unreadable stored; an authentic Pipedrive event we cannot apply is kept and
answered 200, so Pipedrive does not retry it forever."""

import json

import pytest

from integrations import webhook_input
from integrations.models import WebhookEvent
from tests.integrations.test_pipedrive import (  # noqa: F401
    _deliver,
    _roomy_rate_limit,
    admin,
    connection,
    pipedrive,
)

pytestmark = pytest.mark.django_db


def _nested(depth):
    node = {}
    for _ in range(depth):
        node = {"a": node}
    return node


@pytest.mark.parametrize("body", [
    b"\xff\xfe not utf-8", json.dumps(_nested(900)).encode(), json.dumps(_nested(40)).encode(),
    b'{"value": NaN}', b"[" * 5000, b"x" * (webhook_input.MAX_BYTES + 1),
])
def test_garbage_is_refused(body):
    with pytest.raises(webhook_input.BadPayload):
        webhook_input.parse(body)


def test_nul_and_control_characters_are_dropped():
    assert webhook_input.parse(b'{"na\\u0000me": "Ac\\u0000me\\u001b Corp\\n"}') == {
        "name": "Acme Corp\n"}


@pytest.mark.parametrize("deal_fields", [
    {"custom_fields": "not an object"}, {"value": 1e30}, {"currency": {"code": "USD"}},
    {"update_time": "9999-12-31T23:59:59Z"},
])
def test_an_authentic_pipedrive_event_we_cannot_apply_is_kept_and_answered_200(
        connection, pipedrive, deal_fields):  # noqa: F811
    deal = pipedrive.add_deal("Hooli")
    deal.update(deal_fields)  # what Pipedrive (or a broken integration) sent
    response = _deliver(connection, pipedrive.webhook(deal["id"]))
    assert response.status_code == 200
    assert WebhookEvent.objects.filter(connection=connection).count() == 1


def test_a_deeply_nested_pipedrive_body_is_a_400_and_stores_nothing(connection):  # noqa: F811
    response = _deliver(connection, _nested(900))
    assert response.status_code == 400
    assert not WebhookEvent.objects.exists()
