"""Once a batch is approved its status summarises its payouts: sending while transfers are under
way (or an automatic retry is planned), then sent (every payout that went out is paid), partly
failed, failed (nothing paid), or cancelled (every payout was), recomputed whenever a payout
changes; what the approver and finance are told after approving and retrying (quickstart with
eager Celery: what happened; with a worker: what is under way, and the page follows it); and
notifications that ask for an action, marked done for everyone once someone does it.

Transfers go through the real stripe SDK to the fake Stripe."""

import importlib
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import Notification
from payouts import approvals, batches, tasks, transfers
from payouts.models import Commission, Payout, PayoutAccount, PayoutBatch
from tests.accounts.factories import MembershipFactory
from tests.fakes.stripe import API_KEY
from tests.payouts.test_batches import YESTERDAY, make_commissions, make_plan
from tests.payouts.test_transfers import complete_tax_profile, connect_partner

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
ASKS = {"kind": "payout_batch", "title__contains": "awaits your approval"}


@pytest.fixture
def usd(world, programs):
    return make_plan(world, programs["acme"])


@pytest.fixture
def one_partner(world, fake_stripe, usd):
    """Brightpath can be paid (1,000.00 in two commissions) through the fake Stripe."""
    complete_tax_profile(world.partner)
    connect_partner(world, fake_stripe, world.partner)
    make_commissions(usd, world.partner, [60_000, 40_000])
    return world


@pytest.fixture
def two_partners(one_partner, fake_stripe, usd):
    """... and Summit too (700.00). Brightpath's payout is sent first."""
    world = one_partner
    complete_tax_profile(world.partner2)
    connect_partner(world, fake_stripe, world.partner2)
    make_commissions(usd, world.partner2, [70_000])
    return world


def build(world):
    return batches.build_batch(world.member("operator", "finance"), YESTERDAY)


def approve(world, batch, run_on_commit):
    with run_on_commit():
        batches.approve_batch(world.member("operator", "admin"), batch)
    batch.refresh_from_db()
    return batch


def statuses(batch):
    return {p.partner.name: p.status for p in batch.payouts.select_related("partner")}


def refuse_the_next_transfer(fake_stripe):
    fake_stripe.fail(400, path="/v1/transfers", method="POST",
                     message="No such destination: 'acct_gone'")


def detail_url(batch):
    return reverse("payouts:batch_detail", args=[batch.public_id])


def progress_url(batch, on):
    return reverse("payouts:batch_progress", args=[batch.public_id]) + f"?on={on}"


# --- the status summarises the payouts ------------------------------------------------------

def test_a_batch_whose_only_payout_failed_is_failed_not_sent(one_partner, settings,
                                                             run_on_commit):
    world = one_partner
    settings.STRIPE_API_KEY = ""
    batch = approve(world, build(world), run_on_commit)
    assert statuses(batch) == {"Brightpath": Payout.FAILED}
    assert batch.status == PayoutBatch.FAILED and batch.sent_at is None
    told = Notification.objects.filter(user=world.member("operator", "admin").user,
                                       kind="payout_batch").exclude(**{
                                           "title__contains": "awaits"})
    assert [n.title for n in told] == ["Payout batch failed: 1 payout failed, nothing was paid"]


def test_paid_and_failed_payouts_make_a_partly_failed_batch(two_partners, fake_stripe,
                                                            run_on_commit):
    world = two_partners
    refuse_the_next_transfer(fake_stripe)
    batch = approve(world, build(world), run_on_commit)
    assert statuses(batch) == {"Brightpath": Payout.FAILED, "Summit": Payout.PAID}
    assert batch.status == PayoutBatch.PARTLY_FAILED
    assert batch.get_status_display() == "Partly failed"


def test_every_payout_paid_makes_a_sent_batch(two_partners, run_on_commit):
    batch = approve(two_partners, build(two_partners), run_on_commit)
    assert set(statuses(batch).values()) == {Payout.PAID}
    assert batch.status == PayoutBatch.SENT and batch.sent_at is not None


@pytest.mark.parametrize("fixture", ["one_partner", "two_partners"])
def test_a_retry_that_succeeds_moves_a_failed_batch_back_through_sending_to_sent(
        fixture, request, fake_stripe, run_on_commit, django_capture_on_commit_callbacks):
    world = request.getfixturevalue(fixture)
    refuse_the_next_transfer(fake_stripe)
    batch = approve(world, build(world), run_on_commit)
    assert batch.status == (PayoutBatch.FAILED if fixture == "one_partner"
                            else PayoutBatch.PARTLY_FAILED)
    failed = batch.payouts.get(status=Payout.FAILED)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        transfers.retry_payout(world.member("operator", "finance"), failed)
    batch.refresh_from_db()
    assert batch.status == PayoutBatch.SENDING  # a transfer is under way again
    for callback in callbacks:
        callback()

    batch.refresh_from_db()
    assert set(statuses(batch).values()) == {Payout.PAID}
    assert batch.status == PayoutBatch.SENT and batch.sent_at is not None


def test_cancelling_the_failed_payout_leaves_a_sent_batch(two_partners, fake_stripe,
                                                          run_on_commit):
    world = two_partners
    refuse_the_next_transfer(fake_stripe)
    batch = approve(world, build(world), run_on_commit)
    transfers.cancel_payout(world.member("operator", "finance"),
                            batch.payouts.get(status=Payout.FAILED))
    batch.refresh_from_db()
    assert statuses(batch) == {"Brightpath": Payout.CANCELLED, "Summit": Payout.PAID}
    assert batch.status == PayoutBatch.SENT


def test_a_batch_whose_every_payout_was_cancelled_is_cancelled(one_partner, fake_stripe,
                                                               run_on_commit):
    world = one_partner
    refuse_the_next_transfer(fake_stripe)
    batch = approve(world, build(world), run_on_commit)
    transfers.cancel_payout(world.member("operator", "finance"),
                            batch.payouts.get(status=Payout.FAILED))
    batch.refresh_from_db()
    assert batch.status == PayoutBatch.CANCELLED and batch.cancelled_at is not None
    assert not Commission.objects.filter(payout__isnull=False).exists()
    html = world.client_for(world.member("operator", "finance")).get(
        detail_url(batch)).content.decode()
    assert "every payout was cancelled" in html


def test_a_batch_waiting_for_an_automatic_retry_is_still_sending(one_partner, fake_stripe,
                                                                 run_on_commit):
    world = one_partner
    fake_stripe.fail(503, path="/v1/transfers", method="POST")
    batch = approve(world, build(world), run_on_commit)
    payout = batch.payouts.get()
    assert payout.status == Payout.FAILED and payout.next_attempt_at is not None
    assert batch.status == PayoutBatch.SENDING


def test_the_migration_recomputes_batches_recorded_as_sent(world):
    """Before this change a batch became `sent` as soon as nothing was ready or sending, and a
    transient failure waited for a Celery retry (which now finds nothing to claim)."""
    admin, finance = world.member("operator", "admin"), world.member("operator", "finance")

    def batch_with(*payout_statuses):
        batch = PayoutBatch.objects.create(
            network=world.network, period_end=YESTERDAY, status=PayoutBatch.SENT,
            created_by=finance.user, approved_by=admin.user, approved_at=timezone.now(),
            sent_at=timezone.now())
        for partner, status in zip([world.partner, world.partner2], payout_statuses,
                                   strict=False):
            Payout.objects.create(batch=batch, network=world.network, partner=partner,
                                  currency="USD", gross_minor=100, amount_minor=100,
                                  status=status, failure_code="x" if status == "failed" else "",
                                  attempts=1, last_attempt_at=timezone.now() - timedelta(days=2))
        return batch

    sent = batch_with(Payout.PAID, Payout.CANCELLED)
    partly = batch_with(Payout.PAID, Payout.FAILED)
    failed = batch_with(Payout.FAILED, Payout.CANCELLED)
    cancelled = batch_with(Payout.CANCELLED)
    retrying = batch_with(Payout.PAID, Payout.FAILED)
    Payout.objects.filter(batch=retrying, status=Payout.FAILED).update(
        failure_code="api_error", attempts=2, last_attempt_at=timezone.now())
    migration = importlib.import_module("payouts.migrations.0007_batch_status_from_payouts")
    from django.apps import apps

    migration.forward(apps, None)

    got = {b: PayoutBatch.objects.get(pk=b.pk).status
           for b in (sent, partly, failed, cancelled, retrying)}
    assert got == {sent: PayoutBatch.SENT, partly: PayoutBatch.PARTLY_FAILED,
                   failed: PayoutBatch.FAILED, cancelled: PayoutBatch.CANCELLED,
                   retrying: PayoutBatch.SENDING}
    assert Payout.objects.get(batch=retrying, status=Payout.FAILED).next_attempt_at is not None
    assert Payout.objects.get(batch=partly, status=Payout.FAILED).next_attempt_at is None


# --- what the approver is told ----------------------------------------------------------------

def approve_on_the_page(world, batch):
    client = world.client_for(world.member("operator", "admin"))
    response = client.post(reverse("payouts:batch_approve", args=[batch.public_id]),
                           follow=True)
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_with_eager_celery_a_batch_that_sent_nothing_says_so(world, programs, fake_stripe,
                                                             settings):
    """The issue: no STRIPE_API_KEY, the only payout fails, and the page said "Approved: the
    transfers are on their way." with a green flash and a Sent badge."""
    usd = make_plan(world, programs["acme"])
    complete_tax_profile(world.partner)
    connect_partner(world, fake_stripe, world.partner)
    make_commissions(usd, world.partner, [60_000])
    settings.STRIPE_API_KEY = ""
    batch = build(world)

    html = approve_on_the_page(world, batch)

    assert ('<p class="flash error" role="status">Approved, but no transfer went out: 1 payout '
            'failed — Payouts are not configured on this server') in html
    assert "on their way" not in html and "flash success" not in html
    assert '<span class="badge bad">Failed</span>' in html
    assert ">Sent</span>" not in html


@pytest.mark.django_db(transaction=True)
def test_with_eager_celery_a_partly_failed_batch_is_a_warning(world, programs, fake_stripe):
    usd = make_plan(world, programs["acme"])
    for partner in (world.partner, world.partner2):
        complete_tax_profile(partner)
        connect_partner(world, fake_stripe, partner)
        make_commissions(usd, partner, [60_000])
    refuse_the_next_transfer(fake_stripe)

    html = approve_on_the_page(world, build(world))

    assert ('<p class="flash warning" role="status">Approved, but 1 of 2 payouts failed — '
            "No such destination: &#x27;acct_gone&#x27;") in html
    assert '<span class="badge warn">Partly failed</span>' in html


@pytest.mark.django_db(transaction=True)
def test_with_eager_celery_a_fully_paid_batch_is_a_success(world, programs, fake_stripe):
    usd = make_plan(world, programs["acme"])
    complete_tax_profile(world.partner)
    connect_partner(world, fake_stripe, world.partner)
    make_commissions(usd, world.partner, [60_000])

    html = approve_on_the_page(world, build(world))

    assert '<p class="flash success" role="status">Approved and sent: 1 payout paid' in html
    assert '<span class="badge ok">Sent</span>' in html


@pytest.mark.django_db(transaction=True)
def test_with_eager_celery_a_transient_failure_says_it_is_retried_automatically(
        world, programs, fake_stripe):
    usd = make_plan(world, programs["acme"])
    complete_tax_profile(world.partner)
    connect_partner(world, fake_stripe, world.partner)
    make_commissions(usd, world.partner, [60_000])
    fake_stripe.fail(503, path="/v1/transfers", method="POST")

    batch = build(world)
    html = approve_on_the_page(world, batch)

    payout = Payout.objects.get(batch=batch, status=Payout.FAILED)
    due = f"{payout.next_attempt_at:%H:%M} UTC"
    assert ('<p class="flash warning" role="status">Approved, but 1 payout could not be sent '
            f"yet — An unknown error occurred. It is tried again automatically from {due}.") \
        in html
    assert f"Next automatic attempt from {due}" in html  # on the payout's row


def test_with_a_worker_the_approver_is_told_the_transfers_are_being_sent_and_the_page_follows(
        one_partner, monkeypatch, django_capture_on_commit_callbacks):
    world = one_partner
    queued = []
    monkeypatch.setattr(tasks, "send_payout",
                        type("Task", (), {"delay": staticmethod(queued.append)}))
    batch = build(world)
    client = world.client_for(world.member("operator", "admin"))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("payouts:batch_approve", args=[batch.public_id]))
    assert len(queued) == 1  # with a worker the transfer waits for it

    html = client.get(response["Location"]).content.decode()
    assert ('<p class="flash info" role="status">Approved: the transfers are on their way — 1 '
            "payout is being sent; this page updates itself.") in html
    assert f'hx-get="{progress_url(batch, "detail")}"' in html
    assert '<span class="badge info">Sending</span>' in html

    partial = client.get(progress_url(batch, "detail"), headers=HTMX)
    assert "1 of 1 payout being sent" in partial.content.decode()
    assert "HX-Refresh" not in partial
    listing = client.get(reverse("payouts:batch_list")).content.decode()
    assert f'hx-get="{progress_url(batch, "list")}"' in listing

    transfers.send_payout(batch.payouts.get().pk)  # the worker gets to it
    done = client.get(progress_url(batch, "detail"), headers=HTMX)
    assert done["HX-Refresh"] == "true"
    row = client.get(progress_url(batch, "list"), headers=HTMX).content.decode()
    assert "hx-trigger" not in row and '<span class="badge ok">Sent</span>' in row


def test_the_list_filters_and_flags_failed_batches(two_partners, fake_stripe, run_on_commit):
    world = two_partners
    refuse_the_next_transfer(fake_stripe)
    batch = approve(world, build(world), run_on_commit)
    client = world.client_for(world.member("operator", "auditor"))
    html = client.get(reverse("payouts:batch_list"), {"status": "partly_failed"}).content.decode()
    assert detail_url(batch) in html and '<span class="badge warn">Partly failed</span>' in html
    assert "1 failed" in html
    html = client.get(reverse("payouts:batch_list"), {"status": "sent"}).content.decode()
    assert detail_url(batch) not in html


def test_the_dashboard_counts_failed_payouts_that_need_a_person(one_partner, fake_stripe,
                                                                run_on_commit):
    from payouts.dashboard import money_tile

    world = one_partner
    fake_stripe.fail(503, path="/v1/transfers", method="POST")
    batch = approve(world, build(world), run_on_commit)
    finance = world.member("operator", "finance")
    assert money_tile(finance)["failed"] == 0  # Stripe hiccuped: it is retried by itself
    Payout.objects.filter(batch=batch).update(next_attempt_at=None)  # the retries ran out
    assert money_tile(finance)["failed"] == 1


# --- retrying from the page ---------------------------------------------------------------

def retry_on_the_page(world, payout):
    client = world.client_for(world.member("operator", "finance"))
    response = client.post(reverse("payouts:payout_retry", args=[payout.public_id]))
    assert response.status_code == 302
    return client.get(response["Location"]).content.decode()


@pytest.mark.django_db(transaction=True)
def test_retry_never_answers_500_while_stripe_still_fails(world, programs, fake_stripe):
    """The issue: the Retry button answered HTTP 500 while Stripe kept failing."""
    usd = make_plan(world, programs["acme"])
    complete_tax_profile(world.partner)
    connect_partner(world, fake_stripe, world.partner)
    make_commissions(usd, world.partner, [60_000])
    fake_stripe.fail(500, path="/v1/transfers", method="POST", times=None)
    batch = build(world)
    approve_on_the_page(world, batch)
    payout = Payout.objects.get(batch=batch)
    Payout.objects.filter(pk=payout.pk).update(next_attempt_at=None)  # retries ran out

    html = retry_on_the_page(world, payout)

    payout.refresh_from_db()
    assert payout.status == Payout.FAILED and payout.next_attempt_at is not None
    assert ('<p class="flash warning" role="status">Stripe could not take the transfer yet — '
            "An unknown error occurred. It is tried again automatically from") in html


@pytest.mark.django_db(transaction=True)
def test_a_retry_that_pays_says_so(world, programs, fake_stripe, settings):
    usd = make_plan(world, programs["acme"])
    complete_tax_profile(world.partner)
    connect_partner(world, fake_stripe, world.partner)
    make_commissions(usd, world.partner, [60_000])
    settings.STRIPE_API_KEY = ""
    batch = build(world)
    approve_on_the_page(world, batch)
    settings.STRIPE_API_KEY = API_KEY

    html = retry_on_the_page(world, Payout.objects.get(batch=batch))

    assert '<p class="flash success" role="status">Paid: the transfer went out' in html
    assert '<span class="badge ok">Sent</span>' in html


@pytest.mark.django_db(transaction=True)
def test_a_retry_refused_again_says_why(world, programs, fake_stripe):
    usd = make_plan(world, programs["acme"])
    complete_tax_profile(world.partner)
    connect_partner(world, fake_stripe, world.partner)
    make_commissions(usd, world.partner, [60_000])
    refuse_the_next_transfer(fake_stripe)
    batch = build(world)
    approve_on_the_page(world, batch)
    refuse_the_next_transfer(fake_stripe)

    html = retry_on_the_page(world, Payout.objects.get(batch=batch))

    assert ('<p class="flash error" role="status">The payout failed again — No such '
            "destination") in html


# --- notifications that ask for an action are done once someone acts -------------------------

@pytest.mark.parametrize("action", ["approve", "cancel"])
def test_the_approval_request_is_done_for_everyone_once_someone_acts(
        one_partner, action, run_on_commit):
    world = one_partner
    other_finance = MembershipFactory(organization=world.operator, role="finance")
    with run_on_commit():
        batch = build(world)
    asks = Notification.objects.filter(**ASKS)
    assert sorted(asks.values_list("user_id", flat=True)) == sorted(
        [world.member("operator", "admin").user_id, other_finance.user_id])
    assert not asks.filter(read_at__isnull=False).exists()

    if action == "approve":
        approve(world, batch, run_on_commit)
    else:
        with run_on_commit():
            batches.cancel_batch(world.member("operator", "finance"), batch)

    assert not asks.filter(read_at__isnull=True).exists()


def test_the_approval_request_of_another_batch_stays_new(one_partner, usd, run_on_commit):
    world = one_partner
    with run_on_commit():
        first = build(world)
    with run_on_commit():
        batches.cancel_batch(world.member("operator", "finance"), first)
    with run_on_commit():
        second = build(world)
    unread = Notification.objects.filter(**ASKS, read_at__isnull=True)
    assert [n.url for n in unread] == [detail_url(second)]


def test_a_failed_batch_notice_is_done_once_the_batch_is_sent(one_partner, fake_stripe,
                                                              run_on_commit):
    world = one_partner
    refuse_the_next_transfer(fake_stripe)
    batch = approve(world, build(world), run_on_commit)
    notice = Notification.objects.get(user=world.member("operator", "admin").user,
                                      title__startswith="Payout batch failed")
    assert notice.read_at is None
    with run_on_commit():
        transfers.retry_payout(world.member("operator", "finance"), batch.payouts.get())
    notice.refresh_from_db()
    assert notice.read_at is not None
    assert Notification.objects.filter(title__startswith="Payout batch sent",
                                       read_at__isnull=True).exists()


def test_a_partners_payout_failed_notice_is_done_once_the_payout_is_paid(
        one_partner, run_on_commit):
    world = one_partner
    batch = build(world)
    PayoutAccount.objects.filter(partner=world.partner).update(transfers_active=False)
    batch = approve(world, batch, run_on_commit)
    owner = world.member("partner", "owner").user
    notice = Notification.objects.get(user=owner, kind="payout_failed")
    assert notice.read_at is None
    PayoutAccount.objects.filter(partner=world.partner).update(transfers_active=True)
    with run_on_commit():
        transfers.retry_payout(world.member("operator", "admin"), batch.payouts.get())
    notice.refresh_from_db()
    assert notice.read_at is not None


def test_commissions_ready_for_approval_are_done_once_none_is_left_payable(world, usd):
    make_commissions(usd, world.partner, [60_000, 40_000], status=Commission.PENDING,
                     payable_at=timezone.now() - timedelta(hours=1))
    assert tasks.release_commissions() == 2
    asks = Notification.objects.filter(kind="commissions_payable")
    assert asks.exists() and not asks.filter(read_at__isnull=False).exists()
    finance = world.member("vendor", "finance")
    first, second = Commission.objects.filter(status=Commission.PAYABLE).order_by("pk")

    approvals.approve_commissions(finance, [first.public_id])
    assert not asks.filter(read_at__isnull=False).exists()  # one still waits
    approvals.reject_commission(finance, second, "Duplicate deal")

    assert not asks.filter(read_at__isnull=True).exists()
