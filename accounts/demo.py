"""The demo network: every one of the 14 roles with a login, built idempotently."""

from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm

from accounts import roles
from accounts.models import Membership, Network, Organization, User

NETWORK_NAME = "Northwind Referral Network"

# (slug, name, kind, domain, country, partner_type, roles to create users for)
ORGANIZATIONS = [
    ("northwind-ops", "Northwind Network Ops", roles.OPERATOR, "northwind.example", "US", "",
     ["admin", "channel_manager", "onboarding", "finance", "auditor", "support"]),
    ("acme-cloud", "Acme Cloud", roles.VENDOR, "acmecloud.example", "US", "",
     ["admin", "partnerships", "sales", "finance"]),
    ("globex-analytics", "Globex Analytics", roles.VENDOR, "globex.example", "DE", "",
     ["admin", "partnerships", "sales", "finance"]),
    ("brightpath-consulting", "Brightpath Consulting", roles.PARTNER, "brightpath.example", "US",
     "consultant", ["owner", "manager", "rep", "finance"]),
    ("summit-integrators", "Summit Integrators", roles.PARTNER, "summit.example", "GB",
     "integrator", ["owner", "manager", "rep", "finance"]),
    ("keystone-agency", "Keystone Agency", roles.PARTNER, "keystone.example", "CA", "agency",
     ["owner", "manager", "rep", "finance"]),
]
PORTFOLIO = ["acme-cloud", "brightpath-consulting", "summit-integrators"]
PENDING = ("nimbus-partners", "Nimbus Partners", "nimbus.example", "FR", "reseller")

FIRST_NAMES = {
    "admin": "Alex", "channel_manager": "Casey", "onboarding": "Olivia", "finance": "Frank",
    "auditor": "Avery", "support": "Sam", "partnerships": "Priya", "sales": "Sofia",
    "owner": "Oscar", "manager": "Maya", "rep": "Ravi",
}


@dataclass
class Login:
    email: str
    password: str
    organization: str
    kind: str
    role: str


def _user(email, full_name, password):
    user, _ = User.objects.get_or_create(email=email, defaults={"full_name": full_name})
    user.full_name = full_name
    user.is_active = True
    user.email_verified_at = user.email_verified_at or timezone.now()
    user.set_password(password)
    user.save()
    return user


@transaction.atomic
def seed(password: str, applied_at=None) -> list[Login]:
    """The demo's organizations and a login per role. `applied_at`: when the pending
    application was made (default now)."""
    network = Network.objects.filter(is_default=True).first()
    if network is None:
        network = Network.objects.create(name=NETWORK_NAME, slug="default", is_default=True)
    network.name = NETWORK_NAME
    # Every demo login works with its password alone: the demo does not enforce two-factor
    # sign-in (new networks do). Anyone may still turn it on for themselves.
    network.two_factor_policy = Network.TWO_FACTOR_OFF
    network.save(update_fields=["name", "two_factor_policy"])
    now = timezone.now()  # the demo seed runs this half a year back (partnerhub.democlock)
    logins, orgs = [], {}
    for i, (slug, name, kind, domain, country, partner_type, role_names) in enumerate(
            ORGANIZATIONS):
        org, _ = Organization.objects.update_or_create(
            network=network, slug=slug,
            defaults=dict(name=name, kind=kind, status=Organization.ACTIVE,
                          website=f"https://www.{domain}", website_domain=domain,
                          country=country, partner_type=partner_type),
        )
        if org.approved_at is None:
            # Applied, verified within the hour, approved after a few days of review.
            org.applied_at, org.verified_at = now, now + timedelta(hours=1)
            org.approved_at = now + timedelta(days=1 + i % 4, hours=3)
            org.save(update_fields=["applied_at", "verified_at", "approved_at"])
        orgs[slug] = org
        for role in role_names:
            email = f"{role.replace('_', '-')}@{domain}"
            label = roles.role_for(kind, role).label
            user = _user(email, f"{FIRST_NAMES[role]} {name.split()[0]} ({label})", password)
            Membership.objects.update_or_create(
                user=user, organization=org,
                defaults={"role": role, "status": Membership.ACTIVE, "deactivated_at": None},
            )
            logins.append(Login(email, password, name, kind, role))
    manager = User.objects.get(email="channel-manager@northwind.example")
    for slug in PORTFOLIO:
        assign_perm("accounts.in_portfolio", manager, orgs[slug])

    slug, name, domain, country, partner_type = PENDING
    pending, created = Organization.objects.get_or_create(
        network=network, slug=slug,
        defaults=dict(name=name, kind=roles.PARTNER, status=Organization.PENDING,
                      website=f"https://{domain}", website_domain=domain, country=country,
                      partner_type=partner_type, applied_at=applied_at or now,
                      verified_at=applied_at or now),
    )
    applicant = _user(f"owner@{domain}", f"Nadia {name.split()[0]} (applicant)", password)
    Membership.objects.get_or_create(user=applicant, organization=pending,
                                     defaults={"role": "owner"})
    logins.append(Login(applicant.email, password, f"{name} (pending)", roles.PARTNER, "owner"))
    return logins
