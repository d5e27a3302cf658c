"""Content-Security-Policy on every page, with a fresh nonce and no 'unsafe-inline', and a
Permissions-Policy (issue 17). The templates hold no inline handler, style attribute or
un-nonced <script>/<style>: with the policy, a browser would refuse them."""

import re
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from tests.referrals.factories import ReferralFactory

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
INLINE_HANDLER = re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE | re.DOTALL)
STYLE_ATTRIBUTE = re.compile(r"<[^>]*\sstyle\s*=", re.IGNORECASE | re.DOTALL)
SCRIPT_OR_STYLE = re.compile(r"<(script|style)\b[^>]*>", re.IGNORECASE)


def nonce_of(response) -> str:
    policy = response["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert directives["default-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    script = re.fullmatch(r"'self' 'nonce-([A-Za-z0-9+/=]{16,})'", directives["script-src"])
    style = re.fullmatch(r"'self' 'nonce-([A-Za-z0-9+/=]{16,})'", directives["style-src"])
    assert script and style and script.group(1) == style.group(1), policy
    return script.group(1)


def assert_page_obeys_its_policy(response):
    assert response.status_code in (200, 404), response.status_code
    nonce = nonce_of(response)
    html = response.content.decode()
    tags = SCRIPT_OR_STYLE.findall(html)
    assert tags, "the page loads htmx and app.js"
    for tag in re.finditer(r"<(?:script|style)\b[^>]*>", html, re.IGNORECASE):
        assert f'nonce="{nonce}"' in tag.group(0), tag.group(0)
    assert not INLINE_HANDLER.search(html), INLINE_HANDLER.search(html).group(0)
    assert not STYLE_ATTRIBUTE.search(html)
    assert "includeIndicatorStyles" in html  # htmx injects no <style> of its own
    assert "camera=()" in response["Permissions-Policy"]
    assert "geolocation=()" in response["Permissions-Policy"]
    return nonce


@pytest.mark.parametrize("path", ["/accounts/login/", "/accounts/password-reset/",
                                  "/apply/partner/", "/no-such-page/"])
def test_public_pages_carry_the_policy(network, client, path):
    assert_page_obeys_its_policy(client.get(path))


def test_each_response_gets_its_own_nonce(network):
    first = nonce_of(Client().get("/accounts/login/"))
    second = nonce_of(Client().get("/accounts/login/"))
    assert first != second


@pytest.mark.parametrize("kind, role", [("partner", "owner"), ("vendor", "admin"),
                                        ("vendor", "finance"), ("operator", "admin")])
def test_signed_in_pages_carry_the_policy(world, programs, kind, role):
    referral = ReferralFactory(program=programs["acme"], partner=world.partner)
    client = world.client_for(world.member(kind, role))
    pages = [reverse("home"), reverse("referrals:list"), reverse("accounts:notifications"),
             reverse("accounts:team"), reverse("referrals:detail", args=[referral.public_id])]
    if kind == "vendor":
        pages += [reverse("integrations:connection"), reverse("payouts:commissions")]
    if kind == "partner":
        pages += [reverse("referrals:new"), reverse("payouts:earnings")]
    if kind == "operator":
        pages += [reverse("accounts:application_queue"), reverse("accounts:audit_log"),
                  reverse("attribution:list")]
    for page in pages:
        response = client.get(page)
        if response.status_code == 404 and page != reverse("home"):
            continue  # not this role's page
        assert_page_obeys_its_policy(response)


def test_htmx_partials_carry_the_policy_header(world, programs):
    referral = ReferralFactory(program=programs["acme"], partner=world.partner)
    client = world.client_for(world.member("vendor", "admin"))
    response = client.get(reverse("attribution:referral_disputes", args=[referral.public_id]),
                          HTTP_HX_REQUEST="true")
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert "default-src 'self'" in response["Content-Security-Policy"]


def _page_templates():
    return [p for p in TEMPLATES.rglob("*.html") if "emails" not in p.relative_to(TEMPLATES).parts]


def test_templates_hold_no_inline_handlers_styles_or_unnonced_tags():
    offenders = []
    for path in _page_templates():
        source = path.read_text()
        name = str(path.relative_to(TEMPLATES))
        if INLINE_HANDLER.search(source):
            offenders.append(f"{name}: inline handler {INLINE_HANDLER.search(source).group(0)}")
        if STYLE_ATTRIBUTE.search(source):
            offenders.append(f"{name}: style attribute")
        for tag in SCRIPT_OR_STYLE.finditer(source):
            if "nonce=" not in tag.group(0):
                offenders.append(f"{name}: {tag.group(0)} without a nonce")
    assert offenders == []
    assert len(_page_templates()) > 50  # the scan saw the templates
