"""The one door to Stripe: a `stripe.StripeClient` built from settings, and what its errors mean
for the callers (transient: try again later with the same idempotency key; permanent: Stripe
refused, a person has to look).

Everything that talks to Stripe goes through `client()`, so tests point the real SDK at a local
fake by setting STRIPE_API_BASE / STRIPE_CONNECT_BASE, and a server without STRIPE_API_KEY says
so in words instead of failing somewhere inside the SDK.
"""

from dataclasses import dataclass
from functools import lru_cache

import stripe
from django.conf import settings

from accounts.errors import ServiceError

NOT_CONFIGURED = "Payouts are not configured on this server (no Stripe API key)."


def is_configured() -> bool:
    return bool(settings.STRIPE_API_KEY)


def client() -> stripe.StripeClient:
    """The Stripe client for the current settings. Raises ServiceError when there is no key."""
    if not is_configured():
        raise ServiceError(NOT_CONFIGURED)
    return _client(settings.STRIPE_API_KEY, settings.STRIPE_API_BASE or None,
                   settings.STRIPE_CONNECT_BASE or None, settings.STRIPE_MAX_NETWORK_RETRIES)


@lru_cache(maxsize=4)
def _client(api_key, api_base, connect_base, retries) -> stripe.StripeClient:
    # One client (and its HTTP connection pool) per configuration; settings change in tests.
    addresses = {}
    if api_base:
        addresses["api"] = api_base
    if connect_base:
        addresses["connect"] = connect_base
    return stripe.StripeClient(api_key, base_addresses=addresses, max_network_retries=retries)


def webhook_secrets() -> list[str]:
    """STRIPE_WEBHOOK_SECRET may list several secrets, comma-separated: the platform endpoint
    and the Connect endpoint (events of connected accounts) are signed with different ones."""
    return [s.strip() for s in (settings.STRIPE_WEBHOOK_SECRET or "").split(",") if s.strip()]


@dataclass(frozen=True)
class Failure:
    """A Stripe error, as the payout screens and the retry logic need it."""

    transient: bool
    code: str
    message: str
    http_status: int | None = None


# Codes Stripe uses for "not now" rather than "no".
TRANSIENT_CODES = {"lock_timeout", "rate_limit", "idempotency_key_in_use"}


def classify(error: stripe.StripeError) -> Failure:
    """Transient: the connection failed, Stripe had a 5xx, rate limits and lock timeouts (429),
    a concurrent request with the same idempotency key (409). Permanent: every other answer
    (4xx): Stripe looked at the request and said no, and asking again will not change that."""
    status = getattr(error, "http_status", None)
    code = getattr(error, "code", None) or ""
    message = getattr(error, "user_message", None) or str(error) or "Stripe error"
    if isinstance(error, stripe.APIConnectionError):
        return Failure(True, code or "connection_error",
                       f"Could not reach Stripe: {message}", status)
    if isinstance(error, stripe.RateLimitError) or status == 429:
        return Failure(True, code or "rate_limit", message, status)
    if status is None or status >= 500 or status == 409 or code in TRANSIENT_CODES:
        return Failure(True, code or "api_error", message, status)
    if isinstance(error, stripe.AuthenticationError):
        return Failure(False, code or "authentication_error",
                       f"Stripe refused the platform's API key: {message}", status)
    if isinstance(error, stripe.IdempotencyError):
        return Failure(False, code or "idempotency_error", message, status)
    return Failure(False, code or error.__class__.__name__.removesuffix("Error").lower()
                   or "stripe_error", message, status)
