"""Emailed links never come from the request's Host header (issue 17, finding 3)."""

import pytest
from django.core import mail
from django.urls import reverse


@pytest.fixture
def site_url(settings):
    settings.SITE_URL = "https://partners.northwind.test"
    return settings.SITE_URL


@pytest.mark.parametrize("host", ["partners.elsewhere.test", "evil.example",
                                  "elsewhere.partnerhub.test"])
def test_the_reset_link_points_at_the_site_url_whatever_the_host(client, world, site_url, host):
    user = world.member("partner", "owner").user
    response = client.post(reverse("password_reset"), {"email": user.email}, HTTP_HOST=host)
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    html = message.alternatives[0][0]
    for body in (message.body, html):
        assert host not in body
        assert f"{site_url}/accounts/reset/" in body


def test_the_reset_link_works(client, world, site_url):
    user = world.member("partner", "owner").user
    client.post(reverse("password_reset"), {"email": user.email}, HTTP_HOST="evil.example")
    link = next(line for line in mail.outbox[0].body.splitlines() if "/accounts/reset/" in line)
    path = link.strip().removeprefix(site_url)
    page = client.get(path, follow=True)
    assert page.status_code == 200 and "new_password1" in page.content.decode()
