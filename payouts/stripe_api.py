"""The one door to Stripe: a `stripe.StripeClient` built from settings, and what its errors mean
for the callers (transient: try again later with the same idempotency key; permanent: Stripe
refused, a person has to look).

Everything that talks to Stripe goes through `client()`, so tests point the real SDK at a local
fake by setting STRIPE_API_BASE / STRIPE_CONNECT_BASE, and a server without STRIPE_API_KEY says
so in words instead of failing somewhere inside the SDK.

Every request names the API version the code was written against (API_VERSION), instead of
whatever the installed SDK defaults to: each stripe-python release pins its own version, so
without this an SDK upgrade would silently change what Stripe's answers look like.
"""

from dataclasses import dataclass, replace
from functools import lru_cache

import stripe
from django.conf import settings

from accounts.errors import ServiceError

NOT_CONFIGURED = "Payouts are not configured on this server (no Stripe API key)."
UNREACHABLE = "Stripe could not be reached just now; try again in a minute."

# The Stripe API version PartnerHub speaks, in one place. It is the version the installed SDK
# (stripe 16.x, pinned in pyproject.toml) was generated for; a test fails when an SDK upgrade
# brings another one, so that someone reads Stripe's changelog before changing this line.
API_VERSION = "2026-10-28.endive"


def is_configured() -> bool:
    return bool(settings.STRIPE_API_KEY)


def client() -> stripe.StripeClient:
    """The Stripe client for the current settings. Raises ServiceError when there is no key."""
    if not is_configured():
        raise ServiceError(NOT_CONFIGURED)
    return _client(settings.STRIPE_API_KEY, settings.STRIPE_API_BASE or None,
                   settings.STRIPE_CONNECT_BASE or None, settings.STRIPE_MAX_NETWORK_RETRIES,
                   API_VERSION)


@lru_cache(maxsize=4)
def _client(api_key, api_base, connect_base, retries, version) -> stripe.StripeClient:
    # One client (and its HTTP connection pool) per configuration; settings change in tests.
    addresses = {}
    if api_base:
        addresses["api"] = api_base
    if connect_base:
        addresses["connect"] = connect_base
    return stripe.StripeClient(api_key, base_addresses=addresses, max_network_retries=retries,
                               stripe_version=version)


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
    # Stripe stored this answer under the request's idempotency key and replays it for 24
    # hours: the next attempt needs a new key (safe, as long as it first looks for what an
    # earlier attempt may have made).
    answer_saved: bool = False


# Codes Stripe uses for "not now" rather than "no".
TRANSIENT_CODES = {"lock_timeout", "rate_limit", "idempotency_key_in_use"}


def classify(error: stripe.StripeError) -> Failure:
    """Transient: the connection failed, Stripe had a 5xx, rate limits and lock timeouts (429),
    a concurrent request with the same idempotency key (409). Permanent: every other answer
    (4xx): Stripe looked at the request and said no, and asking again will not change that."""
    failure = _classify(error)
    return replace(failure, answer_saved=_answer_saved(error, failure))


def _answer_saved(error: stripe.StripeError, failure: Failure) -> bool:
    """Refusals (4xx after the request ran) and 5xx answers Stripe marks not worth retrying
    are saved under the key; connection errors, 401, 409 and 429 never ran, so are not."""
    if failure.http_status is None or failure.http_status in (401, 409, 429):
        return False
    if not failure.transient:
        return True
    headers = getattr(error, "headers", None) or {}
    should_retry = next((v for k, v in headers.items() if k.lower() == "stripe-should-retry"),
                        None)
    return should_retry == "false"


def service_error(error: stripe.StripeError, refused: str = "Stripe refused") -> ServiceError:
    """What a person reads: a connection error or a 5xx is Stripe out of reach (try again),
    never a refusal; only an answer in which Stripe said no is called refused."""
    failure = classify(error)
    if failure.transient:
        return ServiceError(UNREACHABLE)
    return ServiceError(f"{refused}: {failure.message}")


def _classify(error: stripe.StripeError) -> Failure:
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
