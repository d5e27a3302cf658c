"""Salesforce sync end to end: the real simple-salesforce client against a fake org on
`responses` (tests/fakes/salesforce.py), driven through the referral lifecycle, the outbox
engine and the poller."""

import logging
from datetime import timedelta
from decimal import Decimal
from urllib.parse import parse_qs

import jwt
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core import mail
from django.utils import timezone

from accounts.errors import ServiceError
from attribution.models import DealSnapshot
from integrations import connections, inbound, sync
from integrations.models import CrmConnection, SyncAttempt, SyncRecord
from integrations.registry import connector_for
from integrations.salesforce.connector import SalesforceConnector
from referrals import services
from referrals.models import Referral
from tests.fakes.salesforce import INSTANCE, JWT_GRANT, FakeSalesforce, sf_datetime
from tests.referrals.factories import ReferralFactory

EXT = "PartnerHub_Referral_Id__c"
CONSUMER_KEY = "3MVG9fakeConsumerKey.for.PartnerHub"
USERNAME = "integration@acme.example"
ACO = "account_contact_opportunity"
LEAD_UPSERT = f"composite/sobjects/Lead/{EXT}"


@pytest.fixture(scope="module")
def keypair():
    """A throwaway RSA key: the private half goes into PartnerHub, the public half is the
    certificate uploaded to the fake org's Connected App."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture
def salesforce(keypair):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeSalesforce(rsps, consumer_key=CONSUMER_KEY, public_key=keypair[1],
                             username=USERNAME, ext_field=EXT)


def connect(world, keypair, mode="lead", base_url="", **credentials):
    credentials = credentials or {"consumer_key": CONSUMER_KEY, "username": USERNAME,
                                  "private_key": keypair[0], "domain": "login"}
    return connections.connect(world.member("vendor", "admin"), provider="salesforce",
                               credentials=credentials, base_url=base_url, object_mode=mode,
                               referral_id_field=EXT)


def map_stages(world, connection, **extra):
    return connections.save_mapping(
        world.member("vendor", "admin"), connection, pipeline_id="opportunity",
        stage_mapping={"Closed Won": "won", "Closed Lost": "lost", **extra},
        stage_labels={}, owner_mapping={})


def accept(world, programs, capture, count=1, **fields):
    """Submitted referrals accepted by the vendor, with on-commit work (the push) run."""
    rep = world.member("partner", "rep")
    # "Customer 1 Inc" and "Customer 2 Inc" look alike to fuzzy conflict matching, which is
    # not what these tests are about.
    type(programs["acme"]).objects.filter(pk=programs["acme"].pk).update(fuzzy_threshold=100)
    programs["acme"].refresh_from_db()
    referrals = [ReferralFactory(program=programs["acme"], partner=world.partner,
                                 submitted_by=rep.user, **fields) for _ in range(count)]
    with capture(execute=True):
        for referral in referrals:
            services.accept_referral(world.member("vendor", "partnerships"), referral)
    return referrals


def record_of(referral) -> SyncRecord:
    return SyncRecord.objects.get(referral=referral)


def lead_of(salesforce, referral):
    return salesforce.find("Lead", **{EXT: str(referral.public_id)})


# --- Pushing leads -------------------------------------------------------------------------

def test_first_push_creates_a_lead_keyed_by_our_referral_id(
        world, programs, salesforce, keypair, django_capture_on_commit_callbacks):
    connect(world, keypair)
    (referral,) = accept(world, programs, django_capture_on_commit_callbacks,
                         contact_title="CTO", notes="Evaluating in Q3.")

    lead = lead_of(salesforce, referral)
    assert lead["Company"] == referral.company_name
    assert (lead["FirstName"], lead["LastName"]) == ("Jane", "Buyer")
    assert lead["Email"] == referral.contact_email
    assert lead["Title"] == "CTO"
    assert (lead["Country"], lead["LeadSource"]) == ("US", "Partner Referral")
    assert "Brightpath" in lead["Description"] and "Evaluating in Q3." in lead["Description"]
    record = record_of(referral)
    assert record.status == SyncRecord.DONE
    assert record.external_ids == {"lead": lead["Id"]}
    assert record.external_url == f"https://{INSTANCE}/lightning/r/Lead/{lead['Id']}/view"
    assert salesforce.logins == [JWT_GRANT]
    assert salesforce.count("PATCH", LEAD_UPSERT) == 1


def test_a_repush_updates_the_lead_and_creates_nothing(
        world, programs, salesforce, keypair, django_capture_on_commit_callbacks):
    connect(world, keypair)
    (referral,) = accept(world, programs, django_capture_on_commit_callbacks)
    lead_id = lead_of(salesforce, referral)["Id"]
    Referral.objects.filter(pk=referral.pk).update(contact_phone="+442071838750")

    with django_capture_on_commit_callbacks(execute=True):
        connections.retry_sync(world.member("vendor", "admin"), record_of(referral))

    assert len(salesforce.all("Lead")) == 1
    assert lead_of(salesforce, referral)["Id"] == lead_id
    assert lead_of(salesforce, referral)["Phone"] == "+442071838750"
    assert salesforce.count("PATCH", LEAD_UPSERT) == 2
    assert record_of(referral).status == SyncRecord.DONE


def test_250_referrals_go_in_two_collection_calls(
        world, programs, salesforce, keypair, django_capture_on_commit_callbacks):
    connect(world, keypair)
    referrals = accept(world, programs, django_capture_on_commit_callbacks, count=250)

    assert salesforce.count("PATCH", LEAD_UPSERT) == 2
    assert len(salesforce.all("Lead")) == 250
    assert SyncRecord.objects.filter(referral__in=referrals, status="done").count() == 250


def test_a_rejected_record_fails_alone_with_salesforces_message(
        world, programs, salesforce, keypair, django_capture_on_commit_callbacks):
    salesforce.add_validation_rule("Lead", lambda lead: lead["Company"] == "Embargoed Ltd",
                                   "Company is on the export embargo list")
    connect(world, keypair)
    good, bad, other = accept(world, programs, django_capture_on_commit_callbacks, count=3)
    Referral.objects.filter(pk=bad.pk).update(company_name="Embargoed Ltd")
    with django_capture_on_commit_callbacks(execute=True):
        for referral in (good, bad, other):
            connections.retry_sync(world.member("vendor", "admin"), record_of(referral))

    failed = record_of(bad)
    assert failed.status == SyncRecord.FAILED
    assert "Company is on the export embargo list" in failed.last_error
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in failed.last_error
    assert failed.log.first().outcome == "failed"
    assert {record_of(good).status, record_of(other).status} == {SyncRecord.DONE}
    assert CrmConnection.objects.get().status == CrmConnection.ACTIVE


def test_a_locked_row_is_retried_not_failed(
        world, programs, salesforce, keypair, django_capture_on_commit_callbacks):
    salesforce.add_validation_rule("Lead", lambda lead: True,
                                   "unable to obtain exclusive access to this record",
                                   code="UNABLE_TO_LOCK_ROW")
    connect(world, keypair)
    (referral,) = accept(world, programs, django_capture_on_commit_callbacks)

    record = record_of(referral)
    assert (record.status, record.attempts) == (SyncRecord.PENDING, 1)
    assert "unable to obtain exclusive access" in record.last_error


# --- Account, contact and opportunity ----------------------------------------------------------

def test_account_mode_creates_an_account_contact_and_opportunity_linked_together(
        world, programs, salesforce, keypair, django_capture_on_commit_callbacks):
    connect(world, keypair, mode=ACO)
    (referral,) = accept(world, programs, django_capture_on_commit_callbacks,
                         expected_close=None, amount_minor=4800050)

    key = {EXT: str(referral.public_id)}
    account = salesforce.find("Account", **key)
    contact = salesforce.find("Contact", **key)
    opportunity = salesforce.find("Opportunity", **key)
    assert account["Name"] == referral.company_name
    assert account["BillingCountry"] == "US"
    assert contact["AccountId"] == opportunity["AccountId"] == account["Id"]
    assert contact["LastName"] == "Buyer"
    assert opportunity["Name"] == f"{referral.company_name} (referred by Brightpath)"
    assert opportunity["StageName"] == "Prospecting"
    assert opportunity["CloseDate"] == (timezone.localdate() + timedelta(days=90)).isoformat()
    assert Decimal(str(opportunity["Amount"])) == Decimal("48000.50")
    record = record_of(referral)
    assert record.external_ids == {"account": account["Id"], "contact": contact["Id"],
                                   "deal": opportunity["Id"]}
    assert record.external_url.endswith(f"/lightning/r/Opportunity/{opportunity['Id']}/view")
    for sobject in ("Account", "Contact", "Opportunity"):
        assert salesforce.count("PATCH", f"composite/sobjects/{sobject}/{EXT}") == 1


def test_new_opportunities_start_in_the_first_stage_mapped_open(
        world, programs, salesforce, keypair, django_capture_on_commit_callbacks):
    connection = connect(world, keypair, mode=ACO)
    map_stages(world, connection, **{"Needs Analysis": "open", "Qualification": "open"})
    close = timezone.localdate().replace(day=1) + timedelta(days=62)
    (referral,) = accept(world, programs, django_capture_on_commit_callbacks,
                         expected_close=close)

    opportunity = salesforce.find("Opportunity", **{EXT: str(referral.public_id)})
    assert opportunity["StageName"] == "Qualification"  # by the org's sort order
    assert opportunity["CloseDate"] == close.isoformat()


def test_multi_currency_and_country_picklist_orgs_get_codes(
        world, programs, keypair, django_capture_on_commit_callbacks):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        salesforce = FakeSalesforce(rsps, consumer_key=CONSUMER_KEY, public_key=keypair[1],
                                    username=USERNAME, ext_field=EXT, multi_currency=True,
                                    country_picklists=True)
        connect(world, keypair, mode=ACO)
        (referral,) = accept(world, programs, django_capture_on_commit_callbacks,
                             currency="EUR", country="DE")
        key = {EXT: str(referral.public_id)}
        assert salesforce.find("Account", **key)["BillingCountryCode"] == "DE"
        assert salesforce.find("Opportunity", **key)["CurrencyIsoCode"] == "EUR"


# --- Failures --------------------------------------------------------------------------------

def test_an_expired_session_marks_the_connection_and_emails_the_admins_once(
        world, programs, salesforce, keypair, django_capture_on_commit_callbacks):
    salesforce.add_session("00D5g000004ABCD!sandbox-session")
    connection = connect(world, keypair, session_id="00D5g000004ABCD!sandbox-session",
                         instance_url=f"https://{INSTANCE}")
    accept(world, programs, django_capture_on_commit_callbacks)
    mail.outbox.clear()
    salesforce.expire_sessions()

    first = accept(world, programs, django_capture_on_commit_callbacks)[0]
    second = accept(world, programs, django_capture_on_commit_callbacks)[0]

    connection.refresh_from_db()
    assert connection.status == CrmConnection.ERROR
    assert "Session expired or invalid" in connection.last_error
    assert record_of(first).status == SyncRecord.FAILED
    assert record_of(first).log.first().http_status == 401
    # Once the credentials are refused, later referrals wait instead of failing one by one.
    assert record_of(second).status == SyncRecord.PENDING
    assert not record_of(second).log.exists()
    admin = world.member("vendor", "admin").user
    crm_mails = [m for m in mail.outbox if "Salesforce" in m.subject]
    assert [m.to for m in crm_mails] == [[admin.email]]


def test_an_expired_token_is_renewed_with_a_fresh_jwt(
        world, programs, salesforce, keypair, django_capture_on_commit_callbacks):
    connection = connect(world, keypair)
    connector = connector_for(connection)
    connector.test_connection()
    salesforce.expire_sessions()

    assert connector.pipelines()[0].stages  # simple-salesforce logs in again on 401
    assert salesforce.logins == [JWT_GRANT, JWT_GRANT]


def test_a_revoked_connected_app_is_an_auth_error(
        world, programs, salesforce, keypair, django_capture_on_commit_callbacks):
    salesforce.revoked = True
    connection = connect(world, keypair)
    (referral,) = accept(world, programs, django_capture_on_commit_callbacks)

    assert record_of(referral).status == SyncRecord.FAILED
    assert "not admin approved" in record_of(referral).last_error
    connection.refresh_from_db()
    assert connection.status == CrmConnection.ERROR


def test_503_until_max_attempts_leaves_a_dead_row_and_retry_sync_rearms_it(
        world, programs, salesforce, keypair, django_capture_on_commit_callbacks):
    salesforce.fail(503, retry_after=600)
    connection = connect(world, keypair)
    (referral,) = accept(world, programs, django_capture_on_commit_callbacks)
    record = record_of(referral)
    assert (record.status, record.attempts) == (SyncRecord.PENDING, 1)
    assert record.next_attempt_at >= timezone.now() + timedelta(seconds=590)  # Retry-After

    for _ in range(sync.MAX_ATTEMPTS - 1):
        SyncRecord.objects.filter(pk=record.pk).update(next_attempt_at=timezone.now())
        sync.push_connection(connection.pk)
    record.refresh_from_db()
    assert (record.status, record.attempts) == (SyncRecord.DEAD, sync.MAX_ATTEMPTS)
    assert "Service unavailable" in record.last_error
    assert SyncAttempt.objects.filter(record=record, outcome="retry").count() == 7
    assert lead_of(salesforce, referral) is None

    salesforce.clear_failures()
    with django_capture_on_commit_callbacks(execute=True):
        connections.retry_sync(world.member("vendor", "admin"), record)
    record.refresh_from_db()
    assert (record.status, record.attempts) == (SyncRecord.DONE, 1)
    assert lead_of(salesforce, referral) is not None


def test_the_daily_request_limit_is_waited_out(
        world, programs, salesforce, keypair, django_capture_on_commit_callbacks):
    salesforce.fail(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
    connection = connect(world, keypair)
    (referral,) = accept(world, programs, django_capture_on_commit_callbacks)

    record = record_of(referral)
    assert record.status == SyncRecord.PENDING
    assert "TotalRequests Limit exceeded" in record.last_error
    assert record.next_attempt_at >= timezone.now() + timedelta(minutes=14)
    connection.refresh_from_db()
    assert connection.status == CrmConnection.ACTIVE


def test_a_missing_external_id_field_fails_rows_permanently(
        world, programs, keypair, django_capture_on_commit_callbacks):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        FakeSalesforce(rsps, consumer_key=CONSUMER_KEY, public_key=keypair[1],
                       username=USERNAME, ext_field=EXT, ext_on=())
        connection = connect(world, keypair)
        (referral,) = accept(world, programs, django_capture_on_commit_callbacks)
        with pytest.raises(ServiceError, match=f"Lead has no External ID field {EXT}"):
            connections.test_connection(world.member("vendor", "admin"), connection)

    assert record_of(referral).status == SyncRecord.FAILED
    assert f"Lead has no External ID field {EXT}" in record_of(referral).last_error
    connection.refresh_from_db()
    assert connection.status == CrmConnection.ACTIVE


# --- Connection, stages, other logins ----------------------------------------------------------

def test_test_connection_names_the_org(world, salesforce, keypair):
    connection = connect(world, keypair, mode=ACO)
    description = connections.test_connection(world.member("vendor", "admin"), connection)
    assert description == f"Acme Corp (Enterprise Edition, NA224) at https://{INSTANCE}"


def test_pipelines_are_the_opportunity_stages(world, salesforce, keypair):
    (pipeline,) = connector_for(connect(world, keypair)).pipelines()
    stages = {s.id: (s.closed, s.won) for s in pipeline.stages}
    assert list(stages)[:2] == ["Prospecting", "Qualification"]
    assert stages["Closed Won"] == (True, True)
    assert stages["Closed Lost"] == (True, False)


@pytest.mark.parametrize("domain, base_url, token_url, audience", [
    ("login", "", "https://login.salesforce.com", "https://login.salesforce.com"),
    ("test", "", "https://test.salesforce.com", "https://test.salesforce.com"),
    (INSTANCE, "", f"https://{INSTANCE}", "https://login.salesforce.com"),
    ("login", f"https://{INSTANCE}/", f"https://{INSTANCE}", "https://login.salesforce.com"),
])
def test_the_jwt_goes_to_the_configured_login_host(world, salesforce, keypair, domain,
                                                    base_url, token_url, audience):
    connection = connect(world, keypair, base_url=base_url, consumer_key=CONSUMER_KEY,
                         username=USERNAME, private_key=keypair[0], domain=domain)
    connector_for(connection).test_connection()

    (login,) = [c.request for c in salesforce.rsps.calls if "oauth2/token" in c.request.url]
    assert login.url == f"{token_url}/services/oauth2/token"
    assertion = parse_qs(login.body)["assertion"][0]
    claims = jwt.decode(assertion, keypair[1], algorithms=["RS256"], audience=audience)
    assert (claims["iss"], claims["sub"]) == (CONSUMER_KEY, USERNAME)


@pytest.mark.parametrize("credentials, message", [
    ({"private_key": "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----"},
     "could not use the private key"),
    ({"base_url": "https://crm.example.com"}, "is not a Salesforce login host"),
])
def test_unusable_credentials_mark_the_connection(world, programs, salesforce, keypair,
                                                  django_capture_on_commit_callbacks,
                                                  credentials, message):
    base_url = credentials.pop("base_url", "")
    connection = connect(world, keypair, base_url=base_url, **{
        "consumer_key": CONSUMER_KEY, "username": USERNAME, "private_key": keypair[0],
        **credentials})
    (referral,) = accept(world, programs, django_capture_on_commit_callbacks)

    assert record_of(referral).status == SyncRecord.FAILED
    assert message in record_of(referral).last_error
    connection.refresh_from_db()
    assert connection.status == CrmConnection.ERROR
    assert salesforce.calls == []


def test_a_sandbox_logs_in_with_username_password_and_token(
        world, programs, keypair, django_capture_on_commit_callbacks):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        salesforce = FakeSalesforce(rsps, consumer_key=CONSUMER_KEY, public_key=keypair[1],
                                    username=USERNAME, ext_field=EXT, password="s3cret",
                                    security_token="TOKEN123")
        connect(world, keypair, username=USERNAME, password="s3cret",
                security_token="TOKEN123", domain="test")
        (referral,) = accept(world, programs, django_capture_on_commit_callbacks)
        assert salesforce.logins == ["soap"]
        assert "test.salesforce.com" in rsps.calls[0].request.url
        assert record_of(referral).status == SyncRecord.DONE


# --- Polling ----------------------------------------------------------------------------------

def test_a_won_opportunity_wins_the_referral_and_the_cursor_survives_a_reload(
        world, programs, salesforce, keypair, django_capture_on_commit_callbacks):
    connection = map_stages(world, connect(world, keypair, mode=ACO))
    (referral,) = accept(world, programs, django_capture_on_commit_callbacks)
    deal_id = record_of(referral).external_ids["deal"]

    assert inbound.poll_connection(connection.pk) == 1  # the new opportunity, open
    connection.refresh_from_db()
    first_cursor = connection.poll_cursor
    assert first_cursor.endswith(f"|{deal_id}")
    salesforce.update("Opportunity", deal_id, StageName="Closed Won")

    with django_capture_on_commit_callbacks(execute=True):
        assert inbound.poll_connection(connection.pk) == 1
    referral.refresh_from_db()
    assert referral.status == Referral.WON
    snapshot = DealSnapshot.objects.get(referral=referral, outcome="won")
    assert (snapshot.external_deal_id, snapshot.stage) == (deal_id, "Closed Won")
    assert (snapshot.amount_minor, snapshot.currency) == (2500000, "USD")
    assert snapshot.account_domain == referral.domain
    assert snapshot.closed_at is not None
    connection = CrmConnection.objects.get(pk=connection.pk)
    assert connection.poll_cursor > first_cursor
    assert connection.poll_cursor.startswith(
        salesforce.records["Opportunity"][deal_id]["SystemModstamp"][:23])


def test_polling_the_same_window_twice_stores_nothing_new(
        world, programs, salesforce, keypair, django_capture_on_commit_callbacks):
    connection = map_stages(world, connect(world, keypair, mode=ACO))
    accept(world, programs, django_capture_on_commit_callbacks, count=2)

    assert inbound.poll_connection(connection.pk) == 2
    assert inbound.poll_connection(connection.pk) == 0  # nothing after the cursor
    CrmConnection.objects.filter(pk=connection.pk).update(poll_cursor="")
    assert inbound.poll_connection(connection.pk) == 0  # the same versions again
    assert DealSnapshot.objects.count() == 2


def test_old_opportunities_are_not_backfilled(world, salesforce, keypair):
    connection = connect(world, keypair)
    recent = salesforce.create("Opportunity", Name="Recent", StageName="Closed Won",
                               CloseDate="2020-01-01")
    old = sf_datetime(timezone.now() - timedelta(days=3))
    deal = salesforce.create("Opportunity", Name="Old", StageName="Prospecting",
                             CloseDate="2020-01-01")
    salesforce.update("Opportunity", deal["Id"], stamp=old)

    changes, _ = connector_for(connection).changes_since("")
    assert [c.external_deal_id for c in changes] == [recent["Id"]]


def test_opportunities_saved_together_are_not_lost_across_pages(
        world, salesforce, keypair, monkeypatch):
    monkeypatch.setattr(SalesforceConnector, "page_size", 2)
    salesforce.query_batch_size = 1  # and Salesforce hands each page out in pieces
    connection = connect(world, keypair)
    stamp = sf_datetime(timezone.now())
    deals = [salesforce.create("Opportunity", Name=f"Bulk {i}", StageName="Prospecting",
                               CloseDate="2030-01-01") for i in range(5)]
    for deal in deals:
        salesforce.update("Opportunity", deal["Id"], stamp=stamp)

    assert inbound.poll_connection(connection.pk) == 5
    assert {s.external_deal_id for s in DealSnapshot.objects.all()} == {d["Id"] for d in deals}
    assert inbound.poll_connection(connection.pk) == 0
    assert salesforce.count("GET", "query/01g") == 2  # nextRecordsUrl was followed


def test_a_converted_lead_brings_its_referral_to_the_opportunity(
        world, programs, salesforce, keypair, django_capture_on_commit_callbacks):
    connection = map_stages(world, connect(world, keypair))
    mapped, unmapped = accept(world, programs, django_capture_on_commit_callbacks, count=2)
    salesforce.convert_lead(lead_of(salesforce, mapped)["Id"], stage="Closed Won",
                            amount=9000)
    salesforce.map_lead_field_on_conversion = False  # the Lead still knows its opportunity
    salesforce.convert_lead(lead_of(salesforce, unmapped)["Id"], stage="Closed Won")

    with django_capture_on_commit_callbacks(execute=True):
        assert inbound.poll_connection(connection.pk) == 2
    for referral in (mapped, unmapped):
        referral.refresh_from_db()
        assert referral.status == Referral.WON
    assert DealSnapshot.objects.get(referral=mapped).amount_minor == 900000


def test_deal_reads_one_opportunity(world, programs, salesforce, keypair,
                                    django_capture_on_commit_callbacks):
    connection = connect(world, keypair, mode=ACO)
    (referral,) = accept(world, programs, django_capture_on_commit_callbacks)
    deal_id = record_of(referral).external_ids["deal"]

    change = connector_for(connection).deal(deal_id)
    assert change.referral_id == str(referral.public_id)
    assert change.version == salesforce.records["Opportunity"][deal_id]["SystemModstamp"]
    assert (change.stage, change.account_name) == ("Prospecting", referral.company_name)
    assert inbound.fetch_and_ingest(connection.pk, deal_id) is not None
    assert inbound.poll_connection(connection.pk) == 0  # the same version, already known


# --- Secrets ----------------------------------------------------------------------------------

def test_secrets_never_reach_the_logs(world, programs, salesforce, keypair, caplog,
                                      django_capture_on_commit_callbacks):
    caplog.set_level(logging.DEBUG)
    connection = map_stages(world, connect(world, keypair, mode=ACO))
    (referral,) = accept(world, programs, django_capture_on_commit_callbacks)
    salesforce.expire_sessions()
    inbound.poll_connection(connection.pk)
    salesforce.revoked = True
    salesforce.expire_sessions()
    with django_capture_on_commit_callbacks(execute=True):
        connections.retry_sync(world.member("vendor", "admin"), record_of(referral))

    key_lines = [line for line in keypair[0].splitlines() if "-----" not in line]
    logged = caplog.text + "".join(SyncAttempt.objects.values_list("message", flat=True))
    logged += CrmConnection.objects.get(pk=connection.pk).last_error
    assert caplog.records  # something was logged, so the check means something
    assert not [line for line in key_lines if line in logged]
    assert len(salesforce.issued_tokens) >= 2
    assert not [token for token in salesforce.issued_tokens if token in logged]


def test_the_fake_speaks_single_record_upsert(salesforce):
    """The connector batches, but the fake's single upsert must behave like Salesforce's
    (201 created, 204 updated) for anyone reaching for `sf.Lead.upsert`."""
    from simple_salesforce import Salesforce

    salesforce.add_session("00D!direct")
    sf = Salesforce(session_id="00D!direct", instance_url=f"https://{INSTANCE}")
    assert sf.Lead.upsert(f"{EXT}/abc", {"LastName": "Buyer", "Company": "Initech"}) == 201
    assert sf.Lead.upsert(f"{EXT}/abc", {"Title": "CTO"}) == 204
    assert len(salesforce.all("Lead")) == 1
    assert salesforce.find("Lead", **{EXT: "abc"})["Title"] == "CTO"
