"""`next` is honoured only when it stays on this site (issue 17): one helper checks it."""

import pytest
from django.test import RequestFactory
from django.urls import reverse

from partnerhub.redirects import safe_next

OFF_SITE = ["https://evil.example", "//evil.example/x", "/\\evil.example", "http:evil.example",
            "javascript:alert(1)", "https://testserver.evil.example/"]


@pytest.mark.parametrize("target", OFF_SITE)
def test_commission_approval_never_redirects_off_site(world, target):
    client = world.client_for(world.member("vendor", "finance"))
    response = client.post(reverse("payouts:commission_approve"), {"next": target})
    assert response.status_code == 302
    assert response["Location"] == reverse("payouts:commissions")


def test_commission_approval_follows_a_local_next(world):
    client = world.client_for(world.member("vendor", "finance"))
    local = reverse("payouts:commissions") + "?status=payable"
    response = client.post(reverse("payouts:commission_approve"), {"next": local})
    assert response["Location"] == local


@pytest.mark.parametrize("target", OFF_SITE)
def test_login_never_redirects_off_site(client, world, target):
    user = world.member("partner", "owner").user
    user.set_password("a-long-test-password")
    user.save()
    response = client.post(reverse("login") + "?next=" + target,
                           {"username": user.email, "password": "a-long-test-password",
                            "next": target})
    assert response.status_code == 302
    assert "evil" not in response["Location"] and response["Location"].startswith("/")


@pytest.mark.parametrize("target", OFF_SITE + ["", None])
def test_safe_next_falls_back(target):
    request = RequestFactory().post("/", {} if target is None else {"next": target})
    assert safe_next(request, "/home/") == "/home/"


def test_safe_next_keeps_a_local_path():
    request = RequestFactory().get("/", {"next": "/referrals/?page=2"})
    assert safe_next(request, "/home/") == "/referrals/?page=2"
