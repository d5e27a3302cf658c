"""The provider-independent CRM sync core: the outbox, retries and backoff, auth failures, the
rate limiter, claiming, the built-in pipeline, webhook routing and credentials at rest.

A test-only connector stands in for an external CRM (it is registered as "hubspot" for the
test): it records what it was sent and fails on demand. One test runs a real Celery worker
against Redis.
"""

import json
import os
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection as db_connection
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from accounts.errors import ServiceError
from accounts.models import AuditEvent
from attribution.models import DealSnapshot
from integrations import connections, crypto, ratelimit, registry, sync
from integrations.builtin.services import current_stage, move_stage
from integrations.models import CrmConnection, SyncAttempt, SyncRecord
from integrations.providers.base import Connector, CrmError, PushResult
from referrals import services
from referrals.models import Referral, TimelineEntry
from tests.accounts.factories import MembershipFactory
from tests.referrals.factories import ReferralFactory


class FakeCrm(Connector):
    """An external CRM that answers what the test scripted."""

    provider = "hubspot"
    batch_size = 2
    rate_limit = (1000, 1)
    script = None  # a Script, set by the `fake_crm` fixture

    def test_connection(self):
        if self.script.error:
            raise self.script.error
        return "Fake CRM account 42"

    def push(self, payloads):
        self.script.calls.append([p.referral_id for p in payloads])
        results = {}
        for payload in payloads:
            error = self.script.error
            if error is not None:
                results[payload.referral_id] = error
            else:
                self.script.pushed.append(payload.referral_id)
                results[payload.referral_id] = PushResult(
                    {"deal": f"D-{payload.referral_id[:8]}"},
                    url=f"https://crm.example/deals/{payload.referral_id[:8]}")
        return results

    def changes_since(self, cursor):
        return [], cursor


class Script:
    def __init__(self):
        self.error: CrmError | None = None
        self.pushed: list[str] = []
        self.calls: list[list[str]] = []


@pytest.fixture
def fake_crm(monkeypatch):
    script = Script()
    monkeypatch.setattr(FakeCrm, "script", script)
    monkeypatch.setitem(registry.CONNECTORS, "hubspot", f"{__name__}.FakeCrm")
    return script


@pytest.fixture
def admin(world):
    return world.member("vendor", "admin")


@pytest.fixture
def crm(admin, fake_crm):
    return connections.connect(admin, provider="hubspot",
                               credentials={"access_token": "pat-test-token"})


@pytest.fixture
def builtin(admin):
    return connections.connect(admin, provider="builtin", credentials={})


def _referral(world, programs, **kwargs):
    return ReferralFactory(program=programs["acme"], partner=world.partner,
                           submitted_by=world.member("partner", "rep").user, **kwargs)


def _accepted(world, programs, **kwargs):
    now = timezone.now()
    return _referral(world, programs, status=Referral.ACCEPTED, decided_at=now,
                     protected_until=now + timedelta(days=90), **kwargs)


def _queued(connection, referral, **fields):
    return SyncRecord.objects.create(connection=connection, referral=referral, **fields)


# --- The outbox --------------------------------------------------------------------------


def test_accepting_writes_the_sync_row_and_pushes_only_after_commit(
        world, programs, crm, fake_crm, django_capture_on_commit_callbacks):
    referral = _referral(world, programs)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.accept_referral(world.member("vendor", "partnerships"), referral)
    record = SyncRecord.objects.get(referral=referral)
    assert record.connection == crm
    assert record.status == SyncRecord.PENDING
    assert fake_crm.pushed == []  # nothing left before the transaction committed
    for callback in callbacks:
        callback()
    record.refresh_from_db()
    assert fake_crm.pushed == [str(referral.public_id)]
    assert record.status == SyncRecord.DONE
    assert record.attempts == 1
    assert record.external_ids == {"deal": f"D-{str(referral.public_id)[:8]}"}
    assert record.external_url.startswith("https://crm.example/deals/")
    assert record.synced_at is not None
    assert record.log.get().outcome == "ok"
    crm.refresh_from_db()
    assert crm.last_success_at is not None


def test_the_sync_row_rolls_back_with_the_acceptance(world, programs, crm, fake_crm,
                                                     django_capture_on_commit_callbacks):
    referral = _referral(world, programs)
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            services.accept_referral(world.member("vendor", "partnerships"), referral)
            raise RuntimeError("the request failed after accepting")
    assert not SyncRecord.objects.exists()
    assert fake_crm.pushed == []
    referral.refresh_from_db()
    assert referral.status == Referral.SUBMITTED


def test_no_live_connection_means_no_sync_row(world, programs, admin, crm,
                                              django_capture_on_commit_callbacks):
    connections.disable(admin, crm)
    referral = _referral(world, programs)
    with django_capture_on_commit_callbacks(execute=True):
        services.accept_referral(world.member("vendor", "partnerships"), referral)
    assert not SyncRecord.objects.exists()


def _submit(world, programs, name):
    rep = world.member("partner", "rep")
    data = services.ReferralData(company_name=name, website=f"{name.lower()}.com",
                                 country="US", contact_name="Pat Buyer",
                                 contact_email=f"pat@{name.lower()}.com")
    return services.submit_referral(rep, programs["acme"], data)


def test_submitting_pushes_only_when_the_vendor_asked_for_it(
        world, programs, crm, fake_crm, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        quiet = _submit(world, programs, "Initech")
    assert not SyncRecord.objects.filter(referral=quiet).exists()
    assert fake_crm.pushed == []

    CrmConnection.objects.filter(pk=crm.pk).update(push_on="submitted")
    with django_capture_on_commit_callbacks(execute=True):
        eager = _submit(world, programs, "Umbrella")
    assert SyncRecord.objects.get(referral=eager).status == SyncRecord.DONE
    assert fake_crm.pushed == [str(eager.public_id)]


def test_accepting_again_after_a_push_re_arms_the_same_row(world, programs, crm, fake_crm):
    referral = _accepted(world, programs)
    record = _queued(crm, referral, status=SyncRecord.FAILED, attempts=3,
                     last_error="Property unknown")
    with transaction.atomic():
        again = sync.enqueue_push(referral, "accepted")
    assert again.pk == record.pk
    record.refresh_from_db()
    assert (record.status, record.attempts, record.last_error) == (SyncRecord.PENDING, 0, "")


# --- Failures, retries and backoff -------------------------------------------------------


def test_a_transient_failure_waits_at_least_as_long_as_the_crm_asked(world, programs, crm,
                                                                    fake_crm):
    record = _queued(crm, _accepted(world, programs))
    fake_crm.error = CrmError("Too many requests", status=429, transient=True,
                              retry_after=600)
    before = timezone.now()
    summary = sync.push_connection(crm.pk)
    record.refresh_from_db()
    assert summary["retry"] == 1
    assert record.status == SyncRecord.PENDING
    assert record.attempts == 1
    assert record.next_attempt_at >= before + timedelta(seconds=600)
    assert record.last_error == "Too many requests"
    attempt = record.log.get()
    assert (attempt.outcome, attempt.http_status) == ("retry", 429)


def test_a_transient_failure_without_retry_after_backs_off(world, programs, crm, fake_crm):
    record = _queued(crm, _accepted(world, programs), attempts=3)
    fake_crm.error = CrmError("Bad gateway", status=502, transient=True)
    before = timezone.now()
    sync.push_connection(crm.pk)
    record.refresh_from_db()
    assert record.attempts == 4
    delay = (record.next_attempt_at - before).total_seconds()
    # attempt 4: 15 * 2**3 = 120 s, with full jitter down to half of it
    assert 60 <= delay <= 121


def test_backoff_doubles_is_capped_and_honours_retry_after():
    for attempt in range(1, 12):
        delay = sync.backoff(attempt)
        ceiling = min(sync.MAX_DELAY, sync.BASE_DELAY * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert sync.backoff(1, retry_after=300) >= 300
    assert sync.backoff(20) <= sync.MAX_DELAY


def test_a_row_gives_up_after_the_last_attempt(world, programs, crm, fake_crm):
    record = _queued(crm, _accepted(world, programs), attempts=sync.MAX_ATTEMPTS - 1)
    fake_crm.error = CrmError("Service unavailable", status=503, transient=True)
    summary = sync.push_connection(crm.pk)
    record.refresh_from_db()
    assert summary["dead"] == 1
    assert record.status == SyncRecord.DEAD
    assert record.attempts == sync.MAX_ATTEMPTS
    assert record.log.get().outcome == "dead"


def test_a_permanent_failure_waits_for_the_vendor(world, programs, crm, fake_crm):
    record = _queued(crm, _accepted(world, programs))
    fake_crm.error = CrmError.from_http(400, "Property partnerhub_referral_id does not exist")
    summary = sync.push_connection(crm.pk)
    record.refresh_from_db()
    assert summary["failed"] == 1
    assert record.status == SyncRecord.FAILED
    assert "does not exist" in record.last_error
    crm.refresh_from_db()
    assert crm.status == CrmConnection.ACTIVE  # a bad row is not a bad connection


def test_rejected_credentials_mark_the_connection_and_tell_each_admin_once(
        world, programs, crm, fake_crm, mailoutbox, django_capture_on_commit_callbacks):
    second_admin = MembershipFactory(organization=world.vendor, role="admin")
    records = [_queued(crm, _accepted(world, programs)) for _ in range(5)]
    fake_crm.error = CrmError.from_http(401, "Authentication credentials not found")
    with django_capture_on_commit_callbacks(execute=True):
        summary = sync.push_connection(crm.pk)
    assert summary["failed"] >= 2 and summary["pushed"] == 0
    assert not SyncRecord.objects.filter(pk__in=[r.pk for r in records],
                                         status=SyncRecord.DONE).exists()
    crm.refresh_from_db()
    assert crm.status == CrmConnection.ERROR
    assert crm.last_error == "Authentication credentials not found"
    assert crm.last_error_at is not None
    recipients = sorted(m.to[0] for m in mailoutbox)
    assert recipients == sorted([world.member("vendor", "admin").user.email,
                                 second_admin.user.email])
    assert "rejected our credentials" in mailoutbox[0].subject + mailoutbox[0].body


def test_an_unexpected_exception_is_retried_like_a_network_error(world, programs, crm,
                                                                fake_crm, monkeypatch):
    record = _queued(crm, _accepted(world, programs))
    monkeypatch.setattr(FakeCrm, "push", lambda self, payloads: 1 / 0)
    sync.push_connection(crm.pk)
    record.refresh_from_db()
    assert record.status == SyncRecord.PENDING
    assert "ZeroDivisionError" in record.last_error


def test_a_disabled_connection_pushes_nothing(world, programs, admin, crm, fake_crm):
    record = _queued(crm, _accepted(world, programs))
    connections.disable(admin, crm)
    assert sync.push_connection(crm.pk)["pushed"] == 0
    assert fake_crm.calls == []
    record.refresh_from_db()
    assert record.status == SyncRecord.PENDING


def test_stuck_rows_go_back_to_the_queue(world, programs, crm):
    now = timezone.now()
    stuck = _queued(crm, _accepted(world, programs), status=SyncRecord.RUNNING)
    busy = _queued(crm, _accepted(world, programs), status=SyncRecord.RUNNING)
    SyncRecord.objects.filter(pk=stuck.pk).update(updated_at=now - timedelta(minutes=20))
    SyncRecord.objects.filter(pk=busy.pk).update(updated_at=now - timedelta(minutes=2))
    assert sync.requeue_stuck(now) == 1
    stuck.refresh_from_db()
    busy.refresh_from_db()
    assert stuck.status == SyncRecord.PENDING
    assert stuck.next_attempt_at <= now
    assert busy.status == SyncRecord.RUNNING
    assert sync.due_connection_ids(now) == [crm.pk]


def test_a_claimed_row_is_not_claimed_twice(world, programs, crm):
    rows = [_queued(crm, _accepted(world, programs)) for _ in range(3)]
    _queued(crm, _accepted(world, programs), next_attempt_at=timezone.now() + timedelta(hours=1))
    first = sync._claim(crm, 2)
    second = sync._claim(crm, 2)
    third = sync._claim(crm, 2)
    assert len(first) == 2 and len(second) == 1 and third == []
    assert {r.pk for r in first} | {r.pk for r in second} == {r.pk for r in rows}
    assert not {r.pk for r in first} & {r.pk for r in second}
    assert all(r.attempts == 1 for r in first + second)
    assert set(SyncRecord.objects.filter(pk__in=[r.pk for r in rows])
               .values_list("status", flat=True)) == {SyncRecord.RUNNING}


# --- The rate limiter --------------------------------------------------------------------


def test_the_rate_limiter_shares_one_budget_per_connection_and_window():
    connection_id = uuid.uuid4().int % 10**9  # a key nobody else uses
    now = 1_000_000.25
    assert [ratelimit.reserve(connection_id, 3, 10, now=now) for _ in range(3)] == [0, 0, 0]
    # The budget is spent: the fourth call (from any worker) waits for the next window.
    assert ratelimit.reserve(connection_id, 3, 10, now=now + 1) == pytest.approx(8.75)
    assert ratelimit.reserve(connection_id + 1, 3, 10, now=now + 1) == 0  # its own budget
    assert ratelimit.reserve(connection_id, 3, 10, now=now + 10) == 0  # a new window


def test_pushing_stops_at_the_rate_limit_and_reschedules(world, programs, crm, fake_crm,
                                                        monkeypatch):
    monkeypatch.setattr(FakeCrm, "batch_size", 1)
    monkeypatch.setattr(FakeCrm, "rate_limit", (1, 3600))
    records = [_queued(crm, _accepted(world, programs)) for _ in range(3)]
    before = timezone.now()
    summary = sync.push_connection(crm.pk)
    assert summary["pushed"] == 1
    assert summary["rate_limited"] == 1
    rows = SyncRecord.objects.filter(pk__in=[r.pk for r in records])
    assert rows.filter(status=SyncRecord.DONE).count() == 1
    waiting = rows.exclude(status=SyncRecord.DONE)
    # The eager re-kick found the budget spent too: every waiting row is released for later.
    assert {r.status for r in waiting} == {SyncRecord.PENDING}
    assert all(r.next_attempt_at > before for r in waiting)
    assert all(r.attempts == 0 for r in waiting)  # waiting for budget is not an attempt
    assert len(fake_crm.pushed) == 1


# --- The built-in pipeline ---------------------------------------------------------------


def test_moving_through_the_builtin_pipeline_records_snapshots(world, programs, builtin):
    referral = _accepted(world, programs)
    rep = world.member("vendor", "partnerships")
    assert current_stage(referral) == "new"
    move_stage(rep, referral, "qualified")
    move_stage(rep, referral, "proposal")
    snapshots = list(DealSnapshot.objects.filter(referral=referral).order_by("received_at"))
    assert [s.stage for s in snapshots] == ["qualified", "proposal"]
    assert {s.outcome for s in snapshots} == {"open"}
    assert {s.provider for s in snapshots} == {"builtin"}
    assert current_stage(referral) == "proposal"
    referral.refresh_from_db()
    assert referral.status == Referral.ACCEPTED


def test_won_in_the_builtin_pipeline_wins_the_referral(world, programs, builtin,
                                                      django_capture_on_commit_callbacks):
    referral = _accepted(world, programs)
    with django_capture_on_commit_callbacks(execute=True):
        snapshot = move_stage(world.member("vendor", "admin"), referral, "won")
    assert snapshot.outcome == DealSnapshot.WON
    assert snapshot.closed_at is not None
    assert snapshot.amount_minor == referral.amount_minor
    referral.refresh_from_db()
    assert referral.status == Referral.WON
    assert referral.closed_at is not None
    assert AuditEvent.objects.filter(action="referral.won",
                                     target_id__in=[str(referral.pk),
                                                    str(referral.public_id)]).exists()
    entry = TimelineEntry.objects.get(referral=referral, to_status=Referral.WON)
    assert entry.from_status == Referral.ACCEPTED
    assert "in the pipeline" in entry.body


def test_only_accepted_referrals_move_through_the_pipeline(world, programs, builtin):
    referral = _referral(world, programs)
    with pytest.raises(ServiceError, match="Accept the referral"):
        move_stage(world.member("vendor", "admin"), referral, "qualified")
    assert not DealSnapshot.objects.exists()


def test_stages_outside_the_pipeline_are_refused(world, programs, builtin):
    with pytest.raises(ServiceError, match="stages"):
        move_stage(world.member("vendor", "admin"), _accepted(world, programs), "signed")


def test_the_builtin_connector_pushes_nothing_out(world, programs, builtin):
    referral = _accepted(world, programs)
    record = _queued(builtin, referral)
    assert sync.push_connection(builtin.pk)["pushed"] == 1
    record.refresh_from_db()
    assert record.status == SyncRecord.DONE
    assert record.external_ids == {"deal": str(referral.public_id)}


# --- Webhook routing ---------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["salesforce", "builtin", "stripe"])
def test_webhooks_for_providers_without_webhooks_are_not_found(client, db, provider):
    response = client.post(reverse("integrations:webhook", args=[provider, "anything"]))
    assert response.status_code == 404


def test_webhooks_with_an_unknown_or_retired_token_are_not_found(client, admin, crm):
    wrong = client.post(reverse("integrations:webhook", args=["hubspot", "not-the-token"]),
                        data="[]", content_type="application/json")
    assert wrong.status_code == 404
    connections.disable(admin, crm)
    retired = client.post(reverse("integrations:webhook", args=["hubspot", crm.webhook_token]),
                          data="[]", content_type="application/json")
    assert retired.status_code == 404
    other = client.post(reverse("integrations:webhook", args=["pipedrive", crm.webhook_token]),
                        data="{}", content_type="application/json")
    assert other.status_code == 404


def test_webhooks_only_accept_post(client, crm):
    url = reverse("integrations:webhook", args=["hubspot", crm.webhook_token])
    assert client.get(url).status_code == 405


# --- Credentials at rest -----------------------------------------------------------------


def test_credentials_are_encrypted_in_the_database(crm):
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT credentials_encrypted FROM integrations_crmconnection "
                       "WHERE id = %s", [crm.pk])
        (stored,) = cursor.fetchone()
    assert "pat-test-token" not in stored
    assert CrmConnection.objects.get(pk=crm.pk).credentials == {"access_token": "pat-test-token"}


def test_a_new_key_in_front_still_opens_old_ciphertexts_and_rotate_moves_them(settings):
    settings.FIELD_ENCRYPTION_KEYS = ["old-secret"]
    old = crypto.encrypt_json({"api_token": "abc"})
    settings.FIELD_ENCRYPTION_KEYS = ["new-secret", "old-secret"]
    assert crypto.decrypt_json(old) == {"api_token": "abc"}
    rotated = crypto.rotate(old)
    assert rotated != old
    settings.FIELD_ENCRYPTION_KEYS = ["new-secret"]  # the old key retired
    assert crypto.decrypt_json(rotated) == {"api_token": "abc"}
    with pytest.raises(crypto.CredentialsUnreadable):
        crypto.decrypt_json(old)


def test_rotating_a_connection_keeps_its_credentials(settings, admin, fake_crm):
    settings.FIELD_ENCRYPTION_KEYS = ["old-secret"]
    crm = connections.connect(admin, provider="hubspot", credentials={"access_token": "t0k"})
    settings.FIELD_ENCRYPTION_KEYS = ["new-secret", "old-secret"]
    CrmConnection.objects.filter(pk=crm.pk).update(
        credentials_encrypted=crypto.rotate(crm.credentials_encrypted))
    settings.FIELD_ENCRYPTION_KEYS = ["new-secret"]
    assert CrmConnection.objects.get(pk=crm.pk).credentials == {"access_token": "t0k"}


def test_connect_audits_which_fields_were_set_never_their_values(admin, crm):
    event = AuditEvent.objects.get(action="crm.connected")
    assert event.after["credential_fields"] == ["access_token"]
    assert "pat-test-token" not in json.dumps([event.before, event.after])


# --- A real worker -----------------------------------------------------------------------


def _forget_queue(redis_url, queue):
    """Leave nothing behind in the shared Redis: the queue and kombu's bindings for it."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=f"*{queue}*"):
            client.delete(key)
    finally:
        client.close()


@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_completes_the_push(world, programs, builtin, settings):
    """The on-commit task goes through Redis to a worker thread, which pushes the row."""
    from celery.contrib.testing.worker import start_worker

    from partnerhub.celery import app

    queue = f"crm-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"  # never share a queue
    saved = {key: app.conf[key] for key in ("task_always_eager", "broker_url", "task_routes",
                                            "worker_hijack_root_logger")}
    app.conf.update(task_always_eager=False, broker_url=settings.REDIS_URL,
                    task_routes={"*": {"queue": queue}}, worker_hijack_root_logger=False)
    app.amqp.__dict__.pop("router", None)  # routes are cached on first use
    referral = _referral(world, programs)
    try:
        with start_worker(app, perform_ping_check=False, queues=[queue], pool="solo",
                          shutdown_timeout=30):
            services.accept_referral(world.member("vendor", "partnerships"), referral)
            record = SyncRecord.objects.get(referral=referral)
            deadline = time.monotonic() + 30
            while record.status != SyncRecord.DONE and time.monotonic() < deadline:
                time.sleep(0.2)
                record.refresh_from_db()
    finally:
        _forget_queue(settings.REDIS_URL, queue)
        app.conf.update(saved)
        app.amqp.__dict__.pop("router", None)
    assert record.status == SyncRecord.DONE
    assert record.external_ids == {"deal": str(referral.public_id)}
    assert SyncAttempt.objects.filter(record=record, outcome="ok").exists()


def test_a_successful_test_after_a_refused_token_sends_the_waiting_rows(
        world, programs, django_capture_on_commit_callbacks, monkeypatch):
    """Credentials refused -> rows wait; fixed credentials + Test connection -> all pushed."""
    from integrations import connections, registry
    from integrations.providers.base import Connector, CrmError, PushResult
    from tests.referrals.factories import ReferralFactory

    state = {"refuse": True, "pushed": []}

    class Flaky(Connector):
        batch_size = 1
        rate_limit = (1000, 1)

        def test_connection(self):
            if state["refuse"]:
                raise CrmError("token revoked", status=401, auth=True)
            return "ok"

        def push(self, payloads):
            if state["refuse"]:
                return {p.referral_id: CrmError("token revoked", status=401, auth=True)
                        for p in payloads}
            state["pushed"] += [p.referral_id for p in payloads]
            return {p.referral_id: PushResult({"deal": p.referral_id}) for p in payloads}

    monkeypatch.setitem(registry.CONNECTORS, "hubspot", f"{__name__}.Flaky")
    globals()["Flaky"] = Flaky
    admin = world.member("vendor", "admin")
    connection = connections.connect(admin, provider="hubspot", credentials={"access_token": "x"})
    names = ["Initech", "Hooli", "Vandelay"]  # three different accounts
    referrals = [ReferralFactory(program=programs["acme"], partner=world.partner,
                                 company_name=name, website=f"{name.lower()}.com")
                 for name in names]
    from referrals import services

    for referral in referrals:
        with django_capture_on_commit_callbacks(execute=True):
            services.accept_referral(world.member("vendor", "partnerships"), referral)
    statuses = sorted(SyncRecord.objects.filter(connection=connection)
                      .values_list("status", flat=True))
    assert statuses == ["failed", "pending", "pending"]
    assert state["pushed"] == []

    state["refuse"] = False
    with django_capture_on_commit_callbacks(execute=True):
        connections.test_connection(admin, connection)
    connection.refresh_from_db()
    assert connection.status == CrmConnection.ACTIVE
    assert set(SyncRecord.objects.filter(connection=connection)
               .values_list("status", flat=True)) == {"done"}
    assert sorted(state["pushed"]) == sorted(str(r.public_id) for r in referrals)
