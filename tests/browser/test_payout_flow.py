"""Getting paid, in a real browser, against the fake Stripe: Brightpath's owner connects a payout
account through (the stand-in for) Stripe's hosted onboarding and completes the tax profile;
Acme Cloud's finance approves the commission of a won deal; the network's finance builds a
payout batch and a second person approves it, which sends one Stripe transfer; Brightpath's
owner sees the commission paid and the payout in its history."""

import re

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts import roles
from integrations import connections
from integrations.builtin.services import move_stage
from payouts.models import Commission, Payout
from payouts.plans import save_plan
from referrals import services
from tests.accounts.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.browser.helpers import log_in, log_out
from tests.fakes.stripe import fake_stripe  # noqa: F401 (fixture)
from tests.referrals.factories import EnrolmentFactory, ProgramFactory, ReferralFactory

PLAN = {"kind": "percent", "rate_bp": 1000, "flat_minor": None, "tier_rates_bp": {},
        "cap_minor": None, "currency": "USD", "holding_days": 0, "clawback_days": 90,
        "payout_minimum_minor": 5000}


def member(org, role, email, name):
    return MembershipFactory(organization=org, role=role,
                             user=UserFactory(email=email, full_name=name))


@pytest.fixture
def scene(network, fake_stripe):  # noqa: F811
    vendor = OrganizationFactory(network=network, kind=roles.VENDOR, name="Acme Cloud")
    admin = member(vendor, "admin", "ada@acmecloud.test", "Ada Admin")
    finance = member(vendor, "finance", "fin@acmecloud.test", "Fiona Finance")
    partnerships = member(vendor, "partnerships", "priya@acmecloud.test", "Priya N")
    partner = OrganizationFactory(network=network, kind=roles.PARTNER,
                                  name="Brightpath Consulting", country="US")
    owner = member(partner, "owner", "olivia@brightpath.test", "Olivia Owner")
    operator = OrganizationFactory(network=network, kind=roles.OPERATOR, name="Northwind Ops")
    builder = member(operator, "finance", "felix@northwind.test", "Felix Finance")
    approver = member(operator, "admin", "amara@northwind.test", "Amara Admin")
    program = ProgramFactory(vendor=vendor, name="Acme Partner Program")
    EnrolmentFactory(program=program, partner=partner, requested_by=owner.user)
    save_plan(admin, program, dict(PLAN))
    connections.connect(admin, provider="builtin", credentials={})
    referral = ReferralFactory(program=program, partner=partner, submitted_by=owner.user,
                               company_name="Kestrel Freight",
                               website="https://kestrelfreight.com", amount_minor=4_800_000,
                               currency="USD", submitted_at=timezone.now())
    referral = services.accept_referral(partnerships, referral)
    move_stage(admin, referral, "won")  # transactional test: on-commit work runs right away
    commission = Commission.objects.get(referral=referral)
    assert (commission.status, commission.amount_minor) == (Commission.PAYABLE, 480_000)
    return {"owner": owner, "finance": finance, "builder": builder, "approver": approver,
            "commission": commission, "stripe": fake_stripe}




def test_partner_connects_finance_pays_a_batch_partner_sees_it_paid(page: Page, scene):
    stripe = scene["stripe"]
    # 1. The partner's owner connects a payout account through Stripe's hosted onboarding.
    log_in(page, scene["owner"])
    page.get_by_role("link", name="Payout account", exact=True).click()
    expect(page.locator("[data-state]")).to_have_text("Not connected")
    page.get_by_role("button", name="Connect with Stripe").click()
    expect(page.get_by_role("heading", name=re.compile(r"^Set up payouts for acct_"))) \
        .to_be_visible()
    page.get_by_role("button", name="Agree and submit").click()
    expect(page.locator("[data-state]")).to_have_text("Ready to receive transfers")
    (account_id,) = stripe.accounts
    created = stripe.accounts[account_id]
    assert created["controller"]["fees"]["payer"] == "application"

    # 2. ... and completes the tax profile (no TIN: Stripe collected it).
    page.get_by_role("link", name="Tax profile", exact=True).first.click()
    page.get_by_label("Legal name").fill("Brightpath Consulting LLC")
    page.get_by_label("Entity type").select_option("llc")
    page.get_by_label("US person for tax purposes?").select_option("yes")
    page.get_by_label("Tax form").select_option("w9")
    page.get_by_label("Date signed").fill(timezone.localdate().isoformat())
    page.get_by_label("Country").select_option("US")
    page.get_by_label(re.compile(r"^Address:?$")).fill("100 Market Street")
    page.get_by_label("City").fill("San Francisco")
    page.get_by_label("State, province or region").fill("CA")
    page.get_by_label("Postal code").fill("94105")
    page.get_by_role("button", name="Save tax profile").click()
    expect(page.get_by_text("Tax profile saved.")).to_be_visible()
    log_out(page)

    # 3. The vendor's finance approves the payable commission.
    log_in(page, scene["finance"])
    page.get_by_role("link", name="Commissions", exact=True).click()
    page.get_by_role("checkbox", name="Select Kestrel Freight").check()
    page.get_by_role("button", name="Approve selected").click()
    expect(page.get_by_text("1 commission(s) approved.")).to_be_visible()
    log_out(page)

    # 4. The network's finance builds a batch; it cannot approve its own batch.
    log_in(page, scene["builder"])
    page.get_by_role("link", name="Payout batches", exact=True).click()
    page.get_by_role("button", name="Build the batch").click()
    expect(page.get_by_text(re.compile("waiting for a second approver"))).to_be_visible()
    expect(page.get_by_role("button", name="Approve and send")).to_have_count(0)
    batch_url = page.url
    log_out(page)

    # 5. A second person approves: the transfer goes out.
    log_in(page, scene["approver"])
    page.goto(batch_url)
    page.get_by_role("button", name="Approve and send").click()
    # Wait for the approval's own page before reloading: reloading while the POST is still
    # navigating detaches the page (seen in CI).
    expect(page.get_by_text("Approved and sent: 1 payout paid.")).to_be_visible()
    page.reload()
    expect(page.locator("table").get_by_text("Paid", exact=True).first).to_be_visible()
    transfers = stripe.transfers_to(account_id)
    assert [(t["amount"], t["currency"]) for t in transfers] == [(480_000, "usd")]
    log_out(page)

    # 6. The partner sees its commission paid and the payout in its history.
    log_in(page, scene["owner"])
    page.get_by_role("link", name="Earnings", exact=True).click()
    row = page.locator("tr", has_text="Kestrel Freight")
    expect(row.get_by_text("Paid", exact=True)).to_be_visible()
    expect(row).to_contain_text("$4,800.00")
    page.get_by_role("link", name="Payout history", exact=True).click()
    expect(page.locator("tr", has_text="$4,800.00")).to_contain_text(transfers[0]["id"])
    payout = Payout.objects.get()
    assert (payout.status, payout.stripe_transfer_id) == (Payout.PAID, transfers[0]["id"])


def test_a_batch_that_sent_nothing_says_so_and_a_retry_pays_it(page: Page, scene, settings):
    """Without a Stripe key the only payout fails: the approver is told so in words, not with
    "the transfers are on their way", and the batch reads Failed; once Stripe is configured,
    Retry pays it and the page says what happened."""
    from payouts import approvals, batches
    from tests.fakes.stripe import API_KEY
    from tests.payouts.test_transfers import complete_tax_profile, connect_partner

    partner = scene["owner"].organization
    complete_tax_profile(partner)
    account = connect_partner(None, scene["stripe"], partner)
    approvals.approve_commissions(scene["finance"], [scene["commission"].public_id])
    batch = batches.build_batch(scene["builder"], timezone.now().date())
    settings.STRIPE_API_KEY = ""

    log_in(page, scene["approver"])
    page.goto(f"/payout-batches/{batch.public_id}/")
    page.get_by_role("button", name="Approve and send").click()
    expect(page.locator(".flash.error")).to_contain_text(
        "Approved, but no transfer went out: 1 payout failed — Payouts are not configured on "
        "this server")
    expect(page.locator(".page-head .badge")).to_have_text("Failed")

    settings.STRIPE_API_KEY = API_KEY
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".flash.success")).to_have_text("Paid: the transfer went out.")
    expect(page.locator(".page-head .badge")).to_have_text("Sent")
    transfers = scene["stripe"].transfers_to(account.stripe_account_id)
    assert [(t["amount"], t["currency"]) for t in transfers] == [(480_000, "usd")]
