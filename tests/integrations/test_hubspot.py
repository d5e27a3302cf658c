"""HubSpot sync end to end: the real hubspot-api-client against a fake HubSpot
(tests/fakes/hubspot.py), driven through the referral lifecycle and the sync engine."""

import base64
import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from attribution.models import DealSnapshot
from integrations import connections, inbound, sync
from integrations.models import CrmConnection, SyncRecord, WebhookEvent
from integrations.registry import connector_for
from referrals import services
from referrals.models import Referral
from tests.fakes.hubspot import REFERRAL_ID, FakeHubSpot, to_ms
from tests.referrals.factories import ReferralFactory

SECRET = "3c0d6a52-hubspot-app-client-secret"
STAGES = {"qualifiedtobuy": "open", "appointmentscheduled": "open",
          "presentationscheduled": "open", "closedwon": "won", "closedlost": "lost"}


@pytest.fixture
def fake(httpserver):
    return FakeHubSpot(httpserver)


@pytest.fixture
def admin(world):
    return world.member("vendor", "admin")


def connect(admin, fake, token=None):
    connection = connections.connect(
        admin, provider="hubspot", base_url=fake.url, object_mode="company_contact_deal",
        referral_id_field=REFERRAL_ID,
        credentials={"access_token": token or fake.token, "client_secret": SECRET})
    return connections.save_mapping(admin, connection, pipeline_id="default",
                                    stage_mapping=STAGES, stage_labels={}, owner_mapping={})


@pytest.fixture
def connection(admin, programs, fake):
    return connect(admin, fake)


def make_referral(world, programs, **fields):
    return ReferralFactory(program=programs["acme"], partner=world.partner,
                           submitted_by=world.member("partner", "rep").user, **fields)


def accept(admin, referral, capture) -> SyncRecord:
    with capture(execute=True):
        services.accept_referral(admin, referral)
    return SyncRecord.objects.get(referral=referral)


def make_due(record):
    SyncRecord.objects.filter(pk=record.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1))


def deliver(connection, events, *, secret=SECRET, timestamp=None, signature=None):
    """POST a delivery the way HubSpot signs it (v3)."""
    url = reverse("integrations:webhook", args=["hubspot", connection.webhook_token])
    body = json.dumps(events).encode()
    timestamp = str(timestamp or int(time.time() * 1000))
    if signature is None:
        source = b"POST" + f"http://testserver{url}".encode() + body + timestamp.encode()
        signature = base64.b64encode(
            hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()
    return Client().post(url, data=body, content_type="application/json", headers={
        "X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": timestamp})


def deal_event(deal_id, event_id=9001, kind="deal.propertyChange"):
    return {"eventId": event_id, "subscriptionId": 771, "portalId": 4242, "appId": 31,
            "occurredAt": int(time.time() * 1000), "subscriptionType": kind,
            "attemptNumber": 0, "objectId": int(deal_id), "changeSource": "CRM_UI",
            "propertyName": "dealstage", "propertyValue": "closedwon"}


def test_connection_reads_the_account_and_its_pipelines(admin, connection):
    assert "4242" in connections.test_connection(admin, connection)
    pipelines = connector_for(connection).pipelines()
    default = next(p for p in pipelines if p.id == "default")
    assert default.stages[0].id == "appointmentscheduled"
    won = {s.id for p in pipelines for s in p.stages if s.won}
    closed = {s.id for p in pipelines for s in p.stages if s.closed}
    assert won == {"closedwon", "1003"}
    assert closed == {"closedwon", "closedlost", "1003", "1004"}


def test_first_push_creates_company_contact_deal_and_associations(
        world, programs, admin, connection, fake, django_capture_on_commit_callbacks):
    referral = make_referral(world, programs, notes="Wants 40 seats.")
    record = accept(admin, referral, django_capture_on_commit_callbacks)

    assert record.status == SyncRecord.DONE
    rid = str(referral.public_id)
    company = fake.find("companies", REFERRAL_ID, rid)
    contact = fake.find("contacts", "email", referral.contact_email)
    deal = fake.find("deals", REFERRAL_ID, rid)
    assert record.external_ids == {"company": company["id"], "contact": contact["id"],
                                   "deal": deal["id"]}
    assert record.external_url == \
        f"https://app.hubspot.com/contacts/4242/record/0-3/{deal['id']}"
    assert company["properties"]["domain"] == referral.domain
    assert contact["properties"]["firstname"] == "Jane"
    props = deal["properties"]
    assert props["dealname"] == f"{referral.company_name} (referred by Brightpath)"
    assert (props["amount"], props["deal_currency_code"]) == ("25000", "USD")
    # The first stage mapped "open" in the pipeline's own order, not the mapping's.
    assert (props["pipeline"], props["dealstage"]) == ("default", "appointmentscheduled")
    assert "Brightpath" in props["description"] and "Wants 40 seats." in props["description"]
    assert fake.associated("contacts", contact["id"], "companies") == {company["id"]}
    assert fake.associated("deals", deal["id"], "companies") == {company["id"]}
    assert fake.associated("deals", deal["id"], "contacts") == {contact["id"]}
    assert record.log.get().outcome == "ok"


def test_a_repush_updates_and_creates_nothing(world, programs, admin, connection, fake,
                                              django_capture_on_commit_callbacks):
    referral = make_referral(world, programs)
    record = accept(admin, referral, django_capture_on_commit_callbacks)
    deal_id = record.external_ids["deal"]
    fake.update("deals", deal_id, dealstage="presentationscheduled")  # sales moved it on
    Referral.objects.filter(pk=referral.pk).update(notes="Budget approved.")
    before = {kind: len(objects) for kind, objects in fake.objects.items()}
    fake.calls.clear()

    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        sync.enqueue_push(referral, "accepted")

    record.refresh_from_db()
    assert record.status == SyncRecord.DONE
    assert record.external_ids["deal"] == deal_id
    assert {kind: len(objects) for kind, objects in fake.objects.items()} == before
    deal = fake.objects["deals"][deal_id]["properties"]
    assert deal["dealstage"] == "presentationscheduled"  # not dragged back to the first stage
    assert "Budget approved." in deal["description"]
    assert "pipeline" not in fake.last_request("deals.upsert")["inputs"][0]["properties"]
    assert fake.calls["deals.read"] == 0  # the deal id is known from the first push


def test_many_referrals_go_in_batches_of_one_hundred(world, programs, admin, connection, fake,
                                                     django_capture_on_commit_callbacks):
    referrals = [make_referral(world, programs, status=Referral.ACCEPTED) for _ in range(150)]

    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        for referral in referrals:
            sync.enqueue_push(referral, "accepted")

    assert SyncRecord.objects.filter(status=SyncRecord.DONE).count() == 150
    assert len(fake.objects["deals"]) == len(fake.objects["companies"]) == 150
    sizes = [len(body["inputs"]) for label, body in fake.requests if label == "deals.upsert"]
    assert sizes == [100, 50]
    # Seven calls a batch, plus the pipeline's stage order and the account, each asked once.
    assert fake.total_calls == 2 * 7 + 2


def test_rate_limited_push_waits_as_long_as_hubspot_asks(
        world, programs, admin, connection, fake, django_capture_on_commit_callbacks):
    fake.fail_next(1, status=429, retry_after=120)
    started = timezone.now()
    record = accept(admin, make_referral(world, programs), django_capture_on_commit_callbacks)

    assert (record.status, record.attempts) == (SyncRecord.PENDING, 1)
    assert record.next_attempt_at >= started + timedelta(seconds=119)
    attempt = record.log.get()
    assert (attempt.outcome, attempt.http_status) == ("retry", 429)
    assert "ten_secondly_rolling" in record.last_error

    make_due(record)
    assert sync.push_connection(connection.pk)["pushed"] == 1
    record.refresh_from_db()
    assert record.status == SyncRecord.DONE


def test_a_rejected_token_marks_the_connection_and_tells_the_admins_once(
        world, programs, admin, fake, django_capture_on_commit_callbacks):
    connection = connect(admin, fake, token="pat-na1-revoked-0000")
    referrals = [make_referral(world, programs, status=Referral.ACCEPTED) for _ in range(2)]
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        for referral in referrals:
            sync.enqueue_push(referral, "accepted")

    connection.refresh_from_db()
    assert connection.status == CrmConnection.ERROR
    assert "The access token provided is invalid, expired or revoked." in connection.last_error
    for record in SyncRecord.objects.filter(connection=connection):
        assert record.status == SyncRecord.FAILED
        assert "The access token provided is invalid, expired or revoked." in record.last_error
        assert record.log.get().http_status == 401

    # Another referral while the token is still bad: no second alert.
    with django_capture_on_commit_callbacks(execute=True):
        services.accept_referral(admin, make_referral(world, programs, company_name="Initech",
                                                      website="initech.example"))
    alerts = [m for m in mail.outbox if "rejected our credentials" in m.subject]
    assert [m.to for m in alerts] == [[admin.user.email]]


def test_server_errors_until_the_last_attempt_leave_a_dead_row_that_retry_rearms(
        world, programs, admin, connection, fake, django_capture_on_commit_callbacks):
    fake.fail_next(sync.MAX_ATTEMPTS, status=502)
    record = accept(admin, make_referral(world, programs), django_capture_on_commit_callbacks)
    for _ in range(sync.MAX_ATTEMPTS - 1):
        make_due(record)
        sync.push_connection(connection.pk)

    record.refresh_from_db()
    assert (record.status, record.attempts) == (SyncRecord.DEAD, sync.MAX_ATTEMPTS)
    assert [a.outcome for a in record.log.all()][0] == "dead"
    assert record.log.count() == sync.MAX_ATTEMPTS

    with django_capture_on_commit_callbacks(execute=True):
        connections.retry_sync(admin, record)
    record.refresh_from_db()
    assert record.status == SyncRecord.DONE
    assert len(fake.objects["deals"]) == 1


def test_a_bad_row_fails_alone_and_a_shared_contact_is_upserted_once(
        world, programs, admin, connection, fake, django_capture_on_commit_callbacks):
    first = make_referral(world, programs, status=Referral.ACCEPTED,
                          contact_email="pat@shared.example")
    second = make_referral(world, programs, status=Referral.ACCEPTED,
                           contact_email="Pat@Shared.example")
    bad = make_referral(world, programs, status=Referral.ACCEPTED, contact_email="not-an-email")

    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        for referral in (first, second, bad):
            sync.enqueue_push(referral, "accepted")

    records = {r.referral_id: r for r in SyncRecord.objects.all()}
    assert records[bad.pk].status == SyncRecord.FAILED
    assert "Email address not-an-email is invalid" in records[bad.pk].last_error
    assert records[first.pk].status == records[second.pk].status == SyncRecord.DONE
    assert records[first.pk].external_ids["contact"] == records[second.pk].external_ids["contact"]
    assert len(fake.objects["contacts"]) == 1 and len(fake.objects["deals"]) == 2


def test_a_signed_webhook_is_stored_and_fetches_the_deal(
        world, programs, admin, connection, fake, django_capture_on_commit_callbacks):
    referral = make_referral(world, programs)
    deal_id = accept(admin, referral, django_capture_on_commit_callbacks).external_ids["deal"]
    fake.update("deals", deal_id, dealstage="closedwon")

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(connection, [deal_event(deal_id)])

    assert response.status_code == 204
    # Stored under subscription, event id and time: HubSpot's eventId alone is not unique.
    assert WebhookEvent.objects.get(connection=connection).event_id.split(":")[1] == "9001"
    snapshot = DealSnapshot.objects.get(external_deal_id=deal_id)
    assert (snapshot.referral, snapshot.stage, snapshot.outcome) == (
        referral, "closedwon", DealSnapshot.WON)
    assert snapshot.account_domain == referral.domain
    assert (snapshot.amount_minor, snapshot.currency) == (2500000, "USD")
    referral.refresh_from_db()
    assert referral.status == Referral.WON


@pytest.mark.parametrize("tamper", ["signature", "secret", "stale", "missing"])
def test_an_unverified_webhook_is_refused_and_nothing_is_stored(
        world, programs, admin, connection, fake, django_capture_on_commit_callbacks, tamper):
    deal_id = accept(admin, make_referral(world, programs),
                     django_capture_on_commit_callbacks).external_ids["deal"]
    options = {
        "signature": {"signature": "c2lnbmF0dXJl"},
        "secret": {"secret": "another-apps-secret"},
        "stale": {"timestamp": int(time.time() * 1000) - 6 * 60 * 1000},
        "missing": {"signature": ""},
    }[tamper]
    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(connection, [deal_event(deal_id)], **options)

    assert response.status_code == 401
    assert not WebhookEvent.objects.exists()
    assert fake.calls["deals.get"] == 0


def test_a_replayed_webhook_event_is_stored_once(world, programs, admin, connection, fake,
                                                 django_capture_on_commit_callbacks):
    deal_id = accept(admin, make_referral(world, programs),
                     django_capture_on_commit_callbacks).external_ids["deal"]
    event = deal_event(deal_id, event_id=4417)
    for attempt in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            response = deliver(connection, [{**event, "attemptNumber": attempt}])
        assert response.status_code == 204

    assert WebhookEvent.objects.filter(connection=connection).count() == 1
    assert fake.calls["deals.get"] == 1
    assert DealSnapshot.objects.filter(external_deal_id=deal_id).count() == 1


def test_polling_advances_the_cursor_and_resumes_from_it_after_a_restart(
        world, programs, admin, connection, fake, django_capture_on_commit_callbacks):
    referral = make_referral(world, programs)
    deal_id = accept(admin, referral, django_capture_on_commit_callbacks).external_ids["deal"]

    assert inbound.poll_connection(connection.pk) == 1
    connection.refresh_from_db()
    first_cursor = connection.poll_cursor
    modified = fake.objects["deals"][deal_id]["properties"]["hs_lastmodifieddate"]
    assert first_cursor == str(to_ms(modified))
    assert inbound.poll_connection(connection.pk) == 0  # nothing new: the version is known

    fake.update("deals", deal_id, dealstage="closedwon")
    restarted = CrmConnection.objects.get(pk=connection.pk)  # nothing kept in memory
    assert inbound.poll_connection(restarted.pk) == 1

    search = fake.last_request("deals.search")
    assert search["filterGroups"][0]["filters"][0]["value"] == first_cursor
    assert REFERRAL_ID in search["properties"]
    restarted.refresh_from_db()
    assert int(restarted.poll_cursor) > int(first_cursor)
    referral.refresh_from_db()
    assert referral.status == Referral.WON
    snapshot = DealSnapshot.objects.filter(external_deal_id=deal_id, outcome="won").get()
    assert (snapshot.account_domain, snapshot.account_name) == (referral.domain,
                                                                referral.company_name)


def test_polling_pages_through_many_deals(admin, connection, fake):
    for n in range(230):
        fake.create("deals", dealname=f"Direct deal {n}", amount="100")

    assert inbound.poll_connection(connection.pk) == 230
    assert fake.calls["deals.search"] == 3
    assert DealSnapshot.objects.filter(referral__isnull=True).count() == 230


def test_the_access_token_never_reaches_the_logs(world, programs, admin, fake, caplog,
                                                 django_capture_on_commit_callbacks):
    caplog.set_level(logging.DEBUG)
    connection = connect(admin, fake)
    fake.fail_next(1, status=502)
    record = accept(admin, make_referral(world, programs), django_capture_on_commit_callbacks)
    make_due(record)
    sync.push_connection(connection.pk)
    revoked = connect(admin, fake, token="pat-na1-revoked-1111")
    failed = accept(admin, make_referral(world, programs, company_name="Hooli",
                                         website="hooli.example"),
                    django_capture_on_commit_callbacks)

    assert failed.status == SyncRecord.FAILED and revoked.pk != connection.pk
    assert "/crm/v3/objects/companies/batch/upsert" in caplog.text  # the SDK did log
    for secret in (fake.token, "pat-na1-revoked-1111", SECRET):
        assert secret not in caplog.text
        assert not SyncRecord.objects.filter(last_error__contains=secret).exists()
