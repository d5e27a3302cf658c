"""Earnings, payout history, commissions and plan pages, for each of the 14 roles."""

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts import roles
from payouts.models import Commission, Payout, PayoutBatch
from tests.conftest import ALL_ROLES, ROLE_IDS
from tests.payouts.conftest import register_and_accept, win

PARTNER_MONEY = {("partner", "owner"), ("partner", "finance")}
SEES_COMMISSION = PARTNER_MONEY | {("vendor", "admin"), ("vendor", "finance"),
                                   ("operator", "admin"), ("operator", "finance"),
                                   ("operator", "auditor")}
LISTS_COMMISSIONS = SEES_COMMISSION - PARTNER_MONEY
SEES_PLAN = SEES_COMMISSION | {("vendor", "admin")}


def payable(commission):
    Commission.objects.filter(pk=commission.pk).update(status=Commission.PAYABLE)
    commission.refresh_from_db()
    return commission


@pytest.mark.parametrize(("kind", "role"), ALL_ROLES, ids=ROLE_IDS)
def test_earnings_page_per_role(world, won, kind, role):
    response = world.client_for(world.member(kind, role)).get(reverse("payouts:earnings"))
    if (kind, role) in PARTNER_MONEY:
        html = response.content.decode()
        assert response.status_code == 200
        assert "$1,000.00" in html and "Pending (holding period)" in html
        assert reverse("payouts:commission_detail", args=[won.public_id]) in html
    else:
        assert response.status_code == 404


def test_earnings_anonymous_goes_to_login(client, world):
    response = client.get(reverse("payouts:earnings"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_another_partner_sees_none_of_our_earnings(world, won):
    html = world.client_for(world.others["partner2_owner"]).get(
        reverse("payouts:earnings")).content.decode()
    assert "$1,000.00" not in html and "No commissions yet" in html


def test_earnings_totals_per_currency_and_filters(world, programs, won, pipeline,
                                                  run_on_commit):
    lost = win(world, register_and_accept(world, programs["acme"], amount_minor=500_000),
               run_on_commit)
    win(world, lost.referral, run_on_commit, stage="lost")
    client = world.client_for(world.member("partner", "finance"))
    page = client.get(reverse("payouts:earnings"))
    summary = page.context["summary"]
    assert summary == [{"currency": "USD", "pending": 100_000, "payable": 0, "paid": 0,
                        "reversed": 50_000, "owed": 0}]
    filtered = client.get(reverse("payouts:earnings"), {"status": "cancelled"})
    assert [c.pk for c in filtered.context["page"].object_list] == [lost.pk]
    junk = client.get(reverse("payouts:earnings"), {"status": "nonsense"})
    assert junk.status_code == 200 and not junk.context["page"].object_list


def test_earnings_page_queries_do_not_grow_with_commissions(world, programs, plan, pipeline,
                                                            run_on_commit,
                                                            django_assert_max_num_queries):
    for _ in range(12):
        win(world, register_and_accept(world, programs["acme"]), run_on_commit)
    client = world.client_for(world.member("partner", "owner"))
    with django_assert_max_num_queries(14):
        response = client.get(reverse("payouts:earnings"))
    assert len(response.context["page"].object_list) == 12


@pytest.mark.parametrize(("kind", "role"), ALL_ROLES, ids=ROLE_IDS)
def test_payout_history_per_role(world, won, kind, role):
    operator = world.member("operator", "finance")
    batch = PayoutBatch.objects.create(network=world.network, period_end=timezone.now(),
                                       created_by=operator.user)
    Payout.objects.create(batch=batch, network=world.network, partner=world.partner,
                          currency="USD", gross_minor=3_000, amount_minor=3_000,
                          status=Payout.CARRIED_OVER, carry_reason=Payout.BELOW_MINIMUM)
    response = world.client_for(world.member(kind, role)).get(
        reverse("payouts:payout_history"))
    if (kind, role) in PARTNER_MONEY:
        assert response.status_code == 200
        assert "Below the payout minimum" in response.content.decode()
    else:
        assert response.status_code == 404


@pytest.mark.parametrize(("kind", "role"), ALL_ROLES, ids=ROLE_IDS)
def test_commission_list_per_role(world, won, kind, role):
    response = world.client_for(world.member(kind, role)).get(
        reverse("payouts:commissions"), {"status": ""})
    if (kind, role) in LISTS_COMMISSIONS:
        assert response.status_code == 200
        assert won.public_id in {c.public_id for c in response.context["page"].object_list}
    elif (kind, role) in PARTNER_MONEY:
        assert response.status_code == 302
        assert response["Location"] == reverse("payouts:earnings")
    else:
        assert response.status_code == 404


def test_vendor_finance_lands_on_the_payable_queue(world, programs, won, pipeline,
                                                   run_on_commit,
                                                   django_assert_max_num_queries):
    others = [payable(win(world, register_and_accept(world, programs["acme"]), run_on_commit))
              for _ in range(10)]
    client = world.client_for(world.member("vendor", "finance"))
    with django_assert_max_num_queries(14):
        response = client.get(reverse("payouts:commissions"))
    listed = list(response.context["page"].object_list)
    assert {c.pk for c in listed} == {c.pk for c in others}  # not the pending one
    assert 'name="selected"' in response.content.decode()
    # Vendor admins see the commissions but have nothing to approve.
    admin = world.client_for(world.member("vendor", "admin")).get(reverse("payouts:commissions"))
    assert 'name="selected"' not in admin.content.decode()


def test_commissions_of_another_vendor_are_not_listed(world, won):
    response = world.client_for(world.others["vendor2_admin"]).get(
        reverse("payouts:commissions"), {"status": ""})
    assert not response.context["page"].object_list


def test_bulk_approval_from_the_list(world, programs, won, pipeline, run_on_commit):
    second = payable(win(world, register_and_accept(world, programs["acme"]), run_on_commit))
    payable(won)
    client = world.client_for(world.member("vendor", "finance"))
    response = client.post(reverse("payouts:commission_approve"),
                           {"selected": [str(won.public_id), str(second.public_id), "junk"]})
    assert response.status_code == 302
    assert set(Commission.objects.values_list("status", flat=True)) == {Commission.APPROVED}
    nothing = client.post(reverse("payouts:commission_approve"), {})
    assert nothing.status_code == 302


@pytest.mark.parametrize(("kind", "role"), [k for k in ALL_ROLES if k != ("vendor", "finance")],
                         ids=lambda v: v)
def test_only_vendor_finance_may_post_approvals(world, won, kind, role):
    payable(won)
    response = world.client_for(world.member(kind, role)).post(
        reverse("payouts:commission_approve"), {"selected": [str(won.public_id)]})
    assert response.status_code == 404
    won.refresh_from_db()
    assert won.status == Commission.PAYABLE


@pytest.mark.parametrize(("kind", "role"), ALL_ROLES, ids=ROLE_IDS)
def test_commission_detail_per_role(world, won, kind, role):
    response = world.client_for(world.member(kind, role)).get(
        reverse("payouts:commission_detail", args=[won.public_id]))
    if (kind, role) in SEES_COMMISSION:
        html = response.content.decode()
        assert response.status_code == 200
        assert "10% of the deal amount" in html
        assert ("Reject commission" in html) == ((kind, role) == ("vendor", "finance"))
    else:
        assert response.status_code == 404


@pytest.mark.parametrize("name", ["partner2_owner", "vendor2_admin", "foreign_owner",
                                  "foreign_vendor_admin"])
def test_commission_detail_out_of_scope_is_404(world, won, name):
    host = "partners.elsewhere.test" if name.startswith("foreign") else "testserver"
    client = world.client_for(world.others[name], host=host)
    assert client.get(reverse("payouts:commission_detail",
                              args=[won.public_id])).status_code == 404


def test_rejecting_from_the_page_needs_a_reason(world, won):
    client = world.client_for(world.member("vendor", "finance"))
    url = reverse("payouts:commission_reject", args=[won.public_id])
    empty = client.post(url, {"reason": ""})
    assert empty.status_code == 400 and "This field is required" in empty.content.decode()
    done = client.post(url, {"reason": "Customer churned in the trial"})
    assert done.status_code == 302
    won.refresh_from_db()
    assert won.status == Commission.REJECTED
    partner_view = world.client_for(world.member("partner", "owner")).get(
        reverse("payouts:commission_detail", args=[won.public_id])).content.decode()
    assert "Customer churned in the trial" in partner_view


# --- Commission plan page -------------------------------------------------------------------

def plan_url(program):
    return reverse("payouts:commission_plan", args=[program.public_id])


@pytest.mark.parametrize(("kind", "role"), ALL_ROLES, ids=ROLE_IDS)
def test_plan_page_per_role(world, programs, plan, kind, role):
    response = world.client_for(world.member(kind, role)).get(plan_url(programs["acme"]))
    if (kind, role) in SEES_PLAN:
        html = response.content.decode()
        assert response.status_code == 200 and "10% of the deal amount" in html
        assert ("Save as a new version" in html) == ((kind, role) == ("vendor", "admin"))
    else:
        assert response.status_code == 404


def test_another_vendor_cannot_open_our_plan(world, programs, plan):
    client = world.client_for(world.others["vendor2_admin"])
    assert client.get(plan_url(programs["acme"])).status_code == 404
    assert client.post(plan_url(programs["acme"]), {"kind": "flat"}).status_code == 404


def test_vendor_admin_saves_a_new_version_from_the_form(world, programs, plan):
    client = world.client_for(world.member("vendor", "admin"))
    form = {"kind": "tiered", "currency": "EUR", "rate": "", "flat": "", "cap": "2,500.00",
            "holding_days": "14", "clawback_days": "60", "payout_minimum": "100",
            "tier_registered": "5", "tier_gold": "12.5"}
    response = client.post(plan_url(programs["acme"]), form)
    assert response.status_code == 302
    newest = programs["acme"].commission_plans.order_by("-version").first()
    assert (newest.version, newest.kind, newest.currency) == (2, "tiered", "EUR")
    assert newest.tier_rates_bp == {"registered": 500, "gold": 1250}
    assert (newest.cap_minor, newest.payout_minimum_minor) == (250_000, 10_000)
    assert (newest.holding_days, newest.clawback_days) == (14, 60)


@pytest.mark.parametrize(("fields", "error"), [
    ({"kind": "percent", "rate": ""}, "Give the percentage"),
    ({"kind": "percent", "rate": "10.555"}, "at most two decimals"),
    ({"kind": "percent", "rate": "abc"}, "Enter a percentage"),
    ({"kind": "flat", "flat": "12.345"}, "at most 2 decimal places"),
    ({"kind": "tiered", "tier_gold": "10"}, "Registered tier"),
])
def test_bad_plan_input_shows_a_message_not_an_error_page(world, programs, plan, fields, error):
    client = world.client_for(world.member("vendor", "admin"))
    form = {"kind": "percent", "currency": "USD", "rate": "10", "holding_days": "30",
            "clawback_days": "90", "payout_minimum": "50", **fields}
    response = client.post(plan_url(programs["acme"]), form)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert programs["acme"].commission_plans.count() == 1


def test_vendor_admin_sets_a_partner_tier(world, programs, plan):
    enrolment = programs["acme"].enrolments.get(partner=world.partner)
    client = world.client_for(world.member("vendor", "admin"))
    assert world.partner.name in client.get(plan_url(programs["acme"])).content.decode()
    url = reverse("payouts:enrolment_tier", args=[enrolment.public_id])
    assert client.post(url, {"tier": "gold"}).status_code == 302
    enrolment.refresh_from_db()
    assert enrolment.tier == "gold"
    client.post(url, {"tier": "diamond"})
    enrolment.refresh_from_db()
    assert enrolment.tier == "gold"
    for member in (world.member("vendor", "finance"), world.member("partner", "owner"),
                   world.others["vendor2_admin"]):
        assert world.client_for(member).post(url, {"tier": "silver"}).status_code == 404
    enrolment.refresh_from_db()
    assert enrolment.tier == "gold"


def test_roles_table_gives_plan_editing_only_to_vendor_admins():
    assert roles.role_names_with(roles.VENDOR, roles.PROGRAM_MANAGE) == ["admin"]


@pytest.mark.parametrize("role", ["finance", "owner"])
def test_partner_money_pages_show_amounts_but_no_contact_details(world, won, role):
    client = world.client_for(world.member("partner", role))
    contact = won.referral.contact_email
    for url in (reverse("payouts:earnings"),
                reverse("payouts:commission_detail", args=[won.public_id])):
        html = client.get(url).content.decode()
        assert "$1,000.00" in html
        assert contact not in html and won.referral.contact_phone not in html


def test_vendor_finance_sees_amounts_but_no_contact_details(world, won):
    html = world.client_for(world.member("vendor", "finance")).get(
        reverse("payouts:commission_detail", args=[won.public_id])).content.decode()
    assert "$1,000.00" in html and won.referral.contact_email not in html
