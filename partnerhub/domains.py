"""Domain helpers on the public suffix list shipped inside tldextract (never fetched)."""

from urllib.parse import urlsplit

import tldextract

# Private suffixes (myshopify.com, github.io) count, so two stores are two customers.
_extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None,
                                 include_psl_private_domains=True)

# Mailbox providers whose domain says nothing about the employer.
FREE_MAIL_DOMAINS = frozenset(
    """gmail.com googlemail.com yahoo.com yahoo.co.uk ymail.com hotmail.com hotmail.co.uk
    outlook.com live.com msn.com aol.com icloud.com me.com mac.com proton.me protonmail.com
    gmx.com gmx.de gmx.net web.de mail.com yandex.com yandex.ru zoho.com fastmail.com
    hey.com tutanota.com qq.com 163.com 126.com mail.ru orange.fr free.fr laposte.net
    libero.it t-online.de""".split()
)


def host_of(url_or_host: str) -> str:
    value = (url_or_host or "").strip().lower()
    if not value:
        return ""
    if "://" not in value:
        value = "http://" + value
    try:
        host = urlsplit(value).hostname or ""
    except ValueError:
        return ""
    host = host.rstrip(".")
    try:  # one spelling for international names: bücher.de == xn--bcher-kva.de
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    return host


def registrable_domain(url_or_host: str) -> str:
    """`https://www.eu.acme.co.uk/x` -> `acme.co.uk`; '' when there is none (IPs, localhost)."""
    host = host_of(url_or_host)
    if not host:
        return ""
    parts = _extract(host)
    if parts.top_domain_under_public_suffix:
        return parts.top_domain_under_public_suffix
    # Private or reserved TLDs (acme.example, intranet.local): the host minus "www."
    if "." in host and not parts.ipv4 and not host.startswith("["):
        return host.removeprefix("www.")
    return ""


def email_domain(email: str) -> str:
    return registrable_domain(email.rsplit("@", 1)[-1]) if "@" in (email or "") else ""


def is_free_mail(email: str) -> bool:
    domain = (email or "").rsplit("@", 1)[-1].lower()
    return domain in FREE_MAIL_DOMAINS or email_domain(email) in FREE_MAIL_DOMAINS
