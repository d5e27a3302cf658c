"""Steps the browser tests share: logging in as a factory-made member and logging out."""

import re

from playwright.sync_api import Page, expect

FACTORY_PASSWORD = "correct-horse-battery"  # tests.accounts.factories.UserFactory's
DASHBOARD = re.compile(r"^https?://[^/]+/$")
PASSWORD_LABEL = re.compile(r"^Password:?$")  # not "Confirm password"


def log_in(page: Page, membership) -> None:
    """Log in as the member and land on its organization's dashboard."""
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(membership.user.email)
    page.get_by_label(PASSWORD_LABEL).fill(FACTORY_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(DASHBOARD)
    expect(page.get_by_role("heading", name=membership.organization.name, level=1)) \
        .to_be_visible()


def log_out(page: Page) -> None:
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
