"""A dispute as people live it, in a real browser: Summit registered Kestrel Freight first and
the won deal was credited to Summit; Brightpath's rep, who did the work, disputes with a PDF of
the call notes. The vendor responds, the channel manager takes the dispute under review and
upholds it, and Brightpath's rep sees the outcome on the dispute and on the attribution. Summit's
name never reaches Brightpath's pages, and Brightpath's never reaches Summit's."""

import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone
from guardian.shortcuts import assign_perm
from playwright.sync_api import Page, expect

from accounts import roles
from accounts.models import Membership, Notification
from attribution.models import Attribution, DealSnapshot, Dispute
from attribution.runner import attribute_deal
from referrals.models import Referral
from tests.accounts.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.browser.helpers import log_in, log_out
from tests.referrals.factories import EnrolmentFactory, ProgramFactory, ReferralFactory

DISPUTE_PAGE = re.compile(r"/disputes/[0-9a-f-]{36}/$")

VENDOR, PARTNER, RIVAL, OPERATOR = "Acme Cloud", "Brightpath Consulting", "Summit Advisors", \
    "Northwind Ops"
COMPANY = "Kestrel Freight"
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
WHY = "We introduced Kestrel's CFO in March and ran every meeting since."
RESPONSE = "Our AE confirms the CFO came through the partner who disputes."
RESOLUTION = "The disputing partner sourced and worked the deal; the credit moves to it."


@dataclass
class Scene:
    referral: Referral  # Brightpath's, which lost the deal
    rival_referral: Referral  # Summit's, credited by the engine
    attribution: Attribution
    rep: Membership  # Brightpath's rep
    rival_rep: Membership
    decider: Membership  # the vendor's partnerships member
    channel_manager: Membership


@pytest.fixture
def scene(network, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    now = timezone.now()
    vendor = OrganizationFactory(network=network, kind=roles.VENDOR, name=VENDOR)
    program = ProgramFactory(vendor=vendor, name="Acme Partner Program")
    decider = MembershipFactory(organization=vendor, role="partnerships", user=UserFactory(
        email="priya@acmecloud.test", full_name="Priya Natarajan"))
    partner = OrganizationFactory(network=network, kind=roles.PARTNER, name=PARTNER)
    rep = MembershipFactory(organization=partner, role="rep", user=UserFactory(
        email="ravi@brightpath.test", full_name="Ravi Kapoor"))
    rival = OrganizationFactory(network=network, kind=roles.PARTNER, name=RIVAL)
    rival_rep = MembershipFactory(organization=rival, role="rep", user=UserFactory(
        email="sam@summit.test", full_name="Sam Ortega"))
    for org, member in ((partner, rep), (rival, rival_rep)):
        EnrolmentFactory(program=program, partner=org, requested_by=member.user)
    operator = OrganizationFactory(network=network, kind=roles.OPERATOR, name=OPERATOR)
    channel_manager = MembershipFactory(
        organization=operator, role="channel_manager",
        user=UserFactory(email="chen@northwind.test", full_name="Chen Wei"))
    for org in (vendor, partner):
        assign_perm("accounts.in_portfolio", channel_manager.user, org)

    rival_referral = ReferralFactory(
        program=program, partner=rival, submitted_by=rival_rep.user, status=Referral.ACCEPTED,
        company_name=COMPANY, website="https://kestrelfreight.com",
        submitted_at=now - timedelta(days=60), decided_at=now - timedelta(days=59),
        protected_until=now + timedelta(days=30))
    referral = ReferralFactory(
        program=program, partner=partner, submitted_by=rep.user, status=Referral.ACCEPTED,
        company_name=f"{COMPANY} Ltd", website="https://www.kestrelfreight.com",
        submitted_at=now - timedelta(days=40), decided_at=now - timedelta(days=39),
        protected_until=now + timedelta(days=50))
    snapshot = DealSnapshot.objects.create(
        vendor=vendor, provider="builtin", external_deal_id="KF-2041", version="1",
        account_domain="kestrelfreight.com", account_name=COMPANY, amount_minor=4_800_000,
        currency="USD", stage="won", outcome=DealSnapshot.WON,
        deal_created_at=now - timedelta(days=20), closed_at=now - timedelta(days=2))
    attribution = attribute_deal(snapshot)
    assert attribution.referral == rival_referral  # first accepted wins
    return Scene(referral, rival_referral, attribution, rep, rival_rep, decider,
                 channel_manager)




def card(page: Page, heading: str):
    return page.locator("section").filter(
        has=page.get_by_role("heading", name=heading, level=2, exact=True))


def facts(page: Page, heading: str, term: str):
    """The <dd> after the <dt> `term` in the card under `heading`."""
    return card(page, heading).locator(f"dt:text-is('{term}') + dd")


def status(page: Page):
    return page.locator(".page-head .dispute-status")


def open_notification(page: Page, title: str) -> None:
    page.get_by_role("link", name=re.compile(r"^Notifications")).click()
    page.get_by_role("link", name=title).click()


def test_partner_disputes_vendor_responds_channel_manager_upholds(page: Page, scene: Scene):
    # 1. Brightpath's rep disputes from the referral: the deal went to another partner.
    log_in(page, scene.rep)
    page.goto(f"/referrals/{scene.referral.public_id}/dispute/")
    expect(page.get_by_role("heading", name=f"Dispute · {COMPANY} Ltd", level=1)).to_be_visible()
    page.get_by_label(re.compile(r"The deal was credited to another partner")).check()
    page.get_by_label("Why").fill(WHY)
    page.get_by_label("Evidence").set_input_files(files=[{
        "name": "call-notes.pdf", "mimeType": "application/pdf", "buffer": PDF}])
    page.get_by_role("button", name="Open the dispute").click()

    expect(page).to_have_url(DISPUTE_PAGE)
    expect(page.get_by_role("status")).to_contain_text("Your dispute is open.")
    expect(status(page)).to_have_text("Open")
    expect(facts(page, "Deal", "Credited to")).to_have_text("Another partner")
    expect(card(page, "Thread")).to_contain_text(WHY)
    expect(card(page, "Evidence").get_by_role("link", name="call-notes.pdf")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("Summit")
    dispute = Dispute.objects.get()
    assert (dispute.referral, dispute.attribution) == (scene.referral, scene.attribution)
    log_out(page)

    # 2. The vendor is told, reads the evidence list and responds.
    log_in(page, scene.decider)
    open_notification(page, f"{PARTNER} disputes {COMPANY} Ltd")
    expect(page).to_have_url(DISPUTE_PAGE)
    expect(facts(page, "Deal", "Credited to")).to_contain_text(RIVAL)
    expect(card(page, "Evidence")).to_contain_text("call-notes.pdf")
    page.get_by_label("Your response").fill(RESPONSE)
    page.get_by_role("button", name="Send the response").click()
    expect(page.get_by_role("status")).to_have_text("Response sent.")
    expect(status(page)).to_have_text("Vendor responded")
    expect(card(page, "Thread")).to_contain_text(RESPONSE)
    log_out(page)

    # 3. The channel manager finds it in the queue, takes it under review and upholds it.
    log_in(page, scene.channel_manager)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Disputes",
                                                            exact=True).click()
    expect(page.get_by_role("heading", name="Disputes", level=1)).to_be_visible()
    row = page.get_by_role("row").filter(has_text=f"{COMPANY} Ltd")
    expect(row).to_contain_text(VENDOR)
    expect(row).to_contain_text("Vendor responded")
    expect(row).to_contain_text(timezone.localtime(dispute.sla_due_at).strftime("%-d %b %Y"))
    row.get_by_role("link", name=f"{COMPANY} Ltd").click()
    expect(card(page, "Thread")).to_contain_text(RESPONSE)
    page.get_by_role("button", name="Take under review").click()
    expect(page.get_by_role("status")).to_have_text("The dispute is under your review.")
    expect(status(page)).to_have_text("Under review")
    page.get_by_label(re.compile(r"Uphold: ")).check()
    page.get_by_label("Resolution").fill(RESOLUTION)
    page.get_by_role("button", name="Record the decision").click()
    expect(page.get_by_role("status")).to_have_text("Upheld.")
    expect(status(page)).to_have_text("Upheld")
    expect(facts(page, "Deal", "Credited to")).to_contain_text(PARTNER)
    log_out(page)

    scene.attribution.refresh_from_db()
    assert scene.attribution.referral == scene.referral
    assert scene.attribution.status == Attribution.OVERTURNED

    # 4. Brightpath's rep sees the outcome on the dispute, then on the attribution.
    log_in(page, scene.rep)
    open_notification(page, f"Dispute about {COMPANY} Ltd upheld")
    expect(page).to_have_url(DISPUTE_PAGE)
    expect(status(page)).to_have_text("Upheld")
    expect(card(page, "Resolution")).to_contain_text(RESOLUTION)
    expect(facts(page, "Deal", "Credited to")).to_have_text("Your referral")
    card(page, "Deal").get_by_role("link", name="Why").click()
    expect(page.get_by_role("heading", name=COMPANY, level=1)).to_be_visible()
    expect(card(page, "Outcome")).to_contain_text("Credited to you.")
    expect(page.locator("body")).not_to_contain_text("Summit")
    log_out(page)

    # 5. Summit learns only that the deal is no longer credited to it: not who, not why.
    log_in(page, scene.rival_rep)
    told = Notification.objects.get(user=scene.rival_rep.user)
    assert told.kind == "attribution_changed"
    open_notification(page, told.title)
    expect(page.get_by_role("heading", name=COMPANY, level=1)).to_be_visible()
    expect(page.locator("body")).to_contain_text("no longer credited to this referral")
    expect(page.locator("body")).not_to_contain_text(PARTNER)
    expect(page.locator("body")).not_to_contain_text(WHY)
    expect(page.locator("body")).not_to_contain_text(RESOLUTION)
