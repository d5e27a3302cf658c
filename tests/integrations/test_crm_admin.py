"""The vendor admin's CRM pages, the built-in pipeline's stage move and the referral's CRM card.

A test-only connector stands in for an external CRM (registered as "hubspot" for the test).
"""

import json

import pytest
from django.template.loader import render_to_string
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEvent
from attribution.models import DealSnapshot
from integrations import connections, registry
from integrations.forms import SAVED_PLACEHOLDER
from integrations.models import CrmConnection, SyncRecord
from integrations.panels import crm_panel
from integrations.providers.base import Connector, CrmError, Pipeline, PushResult, Stage
from referrals.models import Referral, TimelineEntry
from tests.conftest import ALL_ROLES, ROLE_IDS
from tests.referrals.factories import ReferralFactory

TOKEN = "pat-na1-5ecr3t-t0ken-do-not-show"
CLIENT_SECRET = "hubspot-client-secret-never-shown"


class FakeCrm(Connector):
    """An external CRM with two pipelines; it fails when the test says so."""

    provider = "hubspot"
    batch_size = 10
    error: CrmError | None = None

    def test_connection(self):
        if self.error:
            raise self.error
        return "Fake CRM portal 123"

    def pipelines(self):
        if self.error:
            raise self.error
        return [
            Pipeline("sales", "Sales pipeline", [
                Stage("appointment", "Appointment scheduled"),
                Stage("contract", "Contract sent"),
                Stage("closedwon", "Closed won", closed=True, won=True),
                Stage("closedlost", "Closed lost", closed=True),
            ]),
            Pipeline("renewals", "Renewals", [
                Stage("r-open", "Open"), Stage("r-won", "Renewed", closed=True, won=True)]),
        ]

    def push(self, payloads):
        if self.error:
            return {p.referral_id: self.error for p in payloads}
        return {p.referral_id: PushResult({"deal": "900"}, url="https://crm.example/deal/900")
                for p in payloads}


@pytest.fixture
def fake_crm(monkeypatch):
    monkeypatch.setattr(FakeCrm, "error", None)
    monkeypatch.setitem(registry.CONNECTORS, "hubspot", f"{__name__}.FakeCrm")
    return FakeCrm


@pytest.fixture
def admin(world):
    return world.member("vendor", "admin")


@pytest.fixture
def builtin(admin):
    return connections.connect(admin, provider="builtin", credentials={})


@pytest.fixture
def crm(admin, fake_crm):
    return connections.connect(admin, provider="hubspot",
                               credentials={"access_token": TOKEN,
                                            "client_secret": CLIENT_SECRET})


def _accepted(world, programs, **kwargs):
    now = timezone.now()
    return ReferralFactory(program=programs["acme"], partner=world.partner,
                           submitted_by=world.member("partner", "rep").user,
                           status=Referral.ACCEPTED, decided_at=now,
                           protected_until=now + timezone.timedelta(days=90), **kwargs)


def _hubspot_form(**overrides):
    data = {"access_token": TOKEN, "client_secret": CLIENT_SECRET, "base_url": "",
            "object_mode": "company_contact_deal",
            "referral_id_field": "partnerhub_referral_id", "push_on": "accepted"}
    data.update(overrides)
    return data


PAGES = [("integrations:connection", []), ("integrations:connect", ["hubspot"]),
         ("integrations:mapping", []), ("integrations:sync_log", [])]


# --- Who may see the pages ---------------------------------------------------------------


@pytest.mark.parametrize("kind,role", ALL_ROLES, ids=ROLE_IDS)
def test_only_the_vendor_admin_gets_the_crm_pages(world, builtin, kind, role):
    client = world.client_for(world.member(kind, role))
    expected = 200 if (kind, role) == ("vendor", "admin") else 404
    for name, args in PAGES:
        assert client.get(reverse(name, args=args)).status_code == expected, name


@pytest.mark.parametrize("kind,role", [k for k in ALL_ROLES if k != ("vendor", "admin")],
                         ids=[i for i in ROLE_IDS if i != "vendor.admin"])
def test_other_roles_cannot_act_on_the_connection(world, programs, builtin, kind, role):
    record = SyncRecord.objects.create(connection=builtin, referral=_accepted(world, programs),
                                       status=SyncRecord.FAILED)
    client = world.client_for(world.member(kind, role))
    for url in (reverse("integrations:test", args=[builtin.public_id]),
                reverse("integrations:disable", args=[builtin.public_id]),
                reverse("integrations:sync_retry", args=[record.public_id]),
                reverse("integrations:connect", args=["builtin"])):
        assert client.post(url).status_code == 404, url
    builtin.refresh_from_db()
    record.refresh_from_db()
    assert builtin.status == CrmConnection.ACTIVE
    assert record.status == SyncRecord.FAILED
    assert CrmConnection.objects.count() == 1


@pytest.mark.parametrize("other", ["vendor2_admin", "foreign_vendor_admin"])
def test_another_vendors_admin_sees_nothing_of_this_connection(world, programs, crm, other):
    record = SyncRecord.objects.create(connection=crm, referral=_accepted(world, programs),
                                       status=SyncRecord.FAILED, last_error="Boom")
    host = world.other_network.domain if other.startswith("foreign") else "testserver"
    client = world.client_for(world.others[other], host=host)
    page = client.get(reverse("integrations:connection"))
    assert page.status_code == 200
    assert "connection" not in page.context  # their own (empty) state: the provider chooser
    assert str(crm.public_id) not in page.content.decode()
    for url in (reverse("integrations:test", args=[crm.public_id]),
                reverse("integrations:disable", args=[crm.public_id]),
                reverse("integrations:sync_retry", args=[record.public_id])):
        assert client.post(url).status_code == 404
    assert client.get(reverse("integrations:sync_log")).status_code == 302  # none of their own
    crm.refresh_from_db()
    record.refresh_from_db()
    assert crm.status == CrmConnection.ACTIVE and record.status == SyncRecord.FAILED


def test_anonymous_visitors_are_sent_to_log_in(client, builtin):
    login = reverse("login")
    for name, args in PAGES:
        response = client.get(reverse(name, args=args))
        assert response.status_code == 302 and response.url.startswith(login)
    for url in (reverse("integrations:test", args=[builtin.public_id]),
                reverse("integrations:disable", args=[builtin.public_id])):
        response = client.post(url)
        assert response.status_code == 302 and response.url.startswith(login)
    builtin.refresh_from_db()
    assert builtin.status == CrmConnection.ACTIVE


def test_the_nav_shows_crm_to_vendor_admins_only(world):
    link = f'href="{reverse("integrations:connection")}"'
    admin_home = world.client_for(world.member("vendor", "admin")).get(reverse("home"))
    sales_home = world.client_for(world.member("vendor", "partnerships")).get(reverse("home"))
    assert link in admin_home.content.decode()
    assert link not in sales_home.content.decode()


# --- Connecting ----------------------------------------------------------------------------


def test_without_a_connection_the_page_offers_the_four_providers(world):
    page = world.client_for(world.member("vendor", "admin")).get(reverse("integrations:connection"))
    body = page.content.decode()
    for provider in ("hubspot", "salesforce", "pipedrive", "builtin"):
        assert reverse("integrations:connect", args=[provider]) in body


def test_connecting_stores_the_credentials_encrypted_and_never_shows_them(world, admin,
                                                                          fake_crm):
    client = world.client_for(admin)
    response = client.post(reverse("integrations:connect", args=["hubspot"]), _hubspot_form())
    assert response.status_code == 302
    connection = CrmConnection.objects.get(vendor=world.vendor)
    assert connection.provider == "hubspot"
    assert connection.created_by == admin.user
    stored = CrmConnection.objects.filter(pk=connection.pk).values_list(
        "credentials_encrypted", flat=True).get()
    assert TOKEN not in stored and CLIENT_SECRET not in stored
    assert connection.credentials == {"access_token": TOKEN, "client_secret": CLIENT_SECRET}
    for url in (reverse("integrations:connection"),
                reverse("integrations:connect", args=["hubspot"])):
        body = client.get(url).content.decode()
        assert TOKEN not in body and CLIENT_SECRET not in body
    form_page = client.get(reverse("integrations:connect", args=["hubspot"])).content.decode()
    assert SAVED_PLACEHOLDER in form_page
    audit = AuditEvent.objects.filter(action="crm.connected").values_list("after", flat=True)
    assert TOKEN not in json.dumps(list(audit))


def test_the_webhook_url_to_register_is_absolute(world, admin, crm, settings):
    body = world.client_for(admin).get(reverse("integrations:connection")).content.decode()
    expected = settings.SITE_URL + f"/integrations/webhooks/hubspot/{crm.webhook_token}/"
    assert expected in body


def test_a_form_error_does_not_echo_the_secret(world, admin, fake_crm):
    response = world.client_for(admin).post(reverse("integrations:connect", args=["hubspot"]),
                                            _hubspot_form(referral_id_field="not a field!"))
    assert response.status_code == 200
    assert TOKEN not in response.content.decode()
    assert not CrmConnection.objects.exists()


def test_connecting_again_disables_the_previous_connection(world, admin, builtin, fake_crm):
    response = world.client_for(admin).post(reverse("integrations:connect", args=["hubspot"]),
                                            _hubspot_form())
    assert response.status_code == 302
    builtin.refresh_from_db()
    assert builtin.status == CrmConnection.DISABLED
    live = CrmConnection.objects.filter(vendor=world.vendor).live()
    assert [c.provider for c in live] == ["hubspot"]


def test_reconnecting_the_same_provider_keeps_secrets_left_blank(world, admin, crm):
    client = world.client_for(admin)
    response = client.post(reverse("integrations:connect", args=["hubspot"]), _hubspot_form(
        access_token="", client_secret="", base_url="https://sandbox.crm.example"))
    assert response.status_code == 302
    new = CrmConnection.objects.filter(vendor=world.vendor).live().get()
    assert new.pk != crm.pk
    assert new.base_url == "https://sandbox.crm.example"
    assert new.credentials == {"access_token": TOKEN, "client_secret": CLIENT_SECRET}


def test_a_missing_token_is_an_error(world, admin, fake_crm):
    response = world.client_for(admin).post(reverse("integrations:connect", args=["hubspot"]),
                                            _hubspot_form(access_token=""))
    assert response.status_code == 200
    assert response.context["form"].errors["access_token"]
    assert not CrmConnection.objects.exists()


def test_salesforce_jwt_needs_the_key_and_takes_a_custom_domain(world, admin):
    client = world.client_for(admin)
    url = reverse("integrations:connect", args=["salesforce"])
    base = {"auth": "jwt", "consumer_key": "3MVG9-key", "username": "api@acme.example",
            "domain_kind": "custom", "custom_domain": "acme.my.salesforce.com",
            "object_mode": "lead", "referral_id_field": "PartnerHub_Referral_Id__c",
            "push_on": "accepted"}
    missing = client.post(url, base)
    assert missing.status_code == 200
    assert missing.context["form"].errors["private_key"]
    key = "-----BEGIN PRIVATE KEY-----\nMIIEv...\n-----END PRIVATE KEY-----"
    assert client.post(url, {**base, "private_key": key}).status_code == 302
    connection = CrmConnection.objects.filter(vendor=world.vendor).live().get()
    assert connection.credentials == {"auth": "jwt", "consumer_key": "3MVG9-key",
                                      "username": "api@acme.example", "private_key": key,
                                      "domain": "acme.my"}
    body = client.get(url).content.decode()
    assert "MIIEv" not in body and "3MVG9-key" not in body


def test_salesforce_session_sign_in(world, admin):
    response = world.client_for(admin).post(
        reverse("integrations:connect", args=["salesforce"]),
        {"auth": "session", "instance_url": "https://acme.my.salesforce.com",
         "session_id": "00D!session", "domain_kind": "login",
         "object_mode": "account_contact_opportunity",
         "referral_id_field": "PartnerHub_Referral_Id__c", "push_on": "submitted"})
    assert response.status_code == 302
    connection = CrmConnection.objects.filter(vendor=world.vendor).live().get()
    assert connection.credentials == {"auth": "session",
                                      "instance_url": "https://acme.my.salesforce.com",
                                      "session_id": "00D!session"}
    assert (connection.object_mode, connection.push_on) == ("account_contact_opportunity",
                                                            "submitted")


def test_pipedrive_webhook_auth_comes_as_a_pair(world, admin):
    url = reverse("integrations:connect", args=["pipedrive"])
    base = {"api_token": "pd-token", "object_mode": "deal",
            "referral_id_field": "5f3c9e0a1b2c3d4e5f60718293a4b5c6d7e8f901", "push_on": "accepted"}
    client = world.client_for(admin)
    no_field = client.post(url, {**base, "referral_id_field": ""})
    assert no_field.status_code == 200 and no_field.context["form"].errors["referral_id_field"]
    assert 'name="referral_id_field" value=' not in client.get(url).content.decode()  # no default
    half = client.post(url, {**base, "webhook_user": "hook"})
    assert half.status_code == 200 and half.context["form"].errors["webhook_password"]
    assert client.post(url, {**base, "webhook_user": "hook",
                             "webhook_password": "pw"}).status_code == 302
    assert CrmConnection.objects.get(vendor=world.vendor).credentials == {
        "api_token": "pd-token", "webhook_user": "hook", "webhook_password": "pw"}


def test_the_builtin_pipeline_needs_no_credentials(world, admin):
    response = world.client_for(admin).post(reverse("integrations:connect", args=["builtin"]),
                                            {"object_mode": "deal", "push_on": "accepted"})
    assert response.status_code == 302
    connection = CrmConnection.objects.get(vendor=world.vendor)
    assert connection.provider == "builtin" and connection.credentials == {}
    assert "won" in connection.stage_mapping.values()


def test_an_unknown_provider_or_mode_is_refused(world, admin, fake_crm):
    client = world.client_for(admin)
    assert client.get(reverse("integrations:connect", args=["zoho"])).status_code == 404
    response = client.post(reverse("integrations:connect", args=["hubspot"]),
                           _hubspot_form(object_mode="lead"))
    assert response.status_code == 200 and response.context["form"].errors["object_mode"]


# --- Testing and disconnecting -----------------------------------------------------------


def test_testing_a_working_connection(world, admin, crm):
    CrmConnection.objects.filter(pk=crm.pk).update(status=CrmConnection.ERROR,
                                                   last_error="old trouble")
    response = world.client_for(admin).post(reverse("integrations:test", args=[crm.public_id]),
                                            follow=True)
    assert "Fake CRM portal 123" in response.content.decode()
    crm.refresh_from_db()
    assert crm.status == CrmConnection.ACTIVE
    assert crm.last_success_at is not None


def test_testing_with_rejected_credentials_says_why(world, admin, crm, fake_crm, mailoutbox,
                                                    django_capture_on_commit_callbacks):
    fake_crm.error = CrmError.from_http(401, "This oauth-token is expired")
    with django_capture_on_commit_callbacks(execute=True):
        response = world.client_for(admin).post(
            reverse("integrations:test", args=[crm.public_id]), follow=True)
    body = response.content.decode()
    assert "This oauth-token is expired" in body
    assert "Needs attention" in body
    crm.refresh_from_db()
    assert crm.status == CrmConnection.ERROR
    assert [m.to for m in mailoutbox] == [[admin.user.email]]


def test_disconnecting(world, admin, builtin):
    client = world.client_for(admin)
    response = client.post(reverse("integrations:disable", args=[builtin.public_id]))
    assert response.status_code == 302
    builtin.refresh_from_db()
    assert builtin.status == CrmConnection.DISABLED
    page = client.get(reverse("integrations:connection"))
    assert "connection" not in page.context
    assert AuditEvent.objects.filter(action="crm.disconnected").exists()


def test_a_retired_connection_cannot_be_tested(world, admin, builtin):
    connections.disable(admin, builtin)
    response = world.client_for(admin).post(reverse("integrations:test",
                                                    args=[builtin.public_id]))
    assert response.status_code == 404


# --- Stage mapping -------------------------------------------------------------------------


def test_the_mapping_defaults_from_the_crms_closed_and_won_flags(world, admin, crm):
    response = world.client_for(admin).get(reverse("integrations:mapping"))
    assert response.status_code == 200
    form = response.context["form"]
    initial = {stage.id: form[name].initial for stage, name in form.stage_fields}
    assert initial == {"appointment": "open", "contract": "open", "closedwon": "won",
                       "closedlost": "lost"}
    assert "Renewals" in response.content.decode()  # the other pipeline can be chosen


def test_saving_the_mapping(world, admin, crm):
    client = world.client_for(admin)
    response = client.post(reverse("integrations:mapping"), {
        "pipeline": "sales", "stage_0": "open", "stage_1": "open", "stage_2": "won",
        "stage_3": "lost",
        "owners": "Jane@Acme.example = 501\n\n# comment\nraj@acme.example=502"})
    assert response.status_code == 302
    crm.refresh_from_db()
    assert crm.pipeline_id == "sales"
    assert crm.stage_mapping == {"appointment": "open", "contract": "open", "closedwon": "won",
                                 "closedlost": "lost"}
    assert crm.stage_labels["closedwon"] == "Closed won"
    assert crm.owner_mapping == {"jane@acme.example": "501", "raj@acme.example": "502"}
    again = client.get(reverse("integrations:mapping")).context["form"]
    assert "jane@acme.example = 501" in again["owners"].initial


def test_choosing_another_pipeline(world, admin, crm):
    client = world.client_for(admin)
    page = client.get(reverse("integrations:mapping"), {"pipeline": "renewals"})
    assert [s.id for s, _ in page.context["form"].stage_fields] == ["r-open", "r-won"]
    response = client.post(reverse("integrations:mapping"), {
        "pipeline": "renewals", "stage_0": "open", "stage_1": "won", "owners": ""})
    assert response.status_code == 302
    crm.refresh_from_db()
    assert (crm.pipeline_id, crm.stage_mapping) == ("renewals", {"r-open": "open",
                                                                 "r-won": "won"})


def test_bad_owner_lines_and_a_mapping_without_won_are_refused(world, admin, crm):
    client = world.client_for(admin)
    bad_owner = client.post(reverse("integrations:mapping"), {
        "pipeline": "sales", "stage_0": "open", "stage_1": "open", "stage_2": "won",
        "stage_3": "lost", "owners": "jane@acme.example 501\nnot-an-email = 7"})
    assert bad_owner.status_code == 200
    errors = bad_owner.context["form"].errors["owners"]
    assert any("Line 1" in e for e in errors) and any("Line 2" in e for e in errors)
    no_won = client.post(reverse("integrations:mapping"), {
        "pipeline": "sales", "stage_0": "open", "stage_1": "open", "stage_2": "open",
        "stage_3": "lost", "owners": ""})
    assert no_won.status_code == 200
    assert "won" in " ".join(no_won.context["form"].non_field_errors())
    crm.refresh_from_db()
    assert crm.stage_mapping == {}


def test_a_crm_error_while_loading_pipelines_is_explained(world, admin, crm, fake_crm):
    fake_crm.error = CrmError.from_http(503, "Service Unavailable")
    response = world.client_for(admin).get(reverse("integrations:mapping"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "did not give us its pipelines: Service Unavailable" in body
    assert "Try again" in body


def test_the_builtin_pipeline_can_be_mapped_too(world, admin, builtin):
    response = world.client_for(admin).get(reverse("integrations:mapping"))
    assert response.status_code == 200
    labels = [s.label for s, _ in response.context["form"].stage_fields]
    assert sorted(labels) == ["Closed lost", "Closed won", "New", "Proposal", "Qualified"]


def test_the_builtin_stages_keep_their_pipeline_order(world, programs, admin, builtin):
    labels = [s.label for s, _ in world.client_for(admin).get(
        reverse("integrations:mapping")).context["form"].stage_fields]
    assert labels == ["New", "Qualified", "Proposal", "Closed won", "Closed lost"]
    panel = crm_panel(admin, _accepted(world, programs))
    assert [key for key, _ in panel["stages"]] == ["new", "qualified", "proposal", "won",
                                                   "lost"]


def test_saving_the_builtin_mapping_needs_no_owners(world, admin, builtin):
    client = world.client_for(admin)
    form = client.get(reverse("integrations:mapping")).context["form"]
    data = {"pipeline": "builtin"}
    for stage, name in form.stage_fields:
        data[name] = {"won": "won", "lost": "lost", "proposal": "won"}.get(stage.id, "open")
    assert client.post(reverse("integrations:mapping"), data).status_code == 302
    builtin.refresh_from_db()
    assert builtin.outcome_for_stage("proposal") == "won"
    assert builtin.outcome_for_stage("qualified") == "open"


def test_mapping_without_a_connection_sends_back_to_the_chooser(world, admin):
    response = world.client_for(admin).get(reverse("integrations:mapping"))
    assert response.status_code == 302
    assert response.url == reverse("integrations:connection")


# --- The sync log --------------------------------------------------------------------------


@pytest.fixture
def log_rows(world, programs, crm):
    rows = {}
    for status in (SyncRecord.DONE, SyncRecord.FAILED, SyncRecord.DEAD, SyncRecord.PENDING):
        rows[status] = SyncRecord.objects.create(
            connection=crm, referral=_accepted(world, programs), status=status, attempts=2,
            last_error="" if status == "done" else f"{status} because of reasons",
            external_ids={"deal": "77"} if status == "done" else {},
            external_url="https://crm.example/deal/77" if status == "done" else "")
    return rows


def test_the_sync_log_lists_rows_with_their_crm_link_and_errors(world, admin, log_rows):
    response = world.client_for(admin).get(reverse("integrations:sync_log"))
    body = response.content.decode()
    assert response.status_code == 200
    for record in log_rows.values():
        assert record.referral.company_name in body
        assert reverse("referrals:detail", args=[record.referral.public_id]) in body
    assert "https://crm.example/deal/77" in body
    assert "failed because of reasons" in body
    retry_urls = [reverse("integrations:sync_retry", args=[r.public_id])
                  for r in log_rows.values()]
    assert [url in body for url in retry_urls] == [False, True, True, False]


def test_the_sync_log_filters_by_status(world, admin, log_rows):
    response = world.client_for(admin).get(reverse("integrations:sync_log"),
                                           {"status": "failed"})
    rows = list(response.context["page"].object_list)
    assert rows == [log_rows["failed"]]


def test_the_sync_log_query_count_does_not_grow_with_rows(world, programs, admin, crm,
                                                          django_assert_max_num_queries):
    for _ in range(25):
        SyncRecord.objects.create(connection=crm, referral=_accepted(world, programs),
                                  status=SyncRecord.FAILED, last_error="x")
    client = world.client_for(admin)
    with django_assert_max_num_queries(14):
        assert client.get(reverse("integrations:sync_log")).status_code == 200
    with django_assert_max_num_queries(14):
        assert client.get(reverse("integrations:connection")).status_code == 200


def test_retry_from_the_sync_log_re_arms_the_row(world, admin, log_rows,
                                                 django_capture_on_commit_callbacks):
    failed = log_rows["failed"]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = world.client_for(admin).post(
            reverse("integrations:sync_retry", args=[failed.public_id]), {"status": "failed"})
    assert response.status_code == 302
    assert response.url == reverse("integrations:sync_log") + "?status=failed"
    failed.refresh_from_db()
    assert (failed.status, failed.attempts, failed.last_error) == (SyncRecord.PENDING, 0, "")
    assert len(callbacks) == 1  # the push starts after commit
    for callback in callbacks:
        callback()
    failed.refresh_from_db()
    assert failed.status == SyncRecord.DONE
    assert AuditEvent.objects.filter(action="crm.sync_retried").exists()


def test_retrying_a_queued_row_says_so(world, admin, log_rows):
    response = world.client_for(admin).post(
        reverse("integrations:sync_retry", args=[log_rows["pending"].public_id]), follow=True)
    assert "already queued" in response.content.decode()


# --- The built-in pipeline on a referral -------------------------------------------------


def _move(world, membership, referral, stage):
    return world.client_for(membership).post(
        reverse("integrations:builtin_stage", args=[referral.public_id]), {"stage": stage},
        follow=True)


def test_a_vendor_moves_an_accepted_referral_through_the_pipeline(
        world, programs, builtin, django_capture_on_commit_callbacks):
    referral = _accepted(world, programs)
    member = world.member("vendor", "partnerships")
    response = _move(world, member, referral, "proposal")
    assert response.redirect_chain[-1][0] == reverse("referrals:detail",
                                                     args=[referral.public_id])
    assert "Deal moved to Proposal." in response.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = _move(world, member, referral, "won")
    assert "The referral is now won" in response.content.decode()
    assert list(DealSnapshot.objects.filter(referral=referral).order_by("received_at")
                .values_list("stage", "outcome")) == [("proposal", "open"), ("won", "won")]
    referral.refresh_from_db()
    assert referral.status == Referral.WON
    assert AuditEvent.objects.filter(action="referral.won",
                                     target_id=str(referral.public_id)).exists()
    assert TimelineEntry.objects.filter(referral=referral, to_status=Referral.WON).exists()


@pytest.mark.parametrize("who", ["partner.owner", "partner.rep", "operator.admin",
                                 "vendor.finance", "vendor.sales", "vendor2_admin"])
def test_others_cannot_move_stages(world, programs, builtin, who):
    member = (world.member(*who.split(".")) if "." in who else world.others[who])
    referral = _accepted(world, programs)
    response = world.client_for(member).post(
        reverse("integrations:builtin_stage", args=[referral.public_id]), {"stage": "won"})
    assert response.status_code == 404
    assert not DealSnapshot.objects.exists()


def test_an_assigned_sales_rep_may_move_the_stage(world, programs, builtin):
    from referrals import services

    referral = _accepted(world, programs)
    rep = world.member("vendor", "sales")
    services.assign_referral(world.member("vendor", "admin"), referral, rep)
    _move(world, rep, referral, "qualified")
    assert DealSnapshot.objects.get(referral=referral).stage == "qualified"


def test_moving_a_referral_that_is_not_accepted_explains_why(world, programs, builtin):
    referral = ReferralFactory(program=programs["acme"], partner=world.partner)
    response = _move(world, world.member("vendor", "admin"), referral, "qualified")
    assert "Accept the referral before working the deal." in response.content.decode()
    assert not DealSnapshot.objects.exists()


def test_moving_without_the_builtin_pipeline_explains_why(world, programs, crm):
    referral = _accepted(world, programs)
    response = _move(world, world.member("vendor", "admin"), referral, "won")
    assert "does not use the built-in pipeline" in response.content.decode()


# --- The CRM card on the referral page ---------------------------------------------------


def _render(membership, referral, panel):
    request = RequestFactory().get("/")
    request.user = membership.user
    return render_to_string("integrations/partials/referral_crm.html",
                            {"crm": panel, "referral": referral}, request=request)


def test_the_card_shows_the_builtin_stage_and_where_it_can_move(world, programs, builtin):
    referral = _accepted(world, programs)
    member = world.member("vendor", "partnerships")
    panel = crm_panel(member, referral)
    assert panel["builtin"] and panel["stage"] == "new" and panel["can_move"]
    assert sorted(key for key, _ in panel["stages"]) == ["lost", "new", "proposal",
                                                         "qualified", "won"]
    html = _render(member, referral, panel)
    assert reverse("integrations:builtin_stage", args=[referral.public_id]) in html
    assert '<option value="new" selected>' in html


def test_the_card_shows_the_sync_state_of_an_external_crm(world, programs, crm):
    referral = _accepted(world, programs)
    SyncRecord.objects.create(connection=crm, referral=referral, status=SyncRecord.DONE,
                              external_ids={"deal": "900"},
                              external_url="https://crm.example/deal/900")
    member = world.member("vendor", "admin")
    panel = crm_panel(member, referral)
    assert panel["record"].external_ids == {"deal": "900"}
    html = _render(member, referral, panel)
    assert "https://crm.example/deal/900" in html and "In the CRM" in html
    assert reverse("integrations:sync_log") in html  # admins get the sync log


def test_the_card_is_for_the_vendor_only(world, programs, builtin):
    referral = _accepted(world, programs)
    for member in (world.member("partner", "owner"), world.member("operator", "admin"),
                   world.others["vendor2_admin"]):
        assert crm_panel(member, referral) is None


def test_without_a_live_connection_the_card_closes_the_deal_by_hand(world, programs, admin,
                                                                    builtin):
    """No CRM any more: no pipeline and no sync state, but the deal still has to close
    somewhere, so deciders get the manual close form; a referral not yet accepted gets no
    card at all (nothing to show or do)."""
    connections.disable(admin, builtin)
    panel = crm_panel(admin, _accepted(world, programs))
    assert (panel["mode"], panel["connection"], panel["builtin"]) == ("manual", None, False)
    assert [c for c, _ in panel["close_form"].fields["outcome"].choices] == ["won", "lost"]
    submitted = ReferralFactory(program=programs["acme"], partner=world.partner)
    assert crm_panel(admin, submitted) is None


def test_a_submitted_referral_shows_the_stage_without_the_move_form(world, programs, builtin):
    referral = ReferralFactory(program=programs["acme"], partner=world.partner)
    member = world.member("vendor", "admin")
    panel = crm_panel(member, referral)
    assert not panel["can_move"]
    assert "Accept the referral" in _render(member, referral, panel)
