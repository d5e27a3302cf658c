"""Who sees which referral, what of it, and who may act on it: the 14 roles against the referral
list, detail, actions and CSV export. Out of scope is always a 404, and nothing changes."""

import csv
import io

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEvent
from referrals import services
from referrals.models import Referral, ReferralAssignment, TimelineEntry
from referrals.services import ReferralData
from tests.accounts.factories import MembershipFactory
from tests.conftest import ALL_ROLES, ROLE_IDS
from tests.referrals.factories import EnrolmentFactory, ProgramFactory, ReferralFactory

PA, VE, OP = "partner", "vendor", "operator"

CONTACT_EMAIL = "peter.gibbons@initech.com"
CONTACT_PHONE = "+14155550123"
CONTACT_NAME = "Peter Gibbons"

LIST_ALLOWED = {
    (PA, "owner"), (PA, "manager"), (PA, "rep"), (PA, "finance"),
    (VE, "admin"), (VE, "partnerships"), (VE, "sales"), (VE, "finance"),
    (OP, "admin"), (OP, "channel_manager"), (OP, "auditor"),
}
# A referral of Brightpath to Acme Cloud submitted by Brightpath's rep.
DETAIL_ALLOWED = LIST_ALLOWED - {(VE, "sales")}  # sales reps see only what is assigned
NO_CONTACT_DETAILS = {(PA, "finance"), (VE, "finance")}


def data(**overrides) -> ReferralData:
    values = dict(company_name="Initech Inc", website="https://www.initech.com", country="US",
                  contact_name=CONTACT_NAME, contact_email=CONTACT_EMAIL,
                  contact_phone=CONTACT_PHONE, contact_title="VP Engineering",
                  amount_minor=2_500_050, currency="USD")
    values.update(overrides)
    return ReferralData(**values)


def detail_url(referral):
    return reverse("referrals:detail", args=[referral.public_id])


def csv_rows(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


@pytest.fixture
def acme(programs):
    return programs["acme"]


@pytest.fixture
def referral(world, acme):
    """Brightpath -> Acme Cloud, submitted by Brightpath's rep."""
    return services.submit_referral(world.member(PA, "rep"), acme, data())


def _client(world, role):
    return world.client_for(world.member(*role))


# --- The list ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ALL_ROLES, ids=ROLE_IDS)
def test_referral_list_by_role(world, referral, role):
    response = _client(world, role).get(reverse("referrals:list"))
    if role not in LIST_ALLOWED:
        assert response.status_code == 404
        return
    assert response.status_code == 200
    html = response.content.decode()
    assert ("Initech Inc" in html) == (role in DETAIL_ALLOWED)


def test_referral_list_requires_login(world, referral):
    from django.test import Client

    response = Client().get(reverse("referrals:list"))
    assert response.status_code == 302 and "login" in response["Location"]


# --- The detail page ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ALL_ROLES, ids=ROLE_IDS)
def test_referral_detail_by_role(world, referral, role):
    response = _client(world, role).get(detail_url(referral))
    assert response.status_code == (200 if role in DETAIL_ALLOWED else 404)
    if response.status_code == 200:
        assert "Initech Inc" in response.content.decode()


def test_detail_for_other_partners_and_vendors_is_404(world, referral):
    for name in ("partner2_rep", "partner2_owner", "vendor2_admin"):
        response = world.client_for(world.others[name]).get(detail_url(referral))
        assert response.status_code == 404, name


def test_a_rep_sees_only_their_own_referrals(world, acme, referral):
    colleague = services.submit_referral(world.member(PA, "manager"), acme,
                                         data(company_name="Globochem", website="globochem.com"))
    client = _client(world, (PA, "rep"))
    assert client.get(detail_url(referral)).status_code == 200
    assert client.get(detail_url(colleague)).status_code == 404
    html = client.get(reverse("referrals:list")).content.decode()
    assert "Initech Inc" in html and "Globochem" not in html
    # The owner sees both.
    html = _client(world, (PA, "owner")).get(reverse("referrals:list")).content.decode()
    assert "Initech Inc" in html and "Globochem" in html


def test_sales_rep_sees_a_referral_once_assigned(world, referral):
    sales = world.member(VE, "sales")
    client = world.client_for(sales)
    assert client.get(detail_url(referral)).status_code == 404
    services.assign_referral(world.member(VE, "partnerships"), referral, sales)
    assert client.get(detail_url(referral)).status_code == 200
    assert "Initech Inc" in client.get(reverse("referrals:list")).content.decode()
    other = world.client_for(MembershipFactory(organization=world.vendor, role="sales"))
    assert other.get(detail_url(referral)).status_code == 404


def test_channel_manager_sees_only_the_portfolio(world, programs, referral):
    """The portfolio covers Acme Cloud and Brightpath: Summit -> Globex is outside it."""
    manager = _client(world, (OP, "channel_manager"))
    outside = ReferralFactory(program=programs["globex"], partner=world.partner2,
                              submitted_by=world.others["partner2_rep"].user,
                              company_name="Outside Co")
    via_vendor = ReferralFactory(program=programs["acme"], partner=world.partner2,
                                 submitted_by=world.others["partner2_rep"].user,
                                 company_name="Via Vendor Co")
    assert manager.get(detail_url(outside)).status_code == 404
    assert manager.get(detail_url(via_vendor)).status_code == 200
    assert manager.get(detail_url(referral)).status_code == 200
    html = manager.get(reverse("referrals:list")).content.decode()
    assert "Via Vendor Co" in html and "Outside Co" not in html
    # The network's admin sees all three.
    html = _client(world, (OP, "admin")).get(reverse("referrals:list")).content.decode()
    assert "Outside Co" in html and "Via Vendor Co" in html


@pytest.mark.parametrize("role", ALL_ROLES, ids=ROLE_IDS)
def test_another_networks_referral_is_404_for_everyone(world, programs, role):
    foreign = ReferralFactory(program=programs["foreign"], partner=world.foreign_partner,
                              submitted_by=world.others["foreign_owner"].user,
                              company_name="Faraway Customer")
    client = _client(world, role)
    assert client.get(detail_url(foreign)).status_code == 404
    listing = client.get(reverse("referrals:list"))
    assert b"Faraway Customer" not in listing.content
    if listing.status_code == 200:
        export = client.get(reverse("referrals:export"))
        assert "Faraway Customer" not in {r["company"] for r in csv_rows(export)}


@pytest.mark.parametrize("role", ALL_ROLES, ids=ROLE_IDS)
def test_drafts_never_leave_the_partner(world, acme, role):
    draft = services.save_draft(world.member(PA, "rep"), acme,
                                ReferralData(company_name="Secret Draft Co"))
    client = _client(world, role)
    partner_sees = role in {(PA, "owner"), (PA, "manager"), (PA, "rep"), (PA, "finance")}
    assert client.get(detail_url(draft)).status_code == (200 if partner_sees else 404)
    listing = client.get(reverse("referrals:list"))
    assert (b"Secret Draft Co" in listing.content) == partner_sees


def test_drafts_are_not_visible_even_to_an_assigned_sales_rep(world, acme, referral):
    """A referral that goes back to draft never happens, but an assignment row pointing at a
    draft (e.g. written by hand) still must not expose it."""
    draft = services.save_draft(world.member(PA, "rep"), acme,
                                ReferralData(company_name="Secret Draft Co"))
    sales = world.member(VE, "sales")
    from guardian.shortcuts import assign_perm

    assign_perm("referrals.work_referral", sales.user, draft)
    assert world.client_for(sales).get(detail_url(draft)).status_code == 404


# --- Contact details ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", sorted(DETAIL_ALLOWED), ids=lambda r: f"{r[0]}.{r[1]}")
def test_contact_details_only_for_roles_allowed_them(world, referral, role):
    html = _client(world, role).get(detail_url(referral)).content.decode()
    shows_contacts = role not in NO_CONTACT_DETAILS
    assert (CONTACT_EMAIL in html) == shows_contacts
    assert (CONTACT_PHONE in html) == shows_contacts
    assert (CONTACT_NAME in html) == shows_contacts
    if role in NO_CONTACT_DETAILS:
        assert "$25,000.50" in html  # finance still sees the amount


@pytest.mark.parametrize("role", sorted(DETAIL_ALLOWED), ids=lambda r: f"{r[0]}.{r[1]}")
def test_csv_export_hides_contacts_from_roles_without_them(world, referral, role):
    response = _client(world, role).get(reverse("referrals:export"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    [row] = csv_rows(response)
    assert row["company"] == "Initech Inc"
    body = ",".join(f"{k}={v}" for k, v in row.items())
    shows_contacts = role not in NO_CONTACT_DETAILS
    assert (CONTACT_EMAIL in body) == shows_contacts
    assert (CONTACT_PHONE in body) == shows_contacts
    assert ("contact_email" in row) == shows_contacts
    assert row["amount_minor"] == "2500050" and row["currency"] == "USD"


def test_csv_export_is_404_for_roles_without_referrals(world, referral):
    for role in set(ALL_ROLES) - LIST_ALLOWED:
        assert _client(world, role).get(reverse("referrals:export")).status_code == 404, role


# --- Internal notes ----------------------------------------------------------------------------


def test_vendor_internal_notes_never_reach_partner_roles(world, referral):
    partnerships = world.member(VE, "partnerships")
    services.post_message(partnerships, referral, "Margin is thin; low priority", internal=True)
    services.post_message(partnerships, referral, "Thanks, we'll call them Monday")
    services.assign_referral(partnerships, referral, world.member(VE, "sales"))
    sales_name = world.member(VE, "sales").user.get_full_name()
    for role in [(PA, "owner"), (PA, "manager"), (PA, "rep"), (PA, "finance")]:
        html = _client(world, role).get(detail_url(referral)).content.decode()
        assert "we&#x27;ll call them Monday" in html, role
        assert "Margin is thin" not in html, role
        assert "internal note" not in html, role
        assert f"Assigned to {sales_name}" not in html, role
    for role in [(VE, "admin"), (VE, "partnerships"), (VE, "finance")]:
        html = _client(world, role).get(detail_url(referral)).content.decode()
        assert "Margin is thin" in html, role


def test_a_partner_cannot_write_an_internal_note(world, referral):
    client = _client(world, (PA, "rep"))
    response = client.post(reverse("referrals:message", args=[referral.public_id]),
                           {"body": "Sneaky", "internal": "on"})
    assert response.status_code == 404
    assert not TimelineEntry.objects.filter(body="Sneaky").exists()


# --- POST actions ------------------------------------------------------------------------------

VENDOR_DECIDERS = {(VE, "admin"), (VE, "partnerships")}


def _fingerprint(referral):
    fresh = Referral.objects.get(pk=referral.pk)
    return (fresh.status, fresh.protected_until, fresh.rejection_code,
            ReferralAssignment.objects.filter(content_object=fresh).count(),
            TimelineEntry.objects.filter(referral=fresh).count(),
            AuditEvent.objects.count())


def _accepted(world, referral):
    return services.accept_referral(world.member(VE, "partnerships"), referral)


ACTIONS = {
    # name: (needs accepted, POST data(world), roles allowed, check it happened)
    "accept": (False, lambda w: {}, VENDOR_DECIDERS,
               lambda r: r.status == Referral.ACCEPTED),
    "reject": (False, lambda w: {"code": "not_qualified", "text": ""}, VENDOR_DECIDERS,
               lambda r: r.status == Referral.REJECTED),
    "assign": (False, lambda w: {"assignee": str(w.member(VE, "sales").public_id)},
               VENDOR_DECIDERS, lambda r: r.assignments.exists()),
    "withdraw": (False, lambda w: {"reason": "No longer needed"},
                 {(PA, "owner"), (PA, "manager"), (PA, "rep")},
                 lambda r: r.status == Referral.WITHDRAWN),
    "extend": (True, lambda w: {"days": "30"}, VENDOR_DECIDERS,
               lambda r: r.timeline.filter(body__startswith="Protection extended").exists()),
    "close": (True, lambda w: {"outcome": "won", "closed_on": timezone.localdate(),
                               "amount": "25000"}, VENDOR_DECIDERS,
              lambda r: r.status == Referral.WON),
    "message": (False, lambda w: {"body": "Any news on this one?"},
                {(PA, "owner"), (PA, "manager"), (PA, "rep"), (PA, "finance"),
                 (VE, "admin"), (VE, "partnerships"), (VE, "finance")},
                lambda r: r.timeline.filter(body="Any news on this one?").exists()),
}
ACTION_CASES = [(a, role) for a in ACTIONS for role in ALL_ROLES]
# Closing the deal by hand is the integrations app's door (the same as a CRM's).
ACTION_URLS = {"close": "integrations:deal_close"}


def action_url(action, referral):
    return reverse(ACTION_URLS.get(action, f"referrals:{action}"), args=[referral.public_id])


@pytest.mark.parametrize("action,role", ACTION_CASES,
                         ids=[f"{a}-{k}.{r}" for a, (k, r) in ACTION_CASES])
def test_post_actions_by_role(world, referral, action, role):
    needs_accepted, payload, allowed, happened = ACTIONS[action]
    if needs_accepted:
        referral = _accepted(world, referral)
    before = _fingerprint(referral)
    response = _client(world, role).post(action_url(action, referral), payload(world))
    if role in allowed:
        assert response.status_code == 302
        assert response["Location"] == detail_url(referral)
        assert happened(Referral.objects.get(pk=referral.pk))
        assert _fingerprint(referral) != before
    else:
        assert response.status_code == 404
        assert _fingerprint(referral) == before
        assert not happened(Referral.objects.get(pk=referral.pk))


@pytest.mark.parametrize("action", list(ACTIONS))
def test_post_actions_from_another_organization_are_404(world, referral, action):
    needs_accepted, payload, _, _ = ACTIONS[action]
    if needs_accepted:
        referral = _accepted(world, referral)
    before = _fingerprint(referral)
    for name in ("partner2_owner", "partner2_rep", "vendor2_admin"):
        response = world.client_for(world.others[name]).post(action_url(action, referral),
                                                             payload(world))
        assert response.status_code == 404, name
    assert _fingerprint(referral) == before


def test_assigned_sales_rep_may_close_but_not_decide(world, referral):
    sales = world.member(VE, "sales")
    services.assign_referral(world.member(VE, "partnerships"), referral, sales)
    client = world.client_for(sales)
    assert client.post(reverse("referrals:accept", args=[referral.public_id])).status_code == 404
    _accepted(world, referral)
    response = client.post(reverse("integrations:deal_close", args=[referral.public_id]),
                           {"outcome": "lost", "closed_on": timezone.localdate()})
    assert response.status_code == 302
    assert Referral.objects.get(pk=referral.pk).status == Referral.LOST


def test_actions_need_post(world, referral):
    client = _client(world, (VE, "partnerships"))
    response = client.get(reverse("referrals:accept", args=[referral.public_id]))
    assert response.status_code == 405
    assert Referral.objects.get(pk=referral.pk).status == Referral.SUBMITTED


def test_anonymous_actions_change_nothing(world, referral):
    from django.test import Client

    before = _fingerprint(referral)
    response = Client().post(reverse("referrals:accept", args=[referral.public_id]))
    assert response.status_code == 302 and "login" in response["Location"]
    assert _fingerprint(referral) == before


def test_the_detail_page_offers_only_permitted_actions(world, referral):
    accept_url = reverse("referrals:accept", args=[referral.public_id])
    withdraw_url = reverse("referrals:withdraw", args=[referral.public_id])
    vendor = _client(world, (VE, "partnerships")).get(detail_url(referral)).content.decode()
    assert accept_url in vendor and withdraw_url not in vendor
    partner = _client(world, (PA, "rep")).get(detail_url(referral)).content.decode()
    assert accept_url not in partner and withdraw_url in partner
    for role in [(VE, "finance"), (OP, "admin"), (OP, "auditor"), (PA, "finance")]:
        html = _client(world, role).get(detail_url(referral)).content.decode()
        assert accept_url not in html and withdraw_url not in html, role


# --- CSV export: filters, scope, injection --------------------------------------------------------


@pytest.fixture
def mixed(world, acme, referral):
    """Brightpath: one submitted (the rep's), one accepted (the manager's); Summit: one."""
    manager = world.member(PA, "manager")
    accepted = services.submit_referral(manager, acme, data(company_name="Globochem",
                                                            website="globochem.com"))
    _accepted(world, accepted)
    summit = services.submit_referral(world.others["partner2_rep"], acme,
                                      data(company_name="Umbrella", website="umbrella.com"))
    return {"submitted": referral, "accepted": accepted, "summit": summit}


def _export(client, query=""):
    response = client.get(reverse("referrals:export") + query)
    assert response.status_code == 200
    return {r["company"] for r in csv_rows(response)}


def test_export_respects_scope(world, mixed):
    assert _export(_client(world, (PA, "owner"))) == {"Initech Inc", "Globochem"}
    assert _export(_client(world, (PA, "rep"))) == {"Initech Inc"}
    assert _export(_client(world, (VE, "partnerships"))) == {"Initech Inc", "Globochem",
                                                             "Umbrella"}
    assert _export(world.client_for(world.others["partner2_owner"])) == {"Umbrella"}
    assert _export(world.client_for(world.others["vendor2_admin"])) == set()
    assert _export(_client(world, (VE, "sales"))) == set()


def test_export_respects_filters(world, mixed):
    owner = _client(world, (PA, "owner"))
    assert _export(owner, "?status=accepted") == {"Globochem"}
    assert _export(owner, "?q=initech") == {"Initech Inc"}
    vendor = _client(world, (VE, "partnerships"))
    assert _export(vendor, f"?counterpart={world.partner2.public_id}") == {"Umbrella"}
    assert _export(vendor, "?status=submitted") == {"Initech Inc", "Umbrella"}


def test_export_neutralises_formulas(world, acme):
    rep = world.member(PA, "rep")
    for name, site in [("=HYPERLINK(\"http://evil.test\",\"x\")", "evil1.com"),
                       ("+1+1", "evil2.com"), ("@SUM(A1)", "evil3.com"),
                       ("-2+3", "evil4.com")]:
        services.submit_referral(rep, acme, data(company_name=name, website=site))
    response = _client(world, (PA, "owner")).get(reverse("referrals:export"))
    companies = {r["company"] for r in csv_rows(response)}
    assert companies == {"'=HYPERLINK(\"http://evil.test\",\"x\")", "'+1+1", "'@SUM(A1)",
                         "'-2+3"}
    assert not any(c[:1] in "=+-@" for c in companies)


@pytest.mark.parametrize("query", [
    "?status=everything", "?status=accepted&since=yesterday", "?until=2024-13-45",
    "?min_value=lots", "?max_value=-5", "?conflict=maybe", "?sort=password",
    "?counterpart=not-a-uuid", "?counterpart=00000000-0000-0000-0000-000000000000",
])
def test_invalid_filters_never_widen_the_list(world, mixed, query):
    """A filter that cannot be read shows nothing (and says why) rather than everything."""
    for role in [(PA, "owner"), (PA, "rep"), (VE, "partnerships")]:
        client = _client(world, role)
        response = client.get(reverse("referrals:list") + query)
        assert response.status_code == 200
        html = response.content.decode()
        assert 'class="error"' in html, (role, query)
        for company in ("Initech Inc", "Globochem", "Umbrella"):
            assert company not in html, (role, query, company)
        assert _export(client, query) == set(), (role, query)


def test_a_foreign_vendor_as_counterpart_filter_shows_nothing(world, programs, mixed):
    owner = _client(world, (PA, "owner"))
    assert _export(owner, f"?counterpart={world.foreign_vendor.public_id}") == set()
    assert _export(owner, f"?counterpart={world.vendor.public_id}") == {"Initech Inc",
                                                                        "Globochem"}


# --- Query counts ------------------------------------------------------------------------------


def _queries(client, url):
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, url
    if hasattr(response, "streaming_content"):
        b"".join(response.streaming_content)
    return len(ctx.captured_queries)


def _grow_referrals(world, acme, n):
    rep, sales = world.member(PA, "rep"), world.member(VE, "sales")
    statuses = [Referral.SUBMITTED, Referral.ACCEPTED, Referral.REJECTED]
    for i in range(n):
        partner, by = ((world.partner, rep.user) if i % 2 == 0
                       else (world.partner2, world.others["partner2_rep"].user))
        referral = ReferralFactory(program=acme, partner=partner, submitted_by=by,
                                   status=statuses[i % 3],
                                   protected_until=timezone.now() if i % 3 == 1 else None)
        from guardian.shortcuts import assign_perm

        assign_perm("referrals.work_referral", sales.user, referral)


@pytest.mark.parametrize("role", [(PA, "owner"), (PA, "rep"), (VE, "partnerships"),
                                  (VE, "sales"), (OP, "admin"), (OP, "channel_manager")],
                         ids=lambda r: f"{r[0]}.{r[1]}")
@pytest.mark.parametrize("page", ["list", "export"])
def test_referral_list_queries_do_not_grow_with_rows(world, acme, role, page):
    client = _client(world, role)
    url = reverse(f"referrals:{page}")
    _grow_referrals(world, acme, 3)
    few = _queries(client, url)
    _grow_referrals(world, acme, 27)
    many = _queries(client, url)
    assert many == few, f"{role} {page}: {few} queries for 3 referrals, {many} for 30"
    assert many <= 20


def _grow_timeline(world, referral, n):
    speakers = [world.member(PA, "rep"), world.member(VE, "partnerships"),
                world.member(VE, "admin")]
    for i in range(n):
        who = speakers[i % 3]
        TimelineEntry.objects.create(
            referral=referral, kind=TimelineEntry.NOTE if i % 3 == 2 else TimelineEntry.MESSAGE,
            visibility=TimelineEntry.VENDOR_ONLY if i % 3 == 2 else TimelineEntry.EVERYONE,
            author=who.user, author_organization=who.organization, body=f"Entry {i}")


@pytest.mark.parametrize("role", [(PA, "rep"), (VE, "partnerships"), (OP, "admin")],
                         ids=lambda r: f"{r[0]}.{r[1]}")
def test_referral_detail_queries_do_not_grow_with_the_timeline(world, referral, role):
    client = _client(world, role)
    url = detail_url(referral)
    _grow_timeline(world, referral, 2)  # plus the "submitted" entry: 3
    few = _queries(client, url)
    _grow_timeline(world, referral, 27)
    many = _queries(client, url)
    assert many == few, f"{role}: {few} queries for 3 entries, {many} for 30"
    assert many <= 25


def _grow_programs(world, n):
    for _ in range(n):
        program = ProgramFactory(vendor=world.vendor)
        EnrolmentFactory(program=program, partner=world.partner,
                         requested_by=world.member(PA, "owner").user)
        EnrolmentFactory(program=program, partner=world.partner2,
                         requested_by=world.others["partner2_owner"].user)


@pytest.mark.parametrize("role", [(PA, "owner"), (VE, "admin"), (OP, "admin"),
                                  (OP, "channel_manager")], ids=lambda r: f"{r[0]}.{r[1]}")
def test_program_list_queries_do_not_grow_with_rows(world, programs, role):
    client = _client(world, role)
    url = reverse("referrals:programs")
    _grow_programs(world, 3)
    few = _queries(client, url)
    _grow_programs(world, 27)
    many = _queries(client, url)
    assert many == few, f"{role}: {few} queries for few programs, {many} for many"
    assert many <= 15
