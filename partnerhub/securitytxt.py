"""/.well-known/security.txt (RFC 9116): where to report a security problem.

The contact is settings.SECURITY_CONTACT (an email address or an https:// URL), by default
security@ the host of SITE_URL, so each deployment names its own address."""

from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET


def security_contact() -> str:
    contact = settings.SECURITY_CONTACT or f"security@{urlsplit(settings.SITE_URL).hostname}"
    if "://" not in contact and not contact.startswith("mailto:"):
        contact = f"mailto:{contact}"
    return contact


@require_GET
def security_txt(request):
    expires = (timezone.now() + timedelta(days=180)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = (f"Contact: {security_contact()}\n"
            f"Expires: {expires}\n"
            "Preferred-Languages: en\n"
            f"Canonical: {settings.SITE_URL}/.well-known/security.txt\n")
    return HttpResponse(body, content_type="text/plain; charset=utf-8")
