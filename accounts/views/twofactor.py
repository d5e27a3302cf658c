"""Two-factor sign-in pages: the code step after the password, enrolment (QR code and secret),
the user's own security page, and an admin's reset of a member's authenticator."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts import twofactor
from accounts.decorators import membership_required
from accounts.errors import ServiceError
from accounts.models import Membership
from accounts.permissions import get_object_for
from accounts.views.session import identify


class CodeForm(forms.Form):
    code = forms.CharField(
        max_length=40, label="Code",
        help_text="The six digits your authenticator app shows, or one of your recovery codes.",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autofocus": True,
                                      "inputmode": "text", "spellcheck": "false"}))


class EnrolForm(forms.Form):
    code = forms.CharField(
        max_length=12, label="Code from the app",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric",
                                      "pattern": "[0-9 ]*"}))


def verify(request):
    """The second step of signing in: a code from the app or a recovery code."""
    user = twofactor.pending_user(request)
    if user is None:
        messages.info(request, "Please log in.")
        return redirect("login")
    if not twofactor.is_enrolled(user):
        return redirect("accounts:two_factor_enrol")
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        result = twofactor.verify_code(user, form.cleaned_data["code"], network=request.network)
        if result.ok:
            next_url = twofactor.complete_login(request, user, result.device)
            identify(user)
            return redirect(next_url)
        if twofactor.count_failure(request):
            messages.error(request, "Too many wrong codes. Log in again.")
            return redirect("login")
        if result.wait_seconds:
            form.add_error("code", f"Too many wrong codes. Wait {result.wait_seconds} seconds "
                                   "and try again.")
        else:
            form.add_error("code", "That code is not right. Check the app's clock and try "
                                   "again, or use a recovery code.")
    return render(request, "accounts/two_factor_verify.html", {"form": form, "pending": user})


def enrol(request):
    """Set up an authenticator app: during a sign-in that requires one (the pending user has
    none yet), or from the security page by a logged-in user (to add or replace one)."""
    pending = None if request.user.is_authenticated else twofactor.pending_user(request)
    if pending is not None:
        if twofactor.is_enrolled(pending):  # never a way around the code they already have
            return redirect("accounts:two_factor_verify")
        user = pending
    elif request.user.is_authenticated:
        user = request.user
        if twofactor.is_enrolled(user) and not user.is_verified():
            return twofactor.back_to_second_step(request, request.get_full_path())
    else:
        return redirect("login")
    device = twofactor.enrolment_device(user)
    form = EnrolForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        codes = twofactor.confirm_enrolment(
            user, device, form.cleaned_data["code"], network=request.network,
            actor=getattr(request, "membership", None))
        if codes is not None:
            if pending is not None:
                next_url = twofactor.complete_login(request, user, device)
                identify(user)
            else:
                from django_otp import login as otp_login

                otp_login(request, device)  # this session proved it holds the new device
                next_url = None
            return render(request, "accounts/two_factor_recovery_codes.html", {
                "codes": codes, "next_url": next_url, "just_enrolled": True})
        form.add_error("code", "That code is not right. Make sure the app added the account "
                               "and the phone's clock is correct, then try the next code.")
    uri = twofactor.otpauth_uri(device, issuer=getattr(request.network, "name", None)
                                or twofactor.ISSUER)
    return render(request, "accounts/two_factor_enrol.html", {
        "form": form, "qr_code": twofactor.qr_code_data_uri(uri),
        "secret": twofactor.secret_of(device), "pending": pending,
        "required": pending is not None or twofactor.required_for(
            user, request.network, getattr(request, "memberships", None)),
    })


@login_required
def security(request):
    """The user's own two-factor settings."""
    user = request.user
    return render(request, "accounts/two_factor_security.html", {
        "enrolled": twofactor.is_enrolled(user),
        "required": twofactor.required_for(user, request.network, request.memberships),
        "unused_codes": twofactor.unused_recovery_codes(user),
    })


@login_required
@require_POST
def recovery_codes_regenerate(request):
    if not twofactor.is_enrolled(request.user):
        return redirect("accounts:two_factor_security")
    codes = twofactor.regenerate_recovery_codes(
        request.user, network=request.network, actor=request.membership)
    return render(request, "accounts/two_factor_recovery_codes.html", {"codes": codes})


@login_required
@require_POST
def turn_off(request):
    try:
        twofactor.turn_off(request.user, network=request.network, actor=request.membership)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Two-factor sign-in is off.")
    return redirect("accounts:two_factor_security")


@membership_required
@require_POST
def member_reset(request, public_id):
    """An admin resets a member's two-factor sign-in (a lost phone)."""
    target = get_object_for(request.membership, Membership.objects.select_related(
        "organization", "user"), public_id)
    try:
        twofactor.reset(request.membership, target)
    except ServiceError as exc:
        from django.http import Http404

        raise Http404 from exc
    messages.success(request, f"Two-factor sign-in reset for {target.user.email}. They set up "
                              "a new authenticator at their next sign-in.")
    if target.organization_id == request.membership.organization_id:
        return redirect("accounts:team")
    return redirect("accounts:organization_detail", target.organization.public_id)
