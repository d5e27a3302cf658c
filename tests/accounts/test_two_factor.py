"""Two-factor sign-in (issue 17): who must use it, the second step after the password,
enrolment, recovery codes, throttling, an admin's reset, the network setting and audit events."""

import re
import time

import pytest
from django.test import Client
from django.urls import reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import roles, twofactor
from accounts.models import AuditEvent, Network, RecoveryCode
from tests.accounts.factories import MembershipFactory, NetworkFactory, UserFactory

PASSWORD = "correct-horse-battery"
LOGIN = "/accounts/login/"
VERIFY = "/accounts/two-factor/verify/"
SETUP = "/accounts/two-factor/setup/"

REQUIRED = {(roles.VENDOR, "admin"), (roles.VENDOR, "finance"), (roles.OPERATOR, "admin"),
            (roles.OPERATOR, "finance")}


def code_for(device, steps_ahead=0):
    """The code the user's authenticator app shows (`steps_ahead` 30-second steps later)."""
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + steps_ahead * device.step
    return f"{totp.token():0{device.digits}d}"


def enrol(user):
    device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=True)
    return device, twofactor._issue_recovery_codes(user)


def enforce(network, policy=Network.TWO_FACTOR_ROLES):
    network.two_factor_policy = policy
    network.save(update_fields=["two_factor_policy"])


def password_step(membership):
    client = Client()
    response = client.post(LOGIN, {"username": membership.user.email, "password": PASSWORD})
    return client, response


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def actions(user):
    return list(AuditEvent.objects.filter(actor=user).values_list("action", flat=True))


# --- Who must use it ---------------------------------------------------------------------

def test_the_role_table_flags_admins_and_finance_of_vendors_and_the_operator():
    flagged = {key for key, role in roles.ROLES.items() if role.requires_2fa}
    assert flagged == REQUIRED


@pytest.mark.parametrize("key", list(roles.ROLES), ids=[f"{k}.{r}" for k, r in roles.ROLES])
def test_requirement_follows_the_role_flag_and_the_network_policy(world, key):
    member = world.member(*key)
    assert not twofactor.required_for(member.user, world.network)  # the fixture: off
    enforce(world.network)
    assert twofactor.required_for(member.user, world.network) == (key in REQUIRED)
    enforce(world.network, Network.TWO_FACTOR_EVERYONE)
    assert twofactor.required_for(member.user, world.network)


def test_new_networks_enforce_two_factor_sign_in(db):
    network = Network.objects.create(name="Fresh", slug="fresh")
    assert network.two_factor_policy == Network.TWO_FACTOR_ROLES


def test_a_role_requirement_in_one_network_does_not_reach_another(world):
    enforce(world.network)
    admin = world.others["foreign_vendor_admin"]
    enforce(world.other_network, Network.TWO_FACTOR_OFF)
    assert not twofactor.required_for(admin.user, world.other_network)
    assert not twofactor.required_for(admin.user, world.network)  # no membership there


# --- The second step ---------------------------------------------------------------------

def test_with_enforcement_off_a_vendor_admin_logs_in_with_the_password_alone(world):
    client, response = password_step(world.member("vendor", "admin"))
    assert response.status_code == 302 and response.url == "/"
    assert logged_in(client)


def test_a_required_role_without_a_device_is_sent_to_enrolment_and_is_not_logged_in(world):
    enforce(world.network)
    admin = world.member("vendor", "admin")
    client, response = password_step(admin)
    assert response.url == SETUP
    assert not logged_in(client)
    # Nothing else is reachable: the dashboard and a list send them back to logging in.
    assert client.get("/").url.startswith("/accounts/")
    assert not logged_in(client)
    page = client.get(SETUP)
    assert page.status_code == 200
    assert b"data:image/svg+xml" in page.content  # the QR code, made on the server
    device = TOTPDevice.objects.get(user=admin.user, confirmed=False)
    assert twofactor.secret_of(device).encode() in page.content


def test_enrolment_during_sign_in_logs_in_and_shows_recovery_codes_once(world):
    enforce(world.network)
    admin = world.member("vendor", "admin")
    client, _ = password_step(admin)
    client.get(SETUP)
    device = TOTPDevice.objects.get(user=admin.user, confirmed=False)

    wrong = client.post(SETUP, {"code": "000000" if code_for(device) != "000000" else "111111"})
    assert wrong.status_code == 200 and b"That code is not right" in wrong.content
    assert not logged_in(client)

    time.sleep(1.1)  # django-otp's throttle: one second after the first wrong code
    page = client.post(SETUP, {"code": code_for(device)})
    assert page.status_code == 200
    codes = re.findall(r"<code>([a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4})</code>",
                       page.content.decode())
    assert len(codes) == twofactor.RECOVERY_CODE_COUNT
    assert logged_in(client)
    assert client.get("/").status_code == 200
    # Stored hashed, never as they were shown.
    stored = set(RecoveryCode.objects.filter(device__user=admin.user)
                 .values_list("code_hash", flat=True))
    assert stored == {twofactor.hash_recovery_code(c) for c in codes}
    assert not stored & set(codes)
    assert "two_factor.enrolled" in actions(admin.user)


def test_an_enrolled_member_needs_the_code_after_the_password(world):
    member = world.member("partner", "rep")  # optional for reps: enrolled by choice
    device, _ = enrol(member.user)
    client, response = password_step(member)
    assert response.url == VERIFY
    assert not logged_in(client)
    assert client.get("/").url.startswith("/accounts/")  # not logged in yet

    wrong = client.post(VERIFY, {"code": "12345x"})
    assert wrong.status_code == 200 and not logged_in(client)
    assert "two_factor.code_failed" in actions(member.user)

    time.sleep(1.1)  # django-otp's throttle: one second after the first wrong code
    response = client.post(VERIFY, {"code": code_for(device)})
    assert response.status_code == 302 and response.url == "/"
    assert logged_in(client)
    assert client.get("/").status_code == 200


def test_the_code_step_keeps_the_page_asked_for(world):
    member = world.member("partner", "owner")
    device, _ = enrol(member.user)
    client = Client()
    client.post(LOGIN + "?next=/team/", {"username": member.user.email, "password": PASSWORD,
                                          "next": "/team/"})
    response = client.post(VERIFY, {"code": code_for(device)})
    assert response.url == "/team/"


def test_optional_roles_without_a_device_log_in_with_the_password(world):
    enforce(world.network)
    client, response = password_step(world.member("partner", "rep"))
    assert response.url == "/" and logged_in(client)


def test_requiring_it_of_everyone_sends_every_role_to_enrolment(world):
    enforce(world.network, Network.TWO_FACTOR_EVERYONE)
    client, response = password_step(world.member("partner", "rep"))
    assert response.url == SETUP and not logged_in(client)


def test_a_login_through_another_door_must_still_give_the_code(world):
    member = world.member("partner", "manager")
    enrol(member.user)
    client = world.client_for(member)  # force_login: no code given
    response = client.get("/referrals/")
    assert response.status_code == 302 and response.url == VERIFY
    assert not logged_in(client)


def test_a_session_logged_in_before_enforcement_is_sent_to_enrolment(world):
    admin = world.member("operator", "finance")
    client = world.client_for(admin)
    assert client.get("/").status_code == 200
    enforce(world.network)
    response = client.get("/")
    assert response.url == SETUP and not logged_in(client)


def test_a_pending_user_with_a_device_cannot_enrol_a_new_one_instead(world):
    member = world.member("vendor", "finance")
    enrol(member.user)
    client, _ = password_step(member)
    response = client.get(SETUP)
    assert response.url == VERIFY
    assert not TOTPDevice.objects.filter(user=member.user, confirmed=False).exists()


def test_the_code_pages_need_a_password_first(db, network):
    client = Client()
    assert client.get(VERIFY).url == "/accounts/login/"
    assert client.get(SETUP).url == "/accounts/login/"


def test_a_pending_sign_in_expires(world, monkeypatch):
    member = world.member("partner", "rep")
    device, _ = enrol(member.user)
    client, _ = password_step(member)
    monkeypatch.setattr(twofactor, "PENDING_SECONDS", -1)
    response = client.post(VERIFY, {"code": code_for(device)})
    assert response.url == "/accounts/login/" and not logged_in(client)


# --- Rate limiting -----------------------------------------------------------------------

def test_a_right_code_right_after_a_wrong_one_waits_for_the_throttle(world):
    member = world.member("partner", "rep")
    device, _ = enrol(member.user)
    client, _ = password_step(member)
    client.post(VERIFY, {"code": "000000" if code_for(device) != "000000" else "111111"})
    response = client.post(VERIFY, {"code": code_for(device)})
    assert b"Too many wrong codes" in response.content and not logged_in(client)
    event = AuditEvent.objects.filter(actor=member.user, action="two_factor.code_failed") \
        .order_by("-created_at").first()
    assert event.after["throttled"] is True


def test_five_wrong_codes_end_the_sign_in(world, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # this test counts the per-sign-in limit only
    member = world.member("partner", "rep")
    device, _ = enrol(member.user)
    client, _ = password_step(member)
    for _ in range(twofactor.MAX_FAILURES_PER_SIGN_IN):
        response = client.post(VERIFY, {"code": "99999x"})
    assert response.url == "/accounts/login/"
    assert client.post(VERIFY, {"code": code_for(device)}).url == "/accounts/login/"
    assert not logged_in(client)
    assert actions(member.user).count("two_factor.code_failed") == 5


# --- Recovery codes ----------------------------------------------------------------------

def test_a_recovery_code_signs_in_once(world):
    member = world.member("vendor", "admin")
    enforce(world.network)
    _, codes = enrol(member.user)
    client, _ = password_step(member)
    response = client.post(VERIFY, {"code": codes[0].upper().replace("-", " ")})
    assert response.url == "/" and logged_in(client)
    assert "two_factor.recovery_code_used" in actions(member.user)
    assert twofactor.unused_recovery_codes(member.user) == twofactor.RECOVERY_CODE_COUNT - 1

    again, _ = password_step(member)
    time.sleep(0.01)
    response = again.post(VERIFY, {"code": codes[0]})
    assert response.status_code == 200 and not logged_in(again)


def test_new_recovery_codes_replace_the_old_ones(world):
    member = world.member("partner", "owner")
    device, old = enrol(member.user)
    client, _ = password_step(member)
    client.post(VERIFY, {"code": code_for(device)})
    page = client.post(reverse("accounts:two_factor_recovery_codes"))
    new = re.findall(r"<code>([a-z2-7-]{19})</code>", page.content.decode())
    assert len(new) == twofactor.RECOVERY_CODE_COUNT and not set(new) & set(old)
    assert "two_factor.recovery_codes_regenerated" in actions(member.user)
    assert not twofactor.verify_code(member.user, old[1], network=world.network).ok
    time.sleep(1.1)  # the throttle after that wrong code
    assert twofactor.verify_code(member.user, new[1], network=world.network).ok


# --- The user's own page -----------------------------------------------------------------

def test_an_optional_member_may_turn_it_off_but_a_required_one_may_not(world):
    enforce(world.network)
    rep = world.member("partner", "rep")
    device, _ = enrol(rep.user)
    client, _ = password_step(rep)
    client.post(VERIFY, {"code": code_for(device)})
    assert b"Turn off" in client.get(reverse("accounts:two_factor_security")).content
    client.post(reverse("accounts:two_factor_turn_off"))
    assert not twofactor.is_enrolled(rep.user)
    assert "two_factor.disabled" in actions(rep.user)

    admin = world.member("vendor", "admin")
    device, _ = enrol(admin.user)
    client, _ = password_step(admin)
    client.post(VERIFY, {"code": code_for(device)})
    client.post(reverse("accounts:two_factor_turn_off"))
    assert twofactor.is_enrolled(admin.user)


def test_turning_it_off_when_it_is_not_on_changes_and_records_nothing(world):
    rep = world.member("partner", "rep")
    world.client_for(rep).post(reverse("accounts:two_factor_turn_off"))
    assert "two_factor.disabled" not in actions(rep.user)


def test_a_logged_in_member_may_enrol_from_the_security_page(world):
    rep = world.member("partner", "rep")
    client = world.client_for(rep)
    assert reverse("accounts:two_factor_security").encode() in client.get("/team/").content
    assert b"Set up two-factor" in client.get(reverse("accounts:two_factor_security")).content
    client.get(SETUP)
    device = TOTPDevice.objects.get(user=rep.user, confirmed=False)
    response = client.post(SETUP, {"code": code_for(device)})
    assert response.status_code == 200 and twofactor.is_enrolled(rep.user)
    assert client.get("/").status_code == 200  # this session proved it holds the device


# --- An admin's reset --------------------------------------------------------------------

def reset_url(membership):
    return reverse("accounts:member_two_factor_reset", args=[membership.public_id])


def test_a_vendor_admin_resets_a_member_of_their_organization(world):
    finance = world.member("vendor", "finance")
    enrol(finance.user)
    admin = world.member("vendor", "admin")
    client = world.client_for(admin)
    team = client.get("/team/")
    assert reset_url(finance).encode() in team.content
    response = client.post(reset_url(finance))
    assert response.url == "/team/"
    assert not twofactor.is_enrolled(finance.user)
    assert not RecoveryCode.objects.filter(device__user=finance.user).exists()
    event = AuditEvent.objects.get(action="two_factor.reset")
    assert event.actor == admin.user and event.target_id == str(finance.public_id)

    enforce(world.network)  # their next sign-in sets up a new authenticator
    assert password_step(finance)[1].url == SETUP


def test_an_operator_admin_resets_anyone_in_the_network(world):
    vendor_admin = world.member("vendor", "admin")
    enrol(vendor_admin.user)
    client = world.client_for(world.member("operator", "admin"))
    page = client.get(reverse("accounts:organization_detail", args=[world.vendor.public_id]))
    assert reset_url(vendor_admin).encode() in page.content
    client.post(reset_url(vendor_admin))
    assert not twofactor.is_enrolled(vendor_admin.user)


@pytest.mark.parametrize("actor", [
    ("vendor", "partnerships"),  # same organization, does not manage members
    ("partner", "owner"),  # manages members, of another organization
    ("operator", "support"),
    ("operator", "channel_manager"),
    "foreign_vendor_admin",  # another network
])
def test_nobody_else_may_reset_it(world, actor):
    target = world.member("vendor", "finance")
    enrol(target.user)
    if isinstance(actor, str):
        client = world.client_for(world.others[actor], host=world.other_network.domain)
    else:
        client = world.client_for(world.member(*actor))
    assert client.post(reset_url(target)).status_code == 404
    assert twofactor.is_enrolled(target.user)


def test_nobody_resets_their_own_through_the_admin_door(world):
    admin = world.member("vendor", "admin")
    assert not twofactor.may_reset(admin, admin)
    assert twofactor.may_reset(admin, world.member("vendor", "sales"))


def test_other_organizations_admins_cannot_reset(world):
    target = world.member("vendor", "admin")
    enrol(target.user)
    other_admin = world.others["vendor2_admin"]
    assert world.client_for(other_admin).post(reset_url(target)).status_code == 404
    assert twofactor.is_enrolled(target.user)


# --- The network setting -----------------------------------------------------------------

def test_an_operator_admin_sets_the_network_policy(world):
    client = world.client_for(world.member("operator", "admin"))
    url = reverse("accounts:network_settings")
    assert b"two_factor_policy" in client.get(url).content
    response = client.post(url, {"name": world.network.name,
                                 "two_factor_policy": Network.TWO_FACTOR_EVERYONE})
    assert response.status_code == 302
    world.network.refresh_from_db()
    assert world.network.two_factor_policy == Network.TWO_FACTOR_EVERYONE
    event = AuditEvent.objects.get(action="network.settings_changed")
    assert event.after["two_factor_policy"] == Network.TWO_FACTOR_EVERYONE


def test_the_demo_network_leaves_enforcement_off(db):
    from accounts import demo

    NetworkFactory()  # another network around does not matter
    demo.seed("demo-password-1")
    network = Network.objects.get(is_default=True)
    assert network.two_factor_policy == Network.TWO_FACTOR_OFF
    client = Client()
    response = client.post(LOGIN, {"username": "admin@northwind.example",
                                   "password": "demo-password-1"})
    assert response.url == "/" and logged_in(client)


def test_a_user_without_membership_and_without_device_is_not_asked(db, network):
    enforce(network, Network.TWO_FACTOR_EVERYONE)
    user = UserFactory()
    client = Client()
    client.post(LOGIN, {"username": user.email, "password": PASSWORD})
    assert logged_in(client)


def test_a_vendor_admin_in_a_pending_organization_must_enrol_too(world):
    enforce(world.network)
    pending_vendor = MembershipFactory(
        organization__network=world.network, organization__kind=roles.VENDOR,
        organization__status="pending", role="admin")
    assert password_step(pending_vendor)[1].url == SETUP
