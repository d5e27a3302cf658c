"""One door to "won": however a deal closes (a CRM's change, the built-in pipeline, a person
closing it by hand) it becomes a deal snapshot, and the referral, the attribution and the
commission follow the same way. Issue 11, point 1: "Mark won" used to set the status and pay
nothing."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.errors import PermissionDenied, ServiceError
from accounts.models import AuditEvent
from attribution.models import Attribution, DealSnapshot
from integrations import connections
from integrations.closing import close_deal
from integrations.inbound import ingest_change
from integrations.models import CrmConnection, SyncRecord
from integrations.panels import crm_panel
from integrations.providers.base import DealChange
from payouts.models import Commission, CommissionPlan
from referrals.models import Referral, TimelineEntry
from referrals.services import assign_referral
from tests.payouts.conftest import live_commission, register_and_accept, win

TODAY = timezone.localdate


def close(world, referral, outcome, run_on_commit, role="partnerships", **fields):
    fields.setdefault("closed_on", TODAY())
    fields.setdefault("amount_minor", 1_200_000)
    with run_on_commit():
        return close_deal(world.member("vendor", role), referral, outcome, **fields)


def fresh(referral):
    return Referral.objects.get(pk=referral.pk)


# --- Vendors without a CRM close by hand ---------------------------------------------------

def test_won_by_hand_is_a_deal_that_is_attributed_and_pays(world, programs, plan,
                                                          run_on_commit):
    CommissionPlan.objects.filter(pk=plan.pk).update(
        effective_from=timezone.now() - timedelta(days=30))
    referral = register_and_accept(world, programs["acme"])
    yesterday = TODAY() - timedelta(days=1)
    snapshot = close(world, referral, "won", run_on_commit, closed_on=yesterday)
    assert (snapshot.provider, snapshot.external_deal_id) == ("manual", str(referral.public_id))
    assert (snapshot.outcome, snapshot.amount_minor, snapshot.referral_id) == (
        DealSnapshot.WON, 1_200_000, referral.pk)
    assert snapshot.closed_at.date() == yesterday
    assert fresh(referral).status == Referral.WON
    attribution = Attribution.objects.get(provider="manual",
                                          external_deal_id=str(referral.public_id))
    assert (attribution.referral_id, attribution.match, attribution.status) == (
        referral.pk, "exact", Attribution.AUTO_CONFIRMED)
    commission = live_commission(referral)
    assert (commission.amount_minor, commission.currency, commission.status) == (
        120_000, "USD", Commission.PENDING)  # 10 % of what was won, not of the estimate
    assert commission.earned_at == snapshot.closed_at
    entry = TimelineEntry.objects.filter(referral=referral, to_status="won").get()
    assert entry.author == world.member("vendor", "partnerships").user
    assert re.search(r"Deal won on .* for \$12,000\.00, recorded by", entry.body)


def test_lost_or_reopened_after_won_takes_the_commission_back(world, programs, plan,
                                                             run_on_commit):
    referral = register_and_accept(world, programs["acme"])
    close(world, referral, "won", run_on_commit)
    first = live_commission(referral)
    close(world, fresh(referral), "open", run_on_commit)
    assert fresh(referral).status == Referral.ACCEPTED
    assert AuditEvent.objects.filter(action="referral.reopened",
                                     target_id=str(referral.public_id)).exists()
    first.refresh_from_db()
    assert first.status == Commission.CANCELLED and live_commission(referral) is None
    close(world, fresh(referral), "won", run_on_commit, amount_minor=2_000_000)
    assert live_commission(referral).amount_minor == 200_000
    close(world, fresh(referral), "lost", run_on_commit)
    assert fresh(referral).status == Referral.LOST
    assert live_commission(referral) is None
    assert Commission.objects.filter(referral=referral).count() == 2


@pytest.mark.parametrize("fields,field,says", [
    ({"closed_on": None}, "closed_on", "Enter the day"),
    ({"closed_on": TODAY() + timedelta(days=1)}, "closed_on", "future"),
    ({"closed_on": TODAY() - timedelta(days=400)}, "closed_on", "before it was registered"),
    ({"amount_minor": None}, "amount", "amount"),
])
def test_a_manual_close_needs_a_sensible_day_and_amount(world, programs, plan, run_on_commit,
                                                       fields, field, says):
    referral = register_and_accept(world, programs["acme"])
    with pytest.raises(ServiceError, match=says) as exc:
        close(world, referral, "won", run_on_commit, **fields)
    assert exc.value.field == field
    assert fresh(referral).status == Referral.ACCEPTED
    assert not DealSnapshot.objects.filter(referral=referral).exists()


def test_only_those_who_work_the_deal_close_it(world, programs, plan, run_on_commit):
    referral = register_and_accept(world, programs["acme"])
    for role in ("finance",):
        with pytest.raises(PermissionDenied):
            close(world, referral, "won", run_on_commit, role=role)
    with pytest.raises(PermissionDenied):
        close_deal(world.member("partner", "owner"), referral, "won", closed_on=TODAY(),
                   amount_minor=1)
    sales = world.member("vendor", "sales")
    with pytest.raises(PermissionDenied):  # not assigned to them
        close(world, referral, "won", run_on_commit, role="sales")
    assign_referral(world.member("vendor", "partnerships"), referral, sales)
    close(world, referral, "won", run_on_commit, role="sales")
    assert fresh(referral).status == Referral.WON


# --- The page: one way to close per vendor -------------------------------------------------

def test_the_page_closes_the_deal_and_shows_errors_in_the_form(world, programs, plan,
                                                              run_on_commit):
    referral = register_and_accept(world, programs["acme"])
    client = world.client_for(world.member("vendor", "partnerships"))
    page = client.get(reverse("referrals:detail", args=[referral.public_id])).content.decode()
    assert reverse("integrations:deal_close", args=[referral.public_id]) in page
    assert "Mark won" not in page
    url = reverse("integrations:deal_close", args=[referral.public_id])
    bad = client.post(url, {"outcome": "won", "closed_on": TODAY() + timedelta(days=3),
                            "amount": "1e30"})
    assert bad.status_code == 400
    text = bad.content.decode()
    assert "That amount is too large" in text or "Enter an amount" in text
    assert fresh(referral).status == Referral.ACCEPTED
    bad = client.post(url, {"outcome": "won", "closed_on": TODAY() + timedelta(days=3),
                            "amount": "12000"})
    assert bad.status_code == 400 and "cannot be in the future" in bad.content.decode()
    with run_on_commit():
        done = client.post(url, {"outcome": "won", "closed_on": TODAY(), "amount": "12000"})
    assert done.status_code == 302
    assert fresh(referral).status == Referral.WON and live_commission(referral) is not None


def test_a_pipeline_vendor_closes_only_in_the_pipeline(world, programs, plan, pipeline,
                                                      run_on_commit):
    referral = register_and_accept(world, programs["acme"])
    admin = world.member("vendor", "admin")
    panel = crm_panel(admin, referral)
    assert panel["builtin"] and "close_form" not in panel
    with pytest.raises(ServiceError, match="pipeline"):
        close(world, referral, "won", run_on_commit)
    response = world.client_for(admin).post(
        reverse("integrations:deal_close", args=[referral.public_id]),
        {"outcome": "won", "closed_on": TODAY(), "amount": "1"})
    assert response.status_code == 404
    win(world, referral, run_on_commit)
    # The card tells the same story as the status: the stage moved, and nothing else offers
    # to move it again to where it is.
    panel = crm_panel(admin, fresh(referral))
    assert (panel["stage"], fresh(referral).status) == ("won", Referral.WON)


def test_the_pipeline_works_the_deal_of_an_expired_registration(world, programs, plan,
                                                                pipeline, run_on_commit):
    referral = register_and_accept(world, programs["acme"])
    Referral.objects.filter(pk=referral.pk).update(status=Referral.EXPIRED)
    win(world, fresh(referral), run_on_commit)
    assert fresh(referral).status == Referral.WON  # protected when the deal was created
    assert live_commission(referral) is not None


# --- Vendors with a CRM: the CRM decides, an override needs a reason -----------------------

@pytest.fixture
def hubspot(world):
    connection = connections.connect(world.member("vendor", "admin"), provider="hubspot",
                                     base_url="https://api.hubapi.com",
                                     credentials={"access_token": "t", "client_secret": "s"})
    CrmConnection.objects.filter(pk=connection.pk).update(
        stage_mapping={"closedwon": "won", "closedlost": "lost"})
    connection.refresh_from_db()
    return connection


def _crm_deal(hubspot, referral, deal_id="9001"):
    SyncRecord.objects.update_or_create(connection=hubspot, referral=referral,
                                        defaults={"external_ids": {"deal": deal_id}})


def test_a_crm_vendor_overrides_its_crm_only_with_a_reason(world, programs, plan, hubspot,
                                                          run_on_commit):
    referral = register_and_accept(world, programs["acme"])
    with pytest.raises(ServiceError, match="no deal for this referral"):
        close(world, referral, "won", run_on_commit, reason="Signed on paper")
    _crm_deal(hubspot, referral)
    with pytest.raises(ServiceError, match="say why") as exc:
        close(world, referral, "won", run_on_commit)
    assert exc.value.field == "reason"
    sales = world.member("vendor", "sales")
    assign_referral(world.member("vendor", "partnerships"), referral, sales)
    with pytest.raises(PermissionDenied):  # sales reps work the deal in the CRM
        close(world, referral, "won", run_on_commit, role="sales", reason="x")
    snapshot = close(world, referral, "won", run_on_commit, reason="Signed on paper; "
                     "HubSpot is behind")
    assert (snapshot.provider, snapshot.external_deal_id) == ("hubspot", "9001")
    assert fresh(referral).status == Referral.WON and live_commission(referral) is not None
    entry = TimelineEntry.objects.filter(referral=referral, to_status="won").get()
    assert "Override of HubSpot: Signed on paper; HubSpot is behind" in entry.body
    # The partner reads the override and its reason on its timeline.
    page = world.client_for(world.member("partner", "rep")).get(
        reverse("referrals:detail", args=[referral.public_id])).content.decode()
    assert "Override of HubSpot" in page


def test_the_crms_next_change_supersedes_an_override(world, programs, plan, hubspot,
                                                    run_on_commit):
    referral = register_and_accept(world, programs["acme"])
    _crm_deal(hubspot, referral)
    close(world, referral, "won", run_on_commit, reason="Signed on paper")
    with run_on_commit():
        ingest_change(hubspot, DealChange(
            external_deal_id="9001", version="2", stage="appointmentscheduled",
            referral_id=str(referral.public_id), amount_minor=1_200_000, currency="USD"))
    assert fresh(referral).status == Referral.ACCEPTED
    assert live_commission(referral) is None
    assert Attribution.objects.filter(provider="hubspot").count() == 1


# --- What the referral's page says about the money ----------------------------------------

def _money(world, member, referral):
    response = world.client_for(member).get(
        reverse("payouts:referral_money", args=[referral.public_id]))
    return response.status_code, re.sub(r"\s+", " ", response.content.decode())


def test_the_referral_page_shows_the_attribution_and_the_commission(world, programs, plan,
                                                                   run_on_commit):
    referral = register_and_accept(world, programs["acme"])
    close(world, referral, "won", run_on_commit)
    status, text = _money(world, world.member("partner", "owner"), referral)
    assert status == 200
    assert "Credited to this referral" in text and "$1,200.00" in text and "Pending" in text
    status, text = _money(world, world.member("partner", "rep"), referral)
    assert "Credited to this referral" in text and "$1,200.00" not in text  # no money role
    status, text = _money(world, world.member("vendor", "finance"), referral)
    assert "$1,200.00" in text
    assert _money(world, world.others["partner2_owner"], referral)[0] == 404


def test_a_won_deal_without_a_plan_says_why_it_earns_nothing(world, programs, run_on_commit):
    referral = register_and_accept(world, programs["acme"])
    close(world, referral, "won", run_on_commit)
    status, text = _money(world, world.member("partner", "owner"), referral)
    assert "No commission: No commission plan was in effect on" in text
