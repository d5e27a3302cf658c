"""How to report a problem: /.well-known/security.txt names the deployment's contact."""

import re


def test_security_txt_names_the_configured_contact(client, network, settings):
    settings.SECURITY_CONTACT = "psirt@partners.example.com"
    response = client.get("/.well-known/security.txt")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    assert "Contact: mailto:psirt@partners.example.com\n" in body
    assert re.search(r"^Expires: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", body, re.MULTILINE)


def test_the_default_contact_is_at_the_site_urls_host(client, network, settings):
    settings.SECURITY_CONTACT = ""
    settings.SITE_URL = "https://partners.example.com"
    body = client.get("/.well-known/security.txt").content.decode()
    assert "Contact: mailto:security@partners.example.com\n" in body
    assert "Canonical: https://partners.example.com/.well-known/security.txt" in body
