"""The referral lifecycle through its service functions: every legal transition leaves an audit
event, a timeline entry and notifications (emails after commit); illegal ones are refused with
a clear message and change nothing; the protection window is kept by a scheduled job."""

import re
import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from accounts.errors import PermissionDenied, ServiceError
from accounts.models import AuditEvent, Notification, Organization
from referrals import services
from referrals.models import Enrolment, Program, Referral, ReferralAssignment, TimelineEntry
from referrals.services import ReferralData
from referrals.services.events import referral_url
from referrals.tasks import daily_protection_job
from tests.accounts.factories import MembershipFactory
from tests.integrations.closing import close
from tests.referrals.factories import ReferralFactory

PA, VE = "partner", "vendor"


def data(**overrides) -> ReferralData:
    values = dict(company_name="Initech Inc", website="https://www.initech.com",
                  country="US", contact_name="Peter Gibbons", contact_email="peter@initech.com",
                  contact_phone="+14155550123", amount_minor=2_500_000, currency="USD")
    values.update(overrides)
    return ReferralData(**values)


def audit_actions(referral) -> list[str]:
    return list(AuditEvent.objects.filter(target_type="referral",
                                          target_id=str(referral.public_id))
                .order_by("created_at", "pk").values_list("action", flat=True))


def status_entries(referral):
    return list(TimelineEntry.objects.filter(referral=referral, kind=TimelineEntry.STATUS)
                .order_by("created_at", "pk"))


def notified(user, referral):
    return Notification.objects.filter(user=user, url=referral_url(referral))


def emails_to(user):
    return [m for m in mail.outbox if user.email in m.to]


@pytest.fixture
def acme(programs):
    return programs["acme"]


@pytest.fixture
def rep(world):
    return world.member(PA, "rep")


@pytest.fixture
def triage(world):
    """The vendor's partnerships member: accepts, rejects, assigns, closes."""
    return world.member(VE, "partnerships")


@pytest.fixture
def deciders(world):
    """Who the vendor side notifies about a referral: the roles that may accept it."""
    return [world.member(VE, "admin").user, world.member(VE, "partnerships").user]


@pytest.fixture
def submitted(rep, acme):
    return services.submit_referral(rep, acme, data())


@pytest.fixture
def accepted(submitted, triage):
    return services.accept_referral(triage, submitted)


def _snapshot(referral):
    fresh = Referral.objects.get(pk=referral.pk)
    return {
        "status": fresh.status, "updated_at": fresh.updated_at,
        "protected_until": fresh.protected_until, "closed_at": fresh.closed_at,
        "rejection_code": fresh.rejection_code,
        "audit": AuditEvent.objects.count(), "timeline": TimelineEntry.objects.count(),
        "notifications": Notification.objects.count(),
    }


# --- Legal transitions -----------------------------------------------------------------------


def test_draft_to_submitted_audits_records_and_notifies_the_vendor(
        world, rep, acme, deciders, django_capture_on_commit_callbacks):
    draft = services.save_draft(rep, acme, ReferralData(company_name="Initech"))
    assert draft.status == Referral.DRAFT
    assert audit_actions(draft) == []
    assert not Notification.objects.filter(url=referral_url(draft)).exists()

    with django_capture_on_commit_callbacks(execute=True):
        referral = services.submit_referral(rep, acme, data(), draft=draft)
        assert mail.outbox == []  # emails leave only after commit

    referral.refresh_from_db()
    assert referral.pk == draft.pk and referral.status == Referral.SUBMITTED
    assert referral.submitted_at is not None
    assert audit_actions(referral) == ["referral.submitted"]
    event = AuditEvent.objects.get(action="referral.submitted",
                                   target_id=str(referral.public_id))
    assert event.actor == rep.user and event.before == {"status": "draft"}
    assert event.after["status"] == "submitted"
    [entry] = status_entries(referral)
    assert (entry.from_status, entry.to_status, entry.author) == ("draft", "submitted", rep.user)
    for user in deciders:
        assert notified(user, referral).filter(kind="referral_submitted").count() == 1
        assert len(emails_to(user)) == 1
    # Only people who decide hear about it: not vendor finance, not unassigned sales reps.
    for role in ("finance", "sales"):
        assert not notified(world.member(VE, role).user, referral).exists()
    assert not notified(rep.user, referral).exists()


def test_submitted_to_accepted(world, submitted, triage, rep,
                               django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.accept_referral(triage, submitted)
        assert emails_to(rep.user) == []
    submitted.refresh_from_db()
    assert submitted.status == Referral.ACCEPTED and submitted.decided_at is not None
    assert audit_actions(submitted) == ["referral.submitted", "referral.accepted"]
    entry = status_entries(submitted)[-1]
    assert (entry.from_status, entry.to_status) == ("submitted", "accepted")
    assert entry.author == triage.user and entry.author_organization_id == world.vendor.pk
    note = notified(rep.user, submitted).get(kind="referral_accepted")
    assert "protected" in note.body.lower()
    [email] = emails_to(rep.user)
    assert "Initech" in email.subject


def test_submitted_to_rejected_tells_the_submitter_why(
        submitted, triage, rep, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.reject_referral(triage, submitted, "other", "  Budget frozen until Q3.  ")
    submitted.refresh_from_db()
    assert submitted.status == Referral.REJECTED
    assert submitted.rejection_code == "other"
    assert submitted.rejection_reason == "Budget frozen until Q3."
    assert submitted.closed_at is not None
    assert audit_actions(submitted)[-1] == "referral.rejected"
    entry = status_entries(submitted)[-1]
    assert (entry.from_status, entry.to_status) == ("submitted", "rejected")
    assert "Budget frozen until Q3." in entry.body
    note = notified(rep.user, submitted).get(kind="referral_rejected")
    assert "Budget frozen until Q3." in note.body
    assert len(emails_to(rep.user)) == 1


def test_submitted_to_withdrawn_tells_the_vendor(
        submitted, rep, deciders, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.withdraw_referral(rep, submitted, "Customer went with a competitor")
    submitted.refresh_from_db()
    assert submitted.status == Referral.WITHDRAWN and submitted.closed_at is not None
    assert audit_actions(submitted)[-1] == "referral.withdrawn"
    entry = status_entries(submitted)[-1]
    assert (entry.from_status, entry.to_status) == ("submitted", "withdrawn")
    assert entry.body == "Customer went with a competitor"
    for user in deciders:
        assert notified(user, submitted).exclude(kind="referral_submitted").exists(), (
            "the vendor is not told that the partner withdrew the referral")
        assert len(emails_to(user)) == 1


@pytest.mark.parametrize("outcome", [Referral.WON, Referral.LOST])
def test_accepted_to_won_or_lost_tells_the_submitter(
        accepted, triage, rep, outcome, django_capture_on_commit_callbacks):
    mail.outbox.clear()
    before = notified(rep.user, accepted).count()
    with django_capture_on_commit_callbacks(execute=True):
        close(triage, accepted, outcome)
    accepted.refresh_from_db()
    assert accepted.status == outcome and accepted.closed_at is not None
    assert audit_actions(accepted)[-1] == f"referral.{outcome}"
    entry = status_entries(accepted)[-1]
    assert (entry.from_status, entry.to_status) == ("accepted", outcome)
    assert notified(rep.user, accepted).count() == before + 1, (
        f"the partner is not told that their referral was marked {outcome}")
    assert len(emails_to(rep.user)) == 1


def test_accepted_to_withdrawn(accepted, rep, deciders, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.withdraw_referral(rep, accepted)
    accepted.refresh_from_db()
    assert accepted.status == Referral.WITHDRAWN
    assert audit_actions(accepted)[-1] == "referral.withdrawn"
    entry = status_entries(accepted)[-1]
    assert (entry.from_status, entry.to_status) == ("accepted", "withdrawn")
    for user in deciders:
        assert notified(user, accepted).exclude(kind="referral_submitted").exists()


def test_accepted_to_expired_by_the_scheduled_job(accepted, rep,
                                                  django_capture_on_commit_callbacks):
    later = accepted.protected_until + timedelta(seconds=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.expire_stale_registrations(now=later) == 1
    accepted.refresh_from_db()
    assert accepted.status == Referral.EXPIRED and accepted.closed_at == later
    assert audit_actions(accepted)[-1] == "referral.expired"
    event = AuditEvent.objects.filter(action="referral.expired").get()
    assert event.actor is None and event.actor_email == "system"
    entry = status_entries(accepted)[-1]
    assert (entry.from_status, entry.to_status, entry.author) == ("accepted", "expired", None)
    assert notified(rep.user, accepted).filter(kind="referral_expired").count() == 1
    assert any("expired" in m.subject.lower() or "expired" in m.body.lower()
               for m in emails_to(rep.user))


# --- Illegal transitions ---------------------------------------------------------------------


def _reach(status, rep, triage, acme):
    referral = services.submit_referral(rep, acme, data())
    if status == Referral.SUBMITTED:
        return referral
    if status == Referral.REJECTED:
        return services.reject_referral(triage, referral, "not_qualified", "")
    if status == Referral.WITHDRAWN:
        return services.withdraw_referral(rep, referral)
    services.accept_referral(triage, referral)
    if status in (Referral.WON, Referral.LOST):
        close(triage, referral, status)
    return Referral.objects.get(pk=referral.pk)


ILLEGAL = [
    # (state, who, action, the message says)
    (Referral.REJECTED, "triage", lambda m, r: services.accept_referral(m, r), "rejected"),
    (Referral.ACCEPTED, "triage", lambda m, r: services.accept_referral(m, r), "accepted"),
    (Referral.ACCEPTED, "triage",
     lambda m, r: services.reject_referral(m, r, "duplicate", ""), "accepted"),
    (Referral.WITHDRAWN, "triage", lambda m, r: services.accept_referral(m, r), "withdrawn"),
    (Referral.WON, "rep", lambda m, r: services.withdraw_referral(m, r), "won"),
    (Referral.LOST, "rep", lambda m, r: services.withdraw_referral(m, r), "lost"),
    (Referral.REJECTED, "rep", lambda m, r: services.withdraw_referral(m, r), "rejected"),
    (Referral.SUBMITTED, "triage", lambda m, r: close(m, r, "won"),
     "submitted"),
    (Referral.WON, "triage", lambda m, r: close(m, r, "won"), "won"),
    (Referral.SUBMITTED, "rep", lambda m, r: services.submit_referral(m, r.program, data(),
                                                                      draft=r),
     "already been submitted"),
    (Referral.SUBMITTED, "triage", lambda m, r: services.extend_protection(m, r, 30),
     "only accepted"),
    (Referral.ACCEPTED, "rep", lambda m, r: services.update_referral(m, r, data()),
     "only drafts and submitted"),
]


@pytest.mark.parametrize("state,who,action,says", ILLEGAL,
                         ids=[f"{i}-{c[0]}-{c[3][:12]}" for i, c in enumerate(ILLEGAL)])
def test_illegal_transitions_are_refused_and_change_nothing(
        rep, triage, acme, state, who, action, says, django_capture_on_commit_callbacks):
    referral = _reach(state, rep, triage, acme)
    before = _snapshot(referral)
    actor = {"rep": rep, "triage": triage}[who]
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(ServiceError) as exc:
            action(actor, referral)
    assert not isinstance(exc.value, PermissionDenied)
    assert re.search(says, exc.value.message, re.IGNORECASE), exc.value.message
    assert _snapshot(referral) == before
    assert mail.outbox == []


def test_the_refusal_names_the_current_status_and_the_attempted_action(rep, triage, acme):
    referral = _reach(Referral.REJECTED, rep, triage, acme)
    with pytest.raises(ServiceError) as exc:
        services.accept_referral(triage, referral)
    assert exc.value.message == "This referral is rejected; it cannot be accepted now."


def test_roles_without_the_permission_cannot_drive_the_lifecycle(world, submitted, rep):
    before = _snapshot(submitted)
    with pytest.raises(PermissionDenied):
        services.accept_referral(rep, submitted)  # partners never accept their own
    with pytest.raises(PermissionDenied):
        services.accept_referral(world.member(VE, "finance"), submitted)
    with pytest.raises(PermissionDenied):
        services.withdraw_referral(world.member(VE, "partnerships"), submitted)
    with pytest.raises(PermissionDenied):
        close(world.member("operator", "admin"), submitted, "won")
    assert _snapshot(submitted) == before


def test_a_vendor_cannot_act_on_a_draft(world, rep, acme, triage):
    draft = services.save_draft(rep, acme, ReferralData(company_name="Initech"))
    with pytest.raises(PermissionDenied):
        services.accept_referral(triage, draft)
    assert Referral.objects.get(pk=draft.pk).status == Referral.DRAFT


# --- Accepting, rejecting ----------------------------------------------------------------------


def test_accept_protects_the_account_for_the_program_window(submitted, triage, acme):
    Program.objects.filter(pk=acme.pk).update(protection_days=45)
    start = timezone.now()
    services.accept_referral(triage, submitted)
    end = timezone.now()
    submitted.refresh_from_db()
    assert start + timedelta(days=45) <= submitted.protected_until <= end + timedelta(days=45)
    event = AuditEvent.objects.get(action="referral.accepted")
    assert event.after["protected_until"] == submitted.protected_until.isoformat()


@pytest.mark.parametrize("code,text,field", [
    ("", "", "code"),
    ("because", "", "code"),
    ("other", "", "text"),
    ("other", "   ", "text"),
])
def test_reject_requires_a_reason(submitted, triage, code, text, field):
    before = _snapshot(submitted)
    with pytest.raises(ServiceError) as exc:
        services.reject_referral(triage, submitted, code, text)
    assert exc.value.field == field
    assert _snapshot(submitted) == before


def test_reject_with_a_listed_reason_needs_no_text(submitted, triage, rep):
    services.reject_referral(triage, submitted, "existing_customer", "")
    submitted.refresh_from_db()
    assert submitted.status == Referral.REJECTED
    note = notified(rep.user, submitted).get(kind="referral_rejected")
    assert "Already a customer" in note.body


# --- Auto-accept, program and enrolment gates --------------------------------------------------


def test_auto_accept_accepts_a_clean_submission_at_once(world, rep, acme):
    Program.objects.filter(pk=acme.pk).update(auto_accept=True, protection_days=30)
    acme.refresh_from_db()
    referral = services.submit_referral(rep, acme, data())
    referral.refresh_from_db()
    assert referral.status == Referral.ACCEPTED
    assert referral.protected_until is not None
    assert audit_actions(referral) == ["referral.submitted", "referral.accepted"]
    accepted_event = AuditEvent.objects.get(action="referral.accepted")
    assert accepted_event.actor is None  # the program accepted it, not a person
    assert [(e.from_status, e.to_status) for e in status_entries(referral)] == [
        ("draft", "submitted"), ("submitted", "accepted")]
    assert notified(rep.user, referral).filter(kind="referral_accepted").exists()


def test_auto_accept_leaves_a_conflicting_submission_for_review(world, rep, acme):
    Program.objects.filter(pk=acme.pk).update(auto_accept=True)
    acme.refresh_from_db()
    first = services.submit_referral(world.others["partner2_rep"], acme, data())
    second = services.submit_referral(rep, acme, data(company_name="Initech Corporation"))
    second.refresh_from_db()
    assert Referral.objects.get(pk=first.pk).status == Referral.ACCEPTED
    assert second.status == Referral.SUBMITTED
    assert second.conflict and second.conflict_with_id == first.pk
    assert second.protected_until is None
    assert "referral.accepted" not in audit_actions(second)


def test_a_partner_not_enrolled_cannot_submit(world, programs, rep):
    count = Referral.objects.count()
    with pytest.raises(ServiceError) as exc:
        services.submit_referral(rep, programs["globex"], data())
    assert "not enrolled" in exc.value.message
    with pytest.raises(ServiceError):
        services.save_draft(rep, programs["globex"], ReferralData(company_name="Initech"))
    assert Referral.objects.count() == count


@pytest.mark.parametrize("status", [Enrolment.PENDING, Enrolment.REJECTED, Enrolment.REMOVED])
def test_an_enrolment_that_is_not_active_cannot_submit(rep, acme, world, status):
    Enrolment.objects.filter(program=acme, partner=world.partner).update(status=status)
    with pytest.raises(ServiceError):
        services.submit_referral(rep, acme, data())
    assert not Referral.objects.filter(partner=world.partner).exists()


@pytest.mark.parametrize("status", [Program.PAUSED, Program.CLOSED, Program.DRAFT])
def test_a_program_not_open_cannot_take_submissions(rep, acme, status):
    Program.objects.filter(pk=acme.pk).update(status=status)
    acme.refresh_from_db()
    with pytest.raises(ServiceError) as exc:
        services.submit_referral(rep, acme, data())
    assert "not open" in exc.value.message
    assert not Referral.objects.exists()


def test_a_draft_cannot_be_submitted_once_the_program_is_paused(rep, acme):
    draft = services.save_draft(rep, acme, ReferralData(company_name="Initech"))
    Program.objects.filter(pk=acme.pk).update(status=Program.PAUSED)
    with pytest.raises(ServiceError):
        services.submit_referral(rep, acme, data(), draft=draft)
    assert Referral.objects.get(pk=draft.pk).status == Referral.DRAFT


def test_roles_without_submit_cannot_submit(world, acme):
    for role in ("finance",):
        with pytest.raises(PermissionDenied):
            services.submit_referral(world.member(PA, role), acme, data())
    with pytest.raises(PermissionDenied):
        services.submit_referral(world.member(VE, "admin"), acme, data())
    assert not Referral.objects.exists()


# --- First referral ----------------------------------------------------------------------------


def test_first_submission_stamps_the_partner_organization_once(world, rep, acme):
    assert Organization.objects.get(pk=world.partner.pk).first_referral_at is None
    services.save_draft(rep, acme, ReferralData(company_name="Draft Co"))
    assert Organization.objects.get(pk=world.partner.pk).first_referral_at is None

    first = services.submit_referral(rep, acme, data())
    stamped = Organization.objects.get(pk=world.partner.pk).first_referral_at
    assert stamped == first.submitted_at

    services.submit_referral(world.member(PA, "manager"), acme,
                             data(company_name="Globochem", website="globochem.com"))
    assert Organization.objects.get(pk=world.partner.pk).first_referral_at == stamped
    assert Organization.objects.get(pk=world.partner2.pk).first_referral_at is None


# --- Assignment --------------------------------------------------------------------------------


def test_assignment_grants_that_sales_rep_and_only_them(
        world, submitted, triage, django_capture_on_commit_callbacks):
    sales = world.member(VE, "sales")
    other_sales = MembershipFactory(organization=world.vendor, role="sales")
    assert not Referral.objects.visible_to(sales).filter(pk=submitted.pk).exists()

    with django_capture_on_commit_callbacks(execute=True):
        services.assign_referral(triage, submitted, sales)

    grant = ReferralAssignment.objects.get(content_object=submitted)
    assert grant.user == sales.user and grant.permission.codename == "work_referral"
    assert list(Referral.objects.visible_to(sales)) == [submitted]
    assert not Referral.objects.visible_to(other_sales).exists()
    assert audit_actions(submitted)[-1] == "referral.assigned"
    assert notified(sales.user, submitted).filter(kind="referral_assigned").count() == 1
    assert len(emails_to(sales.user)) == 1
    assert not notified(other_sales.user, submitted).exists()
    # The assigned rep may now record the outcome once the referral is accepted.
    services.accept_referral(triage, submitted)
    close(sales, submitted, Referral.WON)
    assert Referral.objects.get(pk=submitted.pk).status == Referral.WON
    with pytest.raises(PermissionDenied):
        close(other_sales, submitted, Referral.LOST)


def test_assignment_only_to_the_vendors_sales_team(world, submitted, triage):
    for assignee in (world.member(VE, "finance"), world.member(PA, "rep"),
                     MembershipFactory(organization=world.vendor2, role="sales")):
        with pytest.raises(ServiceError):
            services.assign_referral(triage, submitted, assignee)
    assert not ReferralAssignment.objects.exists()


def test_assignment_visible_on_the_detail_page_only_to_the_assignee(world, submitted, triage):
    sales = world.member(VE, "sales")
    other_sales = MembershipFactory(organization=world.vendor, role="sales")
    url = referral_url(submitted)
    assert world.client_for(sales).get(url).status_code == 404
    services.assign_referral(triage, submitted, sales)
    assert world.client_for(sales).get(url).status_code == 200
    assert world.client_for(other_sales).get(url).status_code == 404


def test_deactivating_a_sales_rep_revokes_their_assignments(world, submitted, triage, rep):
    """Grants die with the membership that justified them: a rep who left the vendor neither
    keeps the grant nor keeps hearing about the referral (message excerpts included)."""
    from accounts.services.members import deactivate_member

    sales = world.member(VE, "sales")
    services.assign_referral(triage, submitted, sales)
    deactivate_member(world.member(VE, "admin"), sales)

    assert not ReferralAssignment.objects.filter(user=sales.user).exists()
    services.post_message(rep, submitted, "The CFO signs on Friday")
    assert not notified(sales.user, submitted).filter(kind="referral_message").exists()
    assert notified(triage.user, submitted).filter(kind="referral_message").exists()


# --- Protection window -------------------------------------------------------------------------


def test_extend_protection_is_audited_and_moves_the_window(accepted, triage, rep):
    old = accepted.protected_until
    services.extend_protection(triage, accepted, 30)
    accepted.refresh_from_db()
    assert accepted.protected_until == old + timedelta(days=30)
    event = AuditEvent.objects.get(action="referral.protection_extended")
    assert event.actor == triage.user
    assert event.before == {"protected_until": old.isoformat()}
    assert event.after == {"protected_until": accepted.protected_until.isoformat()}
    entry = TimelineEntry.objects.filter(referral=accepted, kind=TimelineEntry.EVENT).last()
    assert "30 days" in entry.body


@pytest.mark.parametrize("days", [0, -5, 366])
def test_extend_protection_refuses_odd_lengths(accepted, triage, days):
    before = _snapshot(accepted)
    with pytest.raises(ServiceError):
        services.extend_protection(triage, accepted, days)
    assert _snapshot(accepted) == before


def test_extend_protection_requires_the_accept_permission(world, accepted):
    before = _snapshot(accepted)
    for member in (world.member(PA, "owner"), world.member(VE, "finance"),
                   world.member(VE, "sales")):
        with pytest.raises(PermissionDenied):
            services.extend_protection(member, accepted, 30)
    assert _snapshot(accepted) == before


@pytest.fixture
def expiring(world, acme, rep):
    """Accepted registrations ending in 3 days, in 10 days and yesterday."""
    now = timezone.now()

    def make(days, name):
        return ReferralFactory(program=acme, partner=world.partner, submitted_by=rep.user,
                               status=Referral.ACCEPTED, company_name=name,
                               protected_until=now + timedelta(days=days))

    return {"now": now, "soon": make(3, "Soon Co"), "later": make(10, "Later Co"),
            "past": make(-1, "Past Co")}


def test_warn_expiring_registrations_notifies_once(expiring, rep,
                                                   django_capture_on_commit_callbacks):
    now, soon = expiring["now"], expiring["soon"]
    with django_capture_on_commit_callbacks(execute=True):
        assert services.warn_expiring_registrations(now=now) == 1
    assert notified(rep.user, soon).filter(kind="protection_expiring").count() == 1
    assert len(emails_to(rep.user)) == 1
    assert not notified(rep.user, expiring["later"]).exists()
    assert not notified(rep.user, expiring["past"]).exists()

    with django_capture_on_commit_callbacks(execute=True):
        assert services.warn_expiring_registrations(now=now) == 0
        assert services.warn_expiring_registrations(now=now + timedelta(hours=6)) == 0
    assert Notification.objects.filter(kind="protection_expiring").count() == 1
    assert len(emails_to(rep.user)) == 1
    assert Referral.objects.get(pk=soon.pk).status == Referral.ACCEPTED


def test_extending_a_warned_registration_warns_again_before_the_new_end(
        expiring, triage, rep):
    now, soon = expiring["now"], expiring["soon"]
    services.warn_expiring_registrations(now=now)
    services.extend_protection(triage, soon, 20)
    soon.refresh_from_db()
    assert services.warn_expiring_registrations(now=now) == 0  # 23 days left: not yet
    assert services.warn_expiring_registrations(
        now=soon.protected_until - timedelta(days=2)) == 1
    assert notified(rep.user, soon).filter(kind="protection_expiring").count() == 2


def test_expire_stale_registrations_is_idempotent(expiring, rep,
                                                  django_capture_on_commit_callbacks):
    now = expiring["now"]
    with django_capture_on_commit_callbacks(execute=True):
        assert services.expire_stale_registrations(now=now) == 1
    assert Referral.objects.get(pk=expiring["past"].pk).status == Referral.EXPIRED
    assert Referral.objects.get(pk=expiring["soon"].pk).status == Referral.ACCEPTED
    assert Referral.objects.get(pk=expiring["later"].pk).status == Referral.ACCEPTED
    assert AuditEvent.objects.filter(action="referral.expired").count() == 1
    sent = len(mail.outbox)

    with django_capture_on_commit_callbacks(execute=True):
        assert services.expire_stale_registrations(now=now) == 0
    assert AuditEvent.objects.filter(action="referral.expired").count() == 1
    assert TimelineEntry.objects.filter(to_status=Referral.EXPIRED).count() == 1
    assert Notification.objects.filter(kind="referral_expired").count() == 1
    assert len(mail.outbox) == sent

    # Eleven days on, the other two have run out as well.
    assert services.expire_stale_registrations(now=now + timedelta(days=11)) == 2
    assert not Referral.objects.filter(status=Referral.ACCEPTED).exists()


def test_an_expired_registration_no_longer_holds_the_account(expiring, world, acme):
    services.expire_stale_registrations(now=expiring["now"])
    past = Referral.objects.get(pk=expiring["past"].pk)
    referral = services.submit_referral(world.others["partner2_rep"], acme,
                                        data(company_name=past.company_name,
                                             website=past.website))
    assert referral.conflict is False


def test_daily_protection_job_runs_as_a_celery_task(expiring, settings,
                                                    django_capture_on_commit_callbacks):
    assert settings.CELERY_TASK_ALWAYS_EAGER
    with django_capture_on_commit_callbacks(execute=True):
        result = daily_protection_job.delay()
    assert result.get() == {"warned": 1, "expired": 1}
    assert Referral.objects.get(pk=expiring["past"].pk).status == Referral.EXPIRED
    assert Notification.objects.filter(kind="protection_expiring").count() == 1
    assert Notification.objects.filter(kind="referral_expired").count() == 1
    assert daily_protection_job.delay().get() == {"warned": 0, "expired": 0}


# --- Two people at once ------------------------------------------------------------------------


def _race(*actions):
    """Run the callables at the same moment, each in its own thread (own DB connection)."""
    barrier = threading.Barrier(len(actions))
    outcomes = [None] * len(actions)

    def run(i, action):
        try:
            barrier.wait(timeout=10)
            outcomes[i] = action()
        except Exception as exc:  # noqa: BLE001 - collected and asserted on below
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a racing thread hung"
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_accept_and_reject_racing_leave_one_outcome_and_one_audit_event(world, programs):
    rep = world.member(PA, "rep")
    referral = services.submit_referral(rep, programs["acme"], data())
    partnerships, admin = world.member(VE, "partnerships"), world.member(VE, "admin")

    outcomes = _race(lambda: services.accept_referral(partnerships, referral),
                     lambda: services.reject_referral(admin, referral, "duplicate", ""))

    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(errors) == 1, outcomes
    assert isinstance(errors[0], ServiceError), errors[0]
    referral.refresh_from_db()
    assert referral.status in (Referral.ACCEPTED, Referral.REJECTED)
    decisions = AuditEvent.objects.filter(
        target_id=str(referral.public_id), action__in=["referral.accepted", "referral.rejected"])
    assert [e.action for e in decisions] == [f"referral.{referral.status}"]
    assert TimelineEntry.objects.filter(referral=referral,
                                        from_status=Referral.SUBMITTED).count() == 1
    if referral.status == Referral.ACCEPTED:
        assert referral.protected_until is not None and referral.rejection_code == ""
    else:
        assert referral.protected_until is None and referral.rejection_code == "duplicate"
    assert Notification.objects.filter(user=rep.user, kind__in=[
        "referral_accepted", "referral_rejected"]).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_accepts_at_once_accept_once(world, programs):
    referral = services.submit_referral(world.member(PA, "rep"), programs["acme"], data())
    partnerships, admin = world.member(VE, "partnerships"), world.member(VE, "admin")
    outcomes = _race(lambda: services.accept_referral(partnerships, referral),
                     lambda: services.accept_referral(admin, referral))
    assert sum(isinstance(o, ServiceError) for o in outcomes) == 1, outcomes
    assert AuditEvent.objects.filter(action="referral.accepted").count() == 1
