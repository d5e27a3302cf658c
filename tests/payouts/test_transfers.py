"""Sending payouts through the real stripe SDK to the fake Stripe: once and only once, through
crashes, timeouts, transient and permanent errors; what finance can do with a failed payout;
and taking money back from a partner that left."""

from datetime import date, timedelta

import pytest
import stripe
from django.utils import timezone

from accounts.errors import PermissionDenied, ServiceError
from accounts.models import AuditEvent, Notification, Organization
from payouts import recovery, tasks, transfers
from payouts.models import (
    Balance,
    Commission,
    LedgerEntry,
    Payout,
    PayoutAccount,
    PayoutBatch,
    TaxProfile,
)
from tests.fakes.stripe import SimulatedCrash
from tests.payouts.conftest import register_and_accept, win

pytestmark = pytest.mark.django_db


# --- Helpers (also used by the webhook tests) ---------------------------------------------

def connect_partner(world, fake_stripe, partner=None, *, ready=True) -> PayoutAccount:
    """A Stripe connected account (onboarded when `ready`) and its PayoutAccount row."""
    partner = partner or world.partner
    account = fake_stripe.add_account(country="US", metadata={"partner_id":
                                                              str(partner.public_id)})
    if ready:
        fake_stripe.complete_onboarding(account["id"])
    return PayoutAccount.objects.create(
        partner=partner, network=partner.network, stripe_account_id=account["id"],
        country="US", default_currency="USD", details_submitted=ready, payouts_enabled=ready,
        transfers_active=ready, requirements_due=[] if ready else ["external_account"])


def complete_tax_profile(partner) -> TaxProfile:
    return TaxProfile.objects.create(
        partner=partner, network=partner.network, country="US", entity_type="llc",
        us_person=True, form=TaxProfile.W9, form_status="received",
        form_signed_on=date.today() - timedelta(days=30), legal_name=f"{partner.name} LLC",
        address_line1="1 Main Street", city="Austin", region="TX", postal_code="78701")


def build_batch(world, commissions, *, status=PayoutBatch.SENDING, offset=0) -> Payout:
    """What the batch builder makes: an approved batch, one ready payout holding the
    approved commissions."""
    finance, admin = world.member("operator", "finance"), world.member("operator", "admin")
    batch = PayoutBatch.objects.create(
        network=world.network, period_end=date.today(), status=status,
        created_by=finance.user, approved_by=admin.user, approved_at=timezone.now())
    first = commissions[0]
    gross = sum(c.amount_minor for c in commissions)
    payout = Payout.objects.create(
        batch=batch, network=world.network, partner=first.partner, currency=first.currency,
        gross_minor=gross, offset_minor=offset, amount_minor=gross - offset,
        commission_count=len(commissions), status=Payout.READY)
    Commission.objects.filter(pk__in=[c.pk for c in commissions]).update(
        status=Commission.APPROVED, payout=payout)
    batch.payout_count, batch.totals = 1, {first.currency: gross - offset}
    batch.save(update_fields=["payout_count", "totals"])
    return payout


@pytest.fixture
def ready(world, fake_stripe):
    """Brightpath can be paid: onboarded with Stripe and a complete tax profile."""
    complete_tax_profile(world.partner)
    return connect_partner(world, fake_stripe)


@pytest.fixture
def payout(world, won, ready):
    """A 1,000.00 USD payout of the won deal's commission, its batch sending."""
    return build_batch(world, [won])


def send(payout_or_id, run_on_commit):
    with run_on_commit():
        tasks.send_payout.delay(getattr(payout_or_id, "pk", payout_or_id))
    return Payout.objects.get(pk=getattr(payout_or_id, "pk", payout_or_id))


def drive(payout, run_on_commit) -> tuple[Payout, list]:
    """Send the payout, then let time pass and run the sweep (the beat job) each time an
    automatic retry is due, until none is planned. Returns the payout and the waits between
    attempts in seconds (next_attempt_at - last_attempt_at)."""
    countdowns = []
    payout = send(payout, run_on_commit)
    for _ in range(transfers.SEND_MAX_RETRIES + 1):
        if payout.status != Payout.FAILED or payout.next_attempt_at is None:
            break
        countdowns.append((payout.next_attempt_at - payout.last_attempt_at).total_seconds())
        make_due(payout)
        with run_on_commit():
            tasks.sweep_stuck_payouts.delay()
        payout.refresh_from_db()
    return payout, countdowns


def make_due(payout):
    """Time passes: the planned automatic attempt is due."""
    Payout.objects.filter(pk=payout.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1))


def transfer_posts(fake_stripe):
    return [r for r in fake_stripe.requests
            if r["method"] == "POST" and r["path"] == "/v1/transfers"]


def paid_entries(payout):
    return LedgerEntry.objects.filter(payout=payout, kind=LedgerEntry.PAID)


# --- Sending ------------------------------------------------------------------------------

def test_an_approved_batch_sends_one_transfer_and_records_the_payout_paid(
        world, won, payout, ready, fake_stripe, run_on_commit):
    batch = payout.batch
    PayoutBatch.objects.filter(pk=batch.pk).update(status=PayoutBatch.APPROVED)
    with run_on_commit():
        tasks.send_batch.delay(batch.pk)
    payout.refresh_from_db()
    batch.refresh_from_db()
    assert payout.status == Payout.PAID and payout.paid_at is not None
    transfer = fake_stripe.transfers[payout.stripe_transfer_id]
    assert (transfer["amount"], transfer["currency"], transfer["destination"]) == (
        100_000, "usd", ready.stripe_account_id)
    assert transfer["transfer_group"] == batch.transfer_group
    assert transfer["metadata"] == {"payout_id": str(payout.public_id),
                                    "batch_id": str(batch.public_id),
                                    "partner_id": str(world.partner.public_id)}
    assert transfer_posts(fake_stripe)[0]["headers"]["Idempotency-Key"] == \
        payout.idempotency_key
    assert "Stripe-Account" not in transfer_posts(fake_stripe)[0]["headers"]
    assert payout.stripe_account_id == ready.stripe_account_id
    won.refresh_from_db()
    assert won.status == Commission.PAID
    entry = paid_entries(payout).get()
    assert (entry.amount_minor, entry.currency, entry.partner) == (-100_000, "USD",
                                                                   world.partner)
    assert Balance.objects.get(partner=world.partner, currency="USD").amount_minor == 0
    assert (batch.status, batch.sent_at is not None) == (PayoutBatch.SENT, True)
    owner = world.member("partner", "owner").user
    assert Notification.objects.filter(user=owner, kind="payout_sent",
                                       title__contains="$1,000.00").exists()
    assert Notification.objects.filter(user=world.member("operator", "finance").user,
                                       kind="payout_batch").exists()


def test_sending_twice_makes_one_transfer(payout, fake_stripe, run_on_commit):
    send(payout, run_on_commit)
    send(payout, run_on_commit)
    with run_on_commit():
        tasks.send_batch.delay(payout.batch_id)
        tasks.sweep_stuck_payouts.delay()
    assert len(fake_stripe.transfers) == 1
    assert len(transfer_posts(fake_stripe)) == 1
    assert paid_entries(payout).count() == 1
    assert Payout.objects.get(pk=payout.pk).attempts == 1


def test_a_crash_after_stripe_answered_leaves_it_sending_and_the_sweep_adopts_the_transfer(
        payout, fake_stripe, run_on_commit):
    fake_stripe.crash_after("POST", "/v1/transfers")
    with pytest.raises(SimulatedCrash):
        send(payout, run_on_commit)
    payout.refresh_from_db()
    assert payout.status == Payout.SENDING and len(fake_stripe.transfers) == 1
    # Not stuck yet: the sweep leaves a fresh claim alone.
    with run_on_commit():
        tasks.sweep_stuck_payouts.delay()
    assert Payout.objects.get(pk=payout.pk).status == Payout.SENDING
    Payout.objects.filter(pk=payout.pk).update(
        last_attempt_at=timezone.now() - timedelta(minutes=11))
    with run_on_commit():
        tasks.sweep_stuck_payouts.delay()
    payout.refresh_from_db()
    (transfer_id,) = fake_stripe.transfers
    assert (payout.status, payout.stripe_transfer_id, payout.attempts) == (
        Payout.PAID, transfer_id, 2)
    assert len(transfer_posts(fake_stripe)) == 1  # found in the transfer group, not re-sent
    assert paid_entries(payout).count() == 1
    assert PayoutBatch.objects.get(pk=payout.batch_id).status == PayoutBatch.SENT


def test_a_retry_after_the_idempotency_window_still_finds_the_transfer(
        payout, fake_stripe, run_on_commit):
    fake_stripe.crash_after("POST", "/v1/transfers")
    with pytest.raises(SimulatedCrash):
        send(payout, run_on_commit)
    fake_stripe._idempotency.clear()  # 24 hours later Stripe has forgotten the key
    Payout.objects.filter(pk=payout.pk).update(
        last_attempt_at=timezone.now() - timedelta(days=1))
    payout = send(payout, run_on_commit)
    assert payout.status == Payout.PAID
    assert len(fake_stripe.transfers) == 1


def test_a_timeout_is_retried_and_the_transfer_stripe_made_is_adopted(
        payout, fake_stripe, run_on_commit):
    fake_stripe.crash_after("POST", "/v1/transfers",
                            exc=stripe.APIConnectionError("Read timed out.", should_retry=True))
    payout, countdowns = drive(payout, run_on_commit)
    assert countdowns == [30]
    assert payout.status == Payout.PAID and payout.attempts == 2
    assert len(fake_stripe.transfers) == 1 and len(transfer_posts(fake_stripe)) == 1
    failed = AuditEvent.objects.get(action="payout.failed", target_id=str(payout.public_id))
    assert failed.after["transient"] is True and failed.after["code"] == "connection_error"


def test_a_transient_error_is_retried_with_the_same_key_and_then_succeeds(
        payout, fake_stripe, run_on_commit):
    fake_stripe.fail(503, path="/v1/transfers", method="POST")
    payout = send(payout, run_on_commit)
    assert (payout.status, payout.failure_code) == (Payout.FAILED, "api_error")
    payout, _ = drive(payout, run_on_commit)  # the retry
    assert payout.status == Payout.PAID and payout.attempts == 2
    posts = transfer_posts(fake_stripe)
    assert [p["status"] for p in posts] == [503, 200]
    assert {p["headers"]["Idempotency-Key"] for p in posts} == {payout.idempotency_key}
    assert payout.failure_message == ""


def test_rate_limits_and_lock_timeouts_are_transient(payout, fake_stripe, run_on_commit):
    fake_stripe.fail(429, path="/v1/transfers", method="POST")
    fake_stripe.lock_timeout(path="/v1/transfers", method="POST")
    payout, countdowns = drive(payout, run_on_commit)
    assert countdowns == [30, 60]
    assert payout.status == Payout.PAID and payout.attempts == 3
    assert len(fake_stripe.transfers) == 1


def test_when_transient_errors_do_not_stop_the_payout_fails_visibly_and_can_be_retried(
        world, payout, fake_stripe, run_on_commit):
    fake_stripe.fail(500, path="/v1/transfers", method="POST", times=None)
    payout, countdowns = drive(payout, run_on_commit)
    assert countdowns == [30, 60, 120, 240, 480, 960]
    assert payout.status == Payout.FAILED and payout.next_attempt_at is None
    assert payout.attempts == transfers.SEND_MAX_RETRIES + 1
    assert payout.failure_message == "An unknown error occurred"
    assert PayoutBatch.objects.get(pk=payout.batch_id).status == PayoutBatch.FAILED
    fake_stripe.heal()
    with run_on_commit():
        transfers.retry_payout(world.member("operator", "finance"), payout)
    payout.refresh_from_db()
    assert payout.status == Payout.PAID and len(fake_stripe.transfers) == 1


def test_a_transient_failure_raises_nothing_and_plans_the_next_attempt(
        payout, fake_stripe, run_on_commit):
    """With eager Celery (the quickstart) a retry raised out of .delay() was swallowed by the
    robust on-commit callback and never came: the next attempt is now in the database."""
    fake_stripe.fail(503, path="/v1/transfers", method="POST")
    payout = send(payout, run_on_commit)  # raises nothing
    assert (payout.status, payout.failure_code, payout.attempts) == (
        Payout.FAILED, "api_error", 1)
    assert payout.next_attempt_at == payout.last_attempt_at + timedelta(seconds=30)
    assert PayoutBatch.objects.get(pk=payout.batch_id).status == PayoutBatch.SENDING


def test_the_sweep_sends_a_transient_failure_again_once_it_is_due(
        payout, fake_stripe, run_on_commit):
    fake_stripe.fail(503, path="/v1/transfers", method="POST")
    payout = send(payout, run_on_commit)
    with run_on_commit():
        tasks.sweep_stuck_payouts.delay()  # not due yet
    assert Payout.objects.get(pk=payout.pk).attempts == 1
    make_due(payout)
    with run_on_commit():
        tasks.sweep_stuck_payouts.delay()
    payout.refresh_from_db()
    assert (payout.status, payout.attempts, payout.next_attempt_at) == (Payout.PAID, 2, None)
    assert {p["headers"]["Idempotency-Key"] for p in transfer_posts(fake_stripe)} == {
        payout.idempotency_key}
    assert PayoutBatch.objects.get(pk=payout.batch_id).status == PayoutBatch.SENT


def test_a_stray_task_never_sends_a_failed_payout_before_its_time(
        payout, fake_stripe, run_on_commit):
    fake_stripe.fail(503, path="/v1/transfers", method="POST")
    payout = send(payout, run_on_commit)
    assert send(payout, run_on_commit).attempts == 1  # a duplicate delivery: not due
    fake_stripe.balance["usd"] = 0
    make_due(payout)
    payout = send(payout, run_on_commit)
    assert (payout.status, payout.failure_code, payout.next_attempt_at) == (
        Payout.FAILED, "balance_insufficient", None)
    fake_stripe.balance["usd"] = 500_000
    payout = send(payout, run_on_commit)  # a refusal waits for finance
    assert (payout.status, payout.attempts) == (Payout.FAILED, 2)
    assert not fake_stripe.transfers


def test_finance_can_retry_at_once_a_payout_waiting_for_its_automatic_retry(
        world, payout, fake_stripe, run_on_commit):
    fake_stripe.fail(503, path="/v1/transfers", method="POST")
    payout = send(payout, run_on_commit)
    with run_on_commit():
        transfers.retry_payout(world.member("operator", "finance"), payout)
    payout.refresh_from_db()
    assert (payout.status, payout.attempts, payout.next_attempt_at) == (Payout.PAID, 2, None)


def test_finance_retry_starts_a_new_round_of_automatic_retries(
        world, payout, fake_stripe, run_on_commit):
    fake_stripe.fail(500, path="/v1/transfers", method="POST", times=None)
    payout, _ = drive(payout, run_on_commit)
    assert payout.next_attempt_at is None  # the retries ran out
    with run_on_commit():
        transfers.retry_payout(world.member("operator", "finance"), payout)
    payout.refresh_from_db()
    assert payout.status == Payout.FAILED
    assert payout.next_attempt_at == payout.last_attempt_at + timedelta(seconds=30)
    fake_stripe.heal()
    payout, _ = drive(payout, run_on_commit)
    assert payout.status == Payout.PAID and len(fake_stripe.transfers) == 1


def test_the_sweep_starts_an_approved_batch_whose_send_task_was_lost(
        payout, fake_stripe, run_on_commit):
    PayoutBatch.objects.filter(pk=payout.batch_id).update(
        status=PayoutBatch.APPROVED, approved_at=timezone.now() - timedelta(minutes=11))
    with run_on_commit():
        tasks.sweep_stuck_payouts.delay()
    assert Payout.objects.get(pk=payout.pk).status == Payout.PAID
    assert PayoutBatch.objects.get(pk=payout.batch_id).status == PayoutBatch.SENT


def test_the_beat_runs_the_payout_sweep_every_minute(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["payout-sweep"]
    assert (entry["task"], entry["schedule"]) == ("payouts.tasks.sweep_stuck_payouts", 60)


def test_a_permanent_error_fails_with_stripes_message_until_finance_retries(
        world, payout, fake_stripe, run_on_commit):
    fake_stripe.balance["usd"] = 50_000
    payout = send(payout, run_on_commit)
    assert (payout.status, payout.attempts, payout.failure_code) == (
        Payout.FAILED, 1, "balance_insufficient")
    assert "insufficient available funds" in payout.failure_message
    assert not fake_stripe.transfers
    # The platform's balance is not the partner's business.
    assert not Notification.objects.filter(kind="payout_failed").exists()
    fake_stripe.balance["usd"] = 500_000
    with run_on_commit():
        transfers.retry_payout(world.member("operator", "admin"), payout)
    payout.refresh_from_db()
    assert payout.status == Payout.PAID and payout.failure_code == ""
    keys = [p["headers"]["Idempotency-Key"] for p in transfer_posts(fake_stripe)]
    # Stripe replays a refusal for its key, so the retry needs the next key generation.
    assert keys == [payout.idempotency_key, f"{payout.idempotency_key}-2"]
    assert len(fake_stripe.transfers) == 1


def test_an_account_that_cannot_receive_transfers_blocks_the_payout_with_a_clear_message(
        world, payout, ready, fake_stripe, run_on_commit):
    PayoutAccount.objects.filter(pk=ready.pk).update(
        transfers_active=False, disabled_reason="requirements.past_due",
        requirements_due=["external_account"])
    payout = send(payout, run_on_commit)
    assert (payout.status, payout.failure_code) == (Payout.FAILED, "account_not_ready")
    assert payout.failure_message == (
        "Brightpath's Stripe account cannot receive transfers yet: requirements.past_due "
        "(due: external_account).")
    assert not fake_stripe.requests  # nothing was asked of Stripe
    assert Notification.objects.filter(user=world.member("partner", "owner").user,
                                       kind="payout_failed").exists()


def test_a_partner_without_a_payout_account_is_not_sent(world, won, fake_stripe,
                                                         run_on_commit):
    complete_tax_profile(world.partner)
    payout = send(build_batch(world, [won]), run_on_commit)
    assert (payout.status, payout.failure_code) == (Payout.FAILED, "no_account")
    assert "has not connected a payout account" in payout.failure_message


def test_an_incomplete_tax_profile_blocks_the_payout(world, payout, fake_stripe, run_on_commit):
    TaxProfile.objects.filter(partner=world.partner).update(form_status="missing",
                                                            form_signed_on=None)
    payout = send(payout, run_on_commit)
    assert (payout.status, payout.failure_code) == (Payout.FAILED, "tax_profile")
    assert payout.failure_message.startswith("Brightpath's tax profile is incomplete:")
    assert not fake_stripe.transfers


@pytest.mark.parametrize("change", ["cancelled", "amount"])
def test_commissions_that_changed_since_the_batch_stop_the_payout(
        change, won, payout, fake_stripe, run_on_commit):
    if change == "cancelled":
        Commission.objects.filter(pk=won.pk).update(status=Commission.CANCELLED)
    else:
        Payout.objects.filter(pk=payout.pk).update(gross_minor=90_000)
    payout = send(payout, run_on_commit)
    assert (payout.status, payout.failure_code) == (Payout.FAILED, "commissions_changed")
    assert payout.failure_message == transfers.COMMISSIONS_CHANGED
    assert not fake_stripe.transfers


def test_an_offset_payout_transfers_the_net_amount(world, won, ready, fake_stripe,
                                                   run_on_commit):
    payout = send(build_batch(world, [won], offset=30_000), run_on_commit)
    assert payout.status == Payout.PAID
    assert fake_stripe.transfers[payout.stripe_transfer_id]["amount"] == 70_000
    assert paid_entries(payout).get().amount_minor == -70_000


def test_a_payout_of_a_cancelled_batch_is_never_sent(payout, fake_stripe, run_on_commit):
    PayoutBatch.objects.filter(pk=payout.batch_id).update(status=PayoutBatch.CANCELLED)
    assert send(payout, run_on_commit).status == Payout.READY
    assert not fake_stripe.requests


def test_without_stripe_configured_the_payout_fails_with_the_reason(payout, settings,
                                                                     run_on_commit):
    settings.STRIPE_API_KEY = ""
    payout = send(payout, run_on_commit)
    assert (payout.status, payout.failure_code) == (Payout.FAILED, "not_configured")
    assert "not configured" in payout.failure_message


# --- Finance: retry and cancel ------------------------------------------------------------

def test_only_payout_managers_retry_or_cancel(world, payout, fake_stripe):
    Payout.objects.filter(pk=payout.pk).update(status=Payout.FAILED)
    for kind, role in [("partner", "owner"), ("partner", "finance"), ("vendor", "finance"),
                       ("operator", "auditor")]:
        with pytest.raises(PermissionDenied):
            transfers.retry_payout(world.member(kind, role), payout)
        with pytest.raises(PermissionDenied):
            transfers.cancel_payout(world.member(kind, role), payout)


def test_only_a_failed_payout_is_retried(world, payout):
    with pytest.raises(ServiceError, match="Only a failed payout"):
        transfers.retry_payout(world.member("operator", "finance"), payout)


def test_cancelling_a_payout_releases_its_commissions_for_the_next_batch(
        world, won, payout, fake_stripe, run_on_commit):
    fake_stripe.balance["usd"] = 0
    payout = send(payout, run_on_commit)
    assert payout.status == Payout.FAILED
    cancelled = transfers.cancel_payout(world.member("operator", "finance"), payout)
    assert cancelled.status == Payout.CANCELLED
    won.refresh_from_db()
    assert (won.status, won.payout_id) == (Commission.APPROVED, None)
    assert AuditEvent.objects.filter(action="payout.cancelled",
                                     target_id=str(payout.public_id)).exists()
    with pytest.raises(ServiceError):
        transfers.cancel_payout(world.member("operator", "finance"), cancelled)


def test_cancelling_a_payout_that_stripe_did_pay_records_it_paid_instead(
        world, won, payout, fake_stripe):
    fake_stripe.crash_after("POST", "/v1/transfers",
                            exc=stripe.APIConnectionError("Read timed out.", should_retry=True))
    payout = transfers.send_payout(payout.pk)  # the automatic retry is not due yet
    assert payout.status == Payout.FAILED
    with pytest.raises(ServiceError, match="Stripe did make this transfer"):
        transfers.cancel_payout(world.member("operator", "finance"), payout)
    payout.refresh_from_db()
    won.refresh_from_db()
    assert payout.status == Payout.PAID and won.status == Commission.PAID
    assert won.payout_id == payout.pk


def test_the_sweep_sends_ready_payouts_whose_task_was_lost(payout, fake_stripe, run_on_commit):
    PayoutBatch.objects.filter(pk=payout.batch_id).update(
        approved_at=timezone.now() - timedelta(hours=1))
    with run_on_commit():
        tasks.sweep_stuck_payouts.delay()
    assert Payout.objects.get(pk=payout.pk).status == Payout.PAID


# --- Recovery from a partner that left ----------------------------------------------------

@pytest.fixture
def departed_owing(world, won, payout, fake_stripe, run_on_commit):
    return pay_then_claw_back_and_suspend(world, won, payout, run_on_commit)


def pay_then_claw_back_and_suspend(world, won, payout, run_on_commit) -> Payout:
    """Brightpath was paid 1,000.00, the deal was then lost (clawback: it owes 1,000.00), and
    the network suspended it."""
    payout = send(payout, run_on_commit)
    assert payout.status == Payout.PAID
    win(world, won.referral, run_on_commit, stage="lost")
    won.refresh_from_db()
    assert won.status == Commission.CLAWED_BACK
    Organization.objects.filter(pk=world.partner.pk).update(status=Organization.SUSPENDED)
    world.partner.refresh_from_db()
    return payout


def test_a_departed_partners_debt_is_recovered_by_reversing_its_transfer(
        world, departed_owing, fake_stripe):
    payout = departed_owing
    assert Balance.objects.get(partner=world.partner, currency="USD").amount_minor == -100_000
    result = recovery.recover_by_reversal(world.member("operator", "finance"),
                                           world.partner, "usd")
    assert (result.debt_minor, result.recovered_minor) == (100_000, 100_000)
    payout.refresh_from_db()
    assert (payout.status, payout.reversed_minor) == (Payout.REVERSED, 100_000)
    assert fake_stripe.transfers[payout.stripe_transfer_id]["amount_reversed"] == 100_000
    entry = LedgerEntry.objects.get(payout=payout, kind=LedgerEntry.RECOVERED)
    assert entry.amount_minor == 100_000
    assert Balance.objects.get(partner=world.partner, currency="USD").amount_minor == 0
    reversal_post = [r for r in fake_stripe.requests if r["path"].endswith("/reversals")][0]
    assert reversal_post["headers"]["Idempotency-Key"] == f"recover-{payout.public_id}-after-0"
    with pytest.raises(ServiceError, match="owes nothing"):
        recovery.recover_by_reversal(world.member("operator", "finance"), world.partner, "USD")


def test_only_what_is_owed_is_reversed_newest_transfer_first(world, programs, departed_owing,
                                                             fake_stripe, run_on_commit):
    # A second, later payout of 300.00 that is still due to be reversed first.
    Organization.objects.filter(pk=world.partner.pk).update(status=Organization.ACTIVE)
    referral = register_and_accept(world, programs["acme"], amount_minor=300_000)
    second = win(world, referral, run_on_commit)
    later = send(build_batch(world, [second]), run_on_commit)
    assert later.status == Payout.PAID
    Organization.objects.filter(pk=world.partner.pk).update(status=Organization.REJECTED)
    world.partner.refresh_from_db()
    result = recovery.recover_by_reversal(world.member("operator", "admin"), world.partner,
                                           "USD")
    assert result.recovered_minor == 100_000
    assert [(p.pk, amount) for p, amount, _ in result.reversals] == [
        (later.pk, 30_000), (departed_owing.pk, 70_000)]
    later.refresh_from_db()
    assert (later.status, later.reversed_minor) == (Payout.REVERSED, 30_000)
    first = Payout.objects.get(pk=departed_owing.pk)
    assert (first.status, first.reversed_minor) == (Payout.PAID, 70_000)


def test_an_active_partner_is_not_reversed(world, departed_owing, fake_stripe):
    Organization.objects.filter(pk=world.partner.pk).update(status=Organization.ACTIVE)
    world.partner.refresh_from_db()
    with pytest.raises(ServiceError, match="still active"):
        recovery.recover_by_reversal(world.member("operator", "finance"), world.partner, "USD")
    with pytest.raises(PermissionDenied):
        recovery.recover_by_reversal(world.member("partner", "owner"), world.partner, "USD")
    assert not [r for r in fake_stripe.requests if r["path"].endswith("/reversals")]
