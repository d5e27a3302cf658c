"""The role table matches DESIGN.md's: 14 roles, their scopes and the data they may see."""

import pytest
from django.urls import reverse

from accounts import roles
from accounts.permissions import can

DESIGN_SCOPES = {
    ("partner", "owner"): "organization", ("partner", "manager"): "organization",
    ("partner", "rep"): "own", ("partner", "finance"): "organization",
    ("vendor", "admin"): "organization", ("vendor", "partnerships"): "organization",
    ("vendor", "sales"): "assigned", ("vendor", "finance"): "organization",
    ("operator", "admin"): "network", ("operator", "channel_manager"): "portfolio",
    ("operator", "onboarding"): "network", ("operator", "finance"): "network",
    ("operator", "auditor"): "network", ("operator", "support"): "network",
}


def test_there_are_exactly_the_fourteen_roles_of_the_design_with_their_scopes():
    assert {key: role.scope for key, role in roles.ROLES.items()} == DESIGN_SCOPES


def test_contact_details_and_money_flags_follow_the_design():
    assert not roles.role_for("partner", "finance").contact_details
    assert roles.role_for("partner", "finance").money
    support = roles.role_for("operator", "support")
    assert not support.contact_details and not support.money and support.read_only
    assert roles.role_for("operator", "auditor").read_only
    assert not roles.role_for("operator", "finance").contact_details


def test_read_only_roles_hold_no_write_permission():
    writes = {roles.MEMBERS_MANAGE, roles.APPLICATIONS_REVIEW, roles.PORTFOLIO_MANAGE,
              roles.NETWORK_MANAGE, roles.REFERRAL_SUBMIT, roles.REFERRAL_ACCEPT,
              roles.PAYOUT_MANAGE, roles.PAYOUT_APPROVE, roles.DISPUTE_RESOLVE}
    for role in roles.ROLES.values():
        if role.read_only:
            assert not (role.permissions & writes), role.key


def test_every_kind_has_its_owner_role_and_default_invite_role():
    for kind, _ in roles.KINDS:
        names = {r.name for r in roles.roles_of_kind(kind)}
        assert roles.OWNER_ROLE[kind] in names
        assert roles.DEFAULT_INVITE_ROLE[kind] in names


@pytest.mark.parametrize("status", ["pending", "suspended", "rejected"])
def test_members_of_inactive_organizations_can_do_nothing_but_see_their_status(world, status):
    owner = world.member("partner", "owner")
    world.partner.status = status
    world.partner.save()
    owner.organization.refresh_from_db()
    assert can(owner, roles.DASHBOARD_VIEW) == (status == "pending")
    assert not can(owner, roles.MEMBERS_MANAGE, world.partner)
    assert not can(owner, roles.REFERRAL_SUBMIT)


def test_deactivated_membership_can_do_nothing(world):
    admin = world.member("operator", "admin")
    admin.status = "deactivated"
    admin.save()
    assert not can(admin, roles.DASHBOARD_VIEW)
    assert not can(admin, roles.AUDIT_VIEW)


def test_resend_verification_is_throttled(world, django_capture_on_commit_callbacks):
    from django.core import mail
    from django.core.cache import cache

    pending_owner = world.others["pending_owner"]
    pending_owner.user.email_verified_at = None
    pending_owner.user.save()
    cache.delete(f"verify-resend:{pending_owner.user.pk}")
    client = world.client_for(pending_owner)
    with django_capture_on_commit_callbacks(execute=True):
        first = client.post(reverse("accounts:resend_verification"), follow=True)
        second = client.post(reverse("accounts:resend_verification"), follow=True)
    assert "We sent a new verification link" in first.content.decode()
    assert "less than a minute ago" in second.content.decode()
    assert len(mail.outbox) == 1
    assert "/verify/" in mail.outbox[0].body
