"""Two-factor sign-in in a real browser: a vendor admin in a network that enforces it sets up an
authenticator right after the password (typing the shown key into a TOTP generator, as an app
would), saves the recovery codes, logs out, and logs in again with a code."""

import base64
import re
import time

from django_otp.oath import TOTP
from playwright.sync_api import expect

from accounts import roles
from accounts.models import Network
from tests.accounts.factories import MembershipFactory, OrganizationFactory
from tests.browser.helpers import DASHBOARD, FACTORY_PASSWORD, PASSWORD_LABEL, log_out


def app_code(secret: str, steps_ahead: int = 0) -> str:
    """What an authenticator app set up with `secret` shows."""
    totp = TOTP(base64.b32decode(secret.replace(" ", "")), step=30, t0=0, digits=6)
    totp.time = time.time() + steps_ahead * 30
    return f"{totp.token():06d}"


def password_step(page, membership):
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(membership.user.email)
    page.get_by_label(PASSWORD_LABEL).fill(FACTORY_PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_enrolment_then_login_with_a_code(page, network):
    network.two_factor_policy = Network.TWO_FACTOR_ROLES
    network.save(update_fields=["two_factor_policy"])
    vendor = OrganizationFactory(network=network, kind=roles.VENDOR, name="Acme Cloud")
    admin = MembershipFactory(organization=vendor, role="admin")

    password_step(page, admin)
    expect(page.get_by_role("heading", name="Set up two-factor sign-in")).to_be_visible()
    expect(page.get_by_role("img", name="QR code for your authenticator app")).to_be_visible()
    # Not logged in yet: the dashboard asks for a login; the set-up page is still there.
    page.goto("/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.goto("/accounts/two-factor/setup/")

    secret = page.locator("code.secret").inner_text()
    page.get_by_label("Code from the app").fill(app_code(secret))
    page.get_by_role("button", name="Turn on two-factor sign-in").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    codes = page.locator("ul.recovery-codes code").all_inner_texts()
    assert len(codes) == 10 and all(re.fullmatch(r"[a-z2-7]{4}(-[a-z2-7]{4}){3}", c)
                                    for c in codes)
    page.get_by_role("link", name="I have saved my codes, continue").click()
    expect(page).to_have_url(DASHBOARD)
    expect(page.get_by_role("heading", name="Acme Cloud", level=1)).to_be_visible()

    log_out(page)
    password_step(page, admin)
    expect(page.get_by_role("heading", name="Enter your code")).to_be_visible()
    # The enrolment used this 30-second step's code; a code is never accepted twice, so the
    # app's next one (accepted one step early) signs in.
    page.get_by_label("Code").fill(app_code(secret, steps_ahead=1))
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(DASHBOARD)
    expect(page.get_by_role("heading", name="Acme Cloud", level=1)).to_be_visible()

    log_out(page)
    password_step(page, admin)
    page.get_by_label("Code").fill(codes[0])
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("heading", name="Acme Cloud", level=1)).to_be_visible()
