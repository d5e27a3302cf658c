"""The role table: the only place that knows which role may do what, and over which rows.

14 roles (one per persona), each a fixed bundle of permissions plus a scope. Code elsewhere asks
`can(membership, "referral.accept", referral)` and lists rows with `visible_to(membership)`; it
never compares role names.
"""

from dataclasses import dataclass

# Organization kinds
PARTNER, VENDOR, OPERATOR = "partner", "vendor", "operator"
KINDS = [(PARTNER, "Partner"), (VENDOR, "Vendor"), (OPERATOR, "Network operator")]

# Scopes: which rows a role's permissions reach.
OWN = "own"  # rows the member created (a partner rep's own referrals)
ASSIGNED = "assigned"  # rows granted to the user (guardian object grant on a referral)
ORGANIZATION = "organization"  # rows of the member's organization
PORTFOLIO = "portfolio"  # rows of organizations granted to the user (guardian grant on orgs)
NETWORK = "network"  # every row of the network

# Permissions (actions). Grouped by what they touch.
DASHBOARD_VIEW = "dashboard.view"
MEMBERS_VIEW = "members.view"
MEMBERS_MANAGE = "members.manage"
ORGANIZATION_VIEW = "organization.view"  # the network's organization directory
APPLICATIONS_REVIEW = "applications.review"
PORTFOLIO_MANAGE = "portfolio.manage"
NETWORK_MANAGE = "network.manage"
AUDIT_VIEW = "audit.view"
USERS_LOOKUP = "users.lookup"
REFERRAL_VIEW = "referral.view"
REFERRAL_SUBMIT = "referral.submit"
REFERRAL_EDIT = "referral.edit"
REFERRAL_WITHDRAW = "referral.withdraw"
REFERRAL_ACCEPT = "referral.accept"
REFERRAL_REJECT = "referral.reject"
REFERRAL_ASSIGN = "referral.assign"
REFERRAL_UPDATE_STAGE = "referral.update_stage"
DEAL_OVERRIDE = "deal.override"  # close a deal by hand although the vendor's CRM decides it
PROGRAM_ENROL = "program.enrol"
PROGRAM_MANAGE = "program.manage"
CRM_MANAGE = "crm.manage"
DISPUTE_OPEN = "dispute.open"
DISPUTE_RESPOND = "dispute.respond"
DISPUTE_RESOLVE = "dispute.resolve"
COMMISSION_VIEW = "commission.view"
COMMISSION_APPROVE = "commission.approve"
PAYOUT_VIEW = "payout.view"
PAYOUT_MANAGE = "payout.manage"  # build and send payout batches
PAYOUT_APPROVE = "payout.approve"  # second approver of a batch
PAYOUT_ACCOUNT_MANAGE = "payout_account.manage"
TAX_PROFILE_MANAGE = "tax_profile.manage"
TAX_REPORT = "tax.report"


@dataclass(frozen=True)
class Role:
    kind: str
    name: str
    label: str
    scope: str
    permissions: frozenset
    contact_details: bool = True  # may see customer contact details
    money: bool = True  # may see amounts and commissions
    read_only: bool = False
    # Must sign in with a second factor wherever the network enforces two-factor sign-in
    # (accounts.twofactor): the roles that hold money or the keys to an organization.
    requires_2fa: bool = False
    description: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}.{self.name}"


def _role(kind, name, label, scope, perms, description, **flags) -> Role:
    return Role(kind, name, label, scope, frozenset(perms) | {DASHBOARD_VIEW, MEMBERS_VIEW},
                description=description, **flags)


ROLES: dict[tuple[str, str], Role] = {
    (r.kind, r.name): r
    for r in [
        # Partner organizations
        _role(PARTNER, "owner", "Owner", ORGANIZATION,
              {MEMBERS_MANAGE, REFERRAL_VIEW, REFERRAL_SUBMIT, REFERRAL_EDIT, REFERRAL_WITHDRAW,
               DISPUTE_OPEN, PROGRAM_ENROL, COMMISSION_VIEW, PAYOUT_VIEW, PAYOUT_ACCOUNT_MANAGE,
               TAX_PROFILE_MANAGE},
              "Runs the partnership business: team, payout account, tax profile, programs."),
        _role(PARTNER, "manager", "Manager", ORGANIZATION,
              {REFERRAL_VIEW, REFERRAL_SUBMIT, REFERRAL_EDIT, REFERRAL_WITHDRAW, DISPUTE_OPEN,
               PROGRAM_ENROL},
              "Steers the team's pipeline: submits, edits, withdraws, disputes.", money=False),
        _role(PARTNER, "rep", "Rep", OWN,
              {REFERRAL_VIEW, REFERRAL_SUBMIT, REFERRAL_EDIT, REFERRAL_WITHDRAW, DISPUTE_OPEN},
              "Registers deals and follows their own referrals.", money=False),
        _role(PARTNER, "finance", "Finance", ORGANIZATION,
              {REFERRAL_VIEW, COMMISSION_VIEW, PAYOUT_VIEW, TAX_PROFILE_MANAGE},
              "Commissions, payouts and tax documents; amounts but no contact details.",
              contact_details=False),
        # Vendor organizations
        _role(VENDOR, "admin", "Admin", ORGANIZATION,
              {MEMBERS_MANAGE, REFERRAL_VIEW, REFERRAL_ACCEPT, REFERRAL_REJECT, REFERRAL_ASSIGN,
               REFERRAL_UPDATE_STAGE, DEAL_OVERRIDE, PROGRAM_MANAGE, CRM_MANAGE,
               COMMISSION_VIEW},
              "Runs the program: terms, commission plans, CRM connection, members.",
              requires_2fa=True),
        _role(VENDOR, "partnerships", "Partnerships", ORGANIZATION,
              {REFERRAL_VIEW, REFERRAL_ACCEPT, REFERRAL_REJECT, REFERRAL_ASSIGN,
               REFERRAL_UPDATE_STAGE, DEAL_OVERRIDE, DISPUTE_RESPOND},
              "Triages inbound referrals: accept, reject, assign; answers disputes.", money=False),
        _role(VENDOR, "sales", "Sales", ASSIGNED,
              {REFERRAL_VIEW, REFERRAL_UPDATE_STAGE},
              "Works the referrals assigned to them.", money=False),
        _role(VENDOR, "finance", "Finance", ORGANIZATION,
              {REFERRAL_VIEW, COMMISSION_VIEW, COMMISSION_APPROVE, PAYOUT_VIEW},
              "Approves commissions and funds payouts.", contact_details=False,
              requires_2fa=True),
        # The network operator
        _role(OPERATOR, "admin", "Admin", NETWORK,
              {MEMBERS_MANAGE, ORGANIZATION_VIEW, APPLICATIONS_REVIEW, PORTFOLIO_MANAGE,
               NETWORK_MANAGE, AUDIT_VIEW, USERS_LOOKUP, REFERRAL_VIEW, DISPUTE_RESOLVE,
               COMMISSION_VIEW, PAYOUT_VIEW, PAYOUT_MANAGE, PAYOUT_APPROVE, TAX_REPORT},
              "Runs the network: applications, settings, portfolios, everything.",
              requires_2fa=True),
        _role(OPERATOR, "channel_manager", "Channel manager", PORTFOLIO,
              {ORGANIZATION_VIEW, APPLICATIONS_REVIEW, REFERRAL_VIEW, DISPUTE_RESOLVE},
              "Keeps a portfolio of partners and vendors healthy; resolves their disputes.",
              money=False),
        _role(OPERATOR, "onboarding", "Onboarding", NETWORK,
              {ORGANIZATION_VIEW, APPLICATIONS_REVIEW},
              "Approves or rejects partner and vendor applications.",
              contact_details=False, money=False),
        _role(OPERATOR, "finance", "Finance", NETWORK,
              {ORGANIZATION_VIEW, COMMISSION_VIEW, PAYOUT_VIEW, PAYOUT_MANAGE, PAYOUT_APPROVE,
               TAX_REPORT},
              "Builds and approves payout batches; files tax reports.", contact_details=False,
              requires_2fa=True),
        _role(OPERATOR, "auditor", "Auditor", NETWORK,
              {ORGANIZATION_VIEW, AUDIT_VIEW, REFERRAL_VIEW, COMMISSION_VIEW, PAYOUT_VIEW},
              "Reads everything and the audit log; changes nothing.", read_only=True),
        _role(OPERATOR, "support", "Support", NETWORK,
              {ORGANIZATION_VIEW, USERS_LOOKUP},
              "Looks up users and organizations; no money, no contact details.",
              read_only=True, contact_details=False, money=False),
    ]
}

# The role that may never be left without a holder in an organization of each kind.
OWNER_ROLE = {PARTNER: "owner", VENDOR: "admin", OPERATOR: "admin"}

# What an invitation offers first: the least powerful everyday role of each kind.
DEFAULT_INVITE_ROLE = {PARTNER: "rep", VENDOR: "partnerships", OPERATOR: "support"}

# What a member of an organization that is not (yet) active may still do.
PENDING_PERMISSIONS = frozenset({DASHBOARD_VIEW})


def role_names_with(kind: str, permission: str) -> list[str]:
    """Roles of an organization kind that hold `permission` (to find whom to notify)."""
    return [r.name for r in roles_of_kind(kind) if permission in r.permissions]


def role_for(kind: str, name: str) -> Role:
    return ROLES[(kind, name)]


def roles_of_kind(kind: str) -> list[Role]:
    return [role for (k, _), role in ROLES.items() if k == kind]


def role_choices(kind: str) -> list[tuple[str, str]]:
    return [(role.name, role.label) for role in roles_of_kind(kind)]


ALL_ROLE_NAMES = sorted({name for (_, name) in ROLES})
