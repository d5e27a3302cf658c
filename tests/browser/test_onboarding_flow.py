"""Self-serve onboarding as people do it, in a real browser: a partner applies, verifies their
email from the link in the message, an operator's onboarding reviewer approves (or rejects) the
application, and the applicant logs in to what the decision gave them."""

import re

import pytest
from django.core import mail
from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts import roles
from accounts.models import Organization
from tests.accounts.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.browser.helpers import log_out

FACTORY_PASSWORD = "correct-horse-battery"

COMPANY = "Lumen Advisory"
WEBSITE = "https://www.lumen-advisory.com"
APPLICANT_NAME = "Dana Whitfield"
APPLICANT_EMAIL = "dana@lumen-advisory.com"
APPLICANT_PASSWORD = "Quiet-lantern-harbour-42"

DASHBOARD = re.compile(r"^https?://[^/]+/$")
PASSWORD_LABEL = re.compile(r"^Password:?$")  # not "Confirm password"
VERIFY_LINK = re.compile(r"https?://[^/\s\"']+(/verify/[^/\s\"'<>]+/)")


@pytest.fixture
def reviewer(network):
    """An onboarding reviewer of the network's operator organization."""
    network.auto_approve_matching_domains = False  # every application goes to a human
    network.save(update_fields=["auto_approve_matching_domains"])
    operator = OrganizationFactory(network=network, kind=roles.OPERATOR, name="Network Ops")
    return MembershipFactory(
        organization=operator,
        role="onboarding",
        user=UserFactory(email="riley@network-ops.test", full_name="Riley Reviewer"),
    )


def emails_to(address, subject_contains=""):
    return [m for m in mail.outbox if address in m.to and subject_contains in m.subject]


def log_in(page: Page, email: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label(PASSWORD_LABEL).fill(password)
    page.get_by_role("button", name="Log in").click()



def test_partner_applies_verifies_and_is_approved(page: Page, network, reviewer):
    # 1. An anonymous visitor applies as a partner.
    page.goto("/apply/partner/")
    expect(page.get_by_role("heading", name="Become a partner")).to_be_visible()
    page.get_by_label("Company name").fill(COMPANY)
    page.get_by_label("Company website").fill(WEBSITE)
    page.get_by_label("Country").select_option("US")
    page.get_by_label("Partner type").select_option(label="Consultant")
    page.get_by_label("Your name").fill(APPLICANT_NAME)
    page.get_by_label("Work email").fill(APPLICANT_EMAIL)
    page.get_by_label(PASSWORD_LABEL).fill(APPLICANT_PASSWORD)
    page.get_by_label("Confirm password").fill(APPLICANT_PASSWORD)
    page.get_by_role("button", name="Apply").click()

    expect(page).to_have_url(re.compile(r"/apply-done/$"))
    expect(page.get_by_role("heading", name="Thanks, your application is in")).to_be_visible()
    expect(page.get_by_text("Next: verify your email address.")).to_be_visible()
    expect(page.get_by_text(APPLICANT_EMAIL)).to_be_visible()

    # 2. The verification email arrived (sent after commit by the eager Celery task), with the
    # link in the text body and in the HTML alternative; the applicant follows it.
    [verification] = emails_to(APPLICANT_EMAIL, "Verify your email")
    assert COMPANY in verification.subject
    match = VERIFY_LINK.search(verification.body)
    assert match, verification.body
    verify_path = match.group(1)
    [(html, mimetype)] = verification.alternatives
    assert mimetype == "text/html"
    assert verify_path in html
    assert emails_to(reviewer.user.email) == []  # reviewers hear of it only once verified

    page.goto(verify_path)
    expect(page).to_have_url(DASHBOARD)
    expect(page.get_by_role("status")).to_contain_text("your email is verified")
    expect(page.get_by_role("heading", name="Your application is being reviewed")).to_be_visible()
    expect(page.get_by_text(re.compile(r"^Your email is verified\. The network"))).to_be_visible()
    [received] = emails_to(reviewer.user.email, "application")
    assert COMPANY in received.subject

    # 3. An onboarding reviewer approves the application from the queue.
    log_out(page)
    log_in(page, reviewer.user.email, FACTORY_PASSWORD)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Applications").click()
    expect(page.get_by_role("heading", name="Applications", exact=True)).to_be_visible()
    row = page.get_by_role("row").filter(has_text=COMPANY)
    expect(row).to_have_count(1)
    expect(row.get_by_text("email verified", exact=True)).to_be_visible()
    expect(row.get_by_text("email matches website", exact=True)).to_be_visible()
    expect(row).to_contain_text(APPLICANT_EMAIL)
    expect(row).to_contain_text("United States")

    row.get_by_role("link", name=COMPANY).click()
    expect(page.get_by_role("heading", name=COMPANY, level=1)).to_be_visible()
    expect(page.get_by_text("Partner application · Pending review")).to_be_visible()
    page.get_by_role("button", name=f"Approve {COMPANY}").click()

    expect(page).to_have_url(re.compile(r"/network/applications/$"))
    expect(page.get_by_role("status")).to_have_text(
        f"{COMPANY} is approved and has been told by email."
    )
    expect(page.get_by_text("No applications are waiting.")).to_be_visible()

    [approved] = emails_to(APPLICANT_EMAIL, "is approved")
    assert COMPANY in approved.subject
    assert "/accounts/login/" in approved.body

    # 4. The new partner logs in to a working dashboard.
    log_out(page)
    log_in(page, APPLICANT_EMAIL, APPLICANT_PASSWORD)
    expect(page).to_have_url(DASHBOARD)
    expect(page.get_by_role("heading", name=COMPANY, level=1)).to_be_visible()
    expect(page.get_by_role("heading", name="Set-up checklist")).to_be_visible()
    expect(page.get_by_role("heading", name="Team")).to_be_visible()
    expect(page.get_by_role("link", name="Invite your team")).to_be_visible()
    expect(page.get_by_text("being reviewed")).to_have_count(0)

    org = Organization.objects.get(name=COMPANY)
    assert org.status == Organization.ACTIVE
    assert not org.auto_approved
    assert org.reviewed_by == reviewer.user


def test_rejected_applicant_is_told_why_and_has_no_access(page: Page, network, reviewer):
    pending = OrganizationFactory(
        network=network,
        kind=roles.PARTNER,
        name="Shady Leads",
        status=Organization.PENDING,
        website_domain="shady-leads.test",
        website="https://shady-leads.test",
        verified_at=timezone.now(),
        approved_at=None,
    )
    applicant = MembershipFactory(
        organization=pending,
        role="owner",
        user=UserFactory(email="sam@shady-leads.test", full_name="Sam Shade"),
    ).user

    log_in(page, reviewer.user.email, FACTORY_PASSWORD)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Applications").click()
    page.get_by_role("row").filter(has_text="Shady Leads").get_by_role(
        "link", name="Shady Leads"
    ).click()
    expect(page.get_by_role("heading", name="Shady Leads", level=1)).to_be_visible()

    # "Other" needs an explanation for the applicant.
    page.get_by_label("Reason").select_option(label="Other")
    page.get_by_role("button", name="Reject").click()
    expect(page.get_by_text("Explain the reason to the applicant.")).to_be_visible()

    page.get_by_label("Reason").select_option(label="We could not verify the company")
    page.get_by_label("Details").fill("The website does not describe any consulting services.")
    page.get_by_role("button", name="Reject").click()

    expect(page).to_have_url(re.compile(r"/network/applications/$"))
    expect(page.get_by_role("status")).to_have_text(
        "Shady Leads was rejected; the applicant has been told why."
    )
    expect(page.get_by_text("No applications are waiting.")).to_be_visible()

    [rejection] = emails_to(applicant.email, "Your application")
    assert (
        "We could not verify the company. The website does not describe any consulting "
        "services." in rejection.body
    )

    log_out(page)
    log_in(page, applicant.email, FACTORY_PASSWORD)
    expect(page).to_have_url(re.compile(r"/accounts/no-membership/$"))
    expect(page.get_by_role("heading", name="Your application was not approved")).to_be_visible()
    expect(page.get_by_text("being reviewed")).to_have_count(0)
