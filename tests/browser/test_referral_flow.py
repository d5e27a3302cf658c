"""Deal registration as people do it, in a real browser: a partner joins a vendor's program and
refers a customer, the vendor writes to them and accepts, and the partner sees the new status,
the protection date and the vendor's message. A second partner registering the same account is
warned without learning who holds it, while the vendor sees both registrations side by side."""

import re
from dataclasses import dataclass
from datetime import date, timedelta

import pytest
from django.utils import dateformat, timezone
from playwright.sync_api import Page, expect

from accounts import roles
from accounts.models import Membership, Organization
from referrals.models import Program, Referral
from tests.accounts.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.browser.helpers import log_in, log_out
from tests.referrals.factories import EnrolmentFactory, ProgramFactory, ReferralFactory

REFERRAL_PAGE = re.compile(r"/referrals/[0-9a-f-]{36}/$")

VENDOR = "Acme Cloud"
PROGRAM = "Acme Partner Program"
PARTNER = "Brightpath Consulting"
RIVAL = "Summit Advisors"

COMPANY = "Kestrel Freight"
WEBSITE = "https://www.kestrelfreight.com"
DOMAIN = "kestrelfreight.com"
CONTACT = "Morgan Hale"
CONTACT_EMAIL = "morgan.hale@kestrelfreight.com"
MESSAGE = "Thanks — our AE will call you this week"


@dataclass
class Desk:
    """The people and the program of one referral scenario."""

    program: Program
    vendor: Organization
    partner: Organization
    decider: Membership  # the vendor's partnerships member: accepts and rejects
    owner: Membership  # the partner's owner: may enrol the organization
    rep: Membership  # the partner's rep: refers customers


@pytest.fixture
def desk(network):
    vendor = OrganizationFactory(network=network, kind=roles.VENDOR, name=VENDOR,
                                 website_domain="acmecloud.test")
    program = ProgramFactory(vendor=vendor, name=PROGRAM, enrolment_requires_approval=False,
                             accepted_currencies=["USD"], protection_days=90)
    decider = MembershipFactory(
        organization=vendor, role="partnerships",
        user=UserFactory(email="priya@acmecloud.test", full_name="Priya Natarajan"))
    partner = OrganizationFactory(network=network, kind=roles.PARTNER, name=PARTNER,
                                  website_domain="brightpath.test")
    owner = MembershipFactory(
        organization=partner, role="owner",
        user=UserFactory(email="olivia@brightpath.test", full_name="Olivia Osei"))
    rep = MembershipFactory(
        organization=partner, role="rep",
        user=UserFactory(email="ravi@brightpath.test", full_name="Ravi Kapoor"))
    return Desk(program=program, vendor=vendor, partner=partner, decider=decider, owner=owner,
                rep=rep)




def open_nav(page: Page, label: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=label, exact=True) \
        .click()


def card(page: Page, heading: str):
    """The dashboard or detail card under an <h2>."""
    return page.locator("section").filter(
        has=page.get_by_role("heading", name=heading, level=2, exact=True))


def status_badge(page: Page):
    """The referral's status next to its <h1>."""
    return page.locator(".page-head .status")


def in_three_months() -> date:
    first = date.today().replace(day=1)
    return (first + timedelta(days=95)).replace(day=1)


def test_partner_refers_vendor_accepts_and_partner_sees_it(page: Page, desk: Desk):
    close_month = in_three_months()

    # 1. Reps register deals but may not sign the organization up to programs (roles.py), so
    # the partner's owner joins the program.
    log_in(page, desk.owner)
    open_nav(page, "Programs")
    expect(page.get_by_role("heading", name="Vendor programs")).to_be_visible()
    row = page.get_by_role("row").filter(has_text=PROGRAM)
    expect(row).to_contain_text(VENDOR)
    row.get_by_role("link", name=PROGRAM).click()
    expect(page.get_by_role("heading", name=PROGRAM, level=1)).to_be_visible()
    expect(page.get_by_text("Instant", exact=True)).to_be_visible()
    page.get_by_role("button", name="Join the program").click()

    expect(page.get_by_role("status")).to_have_text(f"You are enrolled in {PROGRAM}: refer away.")
    expect(page.get_by_text("Your organization is enrolled.")).to_be_visible()
    expect(page.get_by_role("button", name="Join the program")).to_have_count(0)
    log_out(page)

    # 2. The rep finds the program enrolled and refers a customer from it.
    log_in(page, desk.rep)
    open_nav(page, "Programs")
    row = page.get_by_role("row").filter(has_text=PROGRAM)
    expect(row.get_by_text("Enrolled", exact=True)).to_be_visible()
    row.get_by_role("link", name=PROGRAM).click()
    expect(page.get_by_role("heading", name=PROGRAM, level=1)).to_be_visible()
    page.get_by_role("link", name="Refer a customer").click()

    expect(page.get_by_role("heading", name="Refer a customer", level=1)).to_be_visible()
    expect(page.get_by_label("Vendor program")).to_have_value(str(desk.program.public_id))
    page.get_by_label("Customer company").fill(COMPANY)
    page.get_by_label("Company website").fill(WEBSITE)
    page.get_by_label("Country").select_option(label="United States of America")
    page.get_by_label("Contact name").fill(CONTACT)
    page.get_by_label("Contact email").fill(CONTACT_EMAIL)
    page.get_by_label("Contact phone").fill("(415) 555-0132")
    page.get_by_label("Estimated deal value").fill("48,000")
    page.get_by_label("Currency").select_option("USD")
    page.get_by_label("Expected close month").fill(close_month.strftime("%Y-%m"))
    page.get_by_label("Notes").fill("Evaluating three vendors; decision by end of quarter.")
    page.get_by_role("button", name="Submit referral").click()

    expect(page).to_have_url(REFERRAL_PAGE)
    expect(page.get_by_role("status")).to_have_text(f"{COMPANY} is registered with {VENDOR}.")
    expect(page.get_by_role("heading", name=COMPANY, level=1)).to_be_visible()
    expect(status_badge(page)).to_have_text("Submitted")
    customer = card(page, "Customer")
    expect(customer).to_contain_text(DOMAIN)
    expect(customer).to_contain_text("United States of America")
    expect(customer).to_contain_text("$48,000.00")
    expect(customer).to_contain_text(close_month.strftime("%B %Y"))
    expect(customer).to_contain_text("+14155550132")  # normalized to E.164
    referral = Referral.objects.get(company_name=COMPANY)
    assert referral.partner == desk.partner and referral.submitted_by == desk.rep.user
    assert referral.amount_minor == 4_800_000 and referral.expected_close == close_month

    # 3. The vendor's partnerships member finds it, writes to the partner and accepts it.
    log_out(page)
    log_in(page, desk.decider)
    waiting = card(page, "Waiting for your decision")
    expect(waiting.get_by_role("listitem").filter(has_text=COMPANY)).to_contain_text(PARTNER)

    open_nav(page, "Referrals")
    expect(page.get_by_role("heading", name="Inbound referrals", level=1)).to_be_visible()
    row = page.get_by_role("row").filter(has_text=COMPANY)
    expect(row).to_have_count(1)
    expect(row).to_contain_text(PARTNER)
    expect(row).to_contain_text("Submitted")
    row.get_by_role("link", name=COMPANY).click()

    expect(page.get_by_role("heading", name=COMPANY, level=1)).to_be_visible()
    expect(status_badge(page)).to_have_text("Submitted")
    expect(card(page, "Customer")).to_contain_text(CONTACT_EMAIL)
    page.get_by_label(re.compile(r"^Message:?$")).fill(MESSAGE)
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Message sent.")
    expect(card(page, "Timeline")).to_contain_text(MESSAGE)

    page.get_by_role("button", name="Accept", exact=True).click()
    expect(page.get_by_role("status")).to_have_text(f"Accepted. {PARTNER} has been told.")
    expect(status_badge(page)).to_have_text("Accepted")
    expect(page.get_by_role("button", name="Accept", exact=True)).to_have_count(0)

    # 4. The rep is told (bell and notification list) and sees the accepted registration.
    log_out(page)
    log_in(page, desk.rep)
    expect(page.get_by_role("link", name="Notifications, 2 unread", exact=True)).to_be_visible()
    page.get_by_role("link", name=re.compile(r"^Notifications")).click()
    expect(page.get_by_role("heading", name="Notifications", level=1)).to_be_visible()
    expect(page.get_by_text("2 unread in Northwind.")).to_be_visible()
    expect(page.get_by_role("listitem").filter(has_text=f"New message on {COMPANY}")) \
        .to_contain_text(MESSAGE)
    accepted = page.get_by_role("listitem").filter(has_text=f"{VENDOR} accepted {COMPANY}")
    expect(accepted).to_contain_text("The account is protected for you until")
    accepted.get_by_role("link", name=f"{VENDOR} accepted {COMPANY}").click()

    expect(page).to_have_url(REFERRAL_PAGE)
    expect(page.get_by_role("heading", name=COMPANY, level=1)).to_be_visible()
    expect(status_badge(page)).to_have_text("Accepted")
    referral.refresh_from_db()
    assert referral.status == Referral.ACCEPTED
    until = dateformat.format(timezone.localtime(referral.protected_until), "j M Y")
    expect(card(page, "Registration")).to_contain_text(
        re.compile(rf"Protected until\s*{re.escape(until)}"))
    timeline = card(page, "Timeline")
    message = timeline.get_by_role("listitem").filter(has_text=MESSAGE)
    expect(message).to_contain_text(f"{desk.decider.user.full_name} ({VENDOR})")
    # Opening the notification read it; the message one is still unread.
    expect(page.get_by_role("link", name="Notifications, 1 unread", exact=True)).to_be_visible()


def test_second_partner_is_warned_and_vendor_sees_both(page: Page, desk: Desk):
    # Brightpath registered the account first (not decided yet).
    EnrolmentFactory(program=desk.program, partner=desk.partner, requested_by=desk.owner.user)
    first = ReferralFactory(program=desk.program, partner=desk.partner,
                            submitted_by=desk.rep.user, company_name=f"{COMPANY} Inc",
                            website=WEBSITE, amount_minor=4_800_000,
                            submitted_at=timezone.now() - timedelta(days=2))
    rival = OrganizationFactory(network=desk.vendor.network, kind=roles.PARTNER, name=RIVAL,
                                website_domain="summit-advisors.test")
    rival_owner = MembershipFactory(organization=rival, role="owner")
    EnrolmentFactory(program=desk.program, partner=rival, requested_by=rival_owner.user)
    rival_rep = MembershipFactory(
        organization=rival, role="rep",
        user=UserFactory(email="sam@summit-advisors.test", full_name="Sam Ortega"))

    # 1. Summit's rep registers the same account (same domain, another spelling).
    log_in(page, rival_rep)
    page.get_by_role("link", name="Refer a customer").click()
    expect(page.get_by_role("heading", name="Refer a customer", level=1)).to_be_visible()
    page.get_by_label("Customer company").fill("Kestrel Freight Logistics")
    page.get_by_label("Company website").fill("kestrelfreight.com/contact")
    page.get_by_label("Country").select_option("US")
    page.get_by_label("Contact name").fill("Jo Park")
    page.get_by_label("Contact email").fill("jo.park@kestrelfreight.com")
    page.get_by_label("Estimated deal value").fill("30000")
    page.get_by_role("button", name="Submit referral").click()

    expect(page).to_have_url(REFERRAL_PAGE)
    warning = (f"This account is already registered with {VENDOR} (awaiting the vendor's "
               "review). The vendor will decide which registration holds it.")
    # The page states the conflict once, in its own notice (the flash only confirms).
    expect(page.get_by_role("status")).to_have_text(
        "Kestrel Freight Logistics is submitted to Acme Cloud.")
    expect(page.get_by_text(warning)).to_have_count(1)
    expect(status_badge(page)).to_have_text("Submitted")
    expect(page.locator("body")).not_to_contain_text(PARTNER)
    expect(page.locator("body")).not_to_contain_text(desk.rep.user.full_name)
    second = Referral.objects.get(partner=rival)
    assert second.conflict and second.conflict_with == first

    # The warning stays on the referral page when the rep comes back to it.
    open_nav(page, "Referrals")
    page.get_by_role("row").filter(has_text="Kestrel Freight Logistics") \
        .get_by_role("link", name="Kestrel Freight Logistics").click()
    expect(page.get_by_text(warning)).to_be_visible()
    expect(page.locator("body")).not_to_contain_text(PARTNER)

    # 2. The vendor sees the conflict first in the inbox and both registrations side by side.
    log_out(page)
    log_in(page, desk.decider)
    waiting = card(page, "Waiting for your decision")
    rows = waiting.get_by_role("listitem")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("Kestrel Freight Logistics")
    expect(rows.first).to_contain_text(RIVAL)
    expect(rows.first.get_by_text("conflict", exact=True)).to_be_visible()
    rows.first.get_by_role("link", name="Kestrel Freight Logistics").click()

    expect(page.get_by_role("heading", name="Kestrel Freight Logistics", level=1)) \
        .to_be_visible()
    panel = card(page, "Conflicting registrations")
    this = panel.locator(".side-by-side > div").filter(
        has=page.get_by_role("heading", name="This referral", level=3))
    earlier = panel.locator(".side-by-side > div").filter(
        has=page.get_by_role("heading", name="Registered earlier", level=3))
    expect(this).to_contain_text(RIVAL)
    expect(this).to_contain_text(DOMAIN)
    expect(this).to_contain_text("$30,000.00")
    expect(earlier).to_contain_text(PARTNER)
    expect(earlier).to_contain_text(DOMAIN)
    expect(earlier).to_contain_text("Submitted")
    expect(earlier).to_contain_text("$48,000.00")

    # And from the earlier registration, the later one.
    earlier.get_by_role("link", name=f"{COMPANY} Inc").click()
    expect(page.get_by_role("heading", name=f"{COMPANY} Inc", level=1)).to_be_visible()
    later = card(page, "Conflicting registrations").locator(".side-by-side > div").filter(
        has=page.get_by_role("heading", name="Registered later", level=3))
    expect(later).to_contain_text(RIVAL)
    expect(later.get_by_role("link", name="Kestrel Freight Logistics")).to_be_visible()
