"""Stripe Connect accounts: a partner's owner connects the organization once (Stripe-hosted
onboarding, the platform pays the fees and carries the losses), and every status Stripe reports
afterwards (on return from onboarding, by `account.updated` webhooks) lands in PayoutAccount
through `apply_account_update`.

Creating the account is the one step that cannot be undone: its country and service agreement
are fixed once made, and a second account for the same partner is a mess to clean up. Hence the
care in `_create_account` (see there)."""

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts import audit, roles
from accounts.errors import PermissionDenied, ServiceError
from accounts.models import AuditEvent
from accounts.notifications import notify
from accounts.services.guards import require
from payouts import stripe_api
from payouts.models import PayoutAccount, TaxProfile
from referrals.services.events import members_with

log = logging.getLogger(__name__)

ACCOUNT_URL = "/payout-account/"
TAX_PROFILE_URL = "/tax-profile/"
NO_COUNTRY = ("Stripe needs your organization's country to open a payout account, and it "
              "cannot be changed afterwards. Set the country in your tax profile "
              f"({TAX_PROFILE_URL}), then connect again.")
ATTEMPTED, FAILED = "payout_account.create_attempted", "payout_account.create_failed"
# Stripe's `created` comes from Stripe's clock, our attempts from ours: look a little further
# back than the first attempt.
CLOCK_MARGIN = timedelta(hours=1)


def account_of(partner) -> PayoutAccount | None:
    return PayoutAccount.objects.filter(partner=partner).first()


def start_onboarding(actor, partner_org, return_url: str, refresh_url: str) -> str:
    """Create the partner's connected account (once) and an Account Link to Stripe's hosted
    onboarding; returns the link's URL. Only the partner's owner may do this."""
    import stripe

    require(actor, roles.PAYOUT_ACCOUNT_MANAGE)
    if actor.organization_id != partner_org.pk or partner_org.kind != roles.PARTNER:
        raise PermissionDenied()
    client = stripe_api.client()
    account = account_of(partner_org)
    try:
        if account is None:
            account = _create_account(client, actor, partner_org)
        link = client.v1.account_links.create({
            "account": account.stripe_account_id, "type": "account_onboarding",
            "return_url": return_url, "refresh_url": refresh_url,
            "collection_options": {"fields": "eventually_due"},
        })
    except stripe.StripeError as error:
        raise stripe_api.service_error(error) from error
    audit.record("payout_account.onboarding_started", account, actor=actor,
                 after={"stripe_account_id": account.stripe_account_id})
    return link.url


def _country(partner_org) -> str:
    profile = TaxProfile.objects.filter(partner=partner_org).first()
    country = profile.country if profile and profile.country else str(partner_org.country or "")
    return country.upper()


def account_params(actor, partner_org, country: str) -> dict:
    """What Stripe is asked to create. The country is always sent: left out, Stripe would use
    the platform's, wrongly for a partner abroad, and for good. Abroad the account is under the
    `recipient` service agreement (transfers only), the one Stripe pays across borders."""
    params = {
        "controller": {"fees": {"payer": "application"},
                       "losses": {"payments": "application"},
                       "requirement_collection": "stripe",
                       "stripe_dashboard": {"type": "express"}},
        "capabilities": {"transfers": {"requested": True}},
        "country": country,
        "business_profile": {"name": partner_org.name[:100]},
        "email": actor.user.email,
        "metadata": {"partner_id": str(partner_org.public_id),
                     "network": partner_org.network.slug},
    }
    if partner_org.website:
        params["business_profile"]["url"] = partner_org.website
    if country != settings.STRIPE_PLATFORM_COUNTRY:
        params["tos_acceptance"] = {"service_agreement": "recipient"}
    return params


def creation_key(partner_org, params: dict, spent: int) -> str:
    """The same request gets the same key, so a double click or a retry gets Stripe's first
    answer (the same account). Other content gets another key: Stripe refuses a key reused with
    other parameters (idempotency_error, for 24 hours). So does each key Stripe spent on a
    saved refusal, which it would otherwise replay after its cause was fixed."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:20]
    key = f"connect-account-{partner_org.public_id}-{digest}"
    return f"{key}-{spent + 1}" if spent else key


@dataclass
class EarlierAttempts:
    first_unsettled: datetime | None  # the first attempt that may have made an account
    spent_keys: int  # attempts whose answer Stripe saved under their key


def _earlier_attempts(partner_org) -> EarlierAttempts:
    events = list(AuditEvent.objects.filter(
        network_id=partner_org.network_id, target_type="organization",
        target_id=str(partner_org.public_id), action__in=(ATTEMPTED, FAILED),
    ).values("public_id", "action", "after", "created_at"))
    failures = [e["after"] or {} for e in events if e["action"] == FAILED]
    refused = {f.get("attempt") for f in failures if not f.get("transient")}
    unsettled = [e["created_at"] for e in events
                 if e["action"] == ATTEMPTED and str(e["public_id"]) not in refused]
    return EarlierAttempts(min(unsettled, default=None),
                           sum(1 for f in failures if f.get("answer_saved")))


def _create_account(client, actor, partner_org) -> PayoutAccount:
    """Create the partner's connected account, or adopt the one an earlier attempt made.

    Every attempt is written to the audit log before Stripe is called, and its failure after.
    An attempt that got no answer (a crash, a timeout, a 5xx) may have made an account we never
    heard of; retried with other content it would get another key and a second account. So
    while such an attempt exists, the accounts Stripe created since are searched for this
    partner's id in their metadata first (also past Stripe's 24-hour key memory)."""
    country = _country(partner_org)
    if not country:
        raise ServiceError(NO_COUNTRY)
    earlier = _earlier_attempts(partner_org)
    obj = None
    if earlier.first_unsettled is not None:
        obj = _account_made_for(client, partner_org, earlier.first_unsettled)
    adopted = obj is not None
    if obj is None:
        obj = _request_account(client, actor, partner_org,
                               account_params(actor, partner_org, country), earlier.spent_keys)
    return _store_account(actor, partner_org, obj, adopted=adopted)


def _account_made_for(client, partner_org, since: datetime) -> dict | None:
    """The connected account Stripe made for this partner since `since` (the oldest, if ever
    two were made), found by the partner id in its metadata."""
    listing = client.v1.accounts.list(
        {"created": {"gte": int((since - CLOCK_MARGIN).timestamp())}, "limit": 100})
    partner_id = str(partner_org.public_id)
    found = [obj for obj in (a.to_dict() for a in listing.auto_paging_iter())
             if (obj.get("metadata") or {}).get("partner_id") == partner_id]
    if len(found) > 1:
        log.warning("Stripe holds %d connected accounts for partner %s: %s", len(found),
                    partner_id, ", ".join(obj["id"] for obj in found))
    return min(found, key=lambda obj: obj.get("created") or 0, default=None)


def _request_account(client, actor, partner_org, params: dict, spent: int) -> dict:
    import stripe

    key = creation_key(partner_org, params, spent)
    # Committed before the call (services run outside a transaction): if our process dies
    # after Stripe answered, the next attempt knows to look for the account.
    attempt = audit.record(ATTEMPTED, partner_org, actor=actor,
                           after={"idempotency_key": key, "country": params["country"]})
    try:
        return client.v1.accounts.create(params, {"idempotency_key": key}).to_dict()
    except stripe.StripeError as error:
        failure = stripe_api.classify(error)
        audit.record(FAILED, partner_org, actor=actor, after={
            "attempt": str(attempt.public_id), "idempotency_key": key, "code": failure.code,
            "message": failure.message, "transient": failure.transient,
            "answer_saved": failure.answer_saved})
        raise


def _store_account(actor, partner_org, obj: dict, *, adopted: bool) -> PayoutAccount:
    with transaction.atomic():
        account, created = PayoutAccount.objects.get_or_create(
            partner=partner_org, defaults={
                "network_id": partner_org.network_id, "stripe_account_id": obj["id"],
                "country": obj.get("country") or "",
                "default_currency": (obj.get("default_currency") or "").upper(),
                "created_by": actor.user})
        if created:
            _apply(account, obj)
            audit.record("payout_account.created", account, actor=actor,
                         after={"stripe_account_id": account.stripe_account_id,
                                "country": account.country, "adopted": adopted})
    return account


def refresh_account(account: PayoutAccount) -> PayoutAccount:
    """Fetch the account from Stripe and store what it says now."""
    import stripe

    try:
        obj = stripe_api.client().v1.accounts.retrieve(account.stripe_account_id).to_dict()
    except stripe.StripeError as error:
        raise stripe_api.service_error(error) from error
    return apply_account_update(obj) or account


STATUS_FIELDS = ("details_submitted", "payouts_enabled", "transfers_active", "requirements_due",
                 "disabled_reason")


def status_of(obj: dict) -> dict:
    requirements = obj.get("requirements") or {}
    due = list(dict.fromkeys((requirements.get("currently_due") or [])
                             + (requirements.get("past_due") or [])))
    return {
        "details_submitted": bool(obj.get("details_submitted")),
        "payouts_enabled": bool(obj.get("payouts_enabled")),
        "transfers_active": (obj.get("capabilities") or {}).get("transfers") == "active",
        "requirements_due": due,
        "disabled_reason": (requirements.get("disabled_reason") or "")[:100],
    }


def is_restricted(account: PayoutAccount) -> bool:
    """Onboarded, but Stripe stopped transfers or payouts until something is provided."""
    return account.details_submitted and bool(
        account.disabled_reason or not account.transfers_active or not account.payouts_enabled)


def _apply(account: PayoutAccount, obj: dict) -> None:
    for field, value in status_of(obj).items():
        setattr(account, field, value)
    if obj.get("country"):
        account.country = obj["country"]
    if obj.get("default_currency"):
        account.default_currency = obj["default_currency"].upper()
    account.synced_at = timezone.now()
    account.save()


@transaction.atomic
def apply_account_update(obj: dict) -> PayoutAccount | None:
    """Store an account object from Stripe (a fetch or an `account.updated` event). Tells the
    partner's owners when the account becomes restricted. Unknown accounts are ignored."""
    account = (PayoutAccount.objects.select_for_update().select_related("partner")
               .filter(stripe_account_id=obj.get("id") or "").first())
    if account is None:
        return None
    before = {f: getattr(account, f) for f in STATUS_FIELDS}
    was_restricted, was_ready = is_restricted(account), account.can_receive_transfers
    _apply(account, obj)
    after = {f: getattr(account, f) for f in STATUS_FIELDS}
    if after != before:
        audit.record("payout_account.updated", account, network_id=account.network_id,
                     before=before, after=after)
    if is_restricted(account) and not was_restricted:
        reason = account.disabled_reason or "transfers are not active"
        users = members_with(account.partner_id, roles.PARTNER, roles.PAYOUT_ACCOUNT_MANAGE)
        transaction.on_commit(lambda: notify(
            users, "payout_account", network_id=account.network_id,
            title="Stripe restricted your payout account",
            body=f"Payouts are on hold until Stripe has what it needs ({reason}). Open the "
                 "payout account page and continue onboarding.", url=ACCOUNT_URL))
    elif account.can_receive_transfers and not was_ready:
        users = members_with(account.partner_id, roles.PARTNER, roles.PAYOUT_ACCOUNT_MANAGE)
        transaction.on_commit(lambda: notify(
            users, "payout_account", network_id=account.network_id,
            title="Your payout account is ready to receive transfers", url=ACCOUNT_URL))
    return account
