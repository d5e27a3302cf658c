"""List pages and dashboards cost the same number of queries for 3 rows as for 30."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts import audit, roles
from accounts.models import Organization
from tests.accounts.factories import MembershipFactory, OrganizationFactory

OP, PA = roles.OPERATOR, roles.PARTNER


def _queries(client, url):
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(ctx.captured_queries)


def _add_orgs(world, n):
    for _ in range(n):
        org = OrganizationFactory(network=world.network, kind=PA,
                                  status=Organization.PENDING, approved_at=None)
        MembershipFactory(organization=org, role="owner")


def _add_members(world, n):
    for _ in range(n):
        MembershipFactory(organization=world.partner, role="rep")


def _add_events(world, n):
    actor = world.member(OP, "admin")
    for _ in range(n):
        audit.record("test.event", world.partner, actor=actor, after={"n": 1})


PAGES = [
    # (role, url name, query string, grow the data)
    ((OP, "admin"), "accounts:organizations", "", _add_orgs),
    ((OP, "admin"), "accounts:application_queue", "", _add_orgs),
    ((OP, "support"), "accounts:user_lookup", "?q=example.com", _add_members),
    ((PA, "owner"), "accounts:team", "", _add_members),
    ((OP, "auditor"), "accounts:audit_log", "", _add_events),
    ((OP, "admin"), "accounts:organization_detail", "", _add_members),
    ((OP, "admin"), "home", "", _add_orgs),
    ((OP, "channel_manager"), "home", "", _add_orgs),
    ((PA, "owner"), "home", "", _add_members),
]


@pytest.mark.parametrize("role,name,query,grow", PAGES,
                         ids=[f"{r[1]}-{n.split(':')[-1]}" for r, n, _, _ in PAGES])
def test_list_pages_do_not_grow_queries_with_rows(world, role, name, query, grow):
    client = world.client_for(world.member(*role))
    url = (reverse(name, args=[world.partner.public_id]) if name.endswith("_detail")
           else reverse(name)) + query
    grow(world, 3)
    few = _queries(client, url)
    grow(world, 27)
    many = _queries(client, url)
    assert many == few, f"{url}: {few} queries for few rows, {many} for many"
    assert many <= 15, f"{url} runs {many} queries"
