"""The dashboard's money tile and the money entries of the navigation, per role."""

import pytest
from django.urls import reverse

from payouts.models import Commission
from tests.conftest import ALL_ROLES, ROLE_IDS

HAS_TILE = {("partner", "owner"), ("partner", "finance"), ("vendor", "finance"),
            ("operator", "admin"), ("operator", "finance")}


@pytest.mark.parametrize(("kind", "role"), ALL_ROLES, ids=ROLE_IDS)
def test_money_tile_per_role(world, won, kind, role):
    Commission.objects.filter(pk=won.pk).update(status=Commission.PAYABLE)
    client = world.client_for(world.member(kind, role))
    dashboard = client.get(reverse("home")).content.decode()
    tile = client.get(reverse("payouts:money_tile"))
    if (kind, role) in HAS_TILE:
        assert reverse("payouts:money_tile") in dashboard
        assert tile.status_code == 200
        html = tile.content.decode()
        if kind == "partner":
            assert "$1,000.00" in html and "Connect a payout account" in html
            assert "Complete your tax profile" in html
        elif kind == "vendor":
            assert "$1,000.00 to approve" in html
        else:
            assert "awaiting approval" in html
    else:
        assert reverse("payouts:money_tile") not in dashboard
        assert tile.status_code == 404


NAV = {
    ("partner", "owner"): {"Earnings", "Payout account", "Tax profile"},
    ("partner", "finance"): {"Earnings", "Payout account", "Tax profile"},
    ("vendor", "admin"): {"Commissions"}, ("vendor", "finance"): {"Commissions"},
    ("operator", "admin"): {"Commissions", "Payout batches", "Clawbacks", "Tax report"},
    ("operator", "finance"): {"Commissions", "Payout batches", "Clawbacks", "Tax report"},
    ("operator", "auditor"): {"Commissions", "Payout batches", "Clawbacks"},
}
MONEY_LABELS = {"Earnings", "Payout account", "Tax profile", "Commissions", "Payout batches",
                "Clawbacks", "Tax report"}


@pytest.mark.parametrize(("kind", "role"), ALL_ROLES, ids=ROLE_IDS)
def test_money_navigation_per_role(world, kind, role):
    response = world.client_for(world.member(kind, role)).get(reverse("home"))
    labels = {label for label, _ in response.context["nav"]} & MONEY_LABELS
    assert labels == NAV.get((kind, role), set())
