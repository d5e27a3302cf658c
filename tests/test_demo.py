"""The demo `make run` seeds tells one consistent story (issue 11): every won deal has its
attribution and its commission, things happened in order (registered, accepted, won, earned,
released, approved, paid), and the pages show money and names, not minor units and ids."""

import re

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership, Organization
from attribution.models import Attribution, DealSnapshot
from payouts.consistency import check_ledger
from payouts.models import Commission, LedgerEntry, Payout
from referrals.models import Referral

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

pytestmark = pytest.mark.django_db(transaction=True)  # the seed commits, as `make run` does


@pytest.fixture
def demo(network):
    call_command("seed_demo", json=True)


def _client(client, email):
    client.force_login(Membership.objects.get(user__email=email).user)
    return client


def test_every_won_demo_deal_is_attributed_and_earns_its_commission(demo):
    won = list(Referral.objects.filter(status=Referral.WON))
    assert len(won) == 7  # six Acme deals and Wonka, all through Acme's pipeline
    for referral in won:
        snapshot = DealSnapshot.objects.get(referral=referral, outcome=DealSnapshot.WON)
        attribution = Attribution.objects.get(referral=referral)
        assert attribution.status == Attribution.AUTO_CONFIRMED, referral
        commission = Commission.objects.exclude(status__in=Commission.RETIRED).get(
            referral=referral)
        assert commission.earned_at == snapshot.closed_at
    assert Attribution.objects.count() == len(won)
    assert check_ledger() == []


def test_the_demo_happened_in_order(demo):
    now = timezone.now()
    for org in Organization.objects.filter(approved_at__isnull=False):
        assert org.applied_at < org.approved_at < now, org
        if org.first_referral_at:
            assert org.approved_at < org.first_referral_at, org
    for referral in Referral.objects.exclude(status=Referral.DRAFT):
        assert referral.created_at <= referral.submitted_at < now, referral
        if referral.decided_at:
            assert referral.submitted_at < referral.decided_at < now, referral
        if referral.status == Referral.WON:
            assert referral.decided_at < referral.closed_at <= now, referral
    for commission in Commission.objects.select_related("payout"):
        assert commission.earned_at < commission.payable_at, commission
        if commission.status in (Commission.APPROVED, Commission.PAID):
            assert commission.payable_at < commission.decided_at < now, commission
        if commission.status == Commission.PAID:
            assert commission.decided_at < commission.payout.paid_at < now, commission
    assert not LedgerEntry.objects.filter(created_at__gt=now).exists()
    assert Payout.objects.get().status == Payout.PAID


def test_seeding_again_changes_nothing(demo):
    counts = (Referral.objects.count(), Commission.objects.count(),
              LedgerEntry.objects.count(), Payout.objects.count())
    call_command("seed_demo", json=True)
    assert (Referral.objects.count(), Commission.objects.count(),
            LedgerEntry.objects.count(), Payout.objects.count()) == counts


def test_the_partners_statement_shows_deals_and_money_not_ids(demo, client):
    owner = _client(client, "owner@brightpath.example")
    year = Payout.objects.get().paid_at.year
    page = owner.get(reverse("payouts:annual_statement", args=[year])).content.decode()
    assert "Umbrella Health" in page
    assert "-$3,200.00" in page and "$-" not in page
    assert not UUID.search(page)


def test_a_won_demo_referral_shows_its_attribution_and_commission(demo, client):
    wonka = Referral.objects.get(company_name="Wonka Industries")
    keystone = _client(client, "owner@keystone.example")
    card = keystone.get(reverse("payouts:referral_money", args=[wonka.public_id]))
    text = re.sub(r"\s+", " ", card.content.decode())
    assert "Credited to this referral" in text
    assert "$7,600.00" in text and "Pending" in text
