"""partnerhub.copyinsert: new rows through COPY on PostgreSQL (bulk_create elsewhere), with the
keys, defaults and foreign keys a save would give, and seen by whatever watches queries."""

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from attribution.models import Attribution, AttributionCandidate, AttributionChange, DealSnapshot
from partnerhub.copyinsert import copy_insert, copy_rows
from tests.referrals.factories import ReferralFactory


@pytest.fixture
def deal(world, programs):
    return DealSnapshot.objects.create(vendor=world.vendor, provider="hubspot",
                                       external_deal_id="D-1", version="1", outcome="won")


def new_rows(world, programs, deal):
    """Two attributions, and candidates and history made before either has a key."""
    referral = ReferralFactory(program=programs["acme"], partner=world.partner,
                               submitted_by=world.member("partner", "rep").user)
    credited = Attribution(network=world.network, vendor=world.vendor, provider="hubspot",
                           external_deal_id="D-1", snapshot=deal, referral=referral,
                           partner=world.partner, rule="first_accepted", match="domain",
                           confidence=90, status=Attribution.AUTO_CONFIRMED,
                           decision={"candidates": [{"reason": "wins", "score": 100}]},
                           inputs_digest="a" * 64)
    nobody = Attribution(network=world.network, vendor=world.vendor, provider="hubspot",
                         external_deal_id="D-2", snapshot=deal, rule="first_accepted",
                         match="none", status=Attribution.AUTO_CONFIRMED, inputs_digest="b")
    candidate = AttributionCandidate(attribution=credited, referral=referral,
                                     partner=world.partner, kept=True, match="domain",
                                     reason="wins")
    changes = [AttributionChange(attribution=a, reason="attributed", before=None,
                                 after={"status": a.status}) for a in (credited, nobody)]
    return [credited, nobody], [candidate], changes


def stored(attributions):
    a = list(Attribution.objects.filter(pk__in=[x.pk for x in attributions]).order_by("pk")
             .values("public_id", "external_deal_id", "referral_id", "partner_id", "decision",
                     "decision_note", "decided_by_id", "created_at", "updated_at"))
    candidates = list(AttributionCandidate.objects.order_by("pk").values_list(
        "attribution__external_deal_id", "referral_id", "kept", "reason"))
    changes = list(AttributionChange.objects.order_by("pk").values_list(
        "attribution__external_deal_id", "before", "after", "at"))
    return a, candidates, changes


def test_rows_get_keys_defaults_and_the_keys_of_rows_saved_before_them(world, programs, deal):
    attributions, candidates, changes = new_rows(world, programs, deal)
    copy_insert(attributions)
    copy_insert(candidates)
    copy_insert(changes)

    assert all(a.pk and not a._state.adding for a in attributions + candidates + changes)
    rows, candidate_rows, change_rows = stored(attributions)
    assert [r["public_id"] for r in rows] == [a.public_id for a in attributions]
    assert rows[0]["decision"] == {"candidates": [{"reason": "wins", "score": 100}]}
    assert rows[1]["referral_id"] is rows[1]["partner_id"] is None and rows[1]["decision"] == {}
    assert rows[0]["updated_at"] is not None  # auto_now, as a save sets it
    assert candidate_rows == [("D-1", candidates[0].referral_id, True, "wins")]
    assert [c[:3] for c in change_rows] == [("D-1", None, {"status": "auto_confirmed"}),
                                            ("D-2", None, {"status": "auto_confirmed"})]
    # Saved like any saved instance: a later save updates the row.
    attributions[1].status = Attribution.NEEDS_REVIEW
    attributions[1].save(update_fields=["status"])
    assert Attribution.objects.get(pk=attributions[1].pk).status == Attribution.NEEDS_REVIEW
    assert Attribution.objects.count() == 2


def test_the_portable_path_stores_the_same(world, programs, deal, monkeypatch):
    """SQLite (the quickstart) has no COPY: bulk_create stores the same rows."""
    attributions, candidates, changes = new_rows(world, programs, deal)
    monkeypatch.setattr(connection, "vendor", "sqlite")
    with CaptureQueriesContext(connection) as queries:
        for objs in (attributions, candidates, changes):
            copy_insert(objs)
    monkeypatch.undo()
    assert not [q for q in queries.captured_queries if q["sql"].startswith("COPY")]
    rows, candidate_rows, change_rows = stored(attributions)
    assert rows[0]["decision"] == {"candidates": [{"reason": "wins", "score": 100}]}
    assert candidate_rows == [("D-1", candidates[0].referral_id, True, "wins")]
    assert len(change_rows) == 2


def test_copy_is_seen_by_query_logs_and_execute_wrappers(world, programs, deal):
    attributions, _, _ = new_rows(world, programs, deal)
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with CaptureQueriesContext(connection) as queries, connection.execute_wrapper(wrapper):
        copy_insert(attributions)
    assert [sql.split()[0] for sql in seen] == ["SELECT", "COPY"]  # the keys, then the rows
    assert queries.captured_queries[-1]["sql"].startswith(
        'COPY "attribution_attribution" (') and "-- 2 rows" in queries.captured_queries[-1]["sql"]
    with CaptureQueriesContext(connection) as nothing:
        assert copy_insert([]) == []
    assert nothing.captured_queries == []


def test_a_failed_copy_leaves_nothing_behind(world, programs, deal):
    attributions, _, _ = new_rows(world, programs, deal)
    attributions[1].external_deal_id = "D-1"  # the same deal twice: one_attribution_per_deal
    with pytest.raises(IntegrityError, match="one_attribution_per_deal"):
        with transaction.atomic():
            copy_insert(attributions)
    assert not Attribution.objects.exists()


@pytest.mark.parametrize("vendor", ["postgresql", "sqlite"])
def test_rows_given_as_values_are_stored_as_given(world, programs, deal, monkeypatch, vendor):
    attributions, candidates, _ = new_rows(world, programs, deal)
    copy_insert(attributions)
    at = timezone.now()
    monkeypatch.setattr(connection, "vendor", vendor)
    fields = ("attribution_id", "at", "actor_id", "reason", "before", "after")
    assert copy_rows(AttributionChange, fields, [
        (attributions[0].pk, at, None, "attributed", None, {"status": "auto_confirmed"}),
        (attributions[1].pk, at, world.member("vendor", "admin").user.pk, "confirmed",
         {"status": "needs_review"}, {"status": "confirmed", "note": "ok"}),
    ]) == 2
    assert copy_rows(AttributionChange, fields, []) == 0
    monkeypatch.undo()
    assert list(AttributionChange.objects.order_by("pk").values_list(
        "attribution__external_deal_id", "at", "actor__email", "reason", "before", "after")) == [
        ("D-1", at, None, "attributed", None, {"status": "auto_confirmed"}),
        ("D-2", at, world.member("vendor", "admin").user.email, "confirmed",
         {"status": "needs_review"}, {"status": "confirmed", "note": "ok"})]
    with pytest.raises(ValueError):  # a row that does not fit the fields
        copy_rows(AttributionChange, fields, [(attributions[0].pk, at)])
