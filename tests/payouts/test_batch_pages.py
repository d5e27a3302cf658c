"""Payout batch pages: the list with the "New batch" form, one batch with its payouts, the
approve / cancel buttons (and the creator's "waiting for a second approver"), failures with
Stripe's message and a retry, the CSV, per role, across networks, and their query counts; the
build and the cancel queued from the pages and followed by the htmx progress partial."""

import csv
import io
import sys
import types

import pytest
from django.urls import reverse
from django.utils import timezone

from payouts import batches
from payouts.models import Commission, Payout, PayoutBatch
from tests.accounts.factories import MembershipFactory, OrganizationFactory
from tests.conftest import ALL_ROLES, ROLE_IDS
from tests.payouts.test_batches import (
    YESTERDAY,
    make_commissions,
    make_payable,
    make_plan,
)

READERS = {("operator", "admin"), ("operator", "finance"), ("operator", "auditor")}
MANAGERS = {("operator", "admin"), ("operator", "finance")}
NON_MANAGER_IDS = [i for k, i in zip(ALL_ROLES, ROLE_IDS, strict=True) if k not in MANAGERS]
NON_MANAGERS = [k for k in ALL_ROLES if k not in MANAGERS]


@pytest.fixture
def usd(world, programs):
    return make_plan(world, programs["acme"])


@pytest.fixture
def draft(world, usd):
    """Built by operator finance: Brightpath is paid, Summit has no payout account."""
    make_payable(world.partner)
    make_payable(world.partner2, account=False)
    make_commissions(usd, world.partner, [60_000, 40_000])
    make_commissions(usd, world.partner2, [70_000])
    return batches.build_batch(world.member("operator", "finance"), YESTERDAY)


@pytest.fixture
def send_task(monkeypatch):
    from payouts import tasks

    queued = []
    monkeypatch.setattr(tasks, "send_batch",
                        types.SimpleNamespace(delay=queued.append), raising=False)
    return queued


@pytest.fixture
def transfers(monkeypatch):
    """Stands in for payouts.transfers (the transfers work): records the calls."""
    import payouts

    calls = []
    fake = types.ModuleType("payouts.transfers")
    fake.retry_payout = lambda actor, payout: calls.append(("retry", actor.pk, payout.pk))
    fake.cancel_payout = lambda actor, payout: calls.append(("cancel", actor.pk, payout.pk))
    monkeypatch.setitem(sys.modules, "payouts.transfers", fake)
    monkeypatch.setattr(payouts, "transfers", fake, raising=False)
    return calls


def failed(batch, message="Your destination account needs to have at least one of the "
                          "following capabilities enabled: transfers"):
    payout = batch.payouts.get(status=Payout.READY)
    Payout.objects.filter(pk=payout.pk).update(
        status=Payout.FAILED, failure_code="insufficient_capabilities_for_transfer",
        failure_message=message, attempts=1, last_attempt_at=timezone.now())
    PayoutBatch.objects.filter(pk=batch.pk).update(status=PayoutBatch.SENDING)
    return payout


def list_url():
    return reverse("payouts:batch_list")


def detail_url(batch):
    return reverse("payouts:batch_detail", args=[batch.public_id])


def csv_url(batch):
    return reverse("payouts:batch_csv", args=[batch.public_id])


def progress_url(batch, on="list"):
    return reverse("payouts:batch_progress", args=[batch.public_id]) + f"?on={on}"


HTMX = {"HX-Request": "true"}


@pytest.fixture
def building(world, usd, django_capture_on_commit_callbacks):
    """Requested by operator finance; its build task has not run yet."""
    make_payable(world.partner)
    make_commissions(usd, world.partner, [60_000])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        batch = batches.request_batch(world.member("operator", "finance"), YESTERDAY)
    batch.dispatch = callbacks
    return batch


# --- who sees what -------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["list", "detail", "csv"])
def test_anonymous_visitors_are_sent_to_log_in(client, draft, url):
    target = {"list": list_url, "detail": lambda: detail_url(draft),
              "csv": lambda: csv_url(draft)}[url]()
    response = client.get(target)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.parametrize("kind,role", ALL_ROLES, ids=ROLE_IDS)
def test_the_list_is_for_operator_finance_admins_and_the_auditor(world, draft, kind, role):
    response = world.client_for(world.member(kind, role)).get(list_url())
    if (kind, role) not in READERS:
        assert response.status_code == 404
        return
    html = response.content.decode()
    assert response.status_code == 200
    assert detail_url(draft) in html
    assert "$1,000.00" in html  # Brightpath's 600 + 400 to send
    assert ("Build the batch" in html) == ((kind, role) in MANAGERS)


@pytest.mark.parametrize("kind,role", ALL_ROLES, ids=ROLE_IDS)
def test_the_batch_page_per_role(world, draft, kind, role):
    response = world.client_for(world.member(kind, role)).get(detail_url(draft))
    if (kind, role) not in READERS:
        assert response.status_code == 404
        return
    html = response.content.decode()
    assert response.status_code == 200
    assert "Brightpath" in html and "Summit" in html
    assert "No payout account" in html  # Summit's carried-over reason, in words
    creator = (kind, role) == ("operator", "finance")
    assert ("Approve and send" in html) == ((kind, role) == ("operator", "admin"))
    assert ("waiting for a second approver" in html) == creator
    assert ("Cancel the batch" in html) == ((kind, role) in MANAGERS)


@pytest.mark.parametrize("name", ["partner2_owner", "foreign_owner", "foreign_vendor_admin"])
def test_other_organizations_get_404(world, draft, name):
    foreign = name.startswith("foreign")
    client = world.client_for(world.others[name],
                              host=world.other_network.domain if foreign else "testserver")
    for url in (list_url(), detail_url(draft), csv_url(draft)):
        assert client.get(url).status_code == 404


def test_another_networks_finance_does_not_see_our_batches(world, draft):
    ops = OrganizationFactory(network=world.other_network, kind="operator")
    outsider = MembershipFactory(organization=ops, role="finance")
    client = world.client_for(outsider, host=world.other_network.domain)
    listing = client.get(list_url())
    assert listing.status_code == 200 and detail_url(draft) not in listing.content.decode()
    assert client.get(detail_url(draft)).status_code == 404
    assert client.get(csv_url(draft)).status_code == 404
    assert client.post(reverse("payouts:batch_approve", args=[draft.public_id])).status_code \
        == 404


def test_the_list_filters_by_status(world, draft, usd):
    batches.cancel_batch(world.member("operator", "admin"), draft)
    make_commissions(usd, world.partner, [90_000])
    second = batches.build_batch(world.member("operator", "finance"), YESTERDAY)
    client = world.client_for(world.member("operator", "auditor"))

    html = client.get(list_url(), {"status": "cancelled"}).content.decode()
    assert detail_url(draft) in html and detail_url(second) not in html
    html = client.get(list_url(), {"status": "draft"}).content.decode()
    assert detail_url(second) in html and detail_url(draft) not in html
    response = client.get(list_url(), {"status": "nonsense"})
    assert response.status_code == 200 and detail_url(second) not in response.content.decode()


def test_the_batch_page_filters_payouts_by_status(world, draft):
    client = world.client_for(world.member("operator", "finance"))
    carried = client.get(detail_url(draft), {"status": "carried_over"}).content.decode()
    assert "Summit" in carried and "Brightpath" not in carried
    ready = client.get(detail_url(draft), {"status": "ready"}).content.decode()
    assert "Brightpath" in ready and "Summit" not in ready
    junk = client.get(detail_url(draft), {"status": "<script>"})
    assert junk.status_code == 200
    assert "Brightpath" not in junk.content.decode()


# --- building, approving, cancelling -------------------------------------------------------

def test_finance_builds_a_batch_from_the_list(world, usd, django_capture_on_commit_callbacks):
    make_payable(world.partner)
    make_commissions(usd, world.partner, [60_000])
    client = world.client_for(world.member("operator", "finance"))

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("payouts:batch_create"),
                               {"period_end": YESTERDAY.isoformat()})

    batch = PayoutBatch.objects.get()
    assert batch.status == PayoutBatch.DRAFT  # the build was queued on commit, and ran
    assert response.status_code == 302 and response["Location"] == detail_url(batch)
    page = client.get(response["Location"]).content.decode()
    assert "Building the batch: this page updates itself" in page  # said when it was queued
    assert "$600.00" in page and "Awaiting approval" in page  # and built since
    assert "waiting for a second approver" in page


@pytest.mark.django_db(transaction=True)
def test_with_eager_celery_the_redirect_lands_on_the_built_batch(world, programs):
    """Quickstart: no worker, tasks run inline when the request commits."""
    usd = make_plan(world, programs["acme"])
    make_payable(world.partner)
    make_commissions(usd, world.partner, [60_000])
    client = world.client_for(world.member("operator", "finance"))

    response = client.post(reverse("payouts:batch_create"),
                           {"period_end": YESTERDAY.isoformat()}, follow=True)

    batch = PayoutBatch.objects.get()
    assert batch.status == PayoutBatch.DRAFT
    assert response.redirect_chain == [(detail_url(batch), 302)]
    page = response.content.decode()
    assert "1 payout(s) await a second person" in page
    assert "$600.00" in page


@pytest.mark.parametrize("period_end,message", [
    ("", "This field is required"),
    ("31/02/2024", "Enter a valid date"),
    ("2999-01-01", "The period cannot end in the future"),
])
def test_a_batch_that_cannot_be_built_says_why_on_the_form(
        world, period_end, message, django_capture_on_commit_callbacks):
    client = world.client_for(world.member("operator", "admin"))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(reverse("payouts:batch_create"), {"period_end": period_end})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not PayoutBatch.objects.exists() and callbacks == []


def test_nothing_to_pay_shows_the_failed_build_with_its_message(
        world, django_capture_on_commit_callbacks):
    client = world.client_for(world.member("operator", "admin"))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("payouts:batch_create"),
                               {"period_end": YESTERDAY.isoformat()})

    batch = PayoutBatch.objects.get()
    assert batch.status == PayoutBatch.BUILD_FAILED and not Payout.objects.exists()
    assert response.status_code == 302 and response["Location"] == detail_url(batch)
    why = "No approved commissions are payable"
    page = client.get(detail_url(batch)).content.decode()
    assert "The batch could not be built" in page and why in page
    assert "Approve and send" not in page and "Download CSV" not in page
    listing = world.client_for(world.member("operator", "auditor")).get(list_url())
    html = listing.content.decode()
    assert "Build failed" in html and why in html
    assert 'hx-trigger="every 2s"' not in html  # nothing left to follow


def test_a_second_build_while_one_is_building_is_refused_on_the_form(world, building):
    response = world.client_for(world.member("operator", "admin")).post(
        reverse("payouts:batch_create"), {"period_end": YESTERDAY.isoformat()})
    assert response.status_code == 400
    assert "already being built" in response.content.decode()
    assert list(PayoutBatch.objects.values_list("pk", flat=True)) == [building.pk]


@pytest.mark.parametrize("kind,role", NON_MANAGERS, ids=NON_MANAGER_IDS)
def test_other_roles_cannot_build(world, usd, kind, role):
    make_payable(world.partner)
    make_commissions(usd, world.partner, [60_000])
    response = world.client_for(world.member(kind, role)).post(
        reverse("payouts:batch_create"), {"period_end": YESTERDAY.isoformat()})
    assert response.status_code == 404
    assert not PayoutBatch.objects.exists()


def test_the_admin_approves_from_the_page(world, draft, send_task,
                                          django_capture_on_commit_callbacks):
    client = world.client_for(world.member("operator", "admin"))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("payouts:batch_approve", args=[draft.public_id]))
    assert response.status_code == 302
    draft.refresh_from_db()
    assert draft.status == PayoutBatch.APPROVED
    assert send_task == [draft.pk]
    page = client.get(detail_url(draft)).content.decode()
    assert "the transfers are on their way" in page and "Approve and send" not in page


def test_the_creator_posting_approve_is_told_to_find_a_second_person(world, draft, send_task):
    client = world.client_for(world.member("operator", "finance"))
    response = client.post(reverse("payouts:batch_approve", args=[draft.public_id]),
                           follow=True)
    assert "a second person must approve it" in response.content.decode()
    draft.refresh_from_db()
    assert draft.status == PayoutBatch.DRAFT and send_task == []


@pytest.mark.parametrize("action", ["batch_approve", "batch_cancel"])
def test_the_auditor_cannot_act_on_a_batch(world, draft, send_task, action):
    client = world.client_for(world.member("operator", "auditor"))
    response = client.post(reverse(f"payouts:{action}", args=[draft.public_id]))
    assert response.status_code == 404
    draft.refresh_from_db()
    assert draft.status == PayoutBatch.DRAFT


def test_cancelling_from_the_page_releases_the_commissions(world, draft, send_task,
                                                           django_capture_on_commit_callbacks):
    client = world.client_for(world.member("operator", "finance"))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("payouts:batch_cancel", args=[draft.public_id]),
                               follow=True)
    assert "Batch cancelled" in response.content.decode()
    draft.refresh_from_db()
    assert draft.status == PayoutBatch.CANCELLED
    assert not Commission.objects.filter(payout__isnull=False).exists()


def test_a_batch_being_cancelled_cannot_be_approved_and_follows_the_release(
        world, draft, send_task, django_capture_on_commit_callbacks):
    finance = world.client_for(world.member("operator", "finance"))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        finance.post(reverse("payouts:batch_cancel", args=[draft.public_id]))
    admin = world.client_for(world.member("operator", "admin"))

    page = admin.get(detail_url(draft)).content.decode()
    assert "Cancelling…" in page and progress_url(draft, "detail") in page
    assert "Approve and send" not in page and "Cancel the batch" not in page
    refused = admin.post(reverse("payouts:batch_approve", args=[draft.public_id]), follow=True)
    assert "only a batch awaiting approval can be approved" in refused.content.decode()
    assert admin.get(progress_url(draft, "detail"), headers=HTMX).status_code == 200

    for callback in callbacks:
        callback()

    done = admin.get(progress_url(draft, "detail"), headers=HTMX)
    assert done.status_code == 200 and done["HX-Refresh"] == "true"
    assert "went back into the pool" in admin.get(detail_url(draft)).content.decode()
    assert send_task == []


def test_get_on_an_action_is_refused(world, draft):
    client = world.client_for(world.member("operator", "admin"))
    assert client.get(reverse("payouts:batch_approve", args=[draft.public_id])) \
        .status_code == 405


# --- following a build (htmx) ---------------------------------------------------------------

@pytest.mark.parametrize("on", ["list", "detail"])
def test_anonymous_visitors_polling_are_sent_to_log_in(client, building, on):
    response = client.get(progress_url(building, on), headers=HTMX)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.parametrize("kind,role", ALL_ROLES, ids=ROLE_IDS)
def test_the_progress_partial_per_role(world, building, kind, role):
    client = world.client_for(world.member(kind, role))
    for on in ("list", "detail"):
        response = client.get(progress_url(building, on), headers=HTMX)
        if (kind, role) not in READERS:
            assert response.status_code == 404
            continue
        html = response.content.decode()
        assert response.status_code == 200
        assert "Building…" in html and "<html" not in html  # the partial, not a page
        assert f'hx-get="{progress_url(building, on)}"' in html
        assert 'hx-trigger="every 2s"' in html


@pytest.mark.parametrize("name", ["partner2_owner", "foreign_owner", "foreign_vendor_admin"])
def test_other_organizations_cannot_poll(world, building, name):
    foreign = name.startswith("foreign")
    client = world.client_for(world.others[name],
                              host=world.other_network.domain if foreign else "testserver")
    assert client.get(progress_url(building), headers=HTMX).status_code == 404


def test_another_networks_finance_cannot_poll_our_build(world, building):
    ops = OrganizationFactory(network=world.other_network, kind="operator")
    outsider = MembershipFactory(organization=ops, role="finance")
    client = world.client_for(outsider, host=world.other_network.domain)
    assert client.get(progress_url(building), headers=HTMX).status_code == 404


def test_the_list_shows_a_building_batch_that_polls_until_it_is_built(world, building):
    client = world.client_for(world.member("operator", "auditor"))
    html = client.get(list_url()).content.decode()
    assert "Building… this row updates itself." in html
    assert f'hx-get="{progress_url(building)}"' in html and 'hx-trigger="every 2s"' in html
    assert f'href="{detail_url(building)}"' not in html  # nothing to open yet

    polled = client.get(progress_url(building), headers=HTMX).content.decode()
    assert polled.lstrip().startswith("<tr") and "Building…" in polled

    for callback in building.dispatch:
        callback()

    row = client.get(progress_url(building), headers=HTMX).content.decode()
    assert row.lstrip().startswith("<tr") and "hx-trigger" not in row  # polling stops
    assert f'href="{detail_url(building)}"' in row and "Awaiting approval" in row
    assert "$600.00" in row


def test_the_batch_page_of_a_building_batch_polls_then_reloads(world, building):
    client = world.client_for(world.member("operator", "finance"))
    page = client.get(detail_url(building)).content.decode()
    assert "Building…" in page and f'hx-get="{progress_url(building, "detail")}"' in page
    assert "Approve and send" not in page and "Download CSV" not in page

    for callback in building.dispatch:
        callback()

    response = client.get(progress_url(building, "detail"), headers=HTMX)
    assert response.status_code == 200 and response["HX-Refresh"] == "true"
    page = client.get(detail_url(building)).content.decode()
    assert "waiting for a second approver" in page and "$600.00" in page


def test_the_progress_url_without_htmx_goes_to_the_batch(world, building):
    response = world.client_for(world.member("operator", "admin")).get(progress_url(building))
    assert response.status_code == 302 and response["Location"] == detail_url(building)


def test_polling_a_page_of_building_and_failed_batches_stays_cheap(
        world, usd, django_assert_max_num_queries, django_capture_on_commit_callbacks):
    """A failed build, then one building: the list and the partial cost a fixed few queries."""
    with django_capture_on_commit_callbacks(execute=True):
        batches.request_batch(world.member("operator", "admin"), YESTERDAY)
    with django_capture_on_commit_callbacks(execute=False):
        batch = batches.request_batch(world.member("operator", "finance"), YESTERDAY)
    client = world.client_for(world.member("operator", "finance"))
    with django_assert_max_num_queries(12):
        html = client.get(list_url()).content.decode()
    assert "Build failed" in html and "Building…" in html
    with django_assert_max_num_queries(6):
        assert client.get(progress_url(batch), headers=HTMX).status_code == 200


# --- failures ------------------------------------------------------------------------------

def test_a_failure_shows_stripes_message_with_retry_and_cancel(world, draft):
    payout = failed(draft)
    html = world.client_for(world.member("operator", "finance")).get(
        detail_url(draft), {"status": "failed"}).content.decode()
    assert "at least one of the following capabilities enabled" in html
    assert "insufficient_capabilities_for_transfer" in html
    assert reverse("payouts:payout_retry", args=[payout.public_id]) in html
    assert reverse("payouts:payout_cancel", args=[payout.public_id]) in html

    auditor = world.client_for(world.member("operator", "auditor")).get(
        detail_url(draft)).content.decode()
    assert "at least one of the following capabilities enabled" in auditor
    assert reverse("payouts:payout_retry", args=[payout.public_id]) not in auditor


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_retry_and_cancel_go_to_the_transfers_service(world, draft, transfers, action):
    payout = failed(draft)
    finance = world.member("operator", "finance")
    response = world.client_for(finance).post(
        reverse(f"payouts:payout_{action}", args=[payout.public_id]))
    assert response.status_code == 302 and response["Location"] == detail_url(draft)
    assert transfers == [(action, finance.pk, payout.pk)]


@pytest.mark.parametrize("kind,role", NON_MANAGERS, ids=NON_MANAGER_IDS)
def test_only_managers_retry(world, draft, transfers, kind, role):
    payout = failed(draft)
    response = world.client_for(world.member(kind, role)).post(
        reverse("payouts:payout_retry", args=[payout.public_id]))
    assert response.status_code == 404 and transfers == []


def test_retry_through_the_real_transfers_service_makes_the_payout_ready_again(world, draft):
    payout = failed(draft)
    response = world.client_for(world.member("operator", "finance")).post(
        reverse("payouts:payout_retry", args=[payout.public_id]), follow=True)
    assert "Sending again." in response.content.decode()
    payout.refresh_from_db()
    assert payout.status == Payout.READY


def test_a_refused_retry_is_shown(world, draft, transfers):
    from accounts.errors import ServiceError

    payout = failed(draft)

    def refuse(actor, payout):
        raise ServiceError("The partner's account still cannot receive transfers.")

    sys.modules["payouts.transfers"].retry_payout = refuse
    response = world.client_for(world.member("operator", "admin")).post(
        reverse("payouts:payout_retry", args=[payout.public_id]), follow=True)
    assert "still cannot receive transfers" in response.content.decode()


# --- CSV -----------------------------------------------------------------------------------

def test_the_csv_lists_every_payout_and_is_formula_safe(world, draft):
    world.partner.name = "=HYPERLINK(\"http://evil.example\")"
    world.partner.save(update_fields=["name"])
    response = world.client_for(world.member("operator", "auditor")).get(csv_url(draft))
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    by_partner = {r["partner"]: r for r in rows}
    evil = by_partner["'=HYPERLINK(\"http://evil.example\")"]
    assert (evil["amount"], evil["currency"], evil["status"]) == ("1000.00", "USD", "ready")
    summit = by_partner["Summit"]
    assert (summit["status"], summit["carried_over_because"]) == (
        "carried_over", "No payout account")


# --- cost ----------------------------------------------------------------------------------

def test_the_list_costs_the_same_with_many_batches(world, usd, django_assert_max_num_queries):
    make_payable(world.partner)
    admin = world.member("operator", "admin")
    for _ in range(30):
        make_commissions(usd, world.partner, [60_000])
        batches.build_batch(admin, YESTERDAY)
    client = world.client_for(world.member("operator", "finance"))
    with django_assert_max_num_queries(12):
        response = client.get(list_url())
    assert response.content.decode().count("/payout-batches/") >= 25


def test_the_batch_page_costs_the_same_with_many_payouts(world, usd,
                                                        django_assert_max_num_queries):
    partners = [OrganizationFactory(network=world.network, kind="partner") for _ in range(30)]
    for i, partner in enumerate(partners):
        make_payable(partner, transfers=i % 3 != 0)
        make_commissions(usd, partner, [60_000, 10_000])
    batch = batches.build_batch(world.member("operator", "finance"), YESTERDAY)
    Payout.objects.filter(batch=batch, status=Payout.READY).update(
        status=Payout.FAILED, failure_message="Stripe said no")
    client = world.client_for(world.member("operator", "admin"))
    with django_assert_max_num_queries(12):
        response = client.get(detail_url(batch))
    html = response.content.decode()
    failures = html.count("Stripe said no")
    not_ready = html.count("Payout account cannot receive transfers yet")
    assert failures and not_ready and failures + not_ready == 25  # page 1 of 30


def test_the_list_flags_sent_batches_with_failed_payouts(world, draft):
    failed(draft)
    PayoutBatch.objects.filter(pk=draft.pk).update(status=PayoutBatch.SENT)
    html = world.client_for(world.member("operator", "finance")).get(list_url()).content.decode()
    assert "1 failed" in html
