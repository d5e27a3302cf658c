"""Stripe Connect accounts: a partner's owner connects the organization once (Stripe-hosted
onboarding, the platform pays the fees and carries the losses), and every status Stripe reports
afterwards (on return from onboarding, by `account.updated` webhooks) lands in PayoutAccount
through `apply_account_update`."""

from django.db import transaction
from django.utils import timezone

from accounts import audit, roles
from accounts.errors import PermissionDenied, ServiceError
from accounts.notifications import notify
from accounts.services.guards import require
from payouts import stripe_api
from payouts.models import PayoutAccount, TaxProfile
from referrals.services.events import members_with

ACCOUNT_URL = "/payout-account/"


def account_of(partner) -> PayoutAccount | None:
    return PayoutAccount.objects.filter(partner=partner).first()


def _stripe_failed(error) -> ServiceError:
    failure = stripe_api.classify(error)
    if failure.transient:
        return ServiceError("Stripe could not be reached just now; try again in a minute.")
    return ServiceError(f"Stripe refused: {failure.message}")


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
        raise _stripe_failed(error) from error
    audit.record("payout_account.onboarding_started", account, actor=actor,
                 after={"stripe_account_id": account.stripe_account_id})
    return link.url


def _country(partner_org) -> str:
    profile = TaxProfile.objects.filter(partner=partner_org).first()
    return (profile.country if profile and profile.country else str(partner_org.country or ""))


def _create_account(client, actor, partner_org) -> PayoutAccount:
    params = {
        "controller": {"fees": {"payer": "application"},
                       "losses": {"payments": "application"},
                       "requirement_collection": "stripe",
                       "stripe_dashboard": {"type": "express"}},
        "capabilities": {"transfers": {"requested": True}},
        "business_profile": {"name": partner_org.name[:100]},
        "email": actor.user.email,
        "metadata": {"partner_id": str(partner_org.public_id),
                     "network": partner_org.network.slug},
    }
    if partner_org.website:
        params["business_profile"]["url"] = partner_org.website
    country = _country(partner_org)
    if country:
        params["country"] = country.upper()
    # The same key every time: a double click or a lost answer finds the same account.
    obj = client.v1.accounts.create(
        params, {"idempotency_key": f"connect-account-{partner_org.public_id}"}).to_dict()
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
                                "country": account.country})
    return account


def refresh_account(account: PayoutAccount) -> PayoutAccount:
    """Fetch the account from Stripe and store what it says now."""
    import stripe

    try:
        obj = stripe_api.client().v1.accounts.retrieve(account.stripe_account_id).to_dict()
    except stripe.StripeError as error:
        raise _stripe_failed(error) from error
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
