"""Attribution metrics (attribution.metrics) on a small hand-built set, and their dashboard tiles.

Acme Cloud (world.vendor) gets four attributions in the period:
  auto      exact match, left as the engine decided            -> automatic
  confirmed exact match, then confirmed by the vendor          -> neither automatic nor reviewed
  fuzzy     similar name only, waiting for review              -> reviewed (waiting)
  reassigned similar name, then given to nobody by the vendor  -> reviewed (decided)
and one older attribution (200 days ago, outside the period). Globex (world.vendor2) gets one.
Disputes on Acme's: upheld after 2 days, overturned after 4 days, one open, one withdrawn.
"""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from attribution import metrics
from attribution.decisions import confirm_attribution, reassign_attribution
from attribution.models import Attribution, DealSnapshot, Dispute
from attribution.runner import attribute_deal
from tests.attribution.test_attribution_pages import registration, win
from tests.referrals.factories import ProgramFactory, ReferralFactory

DAY = timedelta(days=1)


def fuzzy_deal(vendor, referral, deal_id, name):
    """A deal from the vendor's CRM that carries no referral id and another domain: only the
    company name links it to the registration."""
    snapshot = DealSnapshot.objects.create(
        vendor=vendor, provider="hubspot", external_deal_id=deal_id, version="1",
        account_name=name, account_domain=f"{deal_id}.example", amount_minor=100_00,
        currency="USD", stage="closedwon", outcome=DealSnapshot.WON,
        deal_created_at=referral.decided_at + timedelta(minutes=1), closed_at=timezone.now())
    return attribute_deal(snapshot)


def dispute(world, attribution, status, opened_days_ago, took_days=None):
    now = timezone.now()
    created = now - opened_days_ago * DAY
    return Dispute.objects.create(
        network=world.network, vendor=attribution.vendor, partner=world.partner,
        attribution=attribution, side=Dispute.PARTNER, opened_by_org=world.partner,
        opened_by=world.member("partner", "owner").user, category=Dispute.TO_ANOTHER_PARTNER,
        text="Ours.", status=status, sla_due_at=created + 5 * DAY, created_at=created,
        decided_at=created + took_days * DAY if took_days is not None else None)


@pytest.fixture
def hand_built(world, pipeline, django_capture_on_commit_callbacks):
    rep, admin = world.member("partner", "rep"), world.member("vendor", "admin")

    def won(name):
        referral = registration(world, pipeline, rep, name, f"https://{name.lower()}.com",
                                accepted_via_service=True)
        return win(world, referral, django_capture_on_commit_callbacks)

    auto, confirmed, old = won("Alpha"), won("Bravo"), won("Oldco")
    confirm_attribution(admin, confirmed, "Checked.")
    fuzzy = fuzzy_deal(world.vendor, registration(
        world, pipeline, rep, "Charlie Widgets", "https://charlie.com",
        accepted_via_service=True), "d-charlie", "Charlie Widgets GmbH")
    reassigned = fuzzy_deal(world.vendor, registration(
        world, pipeline, rep, "Delta Dynamics", "https://delta.com",
        accepted_via_service=True), "d-delta", "Delta Dynamics LLC")
    assert fuzzy.status == reassigned.status == Attribution.NEEDS_REVIEW
    reassign_attribution(admin, reassigned, None, "Self-serve purchase.")
    Attribution.objects.filter(pk=old.pk).update(created_at=timezone.now() - 200 * DAY)
    globex = ProgramFactory(vendor=world.vendor2)
    other = ReferralFactory(program=globex, partner=world.partner, status="accepted",
                            decided_at=timezone.now() - 3 * DAY,
                            submitted_at=timezone.now() - 4 * DAY,
                            protected_until=timezone.now() + 60 * DAY)
    globex_deal = fuzzy_deal(world.vendor2, other, "g-1", other.company_name)
    dispute(world, auto, Dispute.UPHELD, opened_days_ago=10, took_days=2)
    dispute(world, confirmed, Dispute.OVERTURNED, opened_days_ago=10, took_days=4)
    dispute(world, fuzzy, Dispute.OPEN, opened_days_ago=1)
    dispute(world, reassigned, Dispute.WITHDRAWN, opened_days_ago=3, took_days=1)
    dispute(world, old, Dispute.OVERTURNED, opened_days_ago=150, took_days=30)
    return {"auto": auto, "confirmed": confirmed, "fuzzy": fuzzy, "reassigned": reassigned,
            "old": old, "globex": globex_deal}


@pytest.fixture
def pipeline(world, programs):
    from integrations.connections import connect

    connect(world.member("vendor", "admin"), provider="builtin", credentials={})
    return programs["acme"]


def since():
    return timezone.now() - 90 * DAY


def test_metrics_of_a_vendor_over_a_period(world, hand_built, django_assert_num_queries):
    with django_assert_num_queries(2):
        m = metrics.attribution_metrics(world.network.pk, vendor_ids=[world.vendor.pk],
                                        since=since())
    assert (m.attributions, m.auto_confirmed, m.needs_review, m.reviewed) == (4, 1, 1, 2)
    assert m.automatic_rate == 0.25 and m.review_rate == 0.5
    assert (m.disputes, m.disputes_decided, m.disputes_overturned) == (4, 2, 1)
    assert m.dispute_rate == 1.0 and m.overturn_rate == 0.5
    assert m.median_time_to_resolve == 3 * DAY and m.median_days_to_resolve == 3.0


def test_the_period_is_by_attribution_date(world, hand_built):
    everything = metrics.attribution_metrics(world.network.pk, vendor_ids=[world.vendor.pk])
    assert everything.attributions == 5 and everything.disputes == 5
    assert everything.median_time_to_resolve == 4 * DAY  # 2, 4 and 30 days
    older = metrics.attribution_metrics(world.network.pk, vendor_ids=[world.vendor.pk],
                                        until=since())
    assert (older.attributions, older.auto_confirmed, older.disputes_overturned) == (1, 1, 1)
    assert older.overturn_rate == 1.0


def test_the_network_and_each_vendor(world, hand_built, django_assert_num_queries):
    network = metrics.attribution_metrics(world.network.pk, since=since())
    assert (network.attributions, network.reviewed, network.disputes) == (5, 3, 4)
    with django_assert_num_queries(3):
        rows = metrics.metrics_by_vendor(world.network.pk, since=since())
    by_name = {vendor.name: m for vendor, m in rows}
    assert [vendor.name for vendor, _ in rows] == ["Acme Cloud", "Globex"]  # busiest first
    assert by_name["Acme Cloud"].attributions == 4 and by_name["Acme Cloud"].disputes == 4
    assert by_name["Acme Cloud"].median_time_to_resolve == 3 * DAY
    globex = by_name["Globex"]
    assert (globex.attributions, globex.reviewed, globex.disputes) == (1, 1, 0)
    assert globex.dispute_rate == 0.0 and globex.overturn_rate is None
    assert globex.median_time_to_resolve is None
    assert metrics.metrics_by_vendor(world.network.pk, since=since(), limit=1)[0][0].name \
        == "Acme Cloud"
    assert metrics.metrics_by_vendor(world.other_network.pk) == []


def test_no_attributions_no_rates(world):
    m = metrics.attribution_metrics(world.network.pk)
    assert m.attributions == 0 and m.automatic_rate is None and m.dispute_rate is None
    assert m.median_days_to_resolve is None


def test_summarize_takes_any_scope(world, hand_built):
    visible = Attribution.objects.visible_to(world.member("vendor", "admin"))
    assert metrics.summarize(visible).attributions == 5  # all time


def test_the_portable_median_matches_postgresql(world, hand_built, monkeypatch):
    monkeypatch.setattr(metrics, "_exact_median", lambda: False)  # the quickstart's path
    m = metrics.attribution_metrics(world.network.pk, vendor_ids=[world.vendor.pk],
                                    since=since())
    assert m.median_time_to_resolve == 3 * DAY
    rows = dict(metrics.metrics_by_vendor(world.network.pk, since=since()))
    assert rows[world.vendor].median_time_to_resolve == 3 * DAY


def test_metrics_work_without_the_dispute_model(world, hand_built, monkeypatch):
    monkeypatch.setattr(metrics, "dispute_model", lambda: None)
    m = metrics.attribution_metrics(world.network.pk, since=since())
    assert m.attributions == 5 and m.disputes == 0 and m.dispute_rate == 0.0


# --- the numbers link to the list they count ---------------------------------------------------

def _listed(client, link, attributions):
    html = client.get(link).content.decode()
    return {name for name, a in attributions.items()
            if reverse("attribution:detail", args=[a.public_id]) in html}


def tile(client):
    """The dashboard places the tile; its numbers load from attribution:metrics_tile."""
    dashboard = client.get(reverse("home"))
    assert reverse("attribution:metrics_tile") in dashboard.content.decode()
    response = client.get(reverse("attribution:metrics_tile"), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    return response


def test_the_vendor_admin_tile_links_each_number_to_its_list(world, hand_built):
    client = world.client_for(world.member("vendor", "admin"))
    response = tile(client)
    kpis = {label: (value, link) for value, label, link in response.context["tile"]["kpis"]}
    assert kpis["attributed automatically"][0] == "25%"
    assert kpis["needed review"][0] == "50%"
    assert kpis["disputed"][0] == "100%"
    assert kpis["median time to resolve a dispute"][0] == "3 d"
    assert kpis["of decided disputes overturned"][0] == "50%"
    assert "Attribution of your deals" in response.content.decode()
    acme = {k: v for k, v in hand_built.items() if k != "globex"}
    assert _listed(client, kpis["won deals attributed"][1], acme) == {
        "auto", "confirmed", "fuzzy", "reassigned"}
    assert _listed(client, kpis["attributed automatically"][1], acme) == {"auto"}
    assert _listed(client, kpis["needed review"][1], acme) == {"fuzzy", "reassigned"}
    assert _listed(client, kpis["waiting for review"][1], acme) == {"fuzzy"}
    assert _listed(client, kpis["disputed"][1], acme) == {
        "auto", "confirmed", "fuzzy", "reassigned"}
    assert _listed(client, kpis["of decided disputes overturned"][1], acme) == {"reassigned"}


def test_the_operator_admin_tile_has_the_network_and_each_vendor(world, hand_built):
    client = world.client_for(world.member("operator", "admin"))
    response = tile(client)
    data = response.context["tile"]
    assert data["title"] == "Attribution across the network"
    assert dict((label, value) for value, label, _ in data["kpis"])["won deals attributed"] \
        == "5"
    assert [row["vendor"].name for row in data["by_vendor"]] == ["Acme Cloud", "Globex"]
    globex_link = data["by_vendor"][1]["link"]
    assert _listed(client, globex_link, hand_built) == {"globex"}


@pytest.mark.parametrize("member", [("partner", "owner"), ("vendor", "partnerships"),
                                    ("operator", "channel_manager"), ("operator", "auditor")])
def test_other_roles_get_no_metrics_tile(world, hand_built, member):
    client = world.client_for(world.member(*member))
    response = client.get(reverse("home"))
    assert response.context["attribution_metrics"] is None
    assert reverse("attribution:metrics_tile") not in response.content.decode()
    assert client.get(reverse("attribution:metrics_tile")).status_code == 404


@pytest.mark.parametrize("member", [("operator", "admin"), ("vendor", "admin")])
def test_the_tile_costs_a_bounded_number_of_queries(world, hand_built, member,
                                                    django_assert_max_num_queries):
    client = world.client_for(world.member(*member))
    with django_assert_max_num_queries(12):
        assert client.get(reverse("attribution:metrics_tile")).status_code == 200
