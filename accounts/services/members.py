"""Team management: invitations, role changes, deactivation, with last-owner protection."""

import hashlib
import secrets
from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from accounts import audit, roles
from accounts.errors import ServiceError
from accounts.models import (
    Invitation,
    Membership,
    OrganizationPortfolioGrant,
    normalize_email,
)
from accounts.services.guards import require
from partnerhub.mail import send_templated_email


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_role(kind: str, role: str) -> None:
    if (kind, role) not in roles.ROLES:
        raise ServiceError("Choose one of the roles offered for this organization.", field="role")


@transaction.atomic
def invite_member(actor: Membership, email: str, role: str) -> tuple[Invitation, str]:
    """Invite someone by email. Returns the invitation and its one-time token (only the hash is
    stored). Inviting the same email again replaces the earlier open invitation."""
    org = actor.organization
    require(actor, roles.MEMBERS_MANAGE, org)
    _check_role(org.kind, role)
    email = normalize_email(email)
    if Membership.objects.filter(organization=org, user__email=email,
                                 status=Membership.ACTIVE).exists():
        raise ServiceError(f"{email} is already a member of {org.name}.", field="email")
    now = timezone.now()
    Invitation.objects.filter(organization=org, email=email).open().update(revoked_at=now)
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        organization=org,
        email=email,
        role=role,
        token_hash=hash_token(token),
        invited_by=actor.user,
        expires_at=now + timedelta(days=settings.INVITATION_TTL_DAYS),
    )
    audit.record("invitation.created", invitation, actor=actor,
                 after={"email": email, "role": role})
    send_templated_email(
        email,
        "invitation",
        {
            "invitation": invitation,
            "organization": org,
            "inviter": actor.user,
            "role": roles.role_for(org.kind, role),
            "url": settings.SITE_URL + reverse("accounts:accept_invitation", args=[token]),
        },
    )
    return invitation, token


def find_invitation(token: str) -> Invitation | None:
    return (
        Invitation.objects.select_related("organization", "organization__network")
        .filter(token_hash=hash_token(token or ""))
        .first()
    )


def check_invitation_usable(invitation: Invitation | None) -> None:
    if invitation is None or invitation.revoked_at is not None:
        raise ServiceError("This invitation link is not valid. Ask for a new invitation.")
    if invitation.accepted_at is not None:
        raise ServiceError("This invitation has already been used. Log in to continue.")
    if invitation.is_expired:
        raise ServiceError("This invitation has expired. Ask the person who invited you to "
                           "send a new one.")
    if not invitation.organization.is_active:
        raise ServiceError("This organization is not active on the network.")


@transaction.atomic
def accept_invitation(user, token: str) -> Membership:
    """Join the inviting organization. Single use; only the invited email may accept."""
    invitation = find_invitation(token)
    if invitation is not None:
        invitation = Invitation.objects.select_for_update().select_related(
            "organization", "organization__network").get(pk=invitation.pk)
    check_invitation_usable(invitation)
    if normalize_email(user.email) != invitation.email:
        raise ServiceError(
            f"This invitation was sent to {invitation.email}, but you are logged in as "
            f"{user.email}. Log out and open the link again."
        )
    membership, created = Membership.objects.get_or_create(
        organization=invitation.organization, user=user, defaults={"role": invitation.role}
    )
    if not created:
        membership.role = invitation.role
        membership.status = Membership.ACTIVE
        membership.deactivated_at = None
        membership.save(update_fields=["role", "status", "deactivated_at"])
    if user.email_verified_at is None:  # they proved the mailbox by opening the link
        user.email_verified_at = timezone.now()
        user.save(update_fields=["email_verified_at"])
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    audit.record("invitation.accepted", invitation, actor=membership,
                 after={"role": membership.role})
    from integrations import analytics

    analytics.group(user, invitation.organization, traits={"role": membership.role})
    return membership


@transaction.atomic
def revoke_invitation(actor: Membership, invitation: Invitation) -> None:
    require(actor, roles.MEMBERS_MANAGE, invitation)
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if not invitation.is_open:
        raise ServiceError("This invitation is no longer open.")
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit.record("invitation.revoked", invitation, actor=actor)


def _lock_owners(org) -> list[Membership]:
    """Lock the organization's owners so two concurrent demotions cannot both pass the
    last-owner check."""
    return list(
        Membership.objects.select_for_update()
        .filter(organization=org, role=roles.OWNER_ROLE[org.kind], status=Membership.ACTIVE)
        .order_by("pk")
    )


def _would_remove_last_owner(target: Membership) -> bool:
    owner_role = roles.OWNER_ROLE[target.organization.kind]
    if target.role != owner_role or target.status != Membership.ACTIVE:
        return False
    owners = _lock_owners(target.organization)
    return len(owners) <= 1


@transaction.atomic
def change_role(actor: Membership, target: Membership, role: str) -> Membership:
    require(actor, roles.MEMBERS_MANAGE, target)
    target = Membership.objects.select_for_update().select_related("organization").get(
        pk=target.pk)
    _check_role(target.organization.kind, role)
    if role == target.role:
        return target
    if role != roles.OWNER_ROLE[target.organization.kind] and _would_remove_last_owner(target):
        raise ServiceError("An organization needs at least one "
                           f"{roles.OWNER_ROLE[target.organization.kind]}. Promote someone else "
                           "first.")
    before = {"role": target.role}
    target.role = role
    target.save(update_fields=["role"])
    if role != "channel_manager":
        revoke_portfolio_grants(target)
    if roles.REFERRAL_UPDATE_STAGE not in roles.role_for(target.organization.kind,
                                                         role).permissions:
        revoke_assignments(target)
    audit.record("membership.role_changed", target, actor=actor, before=before,
                 after={"role": role})
    return target


@transaction.atomic
def deactivate_member(actor: Membership, target: Membership) -> Membership:
    require(actor, roles.MEMBERS_MANAGE, target)
    target = Membership.objects.select_for_update().select_related("organization", "user").get(
        pk=target.pk)
    if target.status != Membership.ACTIVE:
        raise ServiceError("This member is already deactivated.")
    if _would_remove_last_owner(target):
        raise ServiceError("You cannot remove the last "
                           f"{roles.OWNER_ROLE[target.organization.kind]} of an organization.")
    target.status = Membership.DEACTIVATED
    target.deactivated_at = timezone.now()
    target.save(update_fields=["status", "deactivated_at"])
    revoke_portfolio_grants(target)
    revoke_assignments(target)
    audit.record("membership.deactivated", target, actor=actor,
                 before={"status": Membership.ACTIVE}, after={"status": target.status})
    return target


def revoke_portfolio_grants(membership: Membership) -> int:
    """A channel manager's portfolio in this network dies with the role that justified it."""
    deleted, _ = OrganizationPortfolioGrant.objects.filter(
        user_id=membership.user_id,
        content_object__network_id=membership.organization.network_id,
    ).delete()
    return deleted


def revoke_assignments(membership: Membership) -> int:
    """A sales rep's referral assignments at this vendor."""
    # Looked up by name: accounts must not import the referrals app.
    assignment = apps.get_model("referrals", "ReferralAssignment")
    removed, _ = assignment.objects.filter(
        user_id=membership.user_id,
        content_object__vendor_id=membership.organization_id).delete()
    return removed
