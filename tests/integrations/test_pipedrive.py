"""Pipedrive sync end to end: the real connector (requests) against a fake Pipedrive that speaks
the documented REST API (tests/fakes/pipedrive.py), driven through the real referral lifecycle,
outbox, webhook view and poller."""

import base64
import json
import logging
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.errors import ServiceError
from attribution.models import DealSnapshot
from integrations import connections, inbound, sync
from integrations.models import CrmConnection, SyncAttempt, SyncRecord, WebhookEvent
from integrations.pipedrive.connector import RATE_LIMIT, PipedriveConnector
from integrations.registry import connector_for
from referrals import services
from referrals.models import Referral
from tests.fakes.pipedrive import API_TOKEN, REFERRAL_FIELD, FakePipedrive
from tests.referrals.factories import ReferralFactory

HOOK_USER, HOOK_PASSWORD = "partnerhub-hook", "correct horse battery staple"
MAPPING = {"11": "open", "12": "open", "13": "won", "won": "won", "lost": "lost"}


@pytest.fixture
def pipedrive(httpserver):
    return FakePipedrive(httpserver)


@pytest.fixture(autouse=True)
def _roomy_rate_limit(monkeypatch):
    """Tests push many times a second, and the real limit would put rows off to the next
    2-second window (eager Celery ignores the countdown, so the re-run finds nothing due).
    The limit's value is checked in its own test."""
    monkeypatch.setattr(PipedriveConnector, "rate_limit", (10_000, 1))


@pytest.fixture
def admin(world):
    return world.member("vendor", "admin")


def _connect(admin, pipedrive, object_mode="deal"):
    connection = connections.connect(
        admin, provider="pipedrive", base_url=pipedrive.url, object_mode=object_mode,
        referral_id_field=REFERRAL_FIELD,
        credentials={"api_token": API_TOKEN, "webhook_user": HOOK_USER,
                     "webhook_password": HOOK_PASSWORD})
    return connections.save_mapping(
        admin, connection, pipeline_id="1", stage_mapping=MAPPING,
        stage_labels={"11": "Qualified", "12": "Proposal", "13": "Contract signed",
                      "won": "Won", "lost": "Lost"}, owner_mapping={})


@pytest.fixture
def connection(admin, pipedrive):
    return _connect(admin, pipedrive)


COMPANIES = ["Hooli", "Vandelay Industries", "Wonka Industries", "Stark Logistics",
             "Tyrell Systems", "Soylent Foods"]


@pytest.fixture
def submit(world, programs):
    """A submitted referral; each one names a different account, so none conflicts."""
    names = iter(COMPANIES)

    def make(**fields):
        name = fields.setdefault("company_name", next(names))
        slug = name.split()[0].lower()
        fields.setdefault("website", f"https://www.{slug}.example")
        fields.setdefault("domain", f"{slug}.example")
        fields.setdefault("normalized_name", slug)
        return ReferralFactory(program=programs["acme"], partner=world.partner,
                               submitted_by=world.member("partner", "rep").user, **fields)
    return make


@pytest.fixture
def accept(world, django_capture_on_commit_callbacks):
    """Accept through the real lifecycle; the CRM push runs on commit."""
    def run(referral):
        with django_capture_on_commit_callbacks(execute=True):
            services.accept_referral(world.member("vendor", "partnerships"), referral)
        return SyncRecord.objects.get(referral=referral)
    return run


def _only(rows: dict) -> dict:
    (row,) = rows.values()
    return row


def _due_now(record):
    SyncRecord.objects.filter(pk=record.pk).update(next_attempt_at=timezone.now())


# --- Connecting ---------------------------------------------------------------------------

def test_connection_test_names_the_company(admin, connection, pipedrive):
    assert connections.test_connection(admin, connection) == (
        "Acme Cloud Inc (acme.pipedrive.com) as Integration User")
    (request,) = [r for r in pipedrive.requests if r["path"] == "/api/v1/users/me"]
    assert request["headers"]["X-Api-Token"] == API_TOKEN


def test_a_rejected_token_fails_the_connection_test(admin, connection, pipedrive):
    pipedrive.api_token = "regenerated-in-pipedrive"
    with pytest.raises(ServiceError, match="unauthorized access"):
        connections.test_connection(admin, connection)
    connection.refresh_from_db()
    assert connection.status == CrmConnection.ERROR


def test_pipelines_list_stages_in_order_plus_won_and_lost(connection):
    sales, renewals = connector_for(connection).pipelines()
    assert (sales.id, sales.label) == ("1", "Sales")
    assert [(s.id, s.label, s.closed, s.won) for s in sales.stages] == [
        ("11", "Qualified", False, False), ("12", "Proposal", False, False),
        ("13", "Contract signed", False, False), ("won", "Won (deal marked won)", True, True),
        ("lost", "Lost (deal marked lost)", True, False)]
    assert [s.id for s in renewals.stages] == ["21", "won", "lost"]


def test_rate_limit_follows_pipedrives_burst_limits():
    calls, per = RATE_LIMIT
    # A push makes at most 3 searches and 3 writes; search is capped at 10 per 2 s and
    # everything at 20 per 2 s on the smallest plan.
    assert per == 2 and calls * 3 <= 10 and calls * 6 + 2 <= 20


# --- Pushing ------------------------------------------------------------------------------

def test_first_push_creates_organization_person_and_deal(connection, pipedrive, submit, accept):
    referral = submit(company_name="Initech", contact_name="Peter Gibbons",
                      contact_email="peter@initech.com", amount_minor=4_800_050)
    record = accept(referral)

    org, person, deal = (_only(pipedrive.organizations), _only(pipedrive.persons),
                         _only(pipedrive.deals))
    assert org["name"] == "Initech"
    assert person["name"] == "Peter Gibbons" and person["org_id"] == org["id"]
    assert person["emails"] == [{"value": "peter@initech.com", "primary": True,
                                 "label": "work"}]
    assert person["phones"][0]["value"] == "+14155550100"
    assert deal["custom_fields"][REFERRAL_FIELD] == str(referral.public_id)
    assert deal["title"] == "Initech (referred by Brightpath)"
    assert (deal["org_id"], deal["person_id"]) == (org["id"], person["id"])
    assert (deal["pipeline_id"], deal["stage_id"]) == (1, 11)
    assert (deal["value"], deal["currency"]) == (48000.5, "USD")

    assert record.status == SyncRecord.DONE and record.attempts == 1
    assert record.external_ids == {"organization": str(org["id"]),
                                   "person": str(person["id"]), "deal": str(deal["id"])}
    assert record.external_url == f"https://acme.pipedrive.com/deal/{deal['id']}"
    assert SyncAttempt.objects.get(record=record).outcome == "ok"


def test_new_deals_enter_the_first_stage_mapped_open(admin, connection, pipedrive, submit,
                                                     accept):
    connections.save_mapping(admin, connection, pipeline_id="1",
                             stage_mapping={"11": "lost", "13": "won"},
                             stage_labels={}, owner_mapping={})
    accept(submit())
    assert _only(pipedrive.deals)["stage_id"] == 12


def test_repush_updates_the_deal_and_creates_nothing(connection, pipedrive, submit, accept,
                                                    django_capture_on_commit_callbacks):
    referral = submit()
    first = accept(referral)
    deal_id = _only(pipedrive.deals)["id"]

    Referral.objects.filter(pk=referral.pk).update(amount_minor=6_000_000)
    referral.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        sync.enqueue_push(referral, "accepted")

    record = SyncRecord.objects.get(pk=first.pk)
    assert record.status == SyncRecord.DONE
    assert record.external_ids == first.external_ids
    assert len(pipedrive.deals) == len(pipedrive.organizations) == len(pipedrive.persons) == 1
    for path in ("/api/v2/deals", "/api/v2/organizations", "/api/v2/persons"):
        assert pipedrive.count("POST", path) == 1
    assert pipedrive.count("PATCH", f"/api/v2/deals/{deal_id}") == 1
    assert pipedrive.deals[deal_id]["value"] == 60000


def test_existing_organization_and_person_are_reused(connection, pipedrive, submit, accept):
    referral = submit(company_name="Globex Corporation", contact_email="hank@globex.com")
    pipedrive.add_organization("Globex Corporation Holdings")  # a near miss is not a match
    org = pipedrive.add_organization("GLOBEX CORPORATION")
    person = pipedrive.add_person("Hank Scorpio", "Hank@Globex.com", org["id"])

    record = accept(referral)

    assert pipedrive.count("POST", "/api/v2/organizations") == 0
    assert pipedrive.count("POST", "/api/v2/persons") == 0
    deal = _only(pipedrive.deals)
    assert (deal["org_id"], deal["person_id"]) == (org["id"], person["id"])
    assert record.external_ids["organization"] == str(org["id"])
    assert record.external_ids["person"] == str(person["id"])


def test_lead_mode_creates_and_then_updates_a_lead(admin, pipedrive, submit, accept,
                                                   django_capture_on_commit_callbacks):
    _connect(admin, pipedrive, object_mode="lead")
    referral = submit(company_name="Umbrella", amount_minor=1_000_000, currency="EUR")
    record = accept(referral)

    lead = _only(pipedrive.leads)
    assert pipedrive.deals == {}
    assert lead[REFERRAL_FIELD] == str(referral.public_id)
    assert lead["organization_id"] == _only(pipedrive.organizations)["id"]
    assert lead["person_id"] == _only(pipedrive.persons)["id"]
    assert lead["value"] == {"amount": 10000, "currency": "EUR"}
    assert record.status == SyncRecord.DONE
    assert record.external_ids["lead"] == lead["id"]
    assert record.external_url == f"https://acme.pipedrive.com/leads/inbox/{lead['id']}"

    with django_capture_on_commit_callbacks(execute=True):
        sync.enqueue_push(referral, "accepted")
    assert len(pipedrive.leads) == 1
    assert pipedrive.count("POST", "/api/v1/leads") == 1
    assert pipedrive.count("PATCH", f"/api/v1/leads/{lead['id']}") == 1


def test_429_waits_for_retry_after_then_succeeds(connection, pipedrive, submit, accept):
    pipedrive.fail(429, retry_after="30")
    record = accept(submit())

    assert record.status == SyncRecord.PENDING and record.attempts == 1
    assert record.next_attempt_at >= timezone.now() + timedelta(seconds=29)
    attempt = SyncAttempt.objects.get(record=record)
    assert (attempt.outcome, attempt.http_status) == ("retry", 429)
    assert pipedrive.deals == {}

    _due_now(record)
    sync.push_connection(connection.pk)
    record.refresh_from_db()
    assert record.status == SyncRecord.DONE and record.attempts == 2
    assert len(pipedrive.deals) == 1


def test_401_marks_the_connection_and_tells_the_admins_once(world, connection, pipedrive,
                                                            submit, accept):
    pipedrive.api_token = "regenerated-in-pipedrive"
    first, second = accept(submit()), accept(submit())

    assert first.status == SyncRecord.FAILED
    assert "unauthorized access" in first.last_error
    # Once the token is refused, later referrals wait for a reconnect instead of failing.
    assert second.status == SyncRecord.PENDING and second.attempts == 0
    connection.refresh_from_db()
    assert connection.status == CrmConnection.ERROR
    assert "unauthorized access" in connection.last_error
    admin_email = world.member("vendor", "admin").user.email
    alerts = [m for m in mail.outbox if "rejected our credentials" in m.subject + m.body]
    assert [m.to for m in alerts] == [[admin_email]]


def test_500s_until_max_attempts_go_dead_and_retry_sync_rearms(admin, connection, pipedrive,
                                                              submit, accept,
                                                              django_capture_on_commit_callbacks):
    pipedrive.fail(500, times=None)
    record = accept(submit())
    for _ in range(sync.MAX_ATTEMPTS - 1):
        _due_now(record)
        sync.push_connection(connection.pk)
    record.refresh_from_db()
    assert record.status == SyncRecord.DEAD and record.attempts == sync.MAX_ATTEMPTS
    outcomes = list(SyncAttempt.objects.filter(record=record).values_list("outcome", flat=True))
    assert outcomes.count("retry") == sync.MAX_ATTEMPTS - 1 and outcomes[0] == "dead"
    assert pipedrive.deals == {}

    pipedrive.heal()
    with django_capture_on_commit_callbacks(execute=True):
        connections.retry_sync(admin, record)
    record.refresh_from_db()
    assert record.status == SyncRecord.DONE and record.attempts == 1
    assert len(pipedrive.deals) == 1


# --- Webhooks -----------------------------------------------------------------------------

def _deliver(connection, body, auth=(HOOK_USER, HOOK_PASSWORD)):
    headers = {}
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["HTTP_AUTHORIZATION"] = f"Basic {token}"
    return Client().post(reverse("integrations:webhook", args=["pipedrive",
                                                               connection.webhook_token]),
                         data=json.dumps(body), content_type="application/json", **headers)


@pytest.fixture
def pushed(connection, pipedrive, submit, accept):
    """An accepted referral whose deal is in Pipedrive."""
    referral = submit()
    accept(referral)
    referral.refresh_from_db()
    return referral, _only(pipedrive.deals)


def test_webhook_with_the_right_credentials_stores_a_snapshot(connection, pipedrive, pushed):
    referral, deal = pushed
    pipedrive.update_deal(deal["id"], stage_id=12, value=30000)
    response = _deliver(connection, pipedrive.webhook(deal["id"], previous={"stage_id": 11}))

    assert response.status_code == 200
    snapshot = DealSnapshot.objects.get()
    assert snapshot.referral == referral
    assert (snapshot.provider, snapshot.external_deal_id) == ("pipedrive", str(deal["id"]))
    assert (snapshot.stage, snapshot.outcome) == ("12", "open")
    assert (snapshot.amount_minor, snapshot.currency) == (3_000_000, "USD")
    assert WebhookEvent.objects.filter(connection=connection).count() == 1
    referral.refresh_from_db()
    assert referral.status == Referral.ACCEPTED


@pytest.mark.parametrize("auth", [
    (HOOK_USER, "wrong password"), ("someone-else", HOOK_PASSWORD), None,
])
def test_webhook_without_the_right_credentials_is_refused(connection, pipedrive, pushed, auth):
    _, deal = pushed
    pipedrive.update_deal(deal["id"], stage_id=13)
    response = _deliver(connection, pipedrive.webhook(deal["id"]), auth=auth)

    assert response.status_code == 401
    assert WebhookEvent.objects.count() == 0
    assert DealSnapshot.objects.count() == 0


def test_webhook_with_a_garbled_authorization_header_is_refused(connection, pipedrive, pushed):
    _, deal = pushed
    response = Client().post(
        reverse("integrations:webhook", args=["pipedrive", connection.webhook_token]),
        data=json.dumps(pipedrive.webhook(deal["id"])), content_type="application/json",
        HTTP_AUTHORIZATION="Basic not-base64!")
    assert response.status_code == 401
    assert WebhookEvent.objects.count() == 0


def test_a_replayed_event_is_stored_once(connection, pipedrive, pushed):
    _, deal = pushed
    pipedrive.update_deal(deal["id"], stage_id=12)
    body = pipedrive.webhook(deal["id"])
    retry = dict(body, meta=dict(body["meta"], attempt=2))

    assert _deliver(connection, body).status_code == 200
    assert _deliver(connection, retry).status_code == 200
    assert WebhookEvent.objects.count() == 1
    assert DealSnapshot.objects.count() == 1


@pytest.mark.parametrize("change", [{"stage_id": 13}, {"status": "won"}],
                         ids=["stage-mapped-won", "marked-won"])
def test_a_won_deal_moves_the_accepted_referral_to_won(connection, pipedrive, pushed, change):
    referral, deal = pushed
    pipedrive.update_deal(deal["id"], **change)
    assert _deliver(connection, pipedrive.webhook(deal["id"])).status_code == 200

    snapshot = DealSnapshot.objects.get()
    assert snapshot.outcome == DealSnapshot.WON
    referral.refresh_from_db()
    assert referral.status == Referral.WON


def test_a_deal_marked_lost_moves_the_referral_to_lost(connection, pipedrive, pushed):
    referral, deal = pushed
    pipedrive.update_deal(deal["id"], status="lost", lost_reason="Budget")
    _deliver(connection, pipedrive.webhook(deal["id"]))
    snapshot = DealSnapshot.objects.get()
    assert (snapshot.stage, snapshot.outcome) == ("lost", DealSnapshot.LOST)
    assert snapshot.closed_at is not None
    referral.refresh_from_db()
    assert referral.status == Referral.LOST


def test_webhooks_for_other_objects_are_acknowledged_and_ignored(connection, pipedrive, pushed):
    _, deal = pushed
    body = pipedrive.webhook(deal["id"])
    body["meta"].update(entity="person", entity_id="99")
    assert _deliver(connection, body).status_code == 200
    deleted = pipedrive.webhook(deal["id"], action="delete")
    deleted["data"], deleted["previous"] = None, deleted["data"]
    assert _deliver(connection, deleted).status_code == 200
    assert WebhookEvent.objects.count() == 2
    assert DealSnapshot.objects.count() == 0


def test_v1_webhooks_are_refused(connection, pipedrive, pushed):
    _, deal = pushed
    body = {"v": 1, "meta": {"v": 1, "action": "updated", "object": "deal", "id": deal["id"]},
            "current": deal, "previous": {}}
    assert _deliver(connection, body).status_code == 400
    assert WebhookEvent.objects.count() == 0


# --- Polling ------------------------------------------------------------------------------

def test_polling_pages_through_changes_and_the_cursor_survives_a_reload(connection, pipedrive,
                                                                        pushed):
    referral, deal = pushed
    pipedrive.max_limit = 2  # force several pages
    others = [pipedrive.add_deal(f"Direct deal {n}", value=1000 * n) for n in range(1, 4)]

    assert inbound.poll_connection(connection.pk) == 4
    assert pipedrive.count("GET", "/api/v2/deals") == 2
    stored = CrmConnection.objects.get(pk=connection.pk)
    assert stored.poll_cursor == others[-1]["update_time"]
    assert stored.last_polled_at is not None
    polls = [r for r in pipedrive.requests if r["method"] == "GET" and r["path"] == "/api/v2/deals"]
    first_request = polls[0]
    assert "updated_since" not in first_request["query"]
    assert "sort_by=update_time" in first_request["query"]

    pipedrive.update_deal(deal["id"], stage_id=13)
    assert inbound.poll_connection(connection.pk) == 1  # the overlap at the cursor is known
    last = [r for r in pipedrive.requests if r["method"] == "GET"
            and r["path"] == "/api/v2/deals"][-1]
    assert f"updated_since={stored.poll_cursor.replace(':', '%3A')}" in last["query"]
    assert CrmConnection.objects.get(pk=connection.pk).poll_cursor == deal["update_time"]
    referral.refresh_from_db()
    assert referral.status == Referral.WON

    assert inbound.poll_connection(connection.pk) == 0


def test_a_webhook_and_a_poll_of_the_same_change_make_one_snapshot(connection, pipedrive,
                                                                   pushed):
    _, deal = pushed
    pipedrive.update_deal(deal["id"], stage_id=12)
    _deliver(connection, pipedrive.webhook(deal["id"]))
    inbound.poll_connection(connection.pk)
    assert DealSnapshot.objects.filter(external_deal_id=str(deal["id"])).count() == 1


def test_deal_reads_one_deal(connection, pipedrive, pushed):
    referral, deal = pushed
    change = connector_for(connection).deal(str(deal["id"]))
    assert change.referral_id == str(referral.public_id)
    assert change.stage == "11" and change.amount_minor == 2_500_000
    assert change.version.startswith(deal["update_time"])


# --- Secrets ------------------------------------------------------------------------------

def test_the_api_token_only_ever_travels_in_the_header(caplog, admin, connection, pipedrive,
                                                      submit, accept):
    caplog.set_level(logging.DEBUG)
    accept(submit())
    pipedrive.fail(429, retry_after="1")
    accept(submit())
    inbound.poll_connection(connection.pk)
    connector_for(connection).pipelines()
    connections.test_connection(admin, connection)

    assert len(pipedrive.requests) > 10
    for request in pipedrive.requests:
        assert request["headers"].get("X-Api-Token") == API_TOKEN
        assert API_TOKEN not in request["path"] + request["query"]
        assert "api_token" not in request["query"]
    assert API_TOKEN not in caplog.text
    assert API_TOKEN not in "".join(SyncRecord.objects.values_list("last_error", flat=True))
    assert API_TOKEN not in "".join(SyncAttempt.objects.values_list("message", flat=True))
