"""The audit log: what services record, that nothing can rewrite it, and who can read it."""

import csv
import html
import io
from datetime import UTC, datetime

import pytest
from django.db import DatabaseError, connection, transaction

from accounts import audit, roles
from accounts.models import AuditEvent, AuditLogImmutable
from tests.accounts.factories import MembershipFactory, OrganizationFactory
from tests.conftest import ALL_ROLES, ROLE_IDS

AUDIT_READERS = {(roles.OPERATOR, "admin"), (roles.OPERATOR, "auditor")}


def text(response) -> str:
    return html.unescape(response.content.decode())


def csv_rows(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def at(day, hour=12, minute=0):
    return datetime(2025, 3, day, hour, minute, tzinfo=UTC)


def event(network, label, *, actor_email="ana@northwind.test", action="organization.approved",
          target_type="organization", target_id="t-1", created_at=None, **extra):
    return AuditEvent.objects.create(
        network=network, actor_email=actor_email, action=action, target_type=target_type,
        target_id=target_id, target_label=label, created_at=created_at or at(5), **extra)


@pytest.fixture
def logged(world):
    """Four events in network A and one in network B, with distinct labels."""
    return {
        "ana-approve": event(world.network, "EvtAnaApprove", created_at=at(1)),
        "ana-role": event(world.network, "EvtAnaRole", action="membership.role_changed",
                          target_type="membership", target_id="m-42", created_at=at(5, 23, 30)),
        "ben-reject": event(world.network, "EvtBenReject", actor_email="ben@northwind.test",
                            action="organization.rejected", target_id="t-2",
                            created_at=at(6, 0, 30)),
        "ben-invite": event(world.network, "EvtBenInvite", actor_email="ben@northwind.test",
                            action="invitation.created", target_type="invitation",
                            target_id="i-7", created_at=at(10)),
        "foreign": event(world.other_network, "EvtForeign", actor_email="ana@northwind.test",
                         target_id="m-42", action="membership.role_changed",
                         target_type="membership", created_at=at(5)),
    }


ALL_A = {"EvtAnaApprove", "EvtAnaRole", "EvtBenReject", "EvtBenInvite"}


# --- What services record -------------------------------------------------------------------


def test_a_service_action_records_who_did_what_from_where(world):
    owner = world.member(roles.PARTNER, "owner")
    rep = world.member(roles.PARTNER, "rep")
    client = world.client_for(owner)

    client.post(f"/team/{rep.public_id}/role/", {"role": "manager"},
                REMOTE_ADDR="198.51.100.23", HTTP_USER_AGENT="Mozilla/5.0 (AuditTest)")

    event = AuditEvent.objects.get(action="membership.role_changed")
    assert event.network == world.network
    assert event.actor == owner.user and event.actor_email == owner.user.email
    assert event.membership == owner and event.organization == world.partner
    assert event.role == "owner"
    assert event.target_type == "membership" and event.target_id == str(rep.public_id)
    assert event.before == {"role": "rep"} and event.after == {"role": "manager"}
    assert event.ip == "198.51.100.23"
    assert event.user_agent == "Mozilla/5.0 (AuditTest)"
    # ...and the auditor reads exactly that on the audit log page.
    page = text(world.client_for(world.member(roles.OPERATOR, "auditor")).get("/network/audit/"))
    assert "membership.role_changed" in page and "198.51.100.23" in page
    assert owner.user.email in page


def test_deactivation_records_the_status_change(world):
    admin = world.member(roles.VENDOR, "admin")
    sales = world.member(roles.VENDOR, "sales")
    world.client_for(admin).post(f"/team/{sales.public_id}/deactivate/",
                                 REMOTE_ADDR="2001:db8::7", HTTP_USER_AGENT="curl/8.5")

    event = AuditEvent.objects.get(action="membership.deactivated")
    assert event.actor == admin.user and event.role == "admin"
    assert event.organization == world.vendor
    assert event.before == {"status": "active"} and event.after == {"status": "deactivated"}
    assert event.ip == "2001:db8::7" and event.user_agent == "curl/8.5"


def test_a_very_long_user_agent_is_cut_to_fit(world):
    owner = world.member(roles.PARTNER, "owner")
    world.client_for(owner).post(f"/team/{world.member(roles.PARTNER, 'rep').public_id}/role/",
                                 {"role": "finance"}, HTTP_USER_AGENT="x" * 1000)
    event = AuditEvent.objects.get(action="membership.role_changed")
    assert event.user_agent == "x" * 400


def test_actions_outside_a_request_have_no_ip(world):
    event = audit.record("organization.approved", world.pending,
                         actor=world.member(roles.OPERATOR, "onboarding"))
    assert event.ip is None and event.user_agent == ""
    assert event.network_id == world.network.pk
    system = audit.record("organization.auto_approved", world.pending, actor=None)
    assert system.actor is None and system.actor_email == "system" and system.role == ""


# --- Append-only ----------------------------------------------------------------------------


@pytest.fixture
def recorded(world):
    return audit.record("membership.role_changed", world.member(roles.PARTNER, "rep"),
                        actor=world.member(roles.PARTNER, "owner"), before={"role": "rep"},
                        after={"role": "manager"})


def _unchanged(recorded):
    fresh = AuditEvent.objects.get(pk=recorded.pk)
    assert fresh.action == "membership.role_changed"
    assert fresh.after == {"role": "manager"}


def test_saving_an_existing_event_is_refused(recorded):
    recorded.action = "membership.nothing_happened"
    recorded.after = {"role": "rep"}
    with pytest.raises(AuditLogImmutable):
        recorded.save()
    _unchanged(recorded)


def test_deleting_an_event_is_refused(recorded):
    with pytest.raises(AuditLogImmutable):
        recorded.delete()
    _unchanged(recorded)


@pytest.mark.parametrize("change", [
    lambda qs: qs.update(action="membership.nothing_happened"),
    lambda qs: qs.delete(),
    lambda qs: AuditEvent.objects.update(action="membership.nothing_happened"),
    lambda qs: AuditEvent.objects.all().delete(),
    lambda qs: AuditEvent.objects.bulk_update(
        [AuditEvent(pk=qs.get().pk, action="membership.nothing_happened")], ["action"]),
], ids=["filter-update", "filter-delete", "manager-update", "all-delete", "bulk-update"])
def test_queryset_updates_and_deletes_are_refused(recorded, change):
    with pytest.raises(AuditLogImmutable), transaction.atomic():
        change(AuditEvent.objects.filter(pk=recorded.pk))
    _unchanged(recorded)


def test_raw_sql_update_is_refused_by_the_database(recorded):
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE accounts_auditevent SET action = %s WHERE id = %s",
                           ["membership.nothing_happened", recorded.pk])
    _unchanged(recorded)


def test_raw_sql_delete_is_refused_by_the_database(recorded):
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("DELETE FROM accounts_auditevent WHERE id = %s", [recorded.pk])
    assert AuditEvent.objects.filter(pk=recorded.pk).exists()
    _unchanged(recorded)


def test_new_events_can_still_be_appended_after_a_refused_change(world, recorded):
    with pytest.raises(DatabaseError):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("DELETE FROM accounts_auditevent")
    audit.record("organization.approved", world.pending)
    assert AuditEvent.objects.count() == 2


# --- The audit log page ---------------------------------------------------------------------


def _labels(page):
    return {label for label in ALL_A | {"EvtForeign"} if label in page}


@pytest.mark.parametrize("query, expected", [
    ("", ALL_A),
    ("actor=BEN@northwind.test", {"EvtBenReject", "EvtBenInvite"}),
    ("action=membership.role_changed", {"EvtAnaRole"}),
    ("target_type=Invitation", {"EvtBenInvite"}),
    ("target_id=t-2", {"EvtBenReject"}),
    ("target_type=membership&target_id=m-42", {"EvtAnaRole"}),
    ("since=2025-03-05", {"EvtAnaRole", "EvtBenReject", "EvtBenInvite"}),
    # "until" includes the whole day (23:30 on the 5th), and not the next (00:30 on the 6th).
    ("since=2025-03-02&until=2025-03-05", {"EvtAnaRole"}),
    ("until=2025-03-06", {"EvtAnaApprove", "EvtAnaRole", "EvtBenReject"}),
    ("actor=ana@northwind.test&since=2025-03-02", {"EvtAnaRole"}),
    ("actor=nobody@northwind.test", set()),
], ids=["none", "actor", "action", "type", "id", "type+id", "since", "range", "until",
        "actor+since", "no-match"])
def test_audit_log_filters(world, logged, query, expected):
    client = world.client_for(world.member(roles.OPERATOR, "auditor"))

    response = client.get(f"/network/audit/?{query}")

    assert response.status_code == 200
    page = text(response)
    assert _labels(page) == expected
    if not expected:
        assert "No events match these filters." in page


@pytest.mark.parametrize("query, expected", [
    ("", ALL_A),
    ("actor=ben@northwind.test", {"EvtBenReject", "EvtBenInvite"}),
    ("action=organization.rejected", {"EvtBenReject"}),
    ("since=2025-03-02&until=2025-03-05", {"EvtAnaRole"}),
    ("target_id=m-42", {"EvtAnaRole"}),
], ids=["none", "actor", "action", "range", "id"])
def test_csv_export_contains_the_filtered_rows_only(world, logged, query, expected):
    client = world.client_for(world.member(roles.OPERATOR, "admin"))

    response = client.get(f"/network/audit/export.csv?{query}")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = csv_rows(response)
    assert {row["object"] for row in rows} == expected
    assert len(rows) == len(expected)


def test_csv_export_columns_carry_the_event(world, logged):
    client = world.client_for(world.member(roles.OPERATOR, "auditor"))
    owner = world.member(roles.PARTNER, "owner")
    world.client_for(owner).post(
        f"/team/{world.member(roles.PARTNER, 'rep').public_id}/role/", {"role": "manager"},
        REMOTE_ADDR="198.51.100.23", HTTP_USER_AGENT="AuditTest/1.0")

    rows = csv_rows(client.get(f"/network/audit/export.csv?actor={owner.user.email}"))

    assert len(rows) == 1
    row = rows[0]
    assert row["actor"] == owner.user.email and row["role"] == "owner"
    assert row["action"] == "membership.role_changed" and row["object_type"] == "membership"
    assert row["object_id"] == str(world.member(roles.PARTNER, "rep").public_id)
    assert row["before"] == '{"role": "rep"}' and row["after"] == '{"role": "manager"}'
    assert row["ip"] == "198.51.100.23" and row["user_agent"] == "AuditTest/1.0"


@pytest.mark.parametrize("dangerous", ["=HYPERLINK(\"http://evil.test\",\"x\")",
                                       "+SUM(1,2)", "-2+3", "@cmd"])
def test_csv_export_neutralises_formulas(world, dangerous):
    event(world.network, dangerous, actor_email="=cmd|' /C calc'!A0", target_id=dangerous)
    client = world.client_for(world.member(roles.OPERATOR, "auditor"))

    rows = csv_rows(client.get("/network/audit/export.csv"))

    assert len(rows) == 1
    for column in ("object", "object_id"):
        assert rows[0][column] == "'" + dangerous
    assert rows[0]["actor"] == "'=cmd|' /C calc'!A0"
    assert not any(value.startswith(("=", "+", "-", "@")) for value in rows[0].values())


@pytest.mark.parametrize("kind, role", ALL_ROLES, ids=ROLE_IDS)
def test_only_the_auditor_and_the_operator_admin_read_the_audit_log(world, logged, kind, role):
    client = world.client_for(world.member(kind, role))
    page = client.get("/network/audit/")
    export = client.get("/network/audit/export.csv")
    if (kind, role) in AUDIT_READERS:
        assert page.status_code == 200 and export.status_code == 200
        assert _labels(text(page)) == ALL_A
        assert {row["object"] for row in csv_rows(export)} == ALL_A
    else:
        assert page.status_code == 404
        assert export.status_code == 404
        assert "EvtAnaApprove" not in text(page) + export.content.decode()


def test_anonymous_visitors_are_sent_to_log_in(world, client):
    for path in ("/network/audit/", "/network/audit/export.csv"):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_events_of_another_network_never_appear(world, logged):
    client = world.client_for(world.member(roles.OPERATOR, "auditor"))
    for query in ("", "target_id=m-42", "actor=ana@northwind.test",
                  "action=membership.role_changed", f"target_id={logged['foreign'].target_id}"):
        assert "EvtForeign" not in text(client.get(f"/network/audit/?{query}"))
        rows = csv_rows(client.get(f"/network/audit/export.csv?{query}"))
        assert "EvtForeign" not in {row["object"] for row in rows}
    # The distinct-actions picker only offers this network's actions.
    foreign_only = event(world.other_network, "EvtForeignOnly", action="payout.sent")
    assert foreign_only.action not in text(client.get("/network/audit/"))


def test_the_other_networks_auditor_sees_only_their_own_events(world, logged):
    operator = OrganizationFactory(network=world.other_network, kind=roles.OPERATOR)
    auditor = MembershipFactory(organization=operator, role="auditor")
    client = world.client_for(auditor, host=world.other_network.domain)

    page = text(client.get("/network/audit/"))

    assert _labels(page) == {"EvtForeign"}
    assert {row["object"] for row in csv_rows(client.get("/network/audit/export.csv"))} == \
        {"EvtForeign"}


def test_an_auditor_on_another_networks_host_has_no_membership_there(world, logged):
    client = world.client_for(world.member(roles.OPERATOR, "auditor"),
                              host=world.other_network.domain)
    response = client.get("/network/audit/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/no-membership/"


def test_an_invalid_filter_does_not_widen_the_export(world, logged):
    """An auditor asking for Ben's events with a mistyped date must not get the whole log."""
    client = world.client_for(world.member(roles.OPERATOR, "auditor"))

    page = client.get("/network/audit/?actor=ben@northwind.test&since=2025-13-40")
    export = client.get("/network/audit/export.csv?actor=ben@northwind.test&since=2025-13-40")

    assert "Enter a valid date." in text(page)
    assert not {"EvtAnaApprove", "EvtAnaRole"} & _labels(text(page))
    exported = {row["object"] for row in csv_rows(export)} if export.status_code == 200 else set()
    assert not {"EvtAnaApprove", "EvtAnaRole"} & exported


def test_audit_log_query_count_does_not_grow_with_events(world, django_assert_max_num_queries):
    for n in range(60):
        event(world.network, f"Bulk{n:02d}", created_at=at(1 + n % 20))
    client = world.client_for(world.member(roles.OPERATOR, "auditor"))
    with django_assert_max_num_queries(9):
        response = client.get("/network/audit/")
    page = text(response)
    assert page.count("Bulk") == 50  # one page of 50
