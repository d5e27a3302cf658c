"""The clawbacks page: who owes what, and recovering it from partners that left."""

import pytest
from django.urls import reverse

from accounts.models import Organization
from payouts.models import Payout
from tests.conftest import ALL_ROLES, ROLE_IDS
from tests.payouts.test_transfers import (  # noqa: F401 (fixtures)
    departed_owing,
    payout,
    ready,
)

SEES = {("operator", "admin"), ("operator", "finance"), ("operator", "auditor")}
URL = reverse("payouts:clawbacks")


@pytest.mark.parametrize(("kind", "role"), ALL_ROLES, ids=ROLE_IDS)
def test_clawbacks_page_per_role(world, departed_owing, kind, role):  # noqa: F811
    if kind == "partner":  # members of a suspended organization cannot log in at all
        Organization.objects.filter(pk=world.partner.pk).update(status=Organization.ACTIVE)
    response = world.client_for(world.member(kind, role)).get(URL)
    if (kind, role) in SEES:
        html = response.content.decode()
        assert response.status_code == 200
        assert world.partner.name in html and "$1,000.00" in html
        assert ("Recover by transfer reversal" in html) == (role != "auditor")
    elif kind == "partner":
        assert response.status_code == 404
    else:
        assert response.status_code == 404


def test_an_active_partner_is_listed_as_netted_without_a_recover_button(world,
                                                                         departed_owing):  # noqa: F811
    Organization.objects.filter(pk=world.partner.pk).update(status=Organization.ACTIVE)
    html = world.client_for(world.member("operator", "finance")).get(URL).content.decode()
    assert "netted from the next payouts" in html
    assert "Recover by transfer reversal" not in html


def test_nothing_owed_in_another_network(world, departed_owing):  # noqa: F811
    client = world.client_for(world.others["foreign_owner"], host="partners.elsewhere.test")
    assert client.get(URL).status_code in (302, 404)


def test_finance_recovers_from_the_page(world, departed_owing, fake_stripe):  # noqa: F811
    client = world.client_for(world.member("operator", "finance"))
    url = reverse("payouts:clawback_recover", args=[world.partner.public_id, "USD"])
    response = client.post(url, follow=True)
    assert "Recovered $1,000.00 of $1,000.00" in response.content.decode()
    assert Payout.objects.get(pk=departed_owing.pk).status == Payout.REVERSED
    assert "No partner owes anything" in client.get(URL).content.decode()
    again = client.post(url, follow=True)
    assert "owes nothing" in again.content.decode()


def test_the_auditor_cannot_recover(world, departed_owing, fake_stripe):  # noqa: F811
    url = reverse("payouts:clawback_recover", args=[world.partner.public_id, "USD"])
    response = world.client_for(world.member("operator", "auditor")).post(url)
    assert response.status_code == 404
    assert Payout.objects.get(pk=departed_owing.pk).status == Payout.PAID


def test_the_page_queries_do_not_grow_with_partners(world, departed_owing,  # noqa: F811
                                                    django_assert_max_num_queries):
    client = world.client_for(world.member("operator", "finance"))
    with django_assert_max_num_queries(12):
        client.get(URL)
