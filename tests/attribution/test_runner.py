"""Attribution against the database, through the real path: referrals accepted by the vendor,
deals moved through the built-in pipeline (or changed as a CRM would report them), snapshots
recorded and attributed on commit; re-runs, people's decisions, reopened deals, the backfill
command, the Celery task, and who sees which attribution."""

import threading
from collections import defaultdict
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import roles
from attribution.decisions import confirm_attribution, reassign_attribution
from attribution.disputes import partner_subjects
from attribution.models import (
    Attribution,
    AttributionCandidate,
    AttributionChange,
    CommonNameWord,
    DealSnapshot,
)
from attribution.name_keys import COMMON_WORD_REFERRALS, common_words, refresh_common_words
from attribution.runner import (
    FUZZY_CANDIDATES,
    attribute_deal,
    attribute_deals,
    backfill,
    lock_group,
)
from attribution.tasks import attribute_snapshot, recount_common_words
from integrations import connections
from integrations.builtin.services import move_stage
from integrations.inbound import ingest_change
from integrations.providers.base import DealChange
from referrals import services
from referrals.models import Referral
from referrals.normalize import normalize_domain
from tests.accounts.factories import MembershipFactory
from tests.referrals.factories import ReferralFactory

WRITES = ("INSERT", "UPDATE", "DELETE", "COPY")


# --- Helpers -------------------------------------------------------------------------------

@pytest.fixture
def pipeline(world):
    """The vendor works its deals in the built-in pipeline."""
    return connections.connect(world.member("vendor", "admin"), provider="builtin",
                               credentials={})


@pytest.fixture
def run_on_commit(django_capture_on_commit_callbacks):
    """Run what the services schedule on commit (the attribution task among them)."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def register(world, programs, *, partner=None, submitter=None, company="Initech Inc",
             website="https://www.initech.com", days_ago=10, **fields):
    partner = partner or world.partner
    submitter = submitter or (world.member("partner", "rep") if partner == world.partner
                              else world.others["partner2_rep"])
    fields.setdefault("submitted_at", timezone.now() - timedelta(days=days_ago))
    return ReferralFactory(program=programs["acme"], partner=partner,
                           submitted_by=submitter.user, company_name=company, website=website,
                           **fields)


def accept(world, referral) -> Referral:
    return services.accept_referral(world.member("vendor", "partnerships"), referral)


def move(world, referral, stage, run_on_commit) -> DealSnapshot:
    with run_on_commit():
        return move_stage(world.member("vendor", "admin"), referral, stage)


def crm_change(pipeline, run_on_commit, deal_id, *, version, stage="won", **fields):
    """A deal change as a CRM reports it (no referral id unless given)."""
    change = DealChange(external_deal_id=deal_id, version=version, stage=stage, currency="USD",
                        **fields)
    with run_on_commit():
        return ingest_change(pipeline, change)


def attribution_of(deal_id: str) -> Attribution:
    return Attribution.objects.get(external_deal_id=deal_id)


def won_deal(world, programs, run_on_commit, **register_fields):
    referral = accept(world, register(world, programs, **register_fields))
    snapshot = move(world, referral, "won", run_on_commit)
    return referral, snapshot, attribution_of(str(referral.public_id))


def shared_account(world, programs, pipeline, run_on_commit, rule="first_accepted"):
    """Brightpath registered Acme first; Summit registered it ten days later but was accepted
    first (then its protection lapsed) before Brightpath was accepted. The CRM then reports
    the won deal for eu.acme.co.uk without our referral id."""
    program = programs["acme"]
    program.attribution_rule = rule
    program.save(update_fields=["attribution_rule"])
    first = register(world, programs, company="Acme Ltd", website="https://www.acme.co.uk",
                     days_ago=20)
    second = register(world, programs, partner=world.partner2, company="ACME Limited",
                      website="https://acme.co.uk/about", days_ago=10)
    second = accept(world, second)
    assert services.expire_stale_registrations(now=second.protected_until) == 1
    first = accept(world, first)
    crm_change(pipeline, run_on_commit, "CRM-77", version="1",
               account_domain=normalize_domain("https://eu.acme.co.uk/pricing"),
               account_name="Acme (Europe) Ltd", amount_minor=5_000_000,
               deal_created_at=timezone.now() - timedelta(days=1), closed_at=timezone.now())
    first.refresh_from_db()
    second.refresh_from_db()
    return first, second


@contextmanager
def recorded_statements():
    """The SQL this connection runs inside the block (COPY included), as a list."""
    statements = []

    def record(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield statements


def history(attribution) -> list[str]:
    return list(AttributionChange.objects.filter(attribution=attribution)
                .order_by("at", "pk").values_list("reason", flat=True))


def state(attribution) -> tuple:
    """Everything a re-run could touch."""
    a = Attribution.objects.get(pk=attribution.pk)
    candidates = sorted(AttributionCandidate.objects.filter(attribution=a)
                        .values_list("pk", "referral_id", "kept", "match", "reason"))
    return (a.snapshot_id, a.referral_id, a.partner_id, a.status, a.rule, a.match,
            a.confidence, a.decision, a.inputs_digest, a.decided_by_id, a.updated_at,
            candidates, AttributionChange.objects.filter(attribution=a).count())


# --- Won deals are attributed on commit ----------------------------------------------------

def test_winning_a_deal_attributes_it_after_commit(world, programs, pipeline,
                                                   django_capture_on_commit_callbacks):
    referral = accept(world, register(world, programs))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        snapshot = move_stage(world.member("vendor", "admin"), referral, "won")
    assert not Attribution.objects.exists()  # nothing before the transaction commits
    for callback in callbacks:
        callback()

    attribution = attribution_of(str(referral.public_id))
    assert (attribution.vendor, attribution.network) == (world.vendor, world.network)
    assert (attribution.provider, attribution.snapshot) == ("builtin", snapshot)
    assert (attribution.referral, attribution.partner) == (referral, world.partner)
    assert (attribution.rule, attribution.match, attribution.confidence) == (
        "first_accepted", "exact", 100)
    assert attribution.status == Attribution.AUTO_CONFIRMED
    assert attribution.decided_by is None and attribution.inputs_digest
    assert attribution.decision["referral_id"] == str(referral.public_id)
    assert attribution.decision["candidates"] == [{
        "referral_id": str(referral.public_id), "partner_id": str(world.partner.pk),
        "match": "exact", "kept": True, "reason": "wins by first accepted (exact match)",
        "score": 100}]
    (candidate,) = attribution.candidates.all()
    assert (candidate.referral, candidate.partner, candidate.kept, candidate.match) == (
        referral, world.partner, True, "exact")
    (change,) = attribution.changes.all()
    assert change.reason == "attributed" and change.before is None and change.actor is None
    assert change.after == {"referral": str(referral.public_id), "status": "auto_confirmed",
                            "match": "exact", "confidence": 100}


def test_open_deals_are_not_attributed(world, programs, pipeline, run_on_commit):
    referral = accept(world, register(world, programs))
    move(world, referral, "qualified", run_on_commit)
    move(world, referral, "proposal", run_on_commit)
    assert not Attribution.objects.exists()


def test_a_won_deal_without_any_matching_referral_is_attributed_to_no_one(
        world, programs, pipeline, run_on_commit):
    register(world, programs)  # another account
    crm_change(pipeline, run_on_commit, "CRM-1", version="1", account_domain="globex.com",
               account_name="Globex", deal_created_at=timezone.now() - timedelta(days=3),
               closed_at=timezone.now())
    attribution = attribution_of("CRM-1")
    assert attribution.referral is None and attribution.partner is None
    assert (attribution.match, attribution.confidence) == ("none", 0)
    assert not attribution.candidates.exists()
    assert history(attribution) == ["attributed"]


# --- Re-runs change nothing ----------------------------------------------------------------

def test_re_running_on_the_same_snapshot_writes_nothing(world, programs, pipeline,
                                                        run_on_commit):
    _, snapshot, attribution = won_deal(world, programs, run_on_commit)
    before = state(attribution)
    with CaptureQueriesContext(connection) as queries:
        again = attribute_deal(snapshot)
    assert again.pk == attribution.pk
    assert state(attribution) == before
    assert not [q["sql"] for q in queries.captured_queries if q["sql"].startswith(WRITES)]


def test_the_attribution_task_is_idempotent(world, programs, pipeline, run_on_commit):
    referral, snapshot, attribution = won_deal(world, programs, run_on_commit)
    before = state(attribution)
    assert attribute_snapshot(snapshot.pk) == str(attribution.public_id)
    assert attribute_snapshot.delay(snapshot.pk).get() == str(attribution.public_id)
    assert state(attribution) == before
    assert attribute_snapshot(10**9) is None  # a snapshot that is gone


def test_the_task_attributes_a_snapshot_recorded_without_it(world, programs, pipeline):
    referral = accept(world, register(world, programs))
    snapshot = move_stage(world.member("vendor", "admin"), referral, "won")  # no on-commit
    assert not Attribution.objects.exists()
    public_id = attribute_snapshot(snapshot.pk)
    assert attribute_snapshot(snapshot.pk) == public_id
    attribution = Attribution.objects.get()
    assert str(attribution.public_id) == public_id
    assert history(attribution) == ["attributed"]


# --- People's decisions stand --------------------------------------------------------------

def test_a_confirmed_attribution_survives_re_runs_and_deal_changes(world, programs, pipeline,
                                                                   run_on_commit):
    referral, snapshot, attribution = won_deal(world, programs, run_on_commit)
    admin = world.member("vendor", "admin")
    confirm_attribution(admin, attribution, note="Checked with the account executive.")
    confirmed = state(attribution)
    attribute_deal(snapshot)
    assert attribute_snapshot(snapshot.pk) == str(attribution.public_id)
    assert state(attribution) == confirmed

    # The CRM moves the close date out of the window: the engine would now pick no one.
    later = crm_change(pipeline, run_on_commit, str(referral.public_id), version="v2",
                       referral_id=str(referral.public_id), account_domain=referral.domain,
                       account_name=referral.company_name, amount_minor=9_900_000,
                       deal_created_at=referral.decided_at,
                       closed_at=referral.submitted_at + timedelta(days=400))
    attribution.refresh_from_db()
    assert attribution.status == Attribution.CONFIRMED
    assert (attribution.referral, attribution.partner) == (referral, world.partner)
    assert attribution.decided_by == admin.user
    assert attribution.decision_note == "Checked with the account executive."
    assert attribution.snapshot == later
    assert history(attribution) == ["attributed", "confirmed",
                                    "deal changed; a person's decision stands"]
    latest = attribution.changes.first()
    assert latest.after == {"engine_would_pick": None}
    assert latest.before["status"] == Attribution.CONFIRMED

    settled = state(attribution)
    attribute_deal(later)
    assert state(attribution) == settled


def test_a_reassigned_attribution_survives_re_runs_backfills_and_deal_changes(
        world, programs, pipeline, run_on_commit):
    first, second = shared_account(world, programs, pipeline, run_on_commit)
    attribution = attribution_of("CRM-77")
    assert attribution.referral == second
    admin = world.member("vendor", "admin")
    reassign_attribution(admin, attribution, str(first.public_id),
                         note="The earlier registration introduced the buyer.")
    attribution.refresh_from_db()
    assert (attribution.status, attribution.referral, attribution.partner) == (
        Attribution.OVERTURNED, first, world.partner)
    kept = dict(attribution.candidates.values_list("referral_id", "kept"))
    assert kept == {first.pk: True, second.pk: False}
    decided = state(attribution)

    attribute_deal(attribution.snapshot)
    call_command("reattribute", vendor=world.vendor.slug, since=date(2000, 1, 1),
                 stdout=StringIO())
    assert state(attribution) == decided

    crm_change(pipeline, run_on_commit, "CRM-77", version="2", account_domain="acme.co.uk",
               account_name="Acme Ltd", amount_minor=7_000_000,
               deal_created_at=timezone.now() - timedelta(days=1),
               closed_at=timezone.now() + timedelta(hours=1))
    attribution.refresh_from_db()
    assert (attribution.status, attribution.referral) == (Attribution.OVERTURNED, first)
    assert history(attribution)[-1] == "deal changed; a person's decision stands"
    assert attribution.changes.first().after == {"engine_would_pick": str(second.public_id)}


def test_a_deal_given_to_no_one_stays_with_no_one(world, programs, pipeline, run_on_commit):
    referral, snapshot, attribution = won_deal(world, programs, run_on_commit)
    reassign_attribution(world.member("vendor", "admin"), attribution, None,
                         note="The customer came through a direct campaign.")
    move(world, referral, "won", run_on_commit)  # won again: a new version of the deal
    attribution.refresh_from_db()
    assert attribution.status == Attribution.OVERTURNED
    assert attribution.referral is None and attribution.partner is None
    assert not attribution.candidates.filter(kept=True).exists()
    assert history(attribution) == ["attributed", "overturned",
                                    "deal changed; a person's decision stands"]


# --- Deal changes re-evaluate what no person decided ---------------------------------------

def test_a_reopened_deal_flags_its_attribution_for_review(world, programs, pipeline,
                                                          run_on_commit):
    referral, _, attribution = won_deal(world, programs, run_on_commit)
    reopened = move(world, referral, "proposal", run_on_commit)
    attribution.refresh_from_db()
    assert attribution.status == Attribution.NEEDS_REVIEW
    assert attribution.snapshot == reopened
    assert attribution.referral == referral  # flagged, not taken away
    assert history(attribution) == ["attributed", "deal is open again"]
    change = attribution.changes.first()
    assert (change.before["status"], change.after["status"]) == (
        "auto_confirmed", "needs_review")

    flagged = state(attribution)
    attribute_deal(reopened)
    assert attribute_snapshot(reopened.pk) == str(attribution.public_id)
    assert state(attribution) == flagged

    move(world, referral, "won", run_on_commit)  # won once more
    attribution.refresh_from_db()
    assert attribution.status == Attribution.AUTO_CONFIRMED
    assert history(attribution)[-1] == "deal changed; re-evaluated"


def test_a_lost_deal_flags_its_attribution_for_review(world, programs, pipeline,
                                                      run_on_commit):
    referral, _, attribution = won_deal(world, programs, run_on_commit)
    move(world, referral, "lost", run_on_commit)
    attribution.refresh_from_db()
    assert attribution.status == Attribution.NEEDS_REVIEW
    assert history(attribution)[-1] == "deal is lost again"


def test_a_reopened_deal_leaves_a_person_s_decision_alone(world, programs, pipeline,
                                                         run_on_commit):
    referral, _, attribution = won_deal(world, programs, run_on_commit)
    confirm_attribution(world.member("vendor", "admin"), attribution)
    decided = state(attribution)
    move(world, referral, "proposal", run_on_commit)
    assert state(attribution) == decided


def test_a_later_close_date_outside_the_window_re_evaluates_and_records(
        world, programs, pipeline, run_on_commit):
    referral, first_won, attribution = won_deal(world, programs, run_on_commit)
    later = crm_change(pipeline, run_on_commit, str(referral.public_id), version="v2",
                       referral_id=str(referral.public_id), account_domain=referral.domain,
                       account_name=referral.company_name, amount_minor=referral.amount_minor,
                       deal_created_at=referral.decided_at,
                       closed_at=referral.submitted_at + timedelta(days=366))
    attribution.refresh_from_db()
    assert attribution.snapshot == later
    assert attribution.referral is None and attribution.partner is None
    assert attribution.status == Attribution.AUTO_CONFIRMED
    assert history(attribution) == ["attributed", "deal changed; re-evaluated"]
    change = attribution.changes.first()
    assert change.before["referral"] == str(referral.public_id)
    assert change.after["referral"] is None
    (candidate,) = attribution.candidates.all()
    assert not candidate.kept
    assert candidate.reason == ("deal closed 366 days after registration, outside the "
                                "365-day window")

    # The close date moves back inside the window: the referral earns the deal again.
    crm_change(pipeline, run_on_commit, str(referral.public_id), version="v3",
               referral_id=str(referral.public_id), account_domain=referral.domain,
               account_name=referral.company_name, amount_minor=referral.amount_minor,
               deal_created_at=referral.decided_at,
               closed_at=referral.submitted_at + timedelta(days=365))
    attribution.refresh_from_db()
    assert attribution.referral == referral
    assert history(attribution)[-1] == "deal changed; re-evaluated"


def test_a_re_run_of_the_same_deal_says_what_changed_around_it(world, programs, pipeline,
                                                              run_on_commit):
    """The deal is the same snapshot; the program's rule changed: the history must not say
    the deal changed."""
    _, won, attribution = won_deal(world, programs, run_on_commit)
    program = programs["acme"]
    program.attribution_rule = "last_touch"
    program.save(update_fields=["attribution_rule"])
    attribute_deal(won)
    assert history(attribution) == [
        "attributed", "registrations or the program's rules changed; re-evaluated"]
    attribution.refresh_from_db()
    assert attribution.rule == "last_touch"


def test_a_later_amount_change_is_evaluated_and_recorded(world, programs, pipeline,
                                                         run_on_commit):
    referral, first_won, attribution = won_deal(world, programs, run_on_commit)
    later = crm_change(pipeline, run_on_commit, str(referral.public_id), version="v2",
                       referral_id=str(referral.public_id), account_domain=referral.domain,
                       account_name=referral.company_name, amount_minor=99_000_000,
                       deal_created_at=first_won.deal_created_at, closed_at=first_won.closed_at)
    attribution.refresh_from_db()
    assert attribution.snapshot == later
    assert len(history(attribution)) == 2


def test_a_later_close_date_that_keeps_the_winner_is_recorded(world, programs, pipeline,
                                                              run_on_commit):
    referral, first_won, attribution = won_deal(world, programs, run_on_commit)
    crm_change(pipeline, run_on_commit, str(referral.public_id), version="v2",
               referral_id=str(referral.public_id), account_domain=referral.domain,
               account_name=referral.company_name, amount_minor=referral.amount_minor,
               deal_created_at=first_won.deal_created_at,
               closed_at=first_won.closed_at + timedelta(days=20))
    attribution.refresh_from_db()
    assert attribution.referral == referral
    assert len(history(attribution)) == 2


# --- Two partners on one account; fuzzy names ----------------------------------------------

@pytest.mark.parametrize(("rule", "winner"), [
    ("first_accepted", "second"), ("first_submitted", "first"), ("last_touch", "second")])
def test_two_partners_on_one_account_are_resolved_by_the_program_rule(
        world, programs, pipeline, run_on_commit, rule, winner):
    first, second = shared_account(world, programs, pipeline, run_on_commit, rule)
    assert second.status == Referral.EXPIRED and first.status == Referral.ACCEPTED
    expected = {"first": first, "second": second}[winner]
    attribution = attribution_of("CRM-77")
    assert (attribution.referral, attribution.partner) == (expected, expected.partner)
    assert (attribution.rule, attribution.match, attribution.confidence) == (rule, "domain", 80)
    assert attribution.status == Attribution.AUTO_CONFIRMED
    rows = {c.referral: c for c in attribution.candidates.all()}
    assert set(rows) == {first, second}
    assert {r.partner for r in rows.values()} == {world.partner, world.partner2}
    label = rule.replace("_", " ")
    for referral, row in rows.items():
        assert row.partner == referral.partner and row.match == "domain"
        if referral == expected:
            assert row.kept and row.reason == f"wins by {label} (domain match)"
        else:
            assert not row.kept and row.reason == f"eligible, but loses by {label}"


def test_other_vendors_referrals_and_drafts_are_never_candidates(world, programs, pipeline,
                                                                run_on_commit):
    acme = register(world, programs, company="Acme Ltd", website="https://www.acme.co.uk")
    accept(world, acme)
    ReferralFactory(program=programs["globex"], partner=world.partner,
                    company_name="Acme Ltd", website="https://acme.co.uk",
                    status=Referral.ACCEPTED, decided_at=timezone.now(),
                    protected_until=timezone.now() + timedelta(days=90))
    register(world, programs, partner=world.partner2, company="Acme Ltd",
             website="https://acme.co.uk", status=Referral.DRAFT, submitted_at=None)
    crm_change(pipeline, run_on_commit, "CRM-5", version="1", account_domain="acme.co.uk",
               account_name="Acme Ltd", deal_created_at=timezone.now(),
               closed_at=timezone.now())
    attribution = attribution_of("CRM-5")
    assert list(attribution.candidates.values_list("referral_id", flat=True)) == [acme.pk]
    assert attribution.referral == acme


def test_withdrawn_and_rejected_registrations_are_candidates_that_lose(
        world, programs, pipeline, run_on_commit):
    withdrawn = accept(world, register(world, programs, partner=world.partner2,
                                       company="Acme Ltd", website="https://acme.co.uk",
                                       days_ago=30))
    services.withdraw_referral(world.others["partner2_owner"], withdrawn, "Lost the contact.")
    kept = accept(world, register(world, programs, company="Acme Ltd",
                                  website="https://www.acme.co.uk", days_ago=5))
    rejected = register(world, programs, partner=world.partner2, company="Acme Ltd",
                        website="https://acme.co.uk", days_ago=40)
    services.reject_referral(world.member("vendor", "partnerships"), rejected, "other",
                             "Already in our pipeline.")
    crm_change(pipeline, run_on_commit, "CRM-6", version="1", account_domain="acme.co.uk",
               account_name="Acme Ltd", deal_created_at=timezone.now(),
               closed_at=timezone.now())
    attribution = attribution_of("CRM-6")
    reasons = dict(attribution.candidates.values_list("referral_id", "reason"))
    assert reasons == {kept.pk: "wins by first accepted (domain match)",
                       withdrawn.pk: "never accepted (status withdrawn)",
                       rejected.pk: "never accepted (status rejected)"}
    assert attribution.referral == kept and attribution.confidence == 90


def test_a_fuzzy_name_match_waits_for_review(world, programs, pipeline, run_on_commit):
    referral = accept(world, register(world, programs, company="Northwind Traders Inc",
                                      website="https://www.northwind.com"))
    crm_change(pipeline, run_on_commit, "CRM-9", version="1",
               account_domain="northwind-trading.example", account_name="Northwind Trader LLC",
               deal_created_at=timezone.now(), closed_at=timezone.now())
    attribution = attribution_of("CRM-9")
    assert (attribution.referral, attribution.match) == (referral, "fuzzy")
    assert attribution.status == Attribution.NEEDS_REVIEW
    assert attribution.confidence == 80
    (row,) = attribution.candidates.all()
    assert row.kept and row.reason == "wins by first accepted (fuzzy match)"

    # A person confirms it; the engine leaves it confirmed from then on.
    confirm_attribution(world.member("vendor", "partnerships"), attribution, note="Same company.")
    attribute_deal(attribution.snapshot)
    attribution.refresh_from_db()
    assert attribution.status == Attribution.CONFIRMED


def test_a_program_that_trusts_fuzzy_matches_confirms_them(world, programs, pipeline,
                                                           run_on_commit):
    program = programs["acme"]
    program.fuzzy_needs_review = False
    program.save(update_fields=["fuzzy_needs_review"])
    referral = accept(world, register(world, programs, company="Northwind Traders Inc",
                                      website="https://www.northwind.com"))
    crm_change(pipeline, run_on_commit, "CRM-9", version="1",
               account_domain="northwind-trading.example", account_name="Northwind Trader LLC",
               deal_created_at=timezone.now(), closed_at=timezone.now())
    attribution = attribution_of("CRM-9")
    assert attribution.referral == referral
    assert attribution.status == Attribution.AUTO_CONFIRMED


def _look_alikes(world, programs, names):
    Referral.objects.bulk_create(
        ReferralFactory.build(program=programs["acme"], partner=world.partner2,
                              submitted_by=world.others["partner2_rep"].user,
                              company_name=f"{name} Inc",
                              website=f"https://{name.lower().replace(' ', '-')}.example")
        for name in names)


def test_the_genuine_fuzzy_match_is_found_among_many_look_alikes(world, programs, pipeline,
                                                                 run_on_commit):
    """A crowded vendor: 250 registrations share the deal's first word ("northwind trad 123"
    against "northwind trader": score 82, under the program's 90) and are not candidates. Once
    "northwind" counts as a common word, "trader" alone still links the genuine registration
    ("northwind traders": score 97), and a re-run sees the same."""
    genuine = accept(world, register(world, programs, company="Northwind Traders Inc",
                                     website="https://www.northwind.com"))
    _look_alikes(world, programs, (f"Northwind Trad {n}" for n in range(100, 350)))
    vendor_id = programs["acme"].vendor_id
    refresh_common_words([vendor_id])
    assert "northwind" in common_words(vendor_id)
    crm_change(pipeline, run_on_commit, "CRM-9", version="1",
               account_domain="northwind-trading.example", account_name="Northwind Trader LLC",
               deal_created_at=timezone.now(), closed_at=timezone.now())
    attribution = attribution_of("CRM-9")
    assert (attribution.referral, attribution.match) == (genuine, "fuzzy")
    assert [r.referral_id for r in attribution.candidates.all()] == [genuine.pk]
    before = state(attribution)
    attribute_deal(attribution.snapshot)
    assert state(attribution) == before


def test_when_too_many_names_score_the_most_similar_are_kept(world, programs, pipeline,
                                                              run_on_commit):
    """With the program's threshold at 80 all 250 look-alikes score (82): the candidates are
    the FUZZY_CANDIDATES best, the genuine registration first and ties broken by id, the
    same on a re-run."""
    program = programs["acme"]
    program.fuzzy_threshold = 80
    program.save(update_fields=["fuzzy_threshold"])
    genuine = accept(world, register(world, programs, company="Northwind Traders Inc",
                                     website="https://www.northwind.com"))
    _look_alikes(world, programs, (f"Northwind Trad {n}" for n in range(100, 350)))
    crm_change(pipeline, run_on_commit, "CRM-9", version="1",
               account_domain="northwind-trading.example", account_name="Northwind Trader LLC",
               deal_created_at=timezone.now(), closed_at=timezone.now())
    attribution = attribution_of("CRM-9")
    assert (attribution.referral, attribution.match) == (genuine, "fuzzy")
    rows = list(attribution.candidates.all())
    assert len(rows) == FUZZY_CANDIDATES == 200
    first_ids = sorted(Referral.objects.filter(company_name__startswith="Northwind Trad ")
                       .values_list("pk", flat=True))[:FUZZY_CANDIDATES - 1]
    assert {r.referral_id for r in rows} == {genuine.pk, *first_ids}
    before = state(attribution)
    attribute_deal(attribution.snapshot)
    assert state(attribution) == before


def test_a_name_of_common_words_only_is_matched_through_all_its_words(world, programs,
                                                                     pipeline, run_on_commit):
    """"Global Logistic": one common word and one a typo of another, nothing distinctive to
    look up by; the registrations having both words still include "Global Logistics" (score
    97), and the 120 "Global Logistics 1xx" (86) are left out by the score."""
    genuine = accept(world, register(world, programs, company="Global Logistics Inc",
                                     website="https://www.global-logistics.com"))
    _look_alikes(world, programs, (f"Global Logistics {n}" for n in range(100, 220)))
    vendor_id = programs["acme"].vendor_id
    refresh_common_words([vendor_id])
    assert {"global", "logistics"} <= common_words(vendor_id)
    crm_change(pipeline, run_on_commit, "CRM-9", version="1",
               account_domain="globallog.example", account_name="Global Logistic LLC",
               deal_created_at=timezone.now(), closed_at=timezone.now())
    attribution = attribution_of("CRM-9")
    assert (attribution.referral, attribution.match) == (genuine, "fuzzy")
    assert [r.referral_id for r in attribution.candidates.all()] == [genuine.pk]


def test_a_fuzzy_match_beaten_by_a_domain_match_stays_visible_and_disputable(
        world, programs, pipeline, run_on_commit):
    """Why the runner looks up similar names even for a deal that a domain match wins: the
    partner whose registration only resembles the deal's name loses to the stronger match, but
    sees the deal and can dispute it (the same company on another domain, say)."""
    by_name = accept(world, register(world, programs, partner=world.partner2,
                                     company="Northwind Trader LLC",
                                     website="https://northwind-trading.example", days_ago=20))
    by_domain = accept(world, register(world, programs, company="NW Traders Inc",
                                       website="https://www.northwind.com", days_ago=5))
    crm_change(pipeline, run_on_commit, "CRM-12", version="1", account_domain="northwind.com",
               account_name="Northwind Traders", deal_created_at=timezone.now(),
               closed_at=timezone.now())
    attribution = attribution_of("CRM-12")
    assert (attribution.referral, attribution.match) == (by_domain, "domain")
    row = AttributionCandidate.objects.get(attribution=attribution, referral=by_name)
    assert (row.match, row.kept, row.reason) == ("fuzzy", False,
                                                 "a stronger match (domain) exists")
    assert list(Attribution.objects.visible_to(world.others["partner2_owner"])) == [attribution]
    assert [s.attribution for s in partner_subjects(by_name)] == [attribution]


def test_the_program_time_zone_decides_the_window(world, programs, pipeline, run_on_commit):
    """Registered on the evening of 1 January in Los Angeles (2 January UTC), won on the
    morning of 1 February there: day 31 locally, day 30 in UTC."""
    program = programs["acme"]
    program.attribution_window_days, program.time_zone = 30, "America/Los_Angeles"
    program.save(update_fields=["attribution_window_days", "time_zone"])
    registered = datetime(2024, 1, 2, 3, 0, tzinfo=UTC)
    referral = register(world, programs, company="Acme Ltd", website="https://acme.co.uk",
                        status=Referral.ACCEPTED, submitted_at=registered,
                        decided_at=registered + timedelta(hours=1),
                        protected_until=registered + timedelta(days=90))
    crm_change(pipeline, run_on_commit, "CRM-10", version="1", account_domain="acme.co.uk",
               account_name="Acme Ltd", deal_created_at=registered + timedelta(days=2),
               closed_at=datetime(2024, 2, 1, 17, 0, tzinfo=UTC))
    attribution = attribution_of("CRM-10")
    assert attribution.referral is None
    (row,) = attribution.candidates.all()
    assert row.referral == referral and "outside the 30-day window" in row.reason

    program.time_zone = "UTC"
    program.save(update_fields=["time_zone"])
    attribute_deal(attribution.snapshot)  # the settings are part of the inputs
    attribution.refresh_from_db()
    assert attribution.referral == referral


def test_an_unlinked_deal_follows_the_vendors_open_program(world, programs, pipeline,
                                                          run_on_commit):
    from tests.referrals.factories import ProgramFactory

    ProgramFactory(vendor=world.vendor, name="Old pilot", status="paused",
                   attribution_rule="first_submitted")
    first, second = shared_account(world, programs, pipeline, run_on_commit, "first_accepted")
    assert attribution_of("CRM-77").referral == second


# --- The backfill command ------------------------------------------------------------------

def _won_without_attribution(world, programs, count):
    """Deals won before attribution existed: snapshots recorded, nothing run on commit (a
    transactional test runs what commits schedule: its attributions are deleted)."""
    referrals = []
    for n in range(count):
        referral = accept(world, register(world, programs, company=f"Customer {n} Inc",
                                          website=f"https://customer{n}.example"))
        move_stage(world.member("vendor", "admin"), referral, "won")
        referrals.append(referral)
    Attribution.objects.all().delete()
    return referrals


def test_reattribute_processes_deals_in_batches_and_is_safe_to_repeat(world, programs,
                                                                      pipeline):
    referrals = _won_without_attribution(world, programs, 5)
    twice = referrals[0]
    latest = move_stage(world.member("vendor", "admin"), twice, "won")  # a second version
    ingest_change(pipeline, DealChange(external_deal_id="OLD-1", version="1", stage="won",
                                       account_domain="customer1.example",
                                       deal_created_at=datetime(2022, 12, 1, tzinfo=UTC),
                                       closed_at=datetime(2023, 1, 1, tzinfo=UTC)))
    since = (timezone.now() - timedelta(days=1)).date()  # deals closed today, whatever the hour
    out = StringIO()
    call_command("reattribute", vendor=world.vendor.slug, since=since, batch=2, stdout=out)
    assert out.getvalue().splitlines() == [
        "2/5 deals", "4/5 deals", "5/5 deals", "Re-attributed 5 deals of Acme Cloud."]
    attributions = Attribution.objects.filter(vendor=world.vendor)
    assert {a.referral_id for a in attributions} == {r.pk for r in referrals}
    assert attribution_of(str(twice.public_id)).snapshot == latest
    assert not attributions.filter(external_deal_id="OLD-1").exists()  # closed before --since
    assert set(AttributionChange.objects.values_list("reason", flat=True)) == {"attributed"}
    before = {a.pk: state(a) for a in attributions}

    again = StringIO()
    call_command("reattribute", "--vendor", str(world.vendor.public_id), "--since",
                 since.isoformat(), "--batch", "3", stdout=again)
    assert again.getvalue().splitlines() == ["3/5 deals", "5/5 deals",
                                             "Re-attributed 5 deals of Acme Cloud."]
    assert {a.pk: state(a) for a in attributions} == before


@pytest.mark.django_db(transaction=True)
def test_a_parallel_backfill_attributes_every_deal_once(world, programs, pipeline):
    """Two processes, each its share of the lock groups: the same result as one process,
    committed batch by batch, and a single-process re-run finds nothing to change."""
    referrals = _won_without_attribution(world, programs, 7)
    out = StringIO()
    call_command("reattribute", vendor=world.vendor.slug, since=date(2000, 1, 1), batch=2,
                 workers=2, stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[-2:] == ["7/7 deals", "Re-attributed 7 deals of Acme Cloud."]
    counts = [int(line.split("/")[0]) for line in lines[:-1]]
    assert counts == sorted(counts) and len(counts) >= 4  # batches of 2, at least 4 of them
    attributions = Attribution.objects.filter(vendor=world.vendor)
    assert sorted(attributions.values_list("referral_id", flat=True)) == sorted(
        r.pk for r in referrals)
    assert AttributionChange.objects.filter(reason="attributed").count() == 7
    before = {a.pk: state(a) for a in attributions}
    with recorded_statements() as statements:
        call_command("reattribute", vendor=world.vendor.slug, since=date(2000, 1, 1), batch=3,
                     stdout=StringIO())
    assert {a.pk: state(a) for a in attributions} == before
    # Each batch its own transaction, committed without waiting for the disk.
    assert statements.count("SET LOCAL synchronous_commit = off") == 3


def test_backfill_batches_commit_without_waiting_for_the_disk_but_no_caller_s_transaction(
        world, programs, pipeline):
    """A backfill batch is its own transaction and may skip the wait for the disk (a crash
    loses whole batches, which a re-run redoes); a caller's transaction keeps its
    durability whatever the runner is asked."""
    referrals = _won_without_attribution(world, programs, 3)
    snapshot = DealSnapshot.objects.filter(referral=referrals[0]).get()
    with transaction.atomic(), connection.cursor() as cursor:
        attribute_deals([snapshot], durable=False)
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("on",)
    Attribution.objects.all().delete()
    with recorded_statements() as statements:
        backfill(world.vendor.pk, datetime(2000, 1, 1, tzinfo=UTC), batch=2)
    # The test's own transaction wraps the backfill here: its batches leave it alone too.
    assert not [sql for sql in statements if "synchronous_commit" in sql]
    assert Attribution.objects.count() == 3


def test_a_parallel_backfill_refuses_to_run_inside_a_transaction(world, programs, pipeline):
    _won_without_attribution(world, programs, 2)
    with pytest.raises(RuntimeError, match="outside a transaction"):
        backfill(world.vendor.pk, datetime(2000, 1, 1, tzinfo=UTC), workers=2)
    with pytest.raises(CommandError, match="at least 1"):
        call_command("reattribute", vendor=world.vendor.slug, since="2000-01-01", workers=0)
    assert not Attribution.objects.exists()


def _snapshots_by_lock_group(world, programs, count):
    snapshots = [DealSnapshot.objects.filter(referral=r).latest("received_at")
                 for r in _won_without_attribution(world, programs, count)]
    groups = defaultdict(list)
    for s in snapshots:
        groups[lock_group((s.vendor_id, s.provider, s.external_deal_id))].append(s)
    return groups


@pytest.mark.django_db(transaction=True)
def test_runs_on_deals_of_other_lock_groups_do_not_wait_for_each_other(world, programs,
                                                                       pipeline):
    """A run holding a deal's lock group holds up another run on that deal (which then sees
    the first one's attribution), and no run on a deal of another group."""
    # Deals' ids are random: eight of them all in one of 16 groups is a 1 in 16**7 chance.
    groups = _snapshots_by_lock_group(world, programs, 8)
    assert len(groups) >= 2
    (held, *_), (other, *_) = list(groups.values())[:2]
    holding, release = threading.Event(), threading.Event()

    def hold():
        try:
            with transaction.atomic():
                attribute_deal(held)
                holding.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    def same_deal(results):
        try:
            results.append(attribute_deal(held))
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(timeout=30)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = '5s'")  # a wait fails the test
        assert attribute_deal(other).referral_id == other.referral_id  # another group
    results = []
    waiter = threading.Thread(target=same_deal, args=(results,))
    waiter.start()
    waiter.join(timeout=1)
    assert waiter.is_alive(), "the second run on the deal did not wait for the first"
    release.set()
    holder.join(timeout=30)
    waiter.join(timeout=30)
    assert not waiter.is_alive() and len(results) == 1
    assert Attribution.objects.filter(external_deal_id=held.external_deal_id).count() == 1
    assert history(results[0]) == ["attributed"]  # it found the first run's, unchanged


def test_reattribute_covers_only_the_named_vendor(world, programs, pipeline):
    _won_without_attribution(world, programs, 2)
    out = StringIO()
    call_command("reattribute", vendor=world.vendor2.slug, since=date(2000, 1, 1), stdout=out)
    assert out.getvalue().splitlines() == ["Re-attributed 0 deals of Globex."]
    assert not Attribution.objects.exists()


def test_reattribute_and_the_nightly_task_recount_common_words(world, programs):
    """A backfill looks names up by the vendor's words as they are now; the nightly task
    recounts every vendor's."""
    _look_alikes(world, programs,
                 (f"Kelbrix Logistics {n}" for n in range(COMMON_WORD_REFERRALS + 1)))
    vendor_id = programs["acme"].vendor_id
    call_command("reattribute", vendor=world.vendor2.slug, since=date(2000, 1, 1),
                 stdout=StringIO())
    assert common_words(vendor_id) == frozenset()  # another vendor's backfill
    call_command("reattribute", vendor=world.vendor.slug, since=date(2000, 1, 1),
                 stdout=StringIO())
    assert common_words(vendor_id) == {"kelbrix", "logistics"}
    CommonNameWord.objects.all().delete()
    assert recount_common_words.delay().get() == 2
    assert common_words(vendor_id) == {"kelbrix", "logistics"}


def test_reattribute_refuses_an_unknown_vendor(world):
    with pytest.raises(CommandError, match="No vendor organization"):
        call_command("reattribute", vendor="nobody", since=date(2024, 1, 1))
    with pytest.raises(CommandError):
        call_command("reattribute", vendor=world.partner.slug, since=date(2024, 1, 1))


def test_reattribute_accepts_since_as_text_from_call_command(world, programs, pipeline):
    _won_without_attribution(world, programs, 1)
    call_command("reattribute", vendor=world.vendor.slug, since="2000-01-01",
                 stdout=StringIO())
    assert Attribution.objects.count() == 1


def test_reattribute_keeps_a_reopened_deal_flagged(world, programs, pipeline, run_on_commit):
    referral, _, attribution = won_deal(world, programs, run_on_commit)
    move(world, referral, "proposal", run_on_commit)
    call_command("reattribute", vendor=world.vendor.slug, since=date(2000, 1, 1),
                 stdout=StringIO())
    attribution.refresh_from_db()
    assert attribution.status == Attribution.NEEDS_REVIEW


def test_a_late_task_for_an_older_version_does_not_undo_a_newer_one(world, programs, pipeline,
                                                                    run_on_commit):
    referral, won, attribution = won_deal(world, programs, run_on_commit)
    move(world, referral, "proposal", run_on_commit)
    attribute_snapshot(won.pk)  # a retried task for the won version arrives late
    attribution.refresh_from_db()
    assert attribution.status == Attribution.NEEDS_REVIEW


# --- Who sees which attribution ------------------------------------------------------------

@pytest.fixture
def contested(world, programs, pipeline, run_on_commit):
    """Brightpath's rep and Summit's rep registered the same account; Summit won it."""
    first, second = shared_account(world, programs, pipeline, run_on_commit)
    return attribution_of("CRM-77"), first, second


@pytest.fixture
def elsewhere(world, programs, run_on_commit):
    """A Globex deal credited to Summit: outside the channel manager's portfolio."""
    admin = world.others["vendor2_admin"]
    connections.connect(admin, provider="builtin", credentials={})
    referral = ReferralFactory(program=programs["globex"], partner=world.partner2,
                               submitted_by=world.others["partner2_rep"].user,
                               submitted_at=timezone.now() - timedelta(days=3))
    referral = services.accept_referral(admin, referral)
    with run_on_commit():
        move_stage(admin, referral, "won")
    return attribution_of(str(referral.public_id))


SEES_CONTESTED = {
    ("partner", "owner"), ("partner", "manager"), ("partner", "rep"), ("partner", "finance"),
    ("vendor", "admin"), ("vendor", "partnerships"), ("vendor", "finance"),
    ("operator", "admin"), ("operator", "channel_manager"), ("operator", "auditor"),
}
SEES_ELSEWHERE = {("operator", "admin"), ("operator", "auditor")}


@pytest.mark.parametrize(("kind", "role"), [
    key for key in roles.ROLES if key != ("vendor", "sales")], ids=lambda v: v)
def test_attributions_visible_to_each_role(world, contested, elsewhere, kind, role):
    attribution = contested[0]
    visible = set(Attribution.objects.visible_to(world.member(kind, role)))
    expected = ({attribution} if (kind, role) in SEES_CONTESTED else set()) | (
        {elsewhere} if (kind, role) in SEES_ELSEWHERE else set())
    assert visible == expected


def test_the_other_partner_on_the_account_sees_only_its_own_candidate_rows(world, contested,
                                                                          elsewhere):
    attribution, first, second = contested
    summit = world.others["partner2_owner"]
    assert set(Attribution.objects.visible_to(summit)) == {attribution, elsewhere}
    rows = AttributionCandidate.objects.filter(
        attribution__in=Attribution.objects.visible_to(summit),
        partner_id=summit.organization_id)
    assert {row.referral for row in rows} == {second, elsewhere.referral}
    assert first.pk not in {row.referral_id for row in rows}
    brightpath_rows = AttributionCandidate.objects.filter(
        attribution__in=Attribution.objects.visible_to(world.member("partner", "owner")),
        partner_id=world.partner.pk)
    assert {row.referral for row in brightpath_rows} == {first}


def test_a_partner_rep_sees_attributions_of_their_own_referrals_only(world, contested):
    attribution, first, _ = contested
    assert set(Attribution.objects.visible_to(world.member("partner", "rep"))) == {attribution}
    colleague = MembershipFactory(organization=world.partner, role="rep")
    assert not Attribution.objects.visible_to(colleague).exists()
    assert set(Attribution.objects.visible_to(world.others["partner2_rep"])) == {attribution}


def test_an_attribution_to_no_one_is_visible_only_to_the_vendor_and_operators(
        world, programs, pipeline, run_on_commit):
    crm_change(pipeline, run_on_commit, "CRM-1", version="1", account_domain="globex.com",
               account_name="Globex", deal_created_at=timezone.now(), closed_at=timezone.now())
    nobody = attribution_of("CRM-1")
    assert list(Attribution.objects.visible_to(world.member("vendor", "admin"))) == [nobody]
    assert list(Attribution.objects.visible_to(world.member("operator", "admin"))) == [nobody]
    assert list(Attribution.objects.visible_to(
        world.member("operator", "channel_manager"))) == [nobody]
    assert not Attribution.objects.visible_to(world.member("partner", "owner")).exists()


def test_nothing_crosses_networks_or_vendors(world, contested):
    for membership in (world.others["foreign_owner"], world.others["foreign_vendor_admin"],
                       world.others["vendor2_admin"], world.others["pending_owner"]):
        assert not Attribution.objects.visible_to(membership).exists()


def test_an_inactive_membership_sees_nothing(world, contested):
    owner = world.member("partner", "owner")
    owner.status = "suspended"
    assert not Attribution.objects.visible_to(owner).exists()


def test_a_vendor_sales_rep_sees_attributions_of_assigned_referrals_only(world, contested):
    sales = world.member("vendor", "sales")
    assert not Attribution.objects.visible_to(sales).exists()
    attribution, first, _ = contested
    services.assign_referral(world.member("vendor", "admin"), first, sales)
    assert set(Attribution.objects.visible_to(sales)) == {attribution}


def test_a_partner_whose_name_was_scored_but_did_not_match_does_not_see_the_deal(
        world, programs, pipeline, run_on_commit):
    """A look-alike name that scores under the threshold ("initech software" against
    "initech softworks": 85) is not a candidate; and a "none" row (earlier versions of the
    runner stored them, for the vendor's eyes) is no reason to show the partner the deal."""
    near = accept(world, register(world, programs, partner=world.partner2,
                                  company="Initech Software", website="https://initech-software.com"))
    crm_change(pipeline, run_on_commit, "CRM-5", version="1", account_domain="initech.com",
               account_name="Initech Softworks", deal_created_at=timezone.now(),
               closed_at=timezone.now())
    attribution = attribution_of("CRM-5")
    assert not AttributionCandidate.objects.filter(attribution=attribution).exists()
    AttributionCandidate.objects.create(attribution=attribution, referral=near,
                                        partner=world.partner2, match="none", kept=False,
                                        reason="does not match the deal's account")
    assert attribution.partner_id is None
    assert not Attribution.objects.visible_to(world.others["partner2_owner"]).exists()
    assert list(Attribution.objects.visible_to(world.member("vendor", "admin"))) == [attribution]
