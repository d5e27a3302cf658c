"""Shared fixtures. `world` is a small but complete tenant layout: in network A an operator
organization with all six operator roles, two vendors and two partners with all their roles, a
pending application and a channel manager whose portfolio covers one vendor and one partner;
network B mirrors a partner and a vendor, to prove that nothing crosses networks."""

from dataclasses import dataclass, field

import pytest
from django.test import Client
from guardian.shortcuts import assign_perm

from accounts import roles
from accounts.models import Network, Organization
from tests.accounts.factories import (
    MembershipFactory,
    NetworkFactory,
    OrganizationFactory,
    UserFactory,
)

ALL_ROLES = [key for key in roles.ROLES]  # (kind, role) pairs: the 14 personas
ROLE_IDS = [f"{k}.{r}" for k, r in ALL_ROLES]


@dataclass
class World:
    network: Network
    other_network: Network
    operator: Organization
    vendor: Organization
    vendor2: Organization
    partner: Organization
    partner2: Organization
    pending: Organization
    foreign_partner: Organization
    foreign_vendor: Organization
    members: dict = field(default_factory=dict)  # (kind, role) -> Membership in network A
    others: dict = field(default_factory=dict)  # misc memberships by name

    def member(self, kind, role):
        return self.members[(kind, role)]

    def client_for(self, membership, host="testserver"):
        client = Client(HTTP_HOST=host)
        client.force_login(membership.user, backend="django.contrib.auth.backends.ModelBackend")
        session = client.session
        session["active_membership"] = str(membership.public_id)
        session.save()
        return client


@pytest.fixture(autouse=True)
def _locmem_email(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def network(db):
    """The default network (the migration creates it; a transactional test's flush may not)."""
    network, _ = Network.objects.update_or_create(
        is_default=True, defaults={"name": "Northwind", "slug": "northwind",
                                   # passwords alone, unless a test turns enforcement on
                                   "two_factor_policy": Network.TWO_FACTOR_OFF})
    return network


@pytest.fixture
def world(network):
    other = NetworkFactory(name="Elsewhere", slug="elsewhere", domain="partners.elsewhere.test")
    orgs = dict(
        operator=OrganizationFactory(network=network, kind=roles.OPERATOR, name="Network Ops"),
        vendor=OrganizationFactory(network=network, kind=roles.VENDOR, name="Acme Cloud"),
        vendor2=OrganizationFactory(network=network, kind=roles.VENDOR, name="Globex"),
        partner=OrganizationFactory(network=network, kind=roles.PARTNER, name="Brightpath"),
        partner2=OrganizationFactory(network=network, kind=roles.PARTNER, name="Summit"),
        pending=OrganizationFactory(network=network, kind=roles.PARTNER, name="Nimbus",
                                    status=Organization.PENDING, approved_at=None),
        foreign_partner=OrganizationFactory(network=other, kind=roles.PARTNER, name="Faraway"),
        foreign_vendor=OrganizationFactory(network=other, kind=roles.VENDOR, name="Farvend"),
    )
    w = World(network=network, other_network=other, **orgs)
    by_kind = {roles.OPERATOR: w.operator, roles.VENDOR: w.vendor, roles.PARTNER: w.partner}
    for kind, role in ALL_ROLES:
        w.members[(kind, role)] = MembershipFactory(organization=by_kind[kind], role=role)
    w.others["vendor2_admin"] = MembershipFactory(organization=w.vendor2, role="admin")
    w.others["partner2_owner"] = MembershipFactory(organization=w.partner2, role="owner")
    w.others["partner2_rep"] = MembershipFactory(organization=w.partner2, role="rep")
    w.others["pending_owner"] = MembershipFactory(organization=w.pending, role="owner")
    w.others["foreign_owner"] = MembershipFactory(organization=w.foreign_partner, role="owner")
    w.others["foreign_vendor_admin"] = MembershipFactory(organization=w.foreign_vendor,
                                                         role="admin")
    manager = w.member(roles.OPERATOR, "channel_manager")
    assign_perm("accounts.in_portfolio", manager.user, w.vendor)
    assign_perm("accounts.in_portfolio", manager.user, w.partner)
    return w


@pytest.fixture
def user_factory(db):
    return UserFactory


@pytest.fixture
def programs(world):
    """Referral programs in `world`: Acme Cloud runs one (Brightpath and Summit enrolled),
    Globex another (nobody enrolled); a program in the other network."""
    from tests.referrals.factories import EnrolmentFactory, ProgramFactory

    acme = ProgramFactory(vendor=world.vendor, name="Acme Partner Program")
    globex = ProgramFactory(vendor=world.vendor2, name="Globex Program")
    foreign = ProgramFactory(vendor=world.foreign_vendor, name="Faraway Program")
    owner = world.member("partner", "owner")
    EnrolmentFactory(program=acme, partner=world.partner, requested_by=owner.user)
    EnrolmentFactory(program=acme, partner=world.partner2,
                     requested_by=world.others["partner2_owner"].user)
    EnrolmentFactory(program=foreign, partner=world.foreign_partner,
                     requested_by=world.others["foreign_owner"].user)
    return {"acme": acme, "globex": globex, "foreign": foreign}
