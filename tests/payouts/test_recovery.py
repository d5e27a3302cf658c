"""Taking money back from a partner that left the network, through lost answers, connection
errors and refusals: each transfer is read first (what Stripe already reversed is recorded
before anything more is reversed) and each reversal keyed on the transfer's state. The basic
cases are in test_transfers.py (recovery from a partner that left)."""

import pytest
import stripe

from accounts.errors import ServiceError
from accounts.models import AuditEvent, Organization
from payouts import recovery
from payouts.models import LedgerEntry, Payout
from tests.fakes.stripe import SimulatedCrash
from tests.payouts.conftest import register_and_accept, win
from tests.payouts.test_transfers import (
    build_batch,
    complete_tax_profile,
    connect_partner,
    pay_then_claw_back_and_suspend,
    send,
)

pytestmark = pytest.mark.django_db

REVERSALS = r"/v1/transfers/\w+/reversals"


@pytest.fixture
def account(world, fake_stripe):
    """Brightpath can be paid: onboarded with Stripe and a complete tax profile."""
    complete_tax_profile(world.partner)
    return connect_partner(world, fake_stripe)


@pytest.fixture
def departed(world, won, account, run_on_commit):
    """Brightpath was paid 1,000.00, then the deal was lost (it owes 1,000.00), and it was
    suspended. Returns its payout."""
    return pay_then_claw_back_and_suspend(world, won, build_batch(world, [won]), run_on_commit)


def recover(world):
    return recovery.recover_by_reversal(world.member("operator", "finance"), world.partner,
                                         "USD")


def reversal_posts(fake_stripe):
    return [r for r in fake_stripe.requests
            if r["method"] == "POST" and r["path"].endswith("/reversals")]


def recovered(payout):
    return sorted(LedgerEntry.objects.filter(payout=payout, kind=LedgerEntry.RECOVERED)
                  .values_list("amount_minor", flat=True))


def set_status(partner, status):
    Organization.objects.filter(pk=partner.pk).update(status=status)
    partner.refresh_from_db()


# --- Lost answers, lost connections, refusals ---------------------------------------------

def test_a_lost_reversal_is_recorded_first_when_the_debt_changed_since(
        world, programs, won, account, fake_stripe, run_on_commit):
    second = win(world, register_and_accept(world, programs["acme"], amount_minor=200_000),
                 run_on_commit)
    third = win(world, register_and_accept(world, programs["acme"], amount_minor=100_000),
                run_on_commit)
    payout = send(build_batch(world, [won, second, third]), run_on_commit)
    assert (payout.status, payout.amount_minor) == (Payout.PAID, 130_000)
    win(world, second.referral, run_on_commit, stage="lost")  # owes 200.00
    set_status(world.partner, Organization.SUSPENDED)
    fake_stripe.crash_after("POST", REVERSALS)
    with pytest.raises(SimulatedCrash):  # Stripe reversed 200.00; our process never knew
        recover(world)
    assert fake_stripe.transfers[payout.stripe_transfer_id]["amount_reversed"] == 20_000
    assert Payout.objects.get(pk=payout.pk).reversed_minor == 0
    win(world, third.referral, run_on_commit, stage="lost")  # owes 300.00 by our books now

    result = recover(world)

    transfer = fake_stripe.transfers[payout.stripe_transfer_id]
    assert transfer["amount_reversed"] == 30_000  # 200.00 found, 100.00 reversed: not 500.00
    assert [r["amount"] for r in transfer["reversals"]["data"]] == [10_000, 20_000]
    payout.refresh_from_db()
    assert payout.reversed_minor == 30_000 and recovered(payout) == [10_000, 20_000]
    assert recovery.partner_debt(world.partner, "USD") == 0
    assert result.recovered_minor == 30_000
    assert reversal_posts(fake_stripe)[-1]["headers"]["Idempotency-Key"] == \
        f"recover-{payout.public_id}-after-20000"


def test_a_lost_answer_with_the_same_debt_is_recorded_without_a_second_reversal(
        world, departed, fake_stripe):
    payout = departed
    fake_stripe.crash_after("POST", REVERSALS)
    with pytest.raises(SimulatedCrash):
        recover(world)
    result = recover(world)
    assert result.recovered_minor == 100_000
    assert len(reversal_posts(fake_stripe)) == 1
    assert fake_stripe.transfers[payout.stripe_transfer_id]["reversals"]["total_count"] == 1
    assert Payout.objects.get(pk=payout.pk).status == Payout.REVERSED
    assert recovered(payout) == [100_000]


def test_a_lost_connection_says_stripe_could_not_be_reached_and_a_retry_reverses_once(
        world, departed, fake_stripe):
    payout = departed
    fake_stripe.crash_after("POST", REVERSALS, exc=stripe.APIConnectionError(
        "Request timed out"))
    with pytest.raises(ServiceError) as lost:
        recover(world)
    assert "could not be reached" in lost.value.message
    assert "refused" not in lost.value.message
    failed = AuditEvent.objects.get(action="payout.reversal_failed")
    assert failed.after["transient"] is True
    recover(world)
    assert fake_stripe.transfers[payout.stripe_transfer_id]["reversals"]["total_count"] == 1
    assert Payout.objects.get(pk=payout.pk).status == Payout.REVERSED
    assert recovered(payout) == [100_000]


def test_a_server_error_is_not_called_a_refusal(world, departed, fake_stripe):
    fake_stripe.fail(503, method="POST", path=REVERSALS)
    with pytest.raises(ServiceError, match="could not be reached"):
        recover(world)
    assert fake_stripe.transfers[departed.stripe_transfer_id]["amount_reversed"] == 0
    assert recovered(departed) == []


def test_a_refusal_says_refused_and_a_retry_after_the_cause_is_fixed_goes_through(
        world, departed, account, fake_stripe):
    payout = departed
    held = fake_stripe.account_balances[account.stripe_account_id]
    held["usd"] = 0  # the partner already paid the money out to its bank
    with pytest.raises(ServiceError, match="Stripe refused the reversal: Insufficient funds"):
        recover(world)
    held["usd"] = 100_000
    result = recover(world)  # the refusal Stripe saved under the first key is not replayed
    assert result.recovered_minor == 100_000
    first, second = (r["headers"]["Idempotency-Key"] for r in reversal_posts(fake_stripe))
    assert (first, second) == (f"recover-{payout.public_id}-after-0",
                               f"recover-{payout.public_id}-after-0-2")


def test_a_failed_transfer_lookup_reverses_nothing(world, departed, fake_stripe):
    fake_stripe.fail(500, method="GET", path=r"/v1/transfers/\w+")
    with pytest.raises(ServiceError, match="could not be reached"):
        recover(world)
    assert not reversal_posts(fake_stripe)
