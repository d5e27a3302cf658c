"""The real client IP, trusting forwarded headers only from configured proxies.

Rate limits (django-axes) and the audit log both read the IP from here, so a client can never
spoof its address by sending its own X-Forwarded-For unless it *is* a trusted proxy.
"""

import ipaddress
from functools import lru_cache

from django.conf import settings


@lru_cache(maxsize=8)
def _trusted_networks(proxies: tuple[str, ...]):
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in proxies)


def _is_trusted(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in net for net in _trusted_networks(tuple(settings.TRUSTED_PROXIES)))


def resolve_client_ip(meta) -> str:
    remote = meta.get("REMOTE_ADDR", "") or ""
    if not settings.TRUSTED_PROXIES or not _is_trusted(remote):
        return remote
    header = "HTTP_" + settings.CLIENT_IP_HEADER.upper().replace("-", "_")
    raw = meta.get(header, "")
    if not raw:
        return remote
    # X-Forwarded-For is "client, proxy1, proxy2": walk from the right past our own proxies.
    hops = [hop.strip() for hop in raw.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return remote
    return hops[0] if hops else remote


_FORWARDED_HEADERS = ("HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PORT",
                      "HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED")


def drop_untrusted_forwarded_headers(meta) -> None:
    """Django honours X-Forwarded-Proto/Host from whoever sends them once configured to; we
    only let them through from a trusted proxy."""
    if settings.TRUSTED_PROXIES and _is_trusted(meta.get("REMOTE_ADDR", "") or ""):
        return
    for header in _FORWARDED_HEADERS:
        meta.pop(header, None)


def client_ip(request) -> str:
    cached = getattr(request, "client_ip", None)
    if cached is not None:
        return cached
    return resolve_client_ip(request.META)
