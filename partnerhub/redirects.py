"""Where a `next` parameter may send the browser: only to a path on this site.

Every view that honours `next` (or another redirect target a client supplied) goes through
`safe_next`, so an attacker's link cannot bounce a logged-in user to another site.
"""

from django.utils.http import url_has_allowed_host_and_scheme


def is_local_url(url: str | None) -> bool:
    """A path on this site: starts with one "/", no scheme, no host, no "//host" or "/\\host"."""
    return bool(url) and url.startswith("/") and url_has_allowed_host_and_scheme(
        url, allowed_hosts=None)


def safe_next(request, default: str, field: str = "next") -> str:
    """The request's `next` (POST first, then GET) when it is a local path, else `default`."""
    target = request.POST.get(field) or request.GET.get(field)
    return target if is_local_url(target) else default
