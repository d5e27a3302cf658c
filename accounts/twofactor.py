"""Two-factor sign-in: TOTP (an authenticator app) with one-time recovery codes, on django-otp.

Who must use it is decided here, from two facts only: the network's `two_factor_policy` and the
`requires_2fa` flag of the member's roles in that network (accounts.roles). Anyone may enrol;
once enrolled, every sign-in asks for a code.

A sign-in that needs a second step is not a login yet: the password step only leaves a
short-lived "pending" note in the anonymous session (`begin_second_step`), and Django's
`login()` runs when the code is verified (`complete_login`). Other doors that log a user in
(invitation acceptance, the email verification link) are caught by `TwoFactorMiddleware`, which
turns such a session back into a pending one. Nothing is remembered across devices.
"""

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import segno
from django.contrib import auth
from django.contrib.auth.signals import user_logged_in
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import audit, roles
from accounts.errors import PermissionDenied

PENDING_KEY = "two_factor_pending"
UNVERIFIED_KEY = "two_factor_unverified"  # logged in through another door, not yet verified
PENDING_SECONDS = 10 * 60
MAX_FAILURES_PER_SIGN_IN = 5  # then back to the password (django-otp also throttles per device)
RECOVERY_CODE_COUNT = 10
ISSUER = "PartnerHub"


# --- Who must use it ---------------------------------------------------------------------

def required_for(user, network, memberships=None) -> bool:
    """Must `user` sign in with a second factor in `network`? `memberships`: the user's usable
    memberships there (request.memberships), looked up when not given."""
    from accounts.models import Network
    from accounts.tenancy import memberships_in_network

    if network is None or network.two_factor_policy == Network.TWO_FACTOR_OFF:
        return False
    if memberships is None:
        memberships = memberships_in_network(user, network)
    if network.two_factor_policy == Network.TWO_FACTOR_EVERYONE:
        return bool(memberships)
    return any(m.role_def.requires_2fa for m in memberships)


def is_enrolled(user) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def enrolled_user_ids(user_ids) -> set:
    return set(TOTPDevice.objects.filter(user_id__in=list(user_ids), confirmed=True)
               .values_list("user_id", flat=True))


# --- Enrolment ---------------------------------------------------------------------------

def enrolment_device(user) -> TOTPDevice:
    """The authenticator being set up: one unconfirmed device per user, kept across page loads
    so that the QR code does not change under the user's phone."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-pk").first()
    return device or TOTPDevice.objects.create(user=user, name="Authenticator app",
                                               confirmed=False)


def secret_of(device) -> str:
    """The base32 secret, in groups of four, for typing into an app by hand."""
    secret = base64.b32encode(device.bin_key).decode()
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))


def otpauth_uri(device, issuer: str = ISSUER) -> str:
    issuer = issuer.replace(":", "")
    label = quote(f"{issuer}:{device.user.email}")
    params = urlencode({"secret": base64.b32encode(device.bin_key).decode(), "issuer": issuer,
                        "algorithm": "SHA1", "digits": device.digits, "period": device.step})
    return f"otpauth://totp/{label}?{params}"


def qr_code_data_uri(uri: str) -> str:
    """An SVG QR code as a data: URI, made on the server (no script, no CDN)."""
    return segno.make(uri, error="m").svg_data_uri(scale=5, border=2, dark="#000", light="#fff")


@transaction.atomic
def confirm_enrolment(user, device, token: str, *, network, actor=None) -> list[str] | None:
    """Confirm the authenticator with a first code. Returns the new recovery codes (shown
    once), or None when the code is wrong. A previous authenticator is replaced."""
    device = TOTPDevice.objects.select_for_update().filter(
        pk=device.pk, user=user, confirmed=False).first()
    if device is None or not device.verify_token(_digits(token)):
        return None
    TOTPDevice.objects.filter(user=user, confirmed=True).delete()
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    codes = _issue_recovery_codes(user)
    _audit("two_factor.enrolled", user, network, actor=actor)
    return codes


@transaction.atomic
def regenerate_recovery_codes(user, *, network, actor=None) -> list[str]:
    codes = _issue_recovery_codes(user)
    _audit("two_factor.recovery_codes_regenerated", user, network, actor=actor)
    return codes


@transaction.atomic
def turn_off(user, *, network, actor=None) -> None:
    """The user switches two-factor sign-in off; refused where it is required of them."""
    if required_for(user, network):
        raise PermissionDenied("Two-factor sign-in is required for your role in this network.")
    if not is_enrolled(user):
        return
    _remove_devices(user)
    _audit("two_factor.disabled", user, network, actor=actor)


@transaction.atomic
def reset(actor, target) -> None:
    """An admin removes a member's authenticator and recovery codes (a lost phone). The member
    sets up a new one at their next sign-in if their role requires it."""
    if not may_reset(actor, target):
        raise PermissionDenied()
    _remove_devices(target.user)
    audit.record("two_factor.reset", target, actor=actor,
                 after={"user": target.user.email})


def may_reset(actor, target) -> bool:
    """An admin of the member's organization (who manages its members), or an operator admin
    anywhere in the network; never one's own (that is the security page's job)."""
    from accounts.permissions import can

    if actor is None or target.user_id == actor.user_id:
        return False
    return can(actor, roles.MEMBERS_MANAGE, target) or can(actor, roles.NETWORK_MANAGE, target)


def _remove_devices(user):
    from accounts.models import RecoveryCodeDevice

    TOTPDevice.objects.filter(user=user).delete()
    RecoveryCodeDevice.objects.filter(user=user).delete()


# --- Recovery codes ----------------------------------------------------------------------

def new_recovery_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()  # 80 bits, 16 characters
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def hash_recovery_code(code: str) -> str:
    normalized = "".join(ch for ch in (code or "").lower() if ch.isalnum())
    return hashlib.sha256(normalized.encode()).hexdigest()


def unused_recovery_codes(user) -> int:
    from accounts.models import RecoveryCode

    return RecoveryCode.objects.filter(device__user=user, used_at__isnull=True).count()


def _issue_recovery_codes(user) -> list[str]:
    from accounts.models import RecoveryCode, RecoveryCodeDevice

    device, _ = RecoveryCodeDevice.objects.get_or_create(
        user=user, defaults={"name": "Recovery codes", "confirmed": True})
    device.codes.all().delete()
    codes = [new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    RecoveryCode.objects.bulk_create(
        [RecoveryCode(device=device, code_hash=hash_recovery_code(c)) for c in codes])
    device.throttle_reset()
    return codes


# --- Verifying a code --------------------------------------------------------------------

@dataclass
class Verification:
    device: object = None  # the device that accepted the code
    wait_seconds: int = 0  # > 0: too many wrong codes; no code is checked until then

    @property
    def ok(self):
        return self.device is not None


def _digits(token: str) -> str:
    return "".join((token or "").split())


def verify_code(user, token: str, *, network) -> Verification:
    """Check a code from the authenticator app (six digits) or a recovery code (anything else).
    Wrong codes and recovery-code use are audited; django-otp's throttle makes each wrong code
    double the wait before the next one is even checked."""
    from accounts.models import RecoveryCodeDevice

    token = _digits(token)
    is_app_code = token.isdigit() and len(token) == 6
    model = TOTPDevice if is_app_code else RecoveryCodeDevice
    with transaction.atomic():
        device = model.objects.select_for_update().filter(user=user, confirmed=True).first()
        if device is None:
            result = Verification()
        else:
            allowed, info = device.verify_is_allowed()
            if not allowed and info and info.get("locked_until"):
                from django.utils import timezone

                wait = (info["locked_until"] - timezone.now()).total_seconds()
                result = Verification(wait_seconds=max(1, int(wait + 0.999)))
            else:
                result = Verification(device=device if device.verify_token(token) else None)
        if result.ok and not is_app_code:
            _audit("two_factor.recovery_code_used", user, network,
                   after={"unused_left": unused_recovery_codes(user)})
        elif not result.ok:
            _audit("two_factor.code_failed", user, network,
                   after={"kind": "app" if is_app_code else "recovery",
                          "throttled": bool(result.wait_seconds)})
    return result


def _audit(action, user, network, *, actor=None, after=None):
    """A user-level event, in the network where it happened (the request's)."""
    network_id = getattr(network, "pk", None)
    if network_id is None:
        first = user.memberships.select_related("organization").first()
        network_id = first.organization.network_id if first else None
    if network_id is None:
        return None  # no network to file it under (a user without any membership)
    return audit.record(action, user, actor=actor or user, after=after, network_id=network_id)


# --- The pending sign-in -----------------------------------------------------------------

def begin_second_step(request, user, next_url: str, backend: str) -> HttpResponse:
    """The password was right but a code is still needed: remember who is signing in (not
    logged in), and send them to the code, or to enrolment when they have no authenticator."""
    request.session.cycle_key()
    request.session[PENDING_KEY] = {"user": user.pk, "backend": backend, "next": next_url,
                                    "since": time.time(), "failures": 0}
    return second_step_redirect(request, user)


def second_step_redirect(request, user) -> HttpResponse:
    name = "accounts:two_factor_verify" if is_enrolled(user) else "accounts:two_factor_enrol"
    url = reverse(name)
    if getattr(request, "htmx", False):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


def pending_user(request):
    """The user half-way through signing in, or None (none, expired or deactivated)."""
    from accounts.models import User

    pending = request.session.get(PENDING_KEY)
    if not pending:
        return None
    if time.time() - pending.get("since", 0) > PENDING_SECONDS:
        del request.session[PENDING_KEY]
        return None
    return User.objects.filter(pk=pending["user"], is_active=True).first()


def count_failure(request) -> bool:
    """One more wrong code in this sign-in; True when it is one too many (the pending
    sign-in is dropped and the password must be given again)."""
    pending = request.session[PENDING_KEY]
    pending["failures"] = pending.get("failures", 0) + 1
    request.session.modified = True
    if pending["failures"] >= MAX_FAILURES_PER_SIGN_IN:
        del request.session[PENDING_KEY]
        return True
    return False


def complete_login(request, user, device) -> str:
    """The code was right: log the user in, verified by `device`. Returns where to go next."""
    pending = request.session.pop(PENDING_KEY, {})
    user.otp_device = device  # django-otp marks the session verified on user_logged_in
    auth.login(request, user, backend=pending.get("backend"))
    otp_login(request, device)
    return pending.get("next") or reverse("home")


def _note_unverified_login(sender, request, user, **kwargs):
    """Another door logged in someone with an authenticator (an invitation, an email link, a
    test's force_login): make the middleware ask for their code before anything else."""
    if request is None or getattr(user, "otp_device", None) is not None:
        return
    if is_enrolled(user):
        request.session[UNVERIFIED_KEY] = True


user_logged_in.connect(_note_unverified_login, dispatch_uid="accounts.twofactor.unverified")


class TwoFactorMiddleware:
    """No logged-in session that owes a second factor gets past this: it becomes a pending
    sign-in again and goes to the code (or to enrolment). Runs after TenancyMiddleware, whose
    request.network and request.memberships it reads (no extra query for most requests)."""

    EXEMPT_PREFIXES = ("/static/", "/healthz", "/accounts/logout/")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = request.user
        if (user.is_authenticated and not user.is_verified()
                and not request.path.startswith(self.EXEMPT_PREFIXES)
                and (request.session.get(UNVERIFIED_KEY)
                     or required_for(user, request.network, request.memberships))):
            next_url = request.get_full_path() if request.method == "GET" else ""
            return back_to_second_step(request, next_url)
        return self.get_response(request)


def back_to_second_step(request, next_url: str = "") -> HttpResponse:
    """Turn a logged-in but unverified session into a pending sign-in."""
    user = request.user
    backend = request.session.get(auth.BACKEND_SESSION_KEY)
    auth.logout(request)
    return begin_second_step(request, user, next_url, backend)
