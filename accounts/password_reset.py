"""Password reset whose emailed link starts with SITE_URL, never with the request's Host.

Django builds the link from the request (`get_current_site`, `is_secure`), so a request sent with
`Host:` set to a domain someone else controls (another network's custom domain) would email the
victim a link to that domain, token included. Every email link here starts with SITE_URL.
"""

from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.forms import PasswordResetForm


class SiteURLPasswordResetForm(PasswordResetForm):
    def save(self, *args, **kwargs):
        site = urlsplit(settings.SITE_URL)
        kwargs["domain_override"] = site.netloc
        kwargs["use_https"] = site.scheme == "https"
        kwargs["request"] = None  # nothing of the request goes into the email
        return super().save(*args, **kwargs)
