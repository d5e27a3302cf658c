"""Client IP behind proxies, logging in and out, the login lockout and password reset."""

import html
import re

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.core import mail
from django.test import Client

from accounts import roles
from accounts.models import AuditEvent
from partnerhub.clientip import resolve_client_ip
from tests.accounts.factories import MembershipFactory, UserFactory

PASSWORD = "correct-horse-battery"  # the factories' password
NEW_PASSWORD = "Velvet-harbour-signal-19"


def text(response) -> str:
    return html.unescape(response.content.decode())


# --- resolve_client_ip ----------------------------------------------------------------------


def test_without_trusted_proxies_forwarded_headers_are_ignored(settings):
    settings.TRUSTED_PROXIES = []
    meta = {"REMOTE_ADDR": "203.0.113.5", "HTTP_X_FORWARDED_FOR": "198.51.100.1",
            "HTTP_CF_CONNECTING_IP": "198.51.100.2"}
    assert resolve_client_ip(meta) == "203.0.113.5"
    settings.CLIENT_IP_HEADER = "CF-Connecting-IP"
    assert resolve_client_ip(meta) == "203.0.113.5"


@pytest.mark.parametrize("forwarded, expected", [
    ("198.51.100.7", "198.51.100.7"),
    # The client may prepend anything; the right-most hop our proxies did not add is the truth.
    ("6.6.6.6, 198.51.100.7", "198.51.100.7"),
    ("6.6.6.6, 198.51.100.7, 10.0.0.4", "198.51.100.7"),
    ("6.6.6.6,198.51.100.7 ,10.9.9.9, 10.0.0.4", "198.51.100.7"),
    ("2001:db8::1, 10.0.0.4", "2001:db8::1"),
    ("198.51.100.7, not-an-ip", "10.1.2.3"),
    ("", "10.1.2.3"),
])
def test_behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client(settings, forwarded,
                                                                            expected):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    meta = {"REMOTE_ADDR": "10.1.2.3", "HTTP_X_FORWARDED_FOR": forwarded}
    assert resolve_client_ip(meta) == expected


def test_cloudflare_header_is_used_when_configured(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    settings.CLIENT_IP_HEADER = "CF-Connecting-IP"
    meta = {"REMOTE_ADDR": "10.1.2.3", "HTTP_CF_CONNECTING_IP": "198.51.100.9",
            "HTTP_X_FORWARDED_FOR": "6.6.6.6"}
    assert resolve_client_ip(meta) == "198.51.100.9"
    # Without the configured header, X-Forwarded-For is not consulted instead.
    del meta["HTTP_CF_CONNECTING_IP"]
    assert resolve_client_ip(meta) == "10.1.2.3"


@pytest.mark.parametrize("header", ["X-Forwarded-For", "CF-Connecting-IP"])
def test_untrusted_peer_sending_forwarded_headers_is_not_believed(settings, header):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    settings.CLIENT_IP_HEADER = header
    meta = {"REMOTE_ADDR": "203.0.113.5", "HTTP_X_FORWARDED_FOR": "10.0.0.1",
            "HTTP_CF_CONNECTING_IP": "198.51.100.9"}
    assert resolve_client_ip(meta) == "203.0.113.5"


def test_audit_events_record_the_resolved_client_ip(settings, world):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    owner = world.member(roles.PARTNER, "owner")
    rep = world.member(roles.PARTNER, "rep")

    world.client_for(owner).post(
        f"/team/{rep.public_id}/role/", {"role": "manager"},
        REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.77, 10.0.0.9")

    assert AuditEvent.objects.get(action="membership.role_changed").ip == "203.0.113.77"


def test_a_spoofed_forwarded_header_does_not_reach_the_audit_log(settings, world):
    settings.TRUSTED_PROXIES = []
    owner = world.member(roles.PARTNER, "owner")
    world.client_for(owner).post(
        f"/team/{world.member(roles.PARTNER, 'rep').public_id}/role/", {"role": "manager"},
        REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR="1.2.3.4")
    assert AuditEvent.objects.get(action="membership.role_changed").ip == "203.0.113.5"


# --- Logging in and out ---------------------------------------------------------------------


@pytest.fixture
def member(world):
    return MembershipFactory(organization=world.partner, role="rep",
                             user=UserFactory(email="kim.lee@brightpath.test",
                                              full_name="Kim Lee"))


def login(client, username, password, **extra):
    return client.post("/accounts/login/", {"username": username, "password": password}, **extra)


@pytest.mark.parametrize("username", ["kim.lee@brightpath.test", "Kim.Lee@BrightPath.TEST",
                                      "  kim.lee@brightpath.test "])
def test_login_with_email_and_password(member, client, username):
    response = login(client, username, PASSWORD)

    assert response.status_code == 302 and response["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200
    assert "kim.lee@brightpath.test" in text(home)


def test_wrong_password_shows_a_helpful_error(member, client):
    response = login(client, "kim.lee@brightpath.test", "wrong-password")
    assert response.status_code == 200
    assert "That email and password do not match an account." in text(response)
    assert client.get("/")["Location"].startswith("/accounts/login/")


def test_five_wrong_passwords_lock_the_account_out(member, client):
    for _ in range(5):
        login(client, "kim.lee@brightpath.test", "wrong-password")

    response = login(client, "kim.lee@brightpath.test", PASSWORD)

    assert response.status_code == 429
    assert "Too many failed attempts" in text(response)
    assert client.get("/").status_code == 302  # still not logged in


def test_four_wrong_passwords_do_not_lock_out_and_a_success_resets_the_count(member, client):
    for _ in range(4):
        login(client, "kim.lee@brightpath.test", "wrong-password")
    assert login(client, "kim.lee@brightpath.test", PASSWORD).status_code == 302
    client.post("/accounts/logout/")
    for _ in range(4):
        login(client, "kim.lee@brightpath.test", "wrong-password")
    assert login(client, "kim.lee@brightpath.test", PASSWORD).status_code == 302


def test_changing_the_case_of_the_email_does_not_escape_the_lockout(member, client):
    for username in ["kim.lee@brightpath.test", "Kim.lee@brightpath.test",
                     "KIM.lee@brightpath.test", "kim.LEE@brightpath.test",
                     "kim.lee@BRIGHTPATH.test"]:
        login(client, username, "wrong-password")

    response = login(client, "kim.lee@brightpath.test", PASSWORD)

    assert response.status_code == 429
    assert "Too many failed attempts" in text(response)


def test_a_spoofed_forwarded_header_does_not_escape_the_lockout(member, settings):
    settings.TRUSTED_PROXIES = []
    client = Client()
    for n in range(5):
        login(client, "kim.lee@brightpath.test", "wrong-password",
              REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")

    response = login(client, "kim.lee@brightpath.test", PASSWORD, REMOTE_ADDR="203.0.113.5",
                     HTTP_X_FORWARDED_FOR="198.51.100.200")

    assert response.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.5"}


def test_behind_a_proxy_the_lockout_is_keyed_on_the_resolved_client_ip(member, settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    attacker, colleague = Client(), Client()
    for _ in range(5):
        login(attacker, "kim.lee@brightpath.test", "wrong-password", REMOTE_ADDR="10.1.2.3",
              HTTP_X_FORWARDED_FOR="203.0.113.50")

    attempt = AccessAttempt.objects.get()
    assert attempt.ip_address == "203.0.113.50"
    assert attempt.username == "kim.lee@brightpath.test"
    assert attempt.failures_since_start == 5
    locked = login(attacker, "kim.lee@brightpath.test", PASSWORD, REMOTE_ADDR="10.1.2.3",
                   HTTP_X_FORWARDED_FOR="203.0.113.50")
    assert locked.status_code == 429
    # Another person behind the same proxy is not locked out by the attacker.
    ok = login(colleague, "kim.lee@brightpath.test", PASSWORD, REMOTE_ADDR="10.1.2.3",
               HTTP_X_FORWARDED_FOR="198.51.100.60")
    assert ok.status_code == 302 and ok["Location"] == "/"


@pytest.mark.parametrize("next_url, expected", [
    ("/team/", "/team/"),
    ("https://evil.test/phish", "/"),
    ("//evil.test/phish", "/"),
])
def test_login_follows_next_only_within_the_site(member, client, next_url, expected):
    response = client.post("/accounts/login/", {"username": "kim.lee@brightpath.test",
                                                "password": PASSWORD, "next": next_url})
    assert response.status_code == 302 and response["Location"] == expected


def test_logout_needs_a_post(member, client):
    login(client, "kim.lee@brightpath.test", PASSWORD)

    assert client.get("/accounts/logout/").status_code == 405
    assert client.get("/").status_code == 200  # still logged in

    response = client.post("/accounts/logout/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert client.get("/")["Location"].startswith("/accounts/login/")


def test_logged_in_user_visiting_login_goes_home(member, client):
    login(client, "kim.lee@brightpath.test", PASSWORD)
    response = client.get("/accounts/login/")
    assert response.status_code == 302 and response["Location"] == "/"


# --- Password reset -------------------------------------------------------------------------


def test_password_reset_by_email_link(member, client):
    response = client.post("/accounts/password-reset/", {"email": "KIM.LEE@brightpath.test"})

    assert response.status_code == 302
    assert response["Location"] == "/accounts/password-reset/sent/"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["kim.lee@brightpath.test"]
    assert message.subject == "Reset your PartnerHub password"
    # The link starts with SITE_URL, never with the request's Host (issue 17).
    match = re.search(re.escape(settings.SITE_URL) + r"(/accounts/reset/[^/\s]+/[^/\s]+/)",
                      message.body)
    assert match, message.body
    link = match.group(1)
    html_parts = [c for c, mimetype in message.alternatives if mimetype == "text/html"]
    assert len(html_parts) == 1 and link in html_parts[0]

    visitor = Client()
    form_page = visitor.get(link, follow=True)
    assert form_page.status_code == 200
    assert "Choose a new password" in text(form_page)
    set_password_url = form_page.redirect_chain[-1][0]
    done = visitor.post(set_password_url, {"new_password1": NEW_PASSWORD,
                                           "new_password2": NEW_PASSWORD})
    assert done.status_code == 302 and done["Location"] == "/accounts/reset/done/"

    assert login(Client(), "kim.lee@brightpath.test", PASSWORD).status_code == 200
    fresh = Client()
    assert login(fresh, "kim.lee@brightpath.test", NEW_PASSWORD).status_code == 302
    assert fresh.get("/").status_code == 200

    # The link worked once.
    reused = Client().get(link, follow=True)
    assert "This link does not work" in text(reused)


def test_password_reset_for_an_unknown_email_looks_the_same_and_sends_nothing(member, client):
    response = client.post("/accounts/password-reset/", {"email": "nobody@brightpath.test"})
    assert response.status_code == 302
    assert response["Location"] == "/accounts/password-reset/sent/"
    assert mail.outbox == []
