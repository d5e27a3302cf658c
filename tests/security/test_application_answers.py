"""The public application form reveals nothing about who is already here (issue 17): a new
application, an email that has an account and a domain that has an organization get the same
answer; the news goes by email to the mailbox concerned."""

import html
import re

import pytest
from django.core import mail
from django.test import Client

from accounts import roles
from accounts.models import Organization, User
from tests.accounts.factories import MembershipFactory, OrganizationFactory, UserFactory

PASSWORD = "Plum-orchard-lantern-88"


def form(**overrides):
    return {"company_name": "Lumen Advisory", "website": "https://www.lumen-advisory.com",
            "country": "DE", "partner_type": "agency", "full_name": "Lena Vogel",
            "email": "lena@lumen-advisory.com", "password": PASSWORD,
            "password_confirm": PASSWORD, **overrides}


def apply(capture, **overrides):
    client = Client()
    with capture(execute=True):
        response = client.post("/apply/partner/", form(**overrides))
    page = client.get("/apply-done/") if response.status_code == 302 else response
    # Per-request tokens (CSRF, CSP nonces) aside, the pages must be identical.
    body = re.sub(r'(X-CSRFToken": "|value="|nonce=")[A-Za-z0-9+/=_-]{16,}', r"\1",
                  html.unescape(page.content.decode()))
    answer = (response.status_code, response.get("Location"), body)
    return client, answer


def new_application_answer(capture, email):
    """What a brand-new application (another company, another address) is answered, with the
    address shown on the page swapped for `email`."""
    client, (status, location, page) = apply(capture, email="someone@fresh-company.io",
                                             website="fresh-company.io", company_name="Fresh")
    assert status == 302 and logged_in(client) is False
    assert Organization.objects.filter(website_domain="fresh-company.io").exists()
    mail.outbox.clear()
    return status, location, page.replace("someone@fresh-company.io", email)


def logged_in(client):
    return "_auth_user_id" in client.session


def test_an_email_with_an_account_gets_the_answer_of_a_new_application(
        network, django_capture_on_commit_callbacks):
    new = new_application_answer(django_capture_on_commit_callbacks, "known@example.org")
    existing = UserFactory(email="known@example.org", full_name="Known Person")

    client, taken = apply(django_capture_on_commit_callbacks, email="KNOWN@example.org",
                          website="lumen-advisory.com")

    assert taken == new
    assert not logged_in(client)
    assert not Organization.objects.filter(website_domain="lumen-advisory.com").exists()
    [notice] = mail.outbox
    assert notice.to == [existing.email]
    assert "tried to apply" in notice.subject or "Someone" in notice.subject
    assert "/accounts/login/" in notice.body and "/accounts/password-reset/" in notice.body


@pytest.mark.parametrize("status", [Organization.ACTIVE, Organization.PENDING])
def test_a_domain_with_an_organization_gets_the_answer_of_a_new_application(
        network, django_capture_on_commit_callbacks, status):
    new = new_application_answer(django_capture_on_commit_callbacks, "lena@lumen-advisory.com")
    org = OrganizationFactory(network=network, kind=roles.PARTNER, name="Lumen GmbH",
                              website_domain="lumen-advisory.com", status=status)
    owner = MembershipFactory(organization=org, role="owner",
                              user=UserFactory(email="founder@lumen-advisory.com"))

    client, taken = apply(django_capture_on_commit_callbacks, email="lena@lumen-advisory.com")

    assert taken == new
    assert not logged_in(client)
    assert Organization.objects.filter(website_domain="lumen-advisory.com").count() == 1
    assert not User.objects.filter(email="lena@lumen-advisory.com").exists()
    to_applicant = [m for m in mail.outbox if m.to == ["lena@lumen-advisory.com"]]
    to_owner = [m for m in mail.outbox if m.to == [owner.user.email]]
    assert len(to_applicant) == 1 and len(to_owner) == 1
    assert "invite" in to_applicant[0].body
    assert "lena@lumen-advisory.com" in to_owner[0].body and "/team/" in to_owner[0].body


def test_the_applicant_is_logged_in_by_their_link_in_the_browser_that_applied(
        network, django_capture_on_commit_callbacks):
    client, _ = apply(django_capture_on_commit_callbacks)
    assert not logged_in(client)
    link = re.search(r"https?://[^/\s]+(/verify/[^/\s]+/)", mail.outbox[0].body).group(1)
    stranger = Client()
    with django_capture_on_commit_callbacks(execute=True):
        stranger.get(link)
        client.get(link)
    assert not logged_in(stranger)  # the link alone is no login
    assert logged_in(client)
    assert "Lumen Advisory" in client.get("/").content.decode()
