"""Commissions follow attributions; money moves only as ledger entries."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, transaction
from django.utils import timezone

from accounts import roles
from accounts.errors import PermissionDenied, ServiceError
from accounts.models import Notification
from attribution.decisions import reassign_attribution
from payouts import ledger
from payouts.approvals import approve_commissions, reject_commission
from payouts.consistency import check_ledger
from payouts.models import Balance, Commission, LedgerEntry, Payout, PayoutBatch
from payouts.plans import commission_for, percent_of
from payouts.tasks import release_commissions
from tests.payouts.conftest import live_commission, register_and_accept, set_plan, win

USD = "USD"


def balance(partner, currency=USD) -> int:
    row = Balance.objects.filter(partner=partner, currency=currency).first()
    return row.amount_minor if row else 0


def kinds(commission) -> list[tuple[str, int]]:
    return sorted(LedgerEntry.objects.filter(commission=commission)
                  .values_list("kind", "amount_minor"))


def pay(world, commission) -> Payout:
    """What the batch sender does once Stripe confirmed the transfer (tests/payouts/
    test_transfers.py drives the real thing through the fake Stripe)."""
    operator = world.member("operator", "finance")
    with transaction.atomic():
        batch = PayoutBatch.objects.create(network=world.network, period_end=timezone.now(),
                                           status=PayoutBatch.SENT, created_by=operator.user)
        payout = Payout.objects.create(
            batch=batch, network=world.network, partner=commission.partner,
            currency=commission.currency, gross_minor=commission.amount_minor,
            amount_minor=commission.amount_minor, commission_count=1, status=Payout.PAID,
            stripe_transfer_id="tr_test", paid_at=timezone.now())
        Commission.objects.filter(pk=commission.pk).update(status=Commission.PAID,
                                                           payout=payout)
        ledger.post([LedgerEntry(network=world.network, partner=commission.partner,
                                 currency=commission.currency, kind=LedgerEntry.PAID,
                                 amount_minor=-commission.amount_minor, payout=payout)])
    commission.refresh_from_db()
    return payout


# --- Plans -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("amount", "rate_bp", "expected"), [
    (1_000_000, 1000, 100_000),  # 10 % of 10,000.00
    (12_345, 1000, 1_235),  # 1,234.5 cents rounds half up
    (12_344, 1000, 1_234),
    (1, 1, 0),  # 0.0001 cent rounds to nothing
    (5_000, 5_000, 2_500),
    (99_999_999_999, 10_000, 99_999_999_999),  # 100 %, no float on the way
])
def test_percent_is_integer_basis_point_arithmetic(amount, rate_bp, expected):
    assert percent_of(amount, rate_bp) == expected


def test_a_percent_deal_earns_its_share(won):
    assert (won.amount_minor, won.currency, won.status) == (100_000, USD, Commission.PENDING)
    assert won.basis["rate_bp"] == 1000 and won.basis["deal_amount_minor"] == 1_000_000
    assert kinds(won) == [("earned", 100_000)]
    assert balance(won.partner) == 100_000


def test_a_flat_plan_pays_the_same_whatever_the_amount(world, programs, pipeline,
                                                       run_on_commit):
    set_plan(world, programs["acme"], kind="flat", rate_bp=None, flat_minor=25_000)
    small = win(world, register_and_accept(world, programs["acme"], amount_minor=100),
                run_on_commit)
    large = win(world, register_and_accept(world, programs["acme"], amount_minor=10**9),
                run_on_commit)
    assert small.amount_minor == large.amount_minor == 25_000


@pytest.mark.parametrize(("tier", "expected"), [
    ("registered", 50_000), ("silver", 80_000), ("gold", 120_000),
    ("platinum", 50_000),  # no rate for platinum in this plan: the Registered rate applies
])
def test_a_tiered_plan_pays_by_the_partner_tier_on_its_enrolment(world, programs, pipeline,
                                                                 run_on_commit, tier,
                                                                 expected):
    set_plan(world, programs["acme"], kind="tiered", rate_bp=None,
             tier_rates_bp={"registered": 500, "silver": 800, "gold": 1200})
    programs["acme"].enrolments.filter(partner=world.partner).update(tier=tier)
    commission = win(world, register_and_accept(world, programs["acme"]), run_on_commit)
    assert commission.amount_minor == expected


def test_a_cap_limits_each_deal(world, programs, pipeline, run_on_commit):
    set_plan(world, programs["acme"], cap_minor=60_000)
    capped = win(world, register_and_accept(world, programs["acme"], amount_minor=1_000_000),
                 run_on_commit)
    under = win(world, register_and_accept(world, programs["acme"], amount_minor=500_000),
                run_on_commit)
    assert capped.amount_minor == 60_000 and capped.basis["capped"] is True
    assert capped.basis["uncapped_minor"] == 100_000
    assert under.amount_minor == 50_000 and "capped" not in under.basis


def test_a_deal_in_another_currency_earns_nothing_rather_than_a_guess(world, programs, plan):
    earned = commission_for(plan, 1_000_000, "EUR")
    assert earned.amount_minor == 0
    assert "EUR" in earned.basis["reason"]


def test_a_euro_plan_pays_euro_deals_and_keeps_currencies_apart(world, programs, plan,
                                                                pipeline, run_on_commit):
    dollars = win(world, register_and_accept(world, programs["acme"]), run_on_commit)
    set_plan(world, programs["acme"], currency="EUR")
    euros = win(world, register_and_accept(world, programs["acme"], currency="EUR"),
                run_on_commit)
    assert (dollars.currency, euros.currency) == ("USD", "EUR")
    assert balance(world.partner, "USD") == 100_000
    assert balance(world.partner, "EUR") == 100_000


def test_a_plan_change_applies_to_deals_won_after_it(world, programs, plan, pipeline,
                                                     run_on_commit):
    before = win(world, register_and_accept(world, programs["acme"]), run_on_commit)
    newer = set_plan(world, programs["acme"], rate_bp=2000)
    assert newer.version == plan.version + 1
    after = win(world, register_and_accept(world, programs["acme"]), run_on_commit)
    assert (before.plan, before.amount_minor) == (plan, 100_000)
    assert (after.plan, after.amount_minor) == (newer, 200_000)
    # Re-syncing the earlier deal later keeps the version it was computed with.
    assert ledger.sync_commission(before.attribution_id) == before
    before.refresh_from_db()
    assert before.plan == plan and before.amount_minor == 100_000


def test_saving_the_same_terms_writes_no_new_version(world, programs, plan):
    again = set_plan(world, programs["acme"])
    assert again == plan
    assert programs["acme"].commission_plans.count() == 1


@pytest.mark.parametrize("terms", [
    {"kind": "percent", "rate_bp": None}, {"kind": "percent", "rate_bp": 10_001},
    {"kind": "flat", "rate_bp": None, "flat_minor": None},
    {"kind": "tiered", "tier_rates_bp": {"gold": 1000}},
    {"kind": "tiered", "tier_rates_bp": {"registered": 500, "diamond": 900}},
    {"cap_minor": 0}, {"holding_days": -1}, {"currency": "US"}, {"kind": "bonus"},
])
def test_an_incoherent_plan_is_refused_with_a_message(world, programs, terms):
    with pytest.raises(ServiceError) as error:
        set_plan(world, programs["acme"], **terms)
    assert error.value.message


def test_only_the_program_s_vendor_admin_may_change_the_plan(world, programs):
    from payouts.plans import save_plan
    from tests.payouts.conftest import PLAN

    for member in (world.member("vendor", "finance"), world.member("partner", "owner"),
                   world.others["vendor2_admin"], world.member("operator", "admin")):
        with pytest.raises(PermissionDenied):
            save_plan(member, programs["acme"], dict(PLAN))


def test_no_plan_no_commission(world, programs, pipeline, run_on_commit):
    referral = register_and_accept(world, programs["acme"])
    assert win(world, referral, run_on_commit) is None
    assert not LedgerEntry.objects.exists()


# --- Holding period and approval ----------------------------------------------------------------

def test_the_holding_period_releases_commissions_for_approval(world, won):
    assert won.payable_at == won.earned_at + timedelta(days=30)
    assert release_commissions() == 0  # nothing due yet
    Commission.objects.filter(pk=won.pk).update(payable_at=timezone.now() - timedelta(hours=1))
    assert release_commissions() == 1
    assert release_commissions() == 0  # safe to run twice
    won.refresh_from_db()
    assert won.status == Commission.PAYABLE
    finance = world.member("vendor", "finance").user
    assert Notification.objects.filter(user=finance, kind="commissions_payable").exists()
    assert not Notification.objects.filter(user=world.member("partner", "owner").user,
                                           kind="commissions_payable").exists()


def test_a_zero_holding_period_is_payable_at_once(world, programs, pipeline, run_on_commit):
    set_plan(world, programs["acme"], holding_days=0)
    commission = win(world, register_and_accept(world, programs["acme"]), run_on_commit)
    assert commission.status == Commission.PAYABLE


def payable(commission):
    Commission.objects.filter(pk=commission.pk).update(status=Commission.PAYABLE)
    commission.refresh_from_db()
    return commission


def test_vendor_finance_approves_payable_commissions_in_bulk(world, programs, won, pipeline,
                                                             run_on_commit):
    other = win(world, register_and_accept(world, programs["acme"]), run_on_commit)
    pending = win(world, register_and_accept(world, programs["acme"]), run_on_commit)
    payable(won), payable(other)
    count = approve_commissions(world.member("vendor", "finance"),
                                [won.public_id, other.public_id, pending.public_id])
    assert count == 2
    statuses = dict(Commission.objects.values_list("pk", "status"))
    assert statuses[won.pk] == statuses[other.pk] == Commission.APPROVED
    assert statuses[pending.pk] == Commission.PENDING  # still holding: not approvable
    won.refresh_from_db()
    assert won.decided_by == world.member("vendor", "finance").user
    assert balance(world.partner) == 300_000  # approval moves no money


@pytest.mark.parametrize("who", ["partner.owner", "partner.finance", "vendor.admin",
                                 "operator.finance", "operator.admin"])
def test_approval_by_anyone_but_the_vendor_s_finance_is_refused(world, won, who):
    kind, role = who.split(".")
    payable(won)
    with pytest.raises(PermissionDenied):
        approve_commissions(world.member(kind, role), [won.public_id])
    won.refresh_from_db()
    assert won.status == Commission.PAYABLE


def test_another_vendor_s_finance_cannot_approve_our_commissions(world, won):
    from tests.accounts.factories import MembershipFactory

    payable(won)
    other_finance = MembershipFactory(organization=world.vendor2, role="finance")
    assert approve_commissions(other_finance, [won.public_id]) == 0
    won.refresh_from_db()
    assert won.status == Commission.PAYABLE


def test_rejection_needs_a_reason_and_takes_the_money_back(world, won,
                                                           django_capture_on_commit_callbacks):
    finance = world.member("vendor", "finance")
    payable(won)
    with pytest.raises(ServiceError):
        reject_commission(finance, won, "  ")
    with django_capture_on_commit_callbacks(execute=True):
        reject_commission(finance, won, "Duplicate of an order already paid")
    won.refresh_from_db()
    assert (won.status, won.rejection_reason) == (Commission.REJECTED,
                                                  "Duplicate of an order already paid")
    assert kinds(won) == [("earned", 100_000), ("rejected", -100_000)]
    assert balance(world.partner) == 0
    assert Notification.objects.filter(user=world.member("partner", "owner").user,
                                       kind="commission_rejected").exists()
    # A re-sync keeps the rejection: it is a person's decision on this commission.
    assert ledger.sync_commission(won.attribution_id) == won
    assert Commission.objects.count() == 1
    assert check_ledger() == []


# --- Reversals and clawbacks --------------------------------------------------------------------

def test_a_deal_lost_before_payment_cancels_the_commission(world, won, run_on_commit):
    win(world, won.referral, run_on_commit, stage="lost")
    won.refresh_from_db()
    assert (won.status, won.retired_reason) == (Commission.CANCELLED, "deal lost")
    assert kinds(won) == [("cancelled", -100_000), ("earned", 100_000)]
    assert balance(world.partner) == 0
    assert live_commission(won.referral) is None
    assert check_ledger() == []


def test_a_deal_lost_after_payment_is_clawed_back_and_owed(world, won, run_on_commit):
    pay(world, won)
    assert balance(world.partner) == 0
    win(world, won.referral, run_on_commit, stage="lost")
    won.refresh_from_db()
    assert won.status == Commission.CLAWED_BACK
    assert ("clawback", -100_000) in kinds(won)
    assert balance(world.partner) == -100_000  # the partner owes it; the next payout nets it
    assert check_ledger() == []


def test_a_reopened_deal_inside_the_window_reverses_and_a_new_win_earns_again(
        world, won, run_on_commit):
    win(world, won.referral, run_on_commit, stage="proposal")
    won.refresh_from_db()
    assert (won.status, won.retired_reason) == (Commission.CANCELLED, "deal reopened")
    again = win(world, won.referral, run_on_commit)
    assert again is not None and again.pk != won.pk
    assert again.amount_minor == 100_000 and balance(world.partner) == 100_000


def test_after_the_clawback_window_a_lost_deal_keeps_its_commission(world, won,
                                                                    run_on_commit):
    pay(world, won)
    Commission.objects.filter(pk=won.pk).update(
        clawback_until=timezone.now() - timedelta(days=1))
    win(world, won.referral, run_on_commit, stage="lost")
    won.refresh_from_db()
    assert won.status == Commission.PAID
    assert balance(world.partner) == 0


def test_a_refund_lowering_the_amount_replaces_the_commission(world, won, run_on_commit):
    referral = won.referral
    referral.amount_minor = 400_000
    referral.save(update_fields=["amount_minor"])
    lower = win(world, referral, run_on_commit)
    won.refresh_from_db()
    assert (won.status, won.retired_reason) == (Commission.CANCELLED, "deal amount changed")
    assert lower.amount_minor == 40_000
    assert balance(world.partner) == 40_000
    assert check_ledger() == []


def test_an_overturn_moves_the_commission_to_the_other_partner(world, programs, plan,
                                                               pipeline, run_on_commit):
    from referrals import services

    theirs = register_and_accept(world, programs["acme"], partner=world.partner2,
                                 company_name="Initech", website="https://initech.com",
                                 days_ago=20)
    # Summit's protection lapsed before Brightpath registered the account again.
    assert services.expire_stale_registrations(now=theirs.protected_until) == 1
    ours = register_and_accept(world, programs["acme"], company_name="Initech",
                               website="https://initech.com", days_ago=5)
    commission = win(world, ours, run_on_commit)
    assert commission.partner == world.partner
    pay(world, commission)
    with run_on_commit():
        reassign_attribution(world.member("operator", "admin"), commission.attribution,
                             str(theirs.public_id), "The other partner registered it first")
    commission.refresh_from_db()
    assert commission.status == Commission.CLAWED_BACK
    assert commission.retired_reason == "attribution changed"
    moved = live_commission(theirs)
    assert moved.partner == world.partner2 and moved.amount_minor == 100_000
    assert balance(world.partner) == -100_000
    assert balance(world.partner2) == 100_000
    assert check_ledger() == []


def test_an_overturn_applies_even_after_the_clawback_window(world, programs, plan, pipeline,
                                                            run_on_commit):
    referral = register_and_accept(world, programs["acme"])
    commission = win(world, referral, run_on_commit)
    Commission.objects.filter(pk=commission.pk).update(
        clawback_until=timezone.now() - timedelta(days=1))
    with run_on_commit():
        reassign_attribution(world.member("operator", "admin"), commission.attribution, None,
                             "Not a partner deal")
    commission.refresh_from_db()
    assert commission.status == Commission.CANCELLED
    assert balance(world.partner) == 0


def test_syncing_again_changes_nothing(world, won):
    for _ in range(3):
        assert ledger.sync_commission(won.attribution_id) == won
    assert Commission.objects.count() == 1
    assert LedgerEntry.objects.count() == 1


def test_a_fuzzy_match_waiting_for_review_earns_nothing_until_confirmed(
        world, programs, plan, pipeline, run_on_commit):
    from attribution.decisions import confirm_attribution
    from attribution.models import Attribution
    from integrations.inbound import ingest_change
    from integrations.providers.base import DealChange

    register_and_accept(world, programs["acme"], company_name="Initech Software",
                        website="https://initech-software.com")
    with run_on_commit():
        ingest_change(pipeline, DealChange(
            external_deal_id="CRM-9", version="1", stage="won", currency="USD",
            amount_minor=1_000_000, account_name="Initech Softwares",
            account_domain="initech-sw.example", deal_created_at=timezone.now(),
            closed_at=timezone.now()))
    attribution = Attribution.objects.get(external_deal_id="CRM-9")
    assert attribution.status == Attribution.NEEDS_REVIEW
    assert not Commission.objects.exists()
    with run_on_commit():
        confirm_attribution(world.member("vendor", "partnerships"), attribution)
    assert Commission.objects.get(attribution=attribution).amount_minor == 100_000


# --- The ledger itself ------------------------------------------------------------------------

def test_ledger_entries_cannot_be_changed_or_deleted(won):
    entry = LedgerEntry.objects.get(commission=won)
    with pytest.raises(ValueError):
        entry.save()
    with pytest.raises(DatabaseError), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).update(amount_minor=1)
    with pytest.raises(DatabaseError), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).delete()


def test_the_consistency_check_passes_on_a_busy_ledger(world, programs, won, run_on_commit):
    other = win(world, register_and_accept(world, programs["acme"]), run_on_commit)
    pay(world, other)
    win(world, other.referral, run_on_commit, stage="lost")
    out = StringIO()
    call_command("check_ledger", stdout=out)
    assert "consistent" in out.getvalue()


def test_the_consistency_check_finds_a_balance_that_does_not_add_up(world, won):
    Balance.objects.filter(partner=world.partner).update(amount_minor=99)
    problems = check_ledger()
    assert [p.kind for p in problems] == ["balance"]
    with pytest.raises(CommandError):
        call_command("check_ledger", stdout=StringIO(), stderr=StringIO())


def test_the_consistency_check_finds_a_commission_whose_entries_disagree(world, won):
    Commission.objects.filter(pk=won.pk).update(status=Commission.CANCELLED)
    assert [p.kind for p in check_ledger()] == ["commission"]


def test_the_consistency_check_finds_a_paid_payout_without_its_entry(world, won):
    payout = pay(world, won)
    Payout.objects.filter(pk=payout.pk).update(amount_minor=1)
    assert [p.kind for p in check_ledger()] == ["payout"]


# --- Who sees which commission ------------------------------------------------------------------

SEES = {("partner", "owner"), ("partner", "finance"), ("vendor", "admin"),
        ("vendor", "finance"), ("operator", "admin"), ("operator", "finance"),
        ("operator", "auditor")}


@pytest.mark.parametrize(("kind", "role"), list(roles.ROLES), ids=lambda v: v)
def test_commissions_visible_to_each_role(world, won, kind, role):
    visible = set(Commission.objects.visible_to(world.member(kind, role)))
    assert visible == ({won} if (kind, role) in SEES else set())


def test_commissions_stay_inside_their_partner_vendor_and_network(world, won):
    for name in ("partner2_owner", "vendor2_admin", "foreign_owner", "foreign_vendor_admin",
                 "pending_owner"):
        assert not Commission.objects.visible_to(world.others[name]).exists()
        assert not LedgerEntry.objects.visible_to(world.others[name]).exists()
    assert not LedgerEntry.objects.visible_to(world.member("vendor", "finance")).exists()
