"""What each of the 14 roles may open, and the 404 it gets for everything else.

A matrix, not a sample: every page is requested by every role. Out-of-scope objects and other
tenants' objects answer 404, exactly like ids that do not exist.
"""

import uuid

import pytest
from django.urls import reverse

from accounts import roles
from tests.conftest import ALL_ROLES, ROLE_IDS

OP, VE, PA = roles.OPERATOR, roles.VENDOR, roles.PARTNER
EVERYONE = set(ALL_ROLES)
NETWORK_OPERATORS = {(OP, r) for r in ("admin", "onboarding", "finance", "auditor", "support")}
OPERATORS = NETWORK_OPERATORS | {(OP, "channel_manager")}


def _url(world, name):
    """Named pages, with the objects they point at taken from the world."""
    urls = {
        "dashboard": reverse("home"),
        "team": reverse("accounts:team"),
        "applications": reverse("accounts:application_queue"),
        "application_pending": reverse("accounts:application_detail",
                                       args=[world.pending.public_id]),
        "organizations": reverse("accounts:organizations"),
        "org_in_portfolio": reverse("accounts:organization_detail",
                                    args=[world.vendor.public_id]),
        "org_outside_portfolio": reverse("accounts:organization_detail",
                                         args=[world.vendor2.public_id]),
        "org_other_network": reverse("accounts:organization_detail",
                                     args=[world.foreign_partner.public_id]),
        "org_missing": reverse("accounts:organization_detail", args=[uuid.uuid4()]),
        "user_lookup": reverse("accounts:user_lookup") + "?q=example",
        "network_settings": reverse("accounts:network_settings"),
        "audit_log": reverse("accounts:audit_log"),
        "audit_export": reverse("accounts:audit_export"),
    }
    return urls[name]


# page -> the roles that get 200; every other role gets 404.
ALLOWED = {
    "dashboard": EVERYONE,
    "team": EVERYONE,
    "applications": {(OP, "admin"), (OP, "onboarding"), (OP, "channel_manager")},
    "application_pending": {(OP, "admin"), (OP, "onboarding")},  # not in the CM's portfolio
    "organizations": OPERATORS,
    "org_in_portfolio": OPERATORS,
    "org_outside_portfolio": NETWORK_OPERATORS,
    "org_other_network": set(),
    "org_missing": set(),
    "user_lookup": {(OP, "admin"), (OP, "support")},
    "network_settings": {(OP, "admin")},
    "audit_log": {(OP, "admin"), (OP, "auditor")},
    "audit_export": {(OP, "admin"), (OP, "auditor")},
}


@pytest.mark.parametrize("page", sorted(ALLOWED))
def test_anonymous_is_sent_to_login(client, world, page):
    url = _url(world, page)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("page", sorted(ALLOWED))
@pytest.mark.parametrize("role", ALL_ROLES, ids=ROLE_IDS)
def test_each_role_gets_exactly_what_the_role_table_allows(world, role, page):
    client = world.client_for(world.member(*role))
    response = client.get(_url(world, page))
    expected = 200 if role in ALLOWED[page] else 404
    assert response.status_code == expected, f"{role} on {page}"


def _names(response):
    return response.content.decode()


def test_organization_directory_is_scoped_per_role(world):
    wanted_by_role = {
        (OP, "admin"): {"Acme Cloud", "Globex", "Brightpath", "Summit", "Nimbus", "Network Ops"},
        (OP, "channel_manager"): {"Acme Cloud", "Brightpath", "Network Ops"},
    }
    every_name = {"Acme Cloud", "Globex", "Brightpath", "Summit", "Nimbus", "Network Ops",
                  "Faraway", "Farvend"}
    for role, wanted in wanted_by_role.items():
        html = _names(world.client_for(world.member(*role)).get(_url(world, "organizations")))
        shown = {name for name in every_name if f">{name}</a>" in html}
        assert shown == wanted, role


def test_team_page_lists_only_the_members_own_organization(world):
    rep = world.member(PA, "rep")
    html = _names(world.client_for(rep).get(reverse("accounts:team")))
    assert world.member(PA, "owner").user.email in html
    assert world.others["partner2_owner"].user.email not in html
    assert world.member(VE, "admin").user.email not in html
    assert world.others["foreign_owner"].user.email not in html


def test_support_lookup_never_reaches_another_network(world):
    client = world.client_for(world.member(OP, "support"))
    foreign = world.others["foreign_owner"].user.email
    html = _names(client.get(reverse("accounts:user_lookup") + f"?q={foreign}"))
    assert "Nobody on this network matches" in html
    assert "Faraway" not in html
    own = world.member(PA, "rep").user.email
    html = _names(client.get(reverse("accounts:user_lookup") + f"?q={own}"))
    assert own in html and "Brightpath" in html


def test_channel_manager_sees_members_only_of_portfolio_organizations(world):
    client = world.client_for(world.member(OP, "channel_manager"))
    html = _names(client.get(_url(world, "org_in_portfolio")))
    assert world.member(VE, "partnerships").user.email in html


# --- Actions: who may change what ------------------------------------------------------

MANAGERS_OF_OWN_ORG = {(PA, "owner"), (VE, "admin"), (OP, "admin")}


@pytest.mark.parametrize("role", ALL_ROLES, ids=ROLE_IDS)
def test_only_owners_and_admins_change_roles_in_their_own_organization(world, role):
    actor = world.member(*role)
    teammate = next(m for (k, r), m in world.members.items()
                    if k == role[0] and m.pk != actor.pk and r != roles.OWNER_ROLE[k])
    client = world.client_for(actor)
    new_role = next(r.name for r in roles.roles_of_kind(role[0])
                    if r.name not in (teammate.role, roles.OWNER_ROLE[role[0]]))
    response = client.post(reverse("accounts:member_role", args=[teammate.public_id]),
                           {"role": new_role})
    teammate.refresh_from_db()
    if role in MANAGERS_OF_OWN_ORG:
        assert response.status_code == 302
        assert teammate.role == new_role
    else:
        assert response.status_code == 404
        assert teammate.role != new_role


@pytest.mark.parametrize("role", sorted(MANAGERS_OF_OWN_ORG), ids=lambda r: ".".join(r))
def test_members_of_other_organizations_are_404_even_for_admins(world, role):
    client = world.client_for(world.member(*role))
    for target in (world.others["partner2_rep"], world.others["foreign_owner"]):
        response = client.post(reverse("accounts:member_deactivate", args=[target.public_id]))
        assert response.status_code == 404
        target.refresh_from_db()
        assert target.status == "active"


@pytest.mark.parametrize("role", ALL_ROLES, ids=ROLE_IDS)
def test_only_the_network_admin_assigns_portfolios(world, role):
    client = world.client_for(world.member(*role))
    manager = world.member(OP, "channel_manager")
    response = client.post(reverse("accounts:portfolio_add", args=[world.vendor2.public_id]),
                           {"channel_manager": str(manager.public_id)})
    from accounts.models import OrganizationPortfolioGrant

    granted = OrganizationPortfolioGrant.objects.filter(
        user=manager.user, content_object=world.vendor2).exists()
    if role == (OP, "admin"):
        assert response.status_code == 302 and granted
    else:
        assert response.status_code == 404 and not granted


@pytest.mark.parametrize("role", ALL_ROLES, ids=ROLE_IDS)
def test_only_reviewers_in_scope_approve_applications(world, role):
    client = world.client_for(world.member(*role))
    response = client.post(reverse("accounts:application_approve",
                                   args=[world.pending.public_id]))
    world.pending.refresh_from_db()
    if role in {(OP, "admin"), (OP, "onboarding")}:
        assert response.status_code == 302 and world.pending.status == "active"
    else:
        assert response.status_code == 404 and world.pending.status == "pending"


# --- Tenancy ---------------------------------------------------------------------------

def test_network_is_resolved_from_the_host(world):
    owner = world.others["foreign_owner"]
    on_its_domain = world.client_for(owner, host="partners.elsewhere.test")
    response = on_its_domain.get(reverse("home"))
    assert response.status_code == 200
    assert "Faraway" in response.content.decode()
    assert "Elsewhere" in response.content.decode()
    # The same login on the default network's host has no membership there.
    on_default = world.client_for(owner, host="testserver")
    response = on_default.get(reverse("home"))
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:no_membership")


def test_network_is_resolved_from_a_subdomain_of_the_base_domain(world):
    owner = world.others["foreign_owner"]
    client = world.client_for(owner, host="elsewhere.partnerhub.test")
    assert "Faraway" in client.get(reverse("home")).content.decode()


def test_membership_switcher_changes_what_the_user_sees(world):
    rep = world.member(PA, "rep")
    from tests.accounts.factories import MembershipFactory

    second = MembershipFactory(user=rep.user, organization=world.vendor2, role="admin")
    client = world.client_for(rep)
    assert client.get(reverse("accounts:organizations")).status_code == 404
    client.post(reverse("accounts:switch"), {"membership": str(second.public_id)})
    html = client.get(reverse("home")).content.decode()
    assert "Globex" in html and "Admin" in html
    # A membership in another network cannot be switched to.
    foreign = MembershipFactory(user=rep.user, organization=world.foreign_vendor, role="admin")
    client.post(reverse("accounts:switch"), {"membership": str(foreign.public_id)})
    assert "Globex" in client.get(reverse("home")).content.decode()


def test_pending_organization_sees_only_its_review_status(world):
    client = world.client_for(world.others["pending_owner"])
    html = client.get(reverse("home")).content.decode()
    assert "being reviewed" in html
    assert client.get(reverse("accounts:team")).status_code == 404


def test_suspended_organization_members_have_no_access(world):
    world.partner.status = "suspended"
    world.partner.save()
    client = world.client_for(world.member(PA, "owner"))
    response = client.get(reverse("home"))
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:no_membership")
