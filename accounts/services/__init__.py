"""Business actions of the accounts app: verbs that check permission, run in one transaction,
write the audit event and queue side effects on commit."""

from accounts.services.members import (
    accept_invitation,
    change_role,
    deactivate_member,
    invite_member,
    revoke_invitation,
)
from accounts.services.networks import update_network_settings
from accounts.services.onboarding import (
    apply_for_organization,
    approve_application,
    confirm_auto_approval,
    reject_application,
    verify_email,
)
from accounts.services.portfolio import add_to_portfolio, remove_from_portfolio

__all__ = [
    "accept_invitation",
    "add_to_portfolio",
    "apply_for_organization",
    "approve_application",
    "change_role",
    "confirm_auto_approval",
    "deactivate_member",
    "invite_member",
    "reject_application",
    "remove_from_portfolio",
    "revoke_invitation",
    "update_network_settings",
    "verify_email",
]
