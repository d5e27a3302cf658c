"""Pages work under the Content-Security-Policy (issue 17), which Chromium enforces: htmx loads
and swaps its partials, the confirmation before a withdrawal and the membership switcher work
without inline handlers, and no page reports a policy violation."""

import pytest
from playwright.sync_api import Page, expect

from accounts import roles
from referrals.models import Referral
from tests.accounts.factories import MembershipFactory, OrganizationFactory
from tests.browser.helpers import log_in
from tests.referrals.factories import ProgramFactory, ReferralFactory


@pytest.fixture
def violations(page: Page):
    """Chromium reports each blocked script, style or handler on the console."""
    seen = []
    page.on("console", lambda message: seen.append(message.text)
            if "Content Security Policy" in message.text else None)
    return seen


@pytest.fixture
def desk(network):
    vendor = OrganizationFactory(network=network, kind=roles.VENDOR, name="Acme Cloud")
    partner = OrganizationFactory(network=network, kind=roles.PARTNER, name="Brightpath")
    program = ProgramFactory(vendor=vendor, name="Acme Partner Program")
    owner = MembershipFactory(organization=partner, role="owner")
    referral = ReferralFactory(program=program, partner=partner, submitted_by=owner.user,
                               company_name="Kestrel Freight")
    return owner, referral


def test_the_partner_pages_work_under_the_policy(page: Page, violations, desk):
    owner, referral = desk
    log_in(page, owner)
    response = page.goto(f"/referrals/{referral.public_id}/")
    policy = response.headers["content-security-policy"]
    assert "'nonce-" in policy and "unsafe-inline" not in policy
    assert "camera=()" in response.headers["permissions-policy"]
    assert page.evaluate("typeof window.htmx") == "object"
    # htmx swapped the page's lazy panels in (hx-trigger="load").
    expect(page.locator("[hx-trigger='load']")).to_have_count(0)

    # The confirmation before withdrawing comes from app.js, not an onsubmit attribute.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Withdraw").click()
    page.wait_for_timeout(300)
    referral.refresh_from_db()
    assert referral.status == Referral.SUBMITTED
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Withdraw").click()
    expect(page.get_by_role("status")).to_contain_text("Withdrawn")
    referral.refresh_from_db()
    assert referral.status == Referral.WITHDRAWN

    for path in ["/", "/referrals/", "/notifications/", "/team/", "/referrals/new/"]:
        page.goto(path)
        page.wait_for_load_state("networkidle")
    assert violations == []


def test_the_membership_switcher_submits_without_an_inline_handler(page: Page, violations,
                                                                   desk, network):
    owner, _ = desk
    vendor = OrganizationFactory(network=network, kind=roles.VENDOR, name="Globex")
    MembershipFactory(organization=vendor, role="admin", user=owner.user)
    log_in(page, owner)
    switch = page.get_by_label("Acting as")
    globex = switch.locator("option", has_text="Globex").get_attribute("value")
    switch.select_option(globex)
    expect(page.get_by_role("status")).to_contain_text("Switched to Globex")
    expect(page.get_by_role("heading", name="Globex", level=1)).to_be_visible()
    assert violations == []
