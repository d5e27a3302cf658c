"""The partner's payout account page: where the Stripe connected account stands, and the way
into (and back from) Stripe's hosted onboarding.

The partner's owner connects and continues onboarding; the partner's finance people see the
status read-only; every other role (and every other organization kind) gets a 404."""

from dataclasses import dataclass

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_POST

from accounts import roles
from accounts.decorators import membership_required
from accounts.errors import PermissionDenied, ServiceError
from accounts.permissions import can
from payouts import connect, stripe_api
from payouts.models import PayoutAccount, TaxProfile
from payouts.tax import profile_problems

TAX_PROFILE_URL = "/tax-profile/"

# Stripe's requirement names, in words (the rest are shown as Stripe writes them).
REQUIREMENT_WORDS = {
    "external_account": "Bank account for payouts",
    "tos_acceptance.date": "Accept Stripe's terms",
    "tos_acceptance.ip": "Accept Stripe's terms",
    "business_profile.url": "Business website",
    "business_profile.mcc": "Business category",
    "business_profile.product_description": "Description of the business",
    "business_profile.support_phone": "Support phone number",
    "business_type": "Business type",
    "representative.first_name": "Representative's name",
    "representative.last_name": "Representative's name",
    "individual.verification.document": "Identity document",
}


def _can_view(membership) -> bool:
    return (membership.organization.kind == roles.PARTNER
            and (can(membership, roles.PAYOUT_ACCOUNT_MANAGE)
                 or can(membership, roles.PAYOUT_VIEW)))


def _viewer(request):
    if not _can_view(request.membership):
        raise Http404
    return request.membership


def _manager(request):
    membership = _viewer(request)
    if not can(membership, roles.PAYOUT_ACCOUNT_MANAGE):
        raise Http404
    return membership


def _account(membership) -> PayoutAccount | None:
    return PayoutAccount.objects.visible_to(membership).filter(
        partner_id=membership.organization_id).first()


@dataclass
class AccountState:
    key: str  # none | onboarding | restricted | ready
    label: str
    badge: str
    requirements: list


def state_of(account: PayoutAccount | None) -> AccountState:
    if account is None:
        return AccountState("none", "Not connected", "info", [])
    due = list(dict.fromkeys(REQUIREMENT_WORDS.get(r, r) for r in account.requirements_due))
    if account.can_receive_transfers and not connect.is_restricted(account):
        return AccountState("ready", "Ready to receive transfers", "ok", [])
    if connect.is_restricted(account):
        return AccountState("restricted", "Restricted by Stripe", "bad", due)
    return AccountState("onboarding", "Onboarding incomplete", "warn", due)


@membership_required
@require_GET
def payout_account(request):
    membership = _viewer(request)
    account = _account(membership)
    profile = TaxProfile.objects.filter(partner_id=membership.organization_id).first()
    return render(request, "payouts/payout_account.html", {
        "account": account,
        "state": state_of(account),
        "can_manage": can(membership, roles.PAYOUT_ACCOUNT_MANAGE),
        "configured": stripe_api.is_configured(),
        "not_configured_message": stripe_api.NOT_CONFIGURED,
        "tax_problems": profile_problems(profile),
        "tax_profile_url": TAX_PROFILE_URL,
    })


def _onboarding_redirect(request, membership):
    """Send the owner to Stripe, or back to the page with what went wrong."""
    try:
        url = connect.start_onboarding(
            membership, membership.organization,
            return_url=request.build_absolute_uri(reverse("payouts:payout_account_return")),
            refresh_url=request.build_absolute_uri(reverse("payouts:payout_account_refresh")))
    except PermissionDenied as error:
        raise Http404 from error
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("payouts:payout_account")
    return redirect(url)


@membership_required
@require_POST
def payout_account_connect(request):
    """"Connect with Stripe" / "Continue onboarding": to Stripe's hosted onboarding."""
    return _onboarding_redirect(request, _manager(request))


@membership_required
@require_GET
def payout_account_refresh(request):
    """Stripe sends the owner here when an onboarding link expired: make a new one."""
    return _onboarding_redirect(request, _manager(request))


@membership_required
@require_GET
def payout_account_return(request):
    """Back from Stripe's onboarding: ask Stripe where the account stands, then show it."""
    membership = _viewer(request)
    account = _account(membership)
    if account is not None:
        try:
            account = connect.refresh_account(account)
        except ServiceError as error:
            messages.error(request, error.message)
        else:
            state = state_of(account)
            if state.key == "ready":
                messages.success(request, "Your payout account is ready to receive transfers.")
            else:
                messages.info(request, f"Stripe says: {state.label.lower()}.")
    return redirect("payouts:payout_account")


urlpatterns = [
    path("payout-account/", payout_account, name="payout_account"),
    path("payout-account/connect/", payout_account_connect, name="payout_account_connect"),
    path("payout-account/return/", payout_account_return, name="payout_account_return"),
    path("payout-account/refresh/", payout_account_refresh, name="payout_account_refresh"),
]
