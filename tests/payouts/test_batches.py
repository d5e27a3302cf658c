"""Payout batches: what goes into a batch (approved, released, unassigned commissions per partner
and currency, net of clawbacks), who is carried over and why, the two-person rule, cancelling,
two builds at once, and a query count that does not grow with the commissions; then building
and cancelling in Celery: the request checked at once, the task run on commit (and twice, and
after a crash), one build per network at a time, failed builds that say why, stuck batches
swept.

Commissions are written directly (with the attribution and deal they hang on) and their earned
entries posted through `payouts.ledger.post`, so balances are what production would hold."""

import threading
from datetime import UTC, date, datetime, timedelta
from itertools import count

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.errors import PermissionDenied, ServiceError
from accounts.models import AuditEvent, Membership, Notification
from attribution.models import Attribution, DealSnapshot
from payouts import batches, ledger, tasks
from payouts.models import (
    Commission,
    CommissionPlan,
    LedgerEntry,
    Payout,
    PayoutAccount,
    PayoutBatch,
    TaxProfile,
)
from tests.accounts.factories import MembershipFactory, OrganizationFactory
from tests.conftest import ALL_ROLES, ROLE_IDS

_deal = count(1)
_account = count(1)
MANAGERS = {("operator", "admin"), ("operator", "finance")}
YESTERDAY = (timezone.now() - timedelta(days=1)).astimezone(UTC).date()


# --- building blocks (also used by test_batch_pages.py) ------------------------------------

def make_plan(world, program, *, currency="USD", minimum=5000):
    version = CommissionPlan.objects.filter(program=program).count() + 1
    return CommissionPlan.objects.create(
        vendor=program.vendor, program=program, version=version, kind=CommissionPlan.FLAT,
        flat_minor=100_000, currency=currency, payout_minimum_minor=minimum)


def make_commissions(plan, partner, amounts, *, currency=None, status=Commission.APPROVED,
                     payable_at=None):
    """Commissions of `partner` under `plan`, one per amount, with their earned entries."""
    currency = currency or plan.currency
    payable_at = payable_at or timezone.now() - timedelta(days=2)
    vendor = plan.vendor
    numbers = [next(_deal) for _ in amounts]
    snapshots = DealSnapshot.objects.bulk_create([
        DealSnapshot(vendor=vendor, provider="test", external_deal_id=f"deal-{n}", version="1",
                     amount_minor=amount * 10, currency=currency, outcome=DealSnapshot.WON,
                     closed_at=payable_at - timedelta(days=30))
        for n, amount in zip(numbers, amounts, strict=True)])
    attributions = Attribution.objects.bulk_create([
        Attribution(network_id=vendor.network_id, vendor=vendor, provider="test",
                    external_deal_id=s.external_deal_id, snapshot=s, partner=partner,
                    rule="first_accepted", match="exact", status=Attribution.AUTO_CONFIRMED,
                    inputs_digest="test")
        for s in snapshots])
    rows = Commission.objects.bulk_create([
        Commission(network_id=vendor.network_id, vendor=vendor, partner=partner,
                   program=plan.program, plan=plan, attribution=a,
                   external_deal_id=a.external_deal_id, deal_name=f"Deal {a.external_deal_id}",
                   deal_amount_minor=amount * 10, amount_minor=amount, currency=currency,
                   earned_at=payable_at - timedelta(days=30), payable_at=payable_at,
                   clawback_until=payable_at + timedelta(days=60), status=status)
        for a, amount in zip(attributions, amounts, strict=True)])
    entries = [ledger.commission_entry(c, LedgerEntry.EARNED, c.amount_minor, "Commission earned")
               for c in rows]
    if status == Commission.REJECTED:
        entries += [ledger.commission_entry(c, LedgerEntry.REJECTED, -c.amount_minor, "No")
                    for c in rows]
    with transaction.atomic():
        ledger.post(entries)
    return rows


def make_debt(plan, partner, amount, *, currency=None):
    """A commission that was paid and then clawed back: the partner owes `amount`."""
    [commission] = make_commissions(plan, partner, [amount], currency=currency,
                                    status=Commission.CLAWED_BACK)
    with transaction.atomic():
        ledger.post([
            LedgerEntry(network_id=commission.network_id, partner=partner,
                        currency=commission.currency, amount_minor=-amount,
                        kind=LedgerEntry.PAID, memo="Paid in an earlier payout"),
            ledger.commission_entry(commission, LedgerEntry.CLAWBACK, -amount, "Clawed back"),
        ])
    return commission


def make_payable(partner, *, account=True, transfers=True, tax=True):
    """Give `partner` what it takes to be paid (or leave one thing out)."""
    if account:
        PayoutAccount.objects.create(
            partner=partner, network_id=partner.network_id,
            stripe_account_id=f"acct_test{next(_account)}", details_submitted=True,
            transfers_active=transfers, payouts_enabled=transfers)
    TaxProfile.objects.create(
        partner=partner, network_id=partner.network_id, country="US", entity_type="llc",
        us_person=True, form=TaxProfile.W9, form_status="received",
        form_signed_on=date(2024, 1, 5), legal_name=partner.name,
        address_line1="1 Main St" if tax else "", city="Springfield", postal_code="12345")


def finance(world):
    return world.member("operator", "finance")


def payouts_of(batch):
    return {(p.partner_id, p.currency): p for p in batch.payouts.all()}


@pytest.fixture
def acme(world, programs):
    return programs["acme"]


@pytest.fixture
def usd(world, acme):
    return make_plan(world, acme, currency="USD", minimum=5000)


@pytest.fixture
def payable(world):
    make_payable(world.partner)
    make_payable(world.partner2)
    return world


@pytest.fixture
def send_task(monkeypatch):
    """Stands in for payouts.tasks.send_batch (the transfers work): records what was queued."""
    from payouts import tasks

    queued = []

    class Task:
        @staticmethod
        def delay(batch_id):
            queued.append(batch_id)

    monkeypatch.setattr(tasks, "send_batch", Task, raising=False)
    return queued


# --- what goes in ----------------------------------------------------------------------------

def test_payouts_group_per_partner_and_currency_and_keep_currencies_apart(payable, acme, usd):
    world = payable
    eur = make_plan(world, acme, currency="EUR", minimum=5000)
    brightpath_usd = make_commissions(usd, world.partner, [10_000, 20_000, 30_000])
    brightpath_eur = make_commissions(eur, world.partner, [40_000, 50_000])
    summit_usd = make_commissions(usd, world.partner2, [70_000])

    batch = batches.build_batch(finance(world), YESTERDAY)

    rows = payouts_of(batch)
    assert {k: (p.gross_minor, p.amount_minor, p.commission_count, p.status)
            for k, p in rows.items()} == {
        (world.partner.pk, "USD"): (60_000, 60_000, 3, Payout.READY),
        (world.partner.pk, "EUR"): (90_000, 90_000, 2, Payout.READY),
        (world.partner2.pk, "USD"): (70_000, 70_000, 1, Payout.READY),
    }
    assert batch.totals == {"EUR": 90_000, "USD": 130_000}
    assert (batch.status, batch.payout_count, batch.carried_over_count) == (
        PayoutBatch.DRAFT, 3, 0)
    for commissions, key in ((brightpath_usd, (world.partner.pk, "USD")),
                             (brightpath_eur, (world.partner.pk, "EUR")),
                             (summit_usd, (world.partner2.pk, "USD"))):
        assert {c.payout_id for c in Commission.objects.filter(
            pk__in=[c.pk for c in commissions])} == {rows[key].pk}
    assert rows[(world.partner.pk, "USD")].stripe_account_id == (
        world.partner.payout_account.stripe_account_id)


def test_clawbacks_are_netted_off_the_partners_payout(payable, usd):
    world = payable
    make_debt(usd, world.partner, 30_000)
    make_commissions(usd, world.partner, [60_000, 40_000])
    make_commissions(usd, world.partner2, [50_000])

    batch = batches.build_batch(finance(world), YESTERDAY)

    mine = payouts_of(batch)[(world.partner.pk, "USD")]
    assert (mine.gross_minor, mine.offset_minor, mine.amount_minor) == (100_000, 30_000, 70_000)
    assert mine.status == Payout.READY
    assert payouts_of(batch)[(world.partner2.pk, "USD")].offset_minor == 0
    assert batch.totals == {"USD": 120_000}


def test_a_debt_in_one_currency_is_not_netted_off_another(payable, acme, usd):
    world = payable
    eur = make_plan(world, acme, currency="EUR")
    make_debt(eur, world.partner, 30_000)
    make_commissions(usd, world.partner, [60_000])

    batch = batches.build_batch(finance(world), YESTERDAY)

    mine = payouts_of(batch)[(world.partner.pk, "USD")]
    assert (mine.offset_minor, mine.amount_minor) == (0, 60_000)


def test_a_partner_owing_at_least_what_it_earned_is_carried_over(payable, usd):
    world = payable
    make_debt(usd, world.partner, 80_000)
    mine = make_commissions(usd, world.partner, [50_000, 30_000])
    make_commissions(usd, world.partner2, [50_000])

    batch = batches.build_batch(finance(world), YESTERDAY)

    row = payouts_of(batch)[(world.partner.pk, "USD")]
    assert (row.status, row.carry_reason) == (Payout.CARRIED_OVER, Payout.OWES)
    assert (row.gross_minor, row.offset_minor, row.amount_minor) == (80_000, 80_000, 0)
    assert not Commission.objects.filter(pk__in=[c.pk for c in mine],
                                         payout__isnull=False).exists()
    assert batch.totals == {"USD": 50_000}
    assert (batch.payout_count, batch.carried_over_count) == (1, 1)


def test_an_offset_in_flight_is_not_netted_twice(payable, usd):
    world = payable
    make_debt(usd, world.partner, 30_000)
    make_commissions(usd, world.partner, [100_000])
    first = batches.build_batch(finance(world), YESTERDAY)
    assert payouts_of(first)[(world.partner.pk, "USD")].offset_minor == 30_000

    make_commissions(usd, world.partner, [50_000])
    second = batches.build_batch(finance(world), YESTERDAY)

    row = payouts_of(second)[(world.partner.pk, "USD")]
    assert (row.gross_minor, row.offset_minor, row.amount_minor) == (50_000, 0, 50_000)


def test_the_debt_is_netted_again_when_the_batch_that_netted_it_is_cancelled(payable, usd):
    world = payable
    make_debt(usd, world.partner, 30_000)
    make_commissions(usd, world.partner, [100_000])
    first = batches.build_batch(finance(world), YESTERDAY)
    batches.cancel_batch(world.member("operator", "admin"), first)

    again = batches.build_batch(finance(world), YESTERDAY)

    row = payouts_of(again)[(world.partner.pk, "USD")]
    assert (row.gross_minor, row.offset_minor, row.amount_minor) == (100_000, 30_000, 70_000)


def _ready_partner(world, usd):
    """Summit is always paid, so that the batch is not empty."""
    make_payable(world.partner2)
    make_commissions(usd, world.partner2, [90_000])


@pytest.mark.parametrize("setup,reason", [
    (dict(account=False), Payout.NO_ACCOUNT),
    (dict(transfers=False), Payout.ACCOUNT_NOT_READY),
    (dict(tax=False), Payout.TAX_PROFILE),
], ids=["no-account", "account-not-ready", "tax-profile"])
def test_a_partner_that_cannot_receive_money_is_carried_over_with_the_reason(
        world, usd, setup, reason):
    _ready_partner(world, usd)
    make_payable(world.partner, **setup)
    mine = make_commissions(usd, world.partner, [60_000])

    batch = batches.build_batch(finance(world), YESTERDAY)

    row = payouts_of(batch)[(world.partner.pk, "USD")]
    assert (row.status, row.carry_reason, row.amount_minor) == (
        Payout.CARRIED_OVER, reason, 60_000)
    assert Commission.objects.get(pk=mine[0].pk).payout_id is None
    assert batch.totals == {"USD": 90_000}


def test_a_partner_without_a_tax_profile_is_carried_over(world, usd):
    _ready_partner(world, usd)
    make_payable(world.partner)
    TaxProfile.objects.filter(partner=world.partner).delete()
    make_commissions(usd, world.partner, [60_000])

    batch = batches.build_batch(finance(world), YESTERDAY)

    assert payouts_of(batch)[(world.partner.pk, "USD")].carry_reason == Payout.TAX_PROFILE


@pytest.mark.parametrize("amounts,paid", [
    ([3_000, 2_000], True),  # exactly the minimum is paid
    ([3_000, 1_999], False),  # one cent short is carried over
], ids=["exactly-the-minimum", "one-below"])
def test_the_minimum_is_inclusive(world, usd, amounts, paid):
    _ready_partner(world, usd)
    make_payable(world.partner)
    make_commissions(usd, world.partner, amounts)

    batch = batches.build_batch(finance(world), YESTERDAY)

    row = payouts_of(batch)[(world.partner.pk, "USD")]
    assert row.gross_minor == sum(amounts)
    if paid:
        assert (row.status, row.carry_reason) == (Payout.READY, "")
    else:
        assert (row.status, row.carry_reason) == (Payout.CARRIED_OVER, Payout.BELOW_MINIMUM)


def test_the_minimum_is_compared_with_the_net_and_the_highest_plan_minimum_applies(
        world, acme, usd):
    _ready_partner(world, usd)
    make_payable(world.partner)
    strict = make_plan(world, acme, currency="USD", minimum=20_000)
    make_commissions(usd, world.partner, [15_000])
    make_commissions(strict, world.partner, [6_000])  # 21,000 gross, above both minimums
    make_debt(usd, world.partner, 2_000)  # 19,000 net: below the strict plan's minimum

    batch = batches.build_batch(finance(world), YESTERDAY)

    row = payouts_of(batch)[(world.partner.pk, "USD")]
    assert (row.status, row.carry_reason, row.amount_minor) == (
        Payout.CARRIED_OVER, Payout.BELOW_MINIMUM, 19_000)


def test_carried_over_commissions_go_into_the_next_batch(world, usd):
    _ready_partner(world, usd)
    make_payable(world.partner)
    make_commissions(usd, world.partner, [3_000])
    first = batches.build_batch(finance(world), YESTERDAY)
    assert payouts_of(first)[(world.partner.pk, "USD")].status == Payout.CARRIED_OVER

    make_commissions(usd, world.partner, [3_000])
    second = batches.build_batch(finance(world), YESTERDAY)

    row = payouts_of(second)[(world.partner.pk, "USD")]
    assert (row.status, row.gross_minor, row.commission_count) == (Payout.READY, 6_000, 2)


def test_the_period_ends_at_midnight_utc_after_period_end(payable, usd):
    world = payable
    end = date.today() - timedelta(days=3)
    last_moment = datetime.combine(end, datetime.max.time(), tzinfo=UTC)
    inside = make_commissions(usd, world.partner, [60_000], payable_at=last_moment)
    outside = make_commissions(usd, world.partner, [70_000],
                               payable_at=last_moment + timedelta(microseconds=1))

    batch = batches.build_batch(finance(world), end)

    row = payouts_of(batch)[(world.partner.pk, "USD")]
    assert (row.gross_minor, row.commission_count) == (60_000, 1)
    assert Commission.objects.get(pk=inside[0].pk).payout_id == row.pk
    assert Commission.objects.get(pk=outside[0].pk).payout_id is None


def test_only_approved_commissions_not_in_a_payout_are_gathered(payable, usd):
    world = payable
    approved = make_commissions(usd, world.partner, [60_000])
    for status in (Commission.PENDING, Commission.PAYABLE, Commission.REJECTED):
        make_commissions(usd, world.partner, [1_000_000], status=status)
    first = batches.build_batch(finance(world), YESTERDAY)
    assert payouts_of(first)[(world.partner.pk, "USD")].gross_minor == 60_000

    later = make_commissions(usd, world.partner, [80_000])
    second = batches.build_batch(finance(world), YESTERDAY)

    row = payouts_of(second)[(world.partner.pk, "USD")]
    assert (row.gross_minor, row.commission_count) == (80_000, 1)
    assert Commission.objects.get(pk=approved[0].pk).payout.batch_id == first.pk
    assert Commission.objects.get(pk=later[0].pk).payout.batch_id == second.pk


def test_another_networks_commissions_stay_out(payable, programs, usd):
    world = payable
    foreign_plan = make_plan(world, programs["foreign"])
    make_payable(world.foreign_partner)
    theirs = make_commissions(foreign_plan, world.foreign_partner, [90_000])
    make_commissions(usd, world.partner, [60_000])

    batch = batches.build_batch(finance(world), YESTERDAY)

    assert set(payouts_of(batch)) == {(world.partner.pk, "USD")}
    assert Commission.objects.get(pk=theirs[0].pk).payout_id is None


def test_nothing_to_pay_is_said_plainly_and_makes_no_batch(payable, usd):
    world = payable
    make_commissions(usd, world.partner, [60_000], status=Commission.PAYABLE)

    with pytest.raises(ServiceError, match="No approved commissions are payable"):
        batches.build_batch(finance(world), YESTERDAY)

    assert not PayoutBatch.objects.exists() and not Payout.objects.exists()


def test_when_every_partner_is_carried_over_there_is_no_batch_and_the_reasons_are_given(
        world, usd):
    make_payable(world.partner, account=False)
    make_payable(world.partner2)
    make_commissions(usd, world.partner, [60_000])
    make_commissions(usd, world.partner2, [1_000])

    with pytest.raises(ServiceError) as error:
        batches.build_batch(finance(world), YESTERDAY)

    assert "1 below the payout minimum" in error.value.message
    assert "1 no payout account" in error.value.message
    assert not PayoutBatch.objects.exists()
    assert not Commission.objects.filter(payout__isnull=False).exists()


def test_a_period_ending_in_the_future_is_refused(payable, usd):
    make_commissions(usd, payable.partner, [60_000])
    with pytest.raises(ServiceError, match="future") as error:
        batches.build_batch(finance(payable), date.today() + timedelta(days=2))
    assert error.value.field == "period_end"


@pytest.mark.parametrize("kind,role", ALL_ROLES, ids=ROLE_IDS)
def test_only_operator_finance_and_admins_build_batches(payable, usd, kind, role):
    make_commissions(usd, payable.partner, [60_000])
    actor = payable.member(kind, role)
    if (kind, role) in MANAGERS:
        assert batches.build_batch(actor, YESTERDAY).payout_count == 1
    else:
        with pytest.raises(PermissionDenied):
            batches.build_batch(actor, YESTERDAY)
        assert not PayoutBatch.objects.exists()


def test_building_records_an_audit_event_and_asks_the_other_approvers(
        payable, usd, django_capture_on_commit_callbacks):
    world = payable
    make_commissions(usd, world.partner, [60_000])
    second_finance = MembershipFactory(organization=world.operator, role="finance")

    with django_capture_on_commit_callbacks(execute=True):
        batch = batches.build_batch(finance(world), YESTERDAY)

    event = AuditEvent.objects.get(action="payout_batch.created")
    assert event.target_id == str(batch.public_id)
    assert event.after["totals"] == {"USD": 60_000}
    notified = set(Notification.objects.filter(kind="payout_batch")
                   .values_list("user_id", flat=True))
    assert notified == {world.member("operator", "admin").user_id, second_finance.user_id}


# --- approval ------------------------------------------------------------------------------

@pytest.fixture
def draft(payable, usd):
    make_commissions(usd, payable.partner, [60_000])
    return batches.build_batch(finance(payable), YESTERDAY)


def test_the_creator_cannot_approve_their_own_batch(draft, world, send_task):
    with pytest.raises(ServiceError, match="second person"):
        batches.approve_batch(finance(world), draft)
    draft.refresh_from_db()
    assert draft.status == PayoutBatch.DRAFT and draft.approved_by is None
    assert send_task == []


@pytest.mark.parametrize("approver", ["admin", "another finance"])
def test_a_second_person_approves_and_sending_starts_after_commit(
        draft, world, send_task, approver, django_capture_on_commit_callbacks):
    actor = (world.member("operator", "admin") if approver == "admin"
             else MembershipFactory(organization=world.operator, role="finance"))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        batches.approve_batch(actor, draft)
    assert send_task == []  # nothing moves before the approval is committed
    for callback in callbacks:
        callback()

    draft.refresh_from_db()
    assert (draft.status, draft.approved_by_id) == (PayoutBatch.APPROVED, actor.user_id)
    assert send_task == [draft.pk]


@pytest.mark.parametrize("kind,role", [k for k in ALL_ROLES if k not in MANAGERS],
                         ids=[i for k, i in zip(ALL_ROLES, ROLE_IDS, strict=True)
                              if k not in MANAGERS])
def test_no_other_role_may_approve(draft, world, send_task, kind, role):
    with pytest.raises(PermissionDenied):
        batches.approve_batch(world.member(kind, role), draft)
    draft.refresh_from_db()
    assert draft.status == PayoutBatch.DRAFT


def test_another_networks_finance_cannot_approve(draft, world, send_task):
    ops = OrganizationFactory(network=world.other_network, kind="operator")
    outsider = MembershipFactory(organization=ops, role="finance")
    with pytest.raises(PermissionDenied):
        batches.approve_batch(outsider, draft)


def test_a_batch_is_approved_only_once(draft, world, send_task,
                                       django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        batches.approve_batch(world.member("operator", "admin"), draft)
    again = MembershipFactory(organization=world.operator, role="finance")
    with pytest.raises(ServiceError, match="only a batch awaiting approval"):
        batches.approve_batch(again, draft)
    assert send_task == [draft.pk]


# --- cancelling ----------------------------------------------------------------------------

def test_cancelling_releases_the_commissions_for_the_next_batch(draft, world, usd):
    batches.cancel_batch(finance(world), draft)

    draft.refresh_from_db()
    assert draft.status == PayoutBatch.CANCELLED and draft.cancelled_at is not None
    assert set(draft.payouts.values_list("status", flat=True)) == {Payout.CANCELLED}
    assert not Commission.objects.filter(payout__isnull=False).exists()
    again = batches.build_batch(finance(world), YESTERDAY)
    assert payouts_of(again)[(world.partner.pk, "USD")].commission_count == 1


def test_an_approved_batch_cannot_be_cancelled(draft, world, send_task):
    batches.approve_batch(world.member("operator", "admin"), draft)
    with pytest.raises(ServiceError, match="only a batch awaiting approval"):
        batches.cancel_batch(finance(world), draft)
    assert Commission.objects.filter(payout__batch=draft).count() == 1


def test_the_auditor_cannot_cancel(draft, world):
    with pytest.raises(PermissionDenied):
        batches.cancel_batch(world.member("operator", "auditor"), draft)


# --- two builds at once --------------------------------------------------------------------

def _race(*actions):
    barrier = threading.Barrier(len(actions))
    outcomes = [None] * len(actions)

    def run(i, action):
        try:
            barrier.wait(timeout=10)
            outcomes[i] = action()
        except Exception as exc:  # noqa: BLE001 - asserted on by the caller
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a racing thread hung"
    return outcomes


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(3))
def test_two_builds_at_once_never_share_a_commission(world, programs, attempt):
    usd = make_plan(world, programs["acme"])
    make_payable(world.partner)
    make_payable(world.partner2)
    make_commissions(usd, world.partner, [10_000] * 20)
    make_commissions(usd, world.partner2, [10_000] * 20)
    admin, fin = world.member("operator", "admin"), finance(world)

    outcomes = _race(lambda: batches.build_batch(admin, YESTERDAY),
                     lambda: batches.build_batch(fin, YESTERDAY))

    built = [o for o in outcomes if isinstance(o, PayoutBatch)]
    refused = [o for o in outcomes if isinstance(o, ServiceError)]
    assert len(built) == 1 and len(refused) == 1, outcomes
    assert "No approved commissions" in refused[0].message
    assert Commission.objects.filter(payout__batch=built[0]).count() == 40
    assert PayoutBatch.objects.count() == 1
    assert sum(Payout.objects.values_list("commission_count", flat=True)) == 40


# --- cost ----------------------------------------------------------------------------------

def _build_queries(world, usd, per_partner, partners):
    for partner in partners:
        make_commissions(usd, partner, [10_000] * per_partner)
    with CaptureQueriesContext(connection) as ctx:
        batch = batches.build_batch(finance(world), YESTERDAY)
    assert Commission.objects.filter(payout__batch=batch).count() == per_partner * len(partners)
    return len(ctx.captured_queries)


def test_building_costs_the_same_queries_for_10_or_100_commissions(world, usd):
    partners = [world.partner, world.partner2] + [
        OrganizationFactory(network=world.network, kind="partner") for _ in range(8)]
    for partner in partners:
        make_payable(partner)
    few = _build_queries(world, usd, 5, partners[:2])
    many = _build_queries(world, usd, 10, partners)
    assert few == many
    assert many <= 15


# --- building in Celery ----------------------------------------------------------------------

def _built_later(batch, now_minus):
    """Pretend the batch was asked for `now_minus` ago."""
    PayoutBatch.objects.filter(pk=batch.pk).update(created_at=timezone.now() - now_minus)


def test_a_request_leaves_a_building_batch_and_queues_the_build_on_commit(
        payable, usd, django_capture_on_commit_callbacks):
    make_commissions(usd, payable.partner, [60_000])

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        batch = batches.request_batch(finance(payable), YESTERDAY)

    batch.refresh_from_db()
    assert (batch.status, batch.period_end) == (PayoutBatch.BUILDING, YESTERDAY)
    assert not Payout.objects.exists()  # nothing is gathered before the task runs
    assert AuditEvent.objects.filter(action="payout_batch.requested").count() == 1
    assert len(callbacks) == 1

    callbacks[0]()  # the dispatch: eager Celery runs the task here

    batch.refresh_from_db()
    assert (batch.status, batch.payout_count, batch.totals) == (
        PayoutBatch.DRAFT, 1, {"USD": 60_000})
    assert Commission.objects.filter(payout__batch=batch).count() == 1


def test_the_task_builds_and_asks_the_other_approvers(
        payable, usd, django_capture_on_commit_callbacks):
    world = payable
    make_commissions(usd, world.partner, [60_000])
    second_finance = MembershipFactory(organization=world.operator, role="finance")

    with django_capture_on_commit_callbacks(execute=True):
        batch = batches.request_batch(finance(world), YESTERDAY)

    batch.refresh_from_db()
    assert batch.status == PayoutBatch.DRAFT and batch.build_error == ""
    event = AuditEvent.objects.get(action="payout_batch.created")
    assert event.target_id == str(batch.public_id)
    assert event.actor_id == batch.created_by_id  # the requester, though a worker built it
    notified = set(Notification.objects.filter(kind="payout_batch")
                   .values_list("user_id", flat=True))
    assert notified == {world.member("operator", "admin").user_id, second_finance.user_id}


def test_the_task_run_twice_builds_once(payable, usd, django_capture_on_commit_callbacks):
    make_commissions(usd, payable.partner, [60_000, 40_000])
    with django_capture_on_commit_callbacks(execute=False):
        batch = batches.request_batch(finance(payable), YESTERDAY)

    with django_capture_on_commit_callbacks(execute=True):
        first = tasks.build_payout_batch(batch.pk)
    with django_capture_on_commit_callbacks(execute=True):
        second = tasks.build_payout_batch(batch.pk)

    assert (first, second) == (PayoutBatch.DRAFT, None)
    assert Payout.objects.filter(batch=batch).count() == 1
    assert Commission.objects.filter(payout__batch=batch).count() == 2
    assert AuditEvent.objects.filter(action="payout_batch.created").count() == 1
    assert Notification.objects.filter(kind="payout_batch").count() == 1  # the admin, once


@pytest.mark.parametrize("period_end,error", [
    (date.today() + timedelta(days=2), ServiceError),
    (YESTERDAY, PermissionDenied),
], ids=["future-period", "not-allowed"])
def test_a_bad_request_is_refused_at_once_and_queues_nothing(
        payable, usd, period_end, error, django_capture_on_commit_callbacks):
    make_commissions(usd, payable.partner, [60_000])
    actor = (finance(payable) if error is ServiceError
             else payable.member("operator", "auditor"))

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(error) as raised:
            batches.request_batch(actor, period_end)

    assert callbacks == [] and not PayoutBatch.objects.exists()
    if error is ServiceError:
        assert "cannot end in the future" in raised.value.message
        assert raised.value.field == "period_end"


def test_only_an_operator_may_request_a_batch(payable, usd):
    """A partner owner holds payout.view, not payout.manage; and an operator-kind check
    stands even if a non-operator role ever gained payout.manage."""
    with pytest.raises(PermissionDenied):
        batches.request_batch(payable.member("partner", "owner"), YESTERDAY)
    assert not PayoutBatch.objects.exists()


def test_a_second_request_while_one_is_building_is_refused(
        payable, usd, django_capture_on_commit_callbacks):
    make_commissions(usd, payable.partner, [60_000])
    with django_capture_on_commit_callbacks(execute=False):
        building = batches.request_batch(finance(payable), YESTERDAY)

    for ask in (batches.request_batch, batches.build_batch):
        with pytest.raises(ServiceError, match="already being built") as error:
            ask(payable.member("operator", "admin"), YESTERDAY)
        assert error.value.field == "period_end"
    assert list(PayoutBatch.objects.values_list("pk", flat=True)) == [building.pk]

    with django_capture_on_commit_callbacks(execute=True):
        tasks.build_payout_batch(building.pk)
    make_commissions(usd, payable.partner, [70_000])
    with django_capture_on_commit_callbacks(execute=True):
        after = batches.request_batch(payable.member("operator", "admin"), YESTERDAY)
    after.refresh_from_db()
    assert after.status == PayoutBatch.DRAFT  # once built, the network may build again


def test_another_networks_build_does_not_block_ours(payable, usd,
                                                     django_capture_on_commit_callbacks):
    ops = OrganizationFactory(network=payable.other_network, kind="operator")
    outsider = MembershipFactory(organization=ops, role="finance")
    with django_capture_on_commit_callbacks(execute=False):
        batches.request_batch(outsider, YESTERDAY)
        mine = batches.request_batch(finance(payable), YESTERDAY)
    assert mine.status == PayoutBatch.BUILDING


@pytest.mark.django_db(transaction=True)
def test_two_requests_at_once_leave_one_building_batch(world, programs, monkeypatch):
    monkeypatch.setattr(batches, "_enqueue", lambda task, batch_id: None)  # no worker here
    fin = finance(world)
    admin = world.member("operator", "admin")

    outcomes = _race(lambda: batches.request_batch(admin, YESTERDAY),
                     lambda: batches.request_batch(fin, YESTERDAY))

    assert sorted(type(o).__name__ for o in outcomes) == ["PayoutBatch", "ServiceError"], \
        outcomes
    refused = next(o for o in outcomes if isinstance(o, ServiceError))
    assert "already being built" in refused.message
    assert PayoutBatch.objects.filter(status=PayoutBatch.BUILDING).count() == 1


def test_nothing_payable_ends_build_failed_with_the_synchronous_message(
        payable, usd, django_capture_on_commit_callbacks):
    make_commissions(usd, payable.partner, [60_000], status=Commission.PAYABLE)

    with django_capture_on_commit_callbacks(execute=True):
        batch = batches.request_batch(finance(payable), YESTERDAY)

    batch.refresh_from_db()
    assert batch.status == PayoutBatch.BUILD_FAILED
    assert batch.build_error == (f"No approved commissions are payable on or before "
                                 f"{YESTERDAY:%-d %B %Y}: there is nothing to pay.")
    assert (batch.totals, batch.payout_count) == ({}, 0)
    assert not Payout.objects.exists()
    assert AuditEvent.objects.get(action="payout_batch.build_failed").after == {
        "error": batch.build_error}
    # The requester hears of it (they may have left the page); the approvers have nothing to do.
    [note] = Notification.objects.filter(kind="payout_batch")
    assert note.user_id == batch.created_by_id and "could not be built" in note.title


def test_every_partner_carried_over_ends_build_failed_with_the_reasons(
        world, usd, django_capture_on_commit_callbacks):
    make_payable(world.partner, account=False)
    make_payable(world.partner2)
    make_commissions(usd, world.partner, [60_000])
    make_commissions(usd, world.partner2, [1_000])

    with django_capture_on_commit_callbacks(execute=True):
        batch = batches.request_batch(finance(world), YESTERDAY)

    batch.refresh_from_db()
    assert batch.status == PayoutBatch.BUILD_FAILED
    assert "1 below the payout minimum" in batch.build_error
    assert "1 no payout account" in batch.build_error
    assert not Payout.objects.exists()
    assert not Commission.objects.filter(payout__isnull=False).exists()


def test_a_failed_build_frees_the_network_for_the_next_request(
        payable, usd, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        failed = batches.request_batch(finance(payable), YESTERDAY)
    make_commissions(usd, payable.partner, [60_000])
    with django_capture_on_commit_callbacks(execute=True):
        again = batches.request_batch(finance(payable), YESTERDAY)
    failed.refresh_from_db()
    again.refresh_from_db()
    assert (failed.status, again.status) == (PayoutBatch.BUILD_FAILED, PayoutBatch.DRAFT)


def test_commissions_changing_under_the_build_are_retried_in_the_task(
        payable, usd, monkeypatch, django_capture_on_commit_callbacks):
    make_commissions(usd, payable.partner, [60_000])
    claim, calls = batches._claim, []

    def interrupted_claim(batch, cutoff):
        calls.append(batch.pk)
        claimed = claim(batch, cutoff)
        return claimed + 1 if len(calls) == 1 else claimed  # a commission appeared, once

    monkeypatch.setattr(batches, "_claim", interrupted_claim)
    with django_capture_on_commit_callbacks(execute=True):
        batch = batches.request_batch(finance(payable), YESTERDAY)

    batch.refresh_from_db()
    assert len(calls) == 2 and batch.status == PayoutBatch.DRAFT
    assert Payout.objects.filter(batch=batch).count() == 1  # the first try rolled back
    assert Commission.objects.filter(payout__batch=batch).count() == 1


def test_commissions_that_keep_changing_end_build_failed(
        payable, usd, monkeypatch, django_capture_on_commit_callbacks):
    make_commissions(usd, payable.partner, [60_000])
    monkeypatch.setattr(batches, "_claim", lambda batch, cutoff: -1)
    with django_capture_on_commit_callbacks(execute=True):
        batch = batches.request_batch(finance(payable), YESTERDAY)
    batch.refresh_from_db()
    assert batch.status == PayoutBatch.BUILD_FAILED
    assert "Commissions changed while the batch was being built" in batch.build_error
    assert not Payout.objects.exists()


def test_an_unexpected_error_fails_the_build_and_is_raised_for_the_logs(
        payable, usd, monkeypatch, django_capture_on_commit_callbacks):
    make_commissions(usd, payable.partner, [60_000])
    with django_capture_on_commit_callbacks(execute=False):
        batch = batches.request_batch(finance(payable), YESTERDAY)

    def broken(network_id):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(batches, "_debts", broken)
    with pytest.raises(ZeroDivisionError):
        batches.run_build(batch.pk)

    batch.refresh_from_db()
    assert (batch.status, batch.build_error) == (PayoutBatch.BUILD_FAILED, batches.UNEXPECTED)
    assert not Payout.objects.exists()


def test_a_requester_who_lost_the_right_to_build_gets_a_failed_build(
        payable, usd, django_capture_on_commit_callbacks):
    make_commissions(usd, payable.partner, [60_000])
    requester = finance(payable)
    with django_capture_on_commit_callbacks(execute=False):
        batch = batches.request_batch(requester, YESTERDAY)
    Membership.objects.filter(pk=requester.pk).update(status=Membership.DEACTIVATED)

    batches.run_build(batch.pk)

    batch.refresh_from_db()
    assert (batch.status, batch.build_error) == (PayoutBatch.BUILD_FAILED,
                                                 batches.LOST_BUILDER)
    assert not Commission.objects.filter(payout__isnull=False).exists()


# --- stuck batches -----------------------------------------------------------------------------

def test_a_crashed_build_leaves_the_batch_building_and_the_sweep_builds_it(
        payable, usd, monkeypatch, django_capture_on_commit_callbacks):
    make_commissions(usd, payable.partner, [60_000])
    with django_capture_on_commit_callbacks(execute=False):
        batch = batches.request_batch(finance(payable), YESTERDAY)
    claim = batches._claim

    def killed(batch, cutoff):
        raise SystemExit("worker killed")  # not an Exception: nothing in the task catches it

    monkeypatch.setattr(batches, "_claim", killed)
    with pytest.raises(SystemExit):
        tasks.build_payout_batch(batch.pk)
    batch.refresh_from_db()
    assert batch.status == PayoutBatch.BUILDING and not Payout.objects.exists()

    monkeypatch.setattr(batches, "_claim", claim)
    with django_capture_on_commit_callbacks(execute=True):
        assert batches.sweep_stuck_batches() == {"requeued": 0, "failed": 0}  # too recent
    batch.refresh_from_db()
    assert batch.status == PayoutBatch.BUILDING

    _built_later(batch, batches.STUCK_AFTER + timedelta(minutes=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.sweep_stuck_batches() == {"requeued": 1, "failed": 0}
    batch.refresh_from_db()
    assert batch.status == PayoutBatch.DRAFT
    assert Commission.objects.filter(payout__batch=batch).count() == 1


def test_a_build_stuck_for_hours_fails_and_frees_the_network(
        payable, usd, django_capture_on_commit_callbacks):
    make_commissions(usd, payable.partner, [60_000])
    with django_capture_on_commit_callbacks(execute=False):
        batch = batches.request_batch(finance(payable), YESTERDAY)
    _built_later(batch, batches.GIVE_UP_AFTER + timedelta(minutes=1))

    with django_capture_on_commit_callbacks(execute=True):
        assert batches.sweep_stuck_batches() == {"requeued": 0, "failed": 1}

    batch.refresh_from_db()
    assert (batch.status, batch.build_error) == (PayoutBatch.BUILD_FAILED, batches.GAVE_UP)
    assert not Payout.objects.exists()  # given up, not built
    [note] = Notification.objects.filter(kind="payout_batch")
    assert note.user_id == batch.created_by_id and note.body == batches.GAVE_UP
    with django_capture_on_commit_callbacks(execute=True):
        again = batches.request_batch(finance(payable), YESTERDAY)
    again.refresh_from_db()
    assert again.status == PayoutBatch.DRAFT


class _HeldRow:
    """Another connection holds the batch's row lock, as a worker building it would."""

    def __init__(self, batch_id):
        self.batch_id = batch_id
        self.locked, self.release = threading.Event(), threading.Event()

    def __enter__(self):
        def hold():
            try:
                with transaction.atomic():
                    PayoutBatch.objects.select_for_update().get(pk=self.batch_id)
                    self.locked.set()
                    self.release.wait(timeout=30)
            finally:
                connection.close()

        self.thread = threading.Thread(target=hold)
        self.thread.start()
        assert self.locked.wait(timeout=10)
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.thread.join(timeout=30)


@pytest.mark.django_db(transaction=True)
def test_a_batch_a_worker_is_building_is_left_alone(world, programs, monkeypatch):
    monkeypatch.setattr(batches, "_enqueue", lambda task, batch_id: None)
    usd = make_plan(world, programs["acme"])
    make_payable(world.partner)
    make_commissions(usd, world.partner, [60_000])
    batch = batches.request_batch(finance(world), YESTERDAY)
    _built_later(batch, batches.GIVE_UP_AFTER + timedelta(minutes=1))

    with _HeldRow(batch.pk):
        assert batches.run_build(batch.pk) is None  # a duplicate delivery: no wait, no work
        assert batches.sweep_stuck_batches() == {"requeued": 0, "failed": 0}
        # Approving or cancelling it is refused at once, not after the build's minutes.
        for act, actor in ((batches.approve_batch, world.member("operator", "admin")),
                           (batches.request_cancel, finance(world))):
            with pytest.raises(ServiceError, match="still being built"):
                act(actor, batch)

    batch.refresh_from_db()
    assert batch.status == PayoutBatch.BUILDING
    assert batches.run_build(batch.pk) == PayoutBatch.DRAFT


# --- cancelling in Celery ----------------------------------------------------------------------

def test_a_cancel_request_blocks_approval_at_once_and_releases_on_commit(
        draft, world, send_task, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        batches.request_cancel(finance(world), draft)

    draft.refresh_from_db()
    assert draft.status == PayoutBatch.CANCELLING and draft.cancelled_at is not None
    assert Commission.objects.filter(payout__batch=draft).count() == 1  # not released yet
    with pytest.raises(ServiceError, match="only a batch awaiting approval"):
        batches.approve_batch(world.member("operator", "admin"), draft)
    with pytest.raises(ServiceError, match="only a batch awaiting approval"):
        batches.request_cancel(world.member("operator", "admin"), draft)

    for callback in callbacks:
        callback()

    draft.refresh_from_db()
    assert draft.status == PayoutBatch.CANCELLED
    assert set(draft.payouts.values_list("status", flat=True)) == {Payout.CANCELLED}
    assert not Commission.objects.filter(payout__isnull=False).exists()
    assert AuditEvent.objects.get(action="payout_batch.released").after == {
        "status": PayoutBatch.CANCELLED, "commissions_released": 1}
    assert send_task == []


def test_the_cancel_task_run_twice_releases_once(draft, world):
    batches.request_cancel(finance(world), draft)
    assert tasks.cancel_payout_batch(draft.pk) == 1
    assert tasks.cancel_payout_batch(draft.pk) is None
    assert AuditEvent.objects.filter(action="payout_batch.released").count() == 1


def test_a_stuck_cancel_is_swept(draft, world, django_capture_on_commit_callbacks):
    batches.request_cancel(finance(world), draft)  # its task never ran
    PayoutBatch.objects.filter(pk=draft.pk).update(
        cancelled_at=timezone.now() - batches.STUCK_AFTER - timedelta(minutes=1))

    with django_capture_on_commit_callbacks(execute=True):
        assert batches.sweep_stuck_batches() == {"requeued": 1, "failed": 0}

    draft.refresh_from_db()
    assert draft.status == PayoutBatch.CANCELLED
    assert not Commission.objects.filter(payout__isnull=False).exists()


# --- the quickstart's SQLite path ------------------------------------------------------------

def test_the_portable_path_builds_the_same_batch_as_postgresqls(payable, usd, monkeypatch):
    """SQLite (the zero-config quickstart) has no advisory locks nor arrays: the builder's
    portable debt query and claim must give what the PostgreSQL statements give."""
    world = payable
    make_debt(usd, world.partner, 30_000)
    make_commissions(usd, world.partner, [60_000, 40_000])
    make_commissions(usd, world.partner2, [50_000])
    expected = batches._debts(world.network.pk)
    monkeypatch.setattr(batches.connection, "vendor", "sqlite")
    assert batches._debts(world.network.pk) == expected == {(world.partner.pk, "USD"): 30_000}

    batch = batches.build_batch(finance(world), YESTERDAY)

    mine = payouts_of(batch)[(world.partner.pk, "USD")]
    assert (mine.gross_minor, mine.offset_minor, mine.amount_minor) == (100_000, 30_000, 70_000)
    assert Commission.objects.filter(payout=mine).count() == 2
    assert Commission.objects.filter(payout__batch=batch).count() == 3
