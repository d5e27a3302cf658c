"""Attribution pages: the list and the detail per role, the partner's privacy (its own side
only), a decider's confirm / reassign, and query counts.

Attributions are made the way production makes them: the vendor works the deal in the built-in
pipeline, the snapshot is recorded and the engine runs on commit.

The account "Globodyne" (globodyne.com) is registered by Brightpath (world.partner, its rep)
and, later, by Summit (world.partner2). `brightpath_deal`: the vendor wins the deal of
Brightpath's registration (exact match; Summit's registration is a dropped candidate).
`summit_deal`: the vendor wins the deal of Summit's registration instead (Brightpath's is
the dropped candidate).
"""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from attribution.models import Attribution, AttributionChange
from attribution.runner import attribute_deal
from integrations.builtin.services import move_stage
from integrations.connections import connect
from referrals.models import Referral
from referrals.services import accept_referral
from tests.conftest import ALL_ROLES, ROLE_IDS
from tests.referrals.factories import ReferralFactory

LISTERS = {  # roles that hold referral.view, and so list attributions in their scope
    ("partner", "owner"), ("partner", "manager"), ("partner", "rep"), ("partner", "finance"),
    ("vendor", "admin"), ("vendor", "partnerships"), ("vendor", "sales"), ("vendor", "finance"),
    ("operator", "admin"), ("operator", "channel_manager"), ("operator", "auditor"),
}
# A vendor's sales rep sees only deals of referrals assigned to it (none here).
VIEWERS = LISTERS - {("vendor", "sales")}
DECIDERS = {("vendor", "admin"), ("vendor", "partnerships"),
            ("operator", "admin"), ("operator", "channel_manager")}
SUMMIT_COMPANY = "Globodyne Worldwide Holdings"


@pytest.fixture
def pipeline(world, programs):
    connect(world.member("vendor", "admin"), provider="builtin", credentials={})
    return programs["acme"]


def win(world, referral, capture):
    """The vendor moves the referral's deal to won; attribution runs on commit."""
    with capture(execute=True):
        move_stage(world.member("vendor", "admin"), referral, "won")
    return Attribution.objects.get(vendor=world.vendor, external_deal_id=str(referral.public_id))


def registration(world, program, partner_member, company, website, *, accepted_via_service,
                 days_ago=5):
    referral = ReferralFactory(
        program=program, partner=partner_member.organization, submitted_by=partner_member.user,
        company_name=company, website=website,
        submitted_at=timezone.now() - timedelta(days=days_ago))
    if accepted_via_service:
        accept_referral(world.member("vendor", "admin"), referral)
    else:
        # A second accepted registration of one account cannot be made through the service
        # (one account is protected for one partner at a time); older data has them.
        now = timezone.now()
        Referral.objects.filter(pk=referral.pk).update(
            status=Referral.ACCEPTED, decided_at=now - timedelta(days=days_ago - 1),
            protected_until=now + timedelta(days=60))
    referral.refresh_from_db()
    return referral


@pytest.fixture
def globodyne(world, pipeline):
    brightpath = registration(world, pipeline, world.member("partner", "rep"), "Globodyne Inc",
                              "https://globodyne.com", accepted_via_service=True, days_ago=10)
    summit = registration(world, pipeline, world.others["partner2_rep"], SUMMIT_COMPANY,
                          "https://www.globodyne.com", accepted_via_service=False, days_ago=5)
    return brightpath, summit


@pytest.fixture
def brightpath_deal(world, globodyne, django_capture_on_commit_callbacks):
    return win(world, globodyne[0], django_capture_on_commit_callbacks)


@pytest.fixture
def summit_deal(world, globodyne, django_capture_on_commit_callbacks):
    return win(world, globodyne[1], django_capture_on_commit_callbacks)


def detail_url(attribution):
    return reverse("attribution:detail", args=[attribution.public_id])


# --- what the pipeline made ----------------------------------------------------------------------

def test_a_won_deal_is_attributed_with_every_candidate(brightpath_deal, globodyne, world):
    a = brightpath_deal
    assert (a.status, a.match, a.partner_id) == (Attribution.AUTO_CONFIRMED, "exact",
                                                  world.partner.pk)
    reasons = {c.partner_id: (c.kept, c.match) for c in a.candidates.all()}
    assert reasons == {world.partner.pk: (True, "exact"), world.partner2.pk: (False, "domain")}


# --- pages per role ------------------------------------------------------------------------

@pytest.mark.parametrize("kind,role", ALL_ROLES, ids=ROLE_IDS)
def test_the_list_shows_each_role_its_side(world, brightpath_deal, kind, role):
    response = world.client_for(world.member(kind, role)).get(reverse("attribution:list"))
    if (kind, role) not in LISTERS:
        assert response.status_code == 404
        return
    assert response.status_code == 200
    html = response.content.decode()
    assert (detail_url(brightpath_deal) in html) == ((kind, role) in VIEWERS)
    if (kind, role) not in VIEWERS:
        return
    if kind == "partner":
        assert "Credited to you" in html
    else:
        assert "Brightpath" in html  # the credited partner is a column for vendors/operators


@pytest.mark.parametrize("kind,role", ALL_ROLES, ids=ROLE_IDS)
def test_the_detail_shows_the_why_to_each_role_in_scope(world, brightpath_deal, globodyne,
                                                        kind, role):
    response = world.client_for(world.member(kind, role)).get(detail_url(brightpath_deal))
    if (kind, role) not in VIEWERS:
        assert response.status_code == 404
        return
    assert response.status_code == 200
    html = response.content.decode()
    assert "globodyne.com" in html and "First accepted registration" in html
    brightpath, summit = globodyne
    assert reverse("referrals:detail", args=[brightpath.public_id]) in html
    if kind == "partner":
        assert "Credited to you" in html
        assert "Summit" not in html and str(summit.public_id) not in html
    else:
        # Vendors and operators see every candidate, with partner names, and the history.
        assert "Summit" in html and SUMMIT_COMPANY in html
        assert "a stronger match (exact) exists" in html
        assert "History" in html and "Attributed" in html


@pytest.mark.parametrize("member", ["vendor2_admin", "foreign_owner", "foreign_vendor_admin",
                                    "pending_owner"])
def test_an_attribution_out_of_scope_is_a_404(world, brightpath_deal, member):
    host = "partners.elsewhere.test" if member.startswith("foreign") else "testserver"
    client = world.client_for(world.others[member], host=host)
    assert client.get(detail_url(brightpath_deal)).status_code == 404
    response = client.get(reverse("attribution:list"))
    assert response.status_code in (200, 404)
    assert str(brightpath_deal.public_id) not in response.content.decode()


def test_a_sales_rep_sees_the_deals_of_referrals_assigned_to_it(world, pipeline,
                                                                  django_capture_on_commit_callbacks):
    from referrals.services import assign_referral

    sales = world.member("vendor", "sales")
    referral = registration(world, pipeline, world.member("partner", "rep"), "Initech",
                            "https://initech.com", accepted_via_service=True)
    assign_referral(world.member("vendor", "admin"), referral, sales)
    a = win(world, referral, django_capture_on_commit_callbacks)
    client = world.client_for(sales)
    assert client.get(detail_url(a)).status_code == 200
    assert detail_url(a) in client.get(reverse("attribution:list")).content.decode()


def test_a_partner_without_a_candidate_does_not_see_the_attribution(world, pipeline,
                                                                     django_capture_on_commit_callbacks):
    solo = registration(world, pipeline, world.member("partner", "rep"), "Initech",
                        "https://initech.com", accepted_via_service=True)
    a = win(world, solo, django_capture_on_commit_callbacks)
    client = world.client_for(world.others["partner2_owner"])
    assert client.get(detail_url(a)).status_code == 404
    assert detail_url(a) not in client.get(reverse("attribution:list")).content.decode()


def test_a_rep_sees_only_attributions_of_its_own_registrations(world, brightpath_deal):
    other_rep = world.others["partner2_rep"]
    # Summit's rep submitted Summit's candidate: it sees the deal, as "another partner".
    html = world.client_for(other_rep).get(detail_url(brightpath_deal)).content.decode()
    assert "Credited to another partner" in html
    # Summit's owner sees it too; a second Brightpath rep, who registered nothing, does not.
    from tests.accounts.factories import MembershipFactory

    colleague = MembershipFactory(organization=world.partner, role="rep")
    assert world.client_for(colleague).get(detail_url(brightpath_deal)).status_code == 404


# --- partner privacy -----------------------------------------------------------------------

@pytest.mark.parametrize("role", ["owner", "manager", "rep", "finance"])
def test_the_losing_partner_never_sees_the_winner(world, summit_deal, globodyne, role):
    """Brightpath's registration lost to Summit's: Brightpath sees its own row and a neutral
    line, never Summit's name, registration or its company name."""
    brightpath, summit = globodyne
    client = world.client_for(world.member("partner", role))
    for url in (detail_url(summit_deal), reverse("attribution:list")):
        html = client.get(url).content.decode()
        assert "Summit" not in html
        assert SUMMIT_COMPANY not in html
        assert str(summit.public_id) not in html
        assert "another partner" in html
    html = client.get(detail_url(summit_deal)).content.decode()
    assert "Credited to another partner&#x27;s registration" in html
    assert "a stronger match (exact) exists" in html  # its own row's reason
    assert reverse("referrals:detail", args=[brightpath.public_id]) in html


def test_a_partner_searches_its_own_registrations_not_the_deal(world, brightpath_deal):
    """The deal carries Brightpath's company name ("Globodyne Inc"); Summit searching for it
    must not learn that it is the deal's name."""
    client = world.client_for(world.others["partner2_owner"])
    base = reverse("attribution:list")
    assert detail_url(brightpath_deal) not in client.get(base + "?q=Globodyne+Inc").content \
        .decode()
    assert detail_url(brightpath_deal) in client.get(base + "?q=Worldwide").content.decode()
    assert detail_url(brightpath_deal) in client.get(base + "?q=globodyne.com").content.decode()


def test_the_vendor_can_dispute_an_automatic_attribution(world, brightpath_deal):
    dispute = reverse("attribution:dispute_open_vendor", args=[brightpath_deal.public_id])
    html = world.client_for(world.member("vendor", "partnerships")).get(
        detail_url(brightpath_deal)).content.decode()
    assert dispute in html
    html = world.client_for(world.member("vendor", "finance")).get(
        detail_url(brightpath_deal)).content.decode()
    assert dispute not in html


def test_the_losing_partner_is_offered_a_dispute(world, summit_deal, globodyne):
    brightpath = globodyne[0]
    html = world.client_for(world.member("partner", "manager")).get(
        detail_url(summit_deal)).content.decode()
    assert reverse("attribution:dispute_open_partner", args=[brightpath.public_id]) in html
    html = world.client_for(world.member("partner", "finance")).get(
        detail_url(summit_deal)).content.decode()  # finance does not open disputes
    assert reverse("attribution:dispute_open_partner", args=[brightpath.public_id]) not in html


def test_the_winning_partner_never_sees_the_loser(world, brightpath_deal, globodyne):
    brightpath, summit = globodyne
    html = world.client_for(world.member("partner", "owner")).get(
        detail_url(brightpath_deal)).content.decode()
    assert "Summit" not in html and SUMMIT_COMPANY not in html
    assert str(summit.public_id) not in html


def test_a_partner_credited_to_no_one_sees_a_neutral_line(world, brightpath_deal, globodyne):
    from attribution.decisions import reassign_attribution

    reassign_attribution(world.member("vendor", "admin"), brightpath_deal, None,
                         "Bought through the marketplace, no partner involved.")
    client = world.client_for(world.others["partner2_owner"])
    html = client.get(detail_url(brightpath_deal)).content.decode()
    assert "Credited to no one" in html and "Brightpath" not in html
    listing = client.get(reverse("attribution:list") + "?outcome=none").content.decode()
    assert detail_url(brightpath_deal) in listing
    assert detail_url(brightpath_deal) not in client.get(
        reverse("attribution:list") + "?outcome=you").content.decode()


# --- decisions ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind,role", ALL_ROLES, ids=ROLE_IDS)
def test_confirm_is_for_deciders_only(world, brightpath_deal, kind, role):
    client = world.client_for(world.member(kind, role))
    url = reverse("attribution:confirm", args=[brightpath_deal.public_id])
    response = client.post(url, {"note": "Checked with sales."})
    brightpath_deal.refresh_from_db()
    if (kind, role) in DECIDERS:
        assert response.status_code == 302
        assert brightpath_deal.status == Attribution.CONFIRMED
        assert brightpath_deal.decided_by_id == world.member(kind, role).user_id
        assert brightpath_deal.decision_note == "Checked with sales."
    else:
        assert response.status_code == 404
        assert brightpath_deal.status == Attribution.AUTO_CONFIRMED


@pytest.mark.parametrize("kind,role", ALL_ROLES, ids=ROLE_IDS)
def test_reassign_is_for_deciders_only(world, brightpath_deal, globodyne, kind, role):
    summit = globodyne[1]
    client = world.client_for(world.member(kind, role))
    url = reverse("attribution:reassign", args=[brightpath_deal.public_id])
    response = client.post(url, {"referral": str(summit.public_id),
                                 "note": "The other partner ran the evaluation."})
    brightpath_deal.refresh_from_db()
    if (kind, role) in DECIDERS:
        assert response.status_code == 302
        assert brightpath_deal.status == Attribution.OVERTURNED
        assert brightpath_deal.partner_id == world.partner2.pk
    else:
        assert response.status_code == 404
        assert brightpath_deal.partner_id == world.partner.pk


def test_the_detail_offers_decisions_only_to_deciders(world, brightpath_deal):
    confirm = reverse("attribution:confirm", args=[brightpath_deal.public_id])
    for kind, role in ALL_ROLES:
        response = world.client_for(world.member(kind, role)).get(detail_url(brightpath_deal))
        if response.status_code == 200:
            assert (confirm in response.content.decode()) == ((kind, role) in DECIDERS)


def test_reassign_needs_a_note(world, brightpath_deal, globodyne):
    client = world.client_for(world.member("vendor", "partnerships"))
    response = client.post(reverse("attribution:reassign", args=[brightpath_deal.public_id]),
                           {"referral": str(globodyne[1].public_id), "note": "  "})
    assert response.status_code == 400
    assert "Write down why" in response.content.decode()
    brightpath_deal.refresh_from_db()
    assert brightpath_deal.status == Attribution.AUTO_CONFIRMED


def test_reassign_to_nobody_and_the_history_says_so(world, brightpath_deal):
    client = world.client_for(world.member("operator", "channel_manager"))
    response = client.post(reverse("attribution:reassign", args=[brightpath_deal.public_id]),
                           {"referral": "nobody", "note": "Self-serve purchase."})
    assert response.status_code == 302
    brightpath_deal.refresh_from_db()
    assert brightpath_deal.partner_id is None and brightpath_deal.referral_id is None
    html = world.client_for(world.member("vendor", "admin")).get(
        detail_url(brightpath_deal)).content.decode()
    assert "Self-serve purchase." in html and "Overturned" in html


def test_reassign_refuses_a_referral_that_was_not_a_candidate(world, brightpath_deal, pipeline):
    stranger = ReferralFactory(program=pipeline, partner=world.partner2)
    response = world.client_for(world.member("vendor", "admin")).post(
        reverse("attribution:reassign", args=[brightpath_deal.public_id]),
        {"referral": str(stranger.public_id), "note": "Try."})
    assert response.status_code == 400
    brightpath_deal.refresh_from_db()
    assert brightpath_deal.partner_id == world.partner.pk


def test_a_confirmed_attribution_cannot_be_confirmed_twice(world, brightpath_deal):
    client = world.client_for(world.member("vendor", "admin"))
    url = reverse("attribution:confirm", args=[brightpath_deal.public_id])
    client.post(url)
    response = client.post(url, follow=True)
    assert "already decided" in response.content.decode()


def test_a_human_decision_survives_a_rerun(world, brightpath_deal, globodyne,
                                           django_capture_on_commit_callbacks):
    brightpath, summit = globodyne
    world.client_for(world.member("vendor", "admin")).post(
        reverse("attribution:reassign", args=[brightpath_deal.public_id]),
        {"referral": str(summit.public_id), "note": "The other partner ran the evaluation."})
    # The deal changes in the pipeline (a new version, a new close time): the engine re-runs.
    with django_capture_on_commit_callbacks(execute=True):
        move_stage(world.member("vendor", "admin"), brightpath, "won")
    latest = brightpath.deal_snapshots.order_by("-received_at", "-pk").first()
    attribute_deal(latest)  # and once more, directly
    brightpath_deal.refresh_from_db()
    assert brightpath_deal.status == Attribution.OVERTURNED
    assert (brightpath_deal.partner_id, brightpath_deal.referral_id) == (world.partner2.pk,
                                                                         summit.pk)
    assert brightpath_deal.snapshot_id == latest.pk
    assert AttributionChange.objects.filter(
        attribution=brightpath_deal, reason="deal changed; a person's decision stands").exists()


def test_the_needs_review_queue(world, pipeline, django_capture_on_commit_callbacks):
    """A deal that matches a registration only by a similar name waits for the vendor."""
    from attribution.models import DealSnapshot

    referral = registration(world, pipeline, world.member("partner", "rep"), "Initech",
                            "https://initech.com", accepted_via_service=True)
    snapshot = DealSnapshot.objects.create(
        vendor=world.vendor, provider="builtin", external_deal_id="crm-42", version="1",
        account_name="Initech LLC", account_domain="initech-corp.com", amount_minor=990000,
        currency="USD", stage="won", outcome=DealSnapshot.WON,
        deal_created_at=referral.decided_at + timedelta(minutes=1),
        closed_at=timezone.now())
    fuzzy = attribute_deal(snapshot)
    assert fuzzy.status == Attribution.NEEDS_REVIEW
    client = world.client_for(world.member("vendor", "partnerships"))
    html = client.get(reverse("attribution:list") + "?status=needs_review").content.decode()
    assert detail_url(fuzzy) in html
    client.post(reverse("attribution:confirm", args=[fuzzy.public_id]))
    html = client.get(reverse("attribution:list") + "?status=needs_review").content.decode()
    assert detail_url(fuzzy) not in html


# --- filters and query counts -------------------------------------------------------------------

def test_filters(world, brightpath_deal, summit_deal):
    client = world.client_for(world.member("vendor", "admin"))
    base = reverse("attribution:list")

    def listed(query):
        html = client.get(base + query).content.decode()
        return {a for a in (brightpath_deal, summit_deal) if detail_url(a) in html}

    assert listed("") == {brightpath_deal, summit_deal}
    assert listed(f"?partner={world.partner2.public_id}") == {summit_deal}
    assert listed("?q=globodyne") == {brightpath_deal, summit_deal}
    assert listed("?q=initech") == set()
    today = timezone.localdate()
    assert listed(f"?closed_from={today}&closed_to={today}") == {brightpath_deal, summit_deal}
    assert listed(f"?closed_to={today - timedelta(days=1)}") == set()
    assert listed("?match=exact&status=auto_confirmed") == {brightpath_deal, summit_deal}
    assert listed("?match=fuzzy") == set()
    assert listed("?status=bogus") == set()  # an unreadable filter never widens the list
    operator = world.client_for(world.member("operator", "admin"))
    html = operator.get(f"{base}?vendor={world.vendor.public_id}"
                        f"&partner={world.partner.public_id}").content.decode()
    assert detail_url(brightpath_deal) in html and detail_url(summit_deal) not in html


def _grow(world, program, capture, n, start):
    for i in range(start, start + n):
        mine = registration(world, program, world.member("partner", "rep"), f"Account {i}",
                            f"https://account{i}.com", accepted_via_service=False, days_ago=9)
        registration(world, program, world.others["partner2_rep"], f"Account {i} GmbH",
                     f"https://account{i}.com", accepted_via_service=False, days_ago=8)
        win(world, mine, capture)


@pytest.mark.parametrize("member", [("vendor", "admin"), ("partner", "owner"),
                                    ("partner", "rep"), ("operator", "admin"),
                                    ("operator", "channel_manager")])
def test_the_list_costs_the_same_queries_for_3_or_30_rows(
        world, pipeline, django_capture_on_commit_callbacks, member):
    client = world.client_for(world.member(*member))
    url = reverse("attribution:list")

    def count():
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url)
        assert response.status_code == 200
        return len(ctx.captured_queries)

    _grow(world, pipeline, django_capture_on_commit_callbacks, 3, 0)
    few = count()
    _grow(world, pipeline, django_capture_on_commit_callbacks, 27, 3)
    many = count()
    assert few == many, f"{few} queries for 3 rows, {many} for 30"
    assert many <= 15


def test_the_detail_costs_a_bounded_number_of_queries(world, brightpath_deal,
                                                      django_assert_max_num_queries):
    for member in (("vendor", "admin"), ("partner", "owner"), ("operator", "admin")):
        client = world.client_for(world.member(*member))
        with django_assert_max_num_queries(20):
            assert client.get(detail_url(brightpath_deal)).status_code == 200
