"""The dispute workflow: every transition (and the illegal ones), the dispute windows to the
second, evidence checks by extension and by first bytes, the 14 roles on the queue, the detail
and every action, and the promise that the other partner never learns who disputed.

The standard deal: Acme Cloud won "Kestrel Freight" (kestrelfreight.com). Summit registered it
first and was accepted first, so the engine credited Summit (first_accepted); Brightpath's rep
registered the same account later and lost: Brightpath disputes.
"""

import io
import zipfile
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from guardian.shortcuts import assign_perm

from accounts import roles
from accounts.errors import PermissionDenied, ServiceError
from accounts.models import AuditEvent, Notification
from attribution import disputes
from attribution.dispute_subjects import partner_subjects
from attribution.evidence import MAX_EVIDENCE_BYTES, check_evidence, check_evidence_files
from attribution.models import Attribution, AttributionCandidate, DealSnapshot, Dispute
from attribution.runner import attribute_deal
from referrals.models import Referral, TimelineEntry
from tests.accounts.factories import MembershipFactory
from tests.conftest import ALL_ROLES, ROLE_IDS
from tests.referrals.factories import ReferralFactory

OP, VE, PA = roles.OPERATOR, roles.VENDOR, roles.PARTNER
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 20
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 40

# Who sees a partner's dispute (opened by Brightpath's rep on the rep's own referral).
SEES_PARTNER_DISPUTE = {(PA, "owner"), (PA, "manager"), (PA, "rep"), (VE, "admin"),
                        (VE, "partnerships"), (OP, "admin"), (OP, "channel_manager"),
                        (OP, "auditor")}
# Who has a dispute list at all.
HAS_QUEUE = SEES_PARTNER_DISPUTE


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def _now():
    return timezone.now()


def make_deal(world, program, n=0, *, rule_winner=True):
    """Summit (accepted first) and Brightpath's rep (accepted later) registered the same
    account; the won deal is credited to Summit. Returns (attribution, loser, winner)."""
    now = _now()
    domain = f"kestrelfreight{n}.com"
    winner = ReferralFactory(
        program=program, partner=world.partner2,
        submitted_by=world.others["partner2_rep"].user, status=Referral.ACCEPTED,
        company_name=f"Kestrel Freight {n}", website=f"https://www.{domain}",
        submitted_at=now - timedelta(days=40), decided_at=now - timedelta(days=39),
        protected_until=now + timedelta(days=50))
    loser = ReferralFactory(
        program=program, partner=world.partner, submitted_by=world.member(PA, "rep").user,
        status=Referral.ACCEPTED, company_name=f"Kestrel Freight {n} Ltd",
        website=f"https://{domain}", submitted_at=now - timedelta(days=30),
        decided_at=now - timedelta(days=29), protected_until=now + timedelta(days=60))
    snapshot = DealSnapshot.objects.create(
        vendor=world.vendor, provider="builtin", external_deal_id=f"D-{n}", version="1",
        account_domain=domain, account_name=f"Kestrel Freight {n}", amount_minor=4_800_000,
        currency="USD", stage="won", outcome=DealSnapshot.WON,
        deal_created_at=now - timedelta(days=20), closed_at=now - timedelta(days=1))
    attribution = attribute_deal(snapshot)
    assert attribution.referral == winner and attribution.status == Attribution.AUTO_CONFIRMED
    return attribution, loser, winner


@pytest.fixture
def deal(world, programs):
    return make_deal(world, programs["acme"])


@pytest.fixture
def dispute(world, deal):
    attribution, loser, _ = deal
    return disputes.open_partner_dispute(
        world.member(PA, "rep"), loser, Dispute.TO_ANOTHER_PARTNER,
        "We met their CFO in March; our registration predates the deal.")


def cm(world):
    return world.member(OP, "channel_manager")


def partnerships(world):
    return world.member(VE, "partnerships")


def fresh(obj):
    obj.refresh_from_db()
    return obj


def upload(name, content, content_type="application/octet-stream"):
    return SimpleUploadedFile(name, content, content_type=content_type)


def ooxml(part):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr(part, "<x/>")
    return buffer.getvalue()


# --- Opening ---------------------------------------------------------------------------------

def test_partner_opens_a_dispute_of_an_attribution_it_lost(world, deal):
    attribution, loser, winner = deal
    rep = world.member(PA, "rep")
    d = disputes.open_partner_dispute(rep, loser, Dispute.TO_ANOTHER_PARTNER, "Ours.",
                                      [upload("call-notes.pdf", PDF)])
    assert (d.status, d.side, d.attribution, d.referral) == (
        Dispute.OPEN, Dispute.PARTNER, attribution, loser)
    assert (d.vendor, d.partner, d.opened_by_org, d.opened_by) == (
        world.vendor, world.partner, world.partner, rep.user)
    assert d.sla_due_at == disputes.add_business_days(d.created_at, disputes.SLA_BUSINESS_DAYS)
    evidence = d.evidence.get()
    assert (evidence.name, evidence.content_type, evidence.size) == (
        "call-notes.pdf", "application/pdf", len(PDF))
    assert evidence.file.name.startswith("dispute-evidence/") and "call-notes" not in \
        evidence.file.name
    event = AuditEvent.objects.get(action="dispute.opened")
    assert event.target_id == str(d.public_id) and event.after["category"] == d.category
    entry = loser.timeline.filter(kind=TimelineEntry.EVENT).get()
    assert entry.body.startswith("Dispute opened") and entry.visibility == "everyone"
    assert not winner.timeline.filter(kind=TimelineEntry.EVENT).exists()


def test_opening_notifies_the_vendor_and_the_channel_manager_but_not_the_other_partner(
        world, dispute):
    told = set(Notification.objects.filter(kind="dispute_opened")
               .values_list("user_id", flat=True))
    assert world.member(VE, "partnerships").user_id in told
    assert world.member(VE, "admin").user_id in told
    assert cm(world).user_id in told
    assert world.others["partner2_owner"].user_id not in told
    assert world.others["partner2_rep"].user_id not in told
    assert not Notification.objects.filter(
        user__in=[world.others["partner2_owner"].user, world.others["partner2_rep"].user]
    ).exists()


def test_a_partner_cannot_dispute_an_attribution_it_won(world, deal):
    attribution, _, winner = deal
    with pytest.raises(ServiceError, match="nothing of this kind"):
        disputes.open_partner_dispute(world.others["partner2_owner"], winner,
                                      Dispute.TO_ANOTHER_PARTNER, "Hm.")


def test_a_deal_credited_to_no_one_is_disputed_as_such(world, programs):
    now = _now()
    lost = ReferralFactory(program=programs["acme"], partner=world.partner,
                           submitted_by=world.member(PA, "rep").user, status=Referral.ACCEPTED,
                           website="https://late.example", submitted_at=now - timedelta(days=3),
                           decided_at=now - timedelta(days=2),
                           protected_until=now + timedelta(days=80))
    snapshot = DealSnapshot.objects.create(
        vendor=world.vendor, provider="builtin", external_deal_id="D-late", version="1",
        account_domain="late.example", account_name="Late", outcome=DealSnapshot.WON,
        deal_created_at=now - timedelta(days=10), closed_at=now - timedelta(days=1))
    attribution = attribute_deal(snapshot)
    assert attribution.referral is None  # registered after the deal was created
    with pytest.raises(ServiceError):
        disputes.open_partner_dispute(world.member(PA, "rep"), lost,
                                      Dispute.TO_ANOTHER_PARTNER, "x")
    d = disputes.open_partner_dispute(world.member(PA, "rep"), lost, Dispute.TO_NO_ONE, "x")
    assert d.attribution == attribution


def test_one_open_dispute_per_referral_and_attribution(world, dispute, deal):
    _, loser, _ = deal
    with pytest.raises(ServiceError, match="already disputed"):
        disputes.open_partner_dispute(world.member(PA, "manager"), loser, Dispute.OTHER, "x")
    disputes.withdraw(world.member(PA, "rep"), dispute)
    again = disputes.open_partner_dispute(world.member(PA, "manager"), loser, Dispute.OTHER,
                                          "Second try, with the contract.")
    assert again.status == Dispute.OPEN


def test_a_decided_dispute_is_not_reopened(world, dispute, deal):
    _, loser, _ = deal
    disputes.take_under_review(cm(world), dispute)
    disputes.resolve(cm(world), dispute, Dispute.OVERTURNED, "The other registration came first.")
    with pytest.raises(ServiceError, match="already disputed"):
        disputes.open_partner_dispute(world.member(PA, "owner"), loser, Dispute.OTHER, "x")


def test_reps_dispute_only_their_own_referrals(world, deal):
    _, loser, _ = deal
    other_rep = MembershipFactory(organization=world.partner, role="rep")
    with pytest.raises(PermissionDenied):
        disputes.open_partner_dispute(other_rep, loser, Dispute.TO_ANOTHER_PARTNER, "x")
    with pytest.raises(PermissionDenied):
        disputes.open_partner_dispute(world.member(PA, "finance"), loser,
                                      Dispute.TO_ANOTHER_PARTNER, "x")
    with pytest.raises(PermissionDenied):
        disputes.open_partner_dispute(world.others["partner2_owner"], loser,
                                      Dispute.TO_ANOTHER_PARTNER, "x")


# --- Windows ---------------------------------------------------------------------------------

def test_attribution_window_edges(world, deal):
    attribution, loser, _ = deal
    deadline = attribution.created_at + timedelta(days=30)
    rep = world.member(PA, "rep")
    with pytest.raises(ServiceError, match="dispute window closed"):
        disputes.open_partner_dispute(rep, loser, Dispute.TO_ANOTHER_PARTNER, "x",
                                      now=deadline + timedelta(microseconds=1))
    d = disputes.open_partner_dispute(rep, loser, Dispute.TO_ANOTHER_PARTNER, "x",
                                      now=deadline)
    assert d.pk


def test_the_window_is_the_programs_and_restarts_with_a_persons_decision(world, deal, programs):
    attribution, loser, _ = deal
    programs["acme"].dispute_window_days = 7
    programs["acme"].save()
    late = attribution.created_at + timedelta(days=7, seconds=1)
    with pytest.raises(ServiceError, match="dispute window closed"):
        disputes.open_partner_dispute(world.member(PA, "rep"), loser, Dispute.OTHER, "x",
                                      now=late)
    Attribution.objects.filter(pk=attribution.pk).update(
        status=Attribution.CONFIRMED, decided_at=attribution.created_at + timedelta(days=5))
    d = disputes.open_partner_dispute(world.member(PA, "rep"), loser, Dispute.OTHER, "x",
                                      now=late)
    assert d.attribution_id == attribution.pk


@pytest.mark.parametrize("status, category, stamp", [
    (Referral.REJECTED, Dispute.WRONGLY_REJECTED, "decided_at"),
    (Referral.EXPIRED, Dispute.WRONGLY_EXPIRED, "closed_at"),
])
def test_rejection_and_expiry_window_edges(world, programs, status, category, stamp):
    when = _now() - timedelta(days=3)
    referral = ReferralFactory(program=programs["acme"], partner=world.partner,
                               submitted_by=world.member(PA, "rep").user, status=status,
                               decided_at=when, closed_at=when)
    owner = world.member(PA, "owner")
    deadline = when + timedelta(days=30)
    with pytest.raises(ServiceError, match="dispute window closed"):
        disputes.open_partner_dispute(owner, referral, category, "x",
                                      now=deadline + timedelta(seconds=1))
    with pytest.raises(ServiceError):  # the wrong kind of claim for this registration
        disputes.open_partner_dispute(owner, referral, Dispute.TO_ANOTHER_PARTNER, "x")
    d = disputes.open_partner_dispute(owner, referral, category, "x", now=deadline)
    assert d.attribution is None and d.referral == referral
    assert getattr(referral, stamp) == when


def test_an_accepted_registration_has_nothing_to_dispute(world, programs):
    referral = ReferralFactory(program=programs["acme"], partner=world.partner,
                               submitted_by=world.member(PA, "rep").user,
                               status=Referral.ACCEPTED, decided_at=_now(),
                               protected_until=_now() + timedelta(days=9))
    assert partner_subjects(referral) == []
    with pytest.raises(ServiceError):
        disputes.open_partner_dispute(world.member(PA, "rep"), referral, Dispute.OTHER, "x")


def test_vendor_window_edges_and_only_automatic_attributions(world, deal):
    attribution, _, _ = deal
    deadline = attribution.created_at + timedelta(days=30)
    with pytest.raises(ServiceError, match="dispute window closed"):
        disputes.open_vendor_dispute(partnerships(world), attribution, Dispute.WRONG_PARTNER,
                                     "x", now=deadline + timedelta(seconds=1))
    d = disputes.open_vendor_dispute(partnerships(world), attribution, Dispute.WRONG_PARTNER,
                                     "x", now=deadline)
    assert (d.side, d.partner, d.referral) == (Dispute.VENDOR, world.partner2,
                                               attribution.referral)
    with pytest.raises(ServiceError, match="already disputed"):
        disputes.open_vendor_dispute(partnerships(world), attribution, Dispute.OTHER, "x")
    disputes.withdraw(partnerships(world), d)
    Attribution.objects.filter(pk=attribution.pk).update(status=Attribution.CONFIRMED)
    with pytest.raises(ServiceError, match="already decided"):
        disputes.open_vendor_dispute(partnerships(world), fresh(attribution),
                                     Dispute.WRONG_PARTNER, "x")


@pytest.mark.parametrize("role", [(VE, "admin"), (VE, "sales"), (VE, "finance"), (PA, "owner"),
                                  (OP, "admin")], ids=lambda r: ".".join(r))
def test_only_vendor_partnerships_open_vendor_disputes(world, deal, role):
    with pytest.raises(PermissionDenied):
        disputes.open_vendor_dispute(world.member(*role), deal[0], Dispute.WRONG_PARTNER, "x")


def test_sla_counts_working_days():
    friday = datetime(2025, 3, 7, 15, 30, tzinfo=ZoneInfo("UTC"))
    assert disputes.add_business_days(friday, 5) == datetime(2025, 3, 14, 15, 30,
                                                             tzinfo=ZoneInfo("UTC"))
    saturday = friday + timedelta(days=1)
    assert disputes.add_business_days(saturday, 1).weekday() == 0


# --- Transitions -----------------------------------------------------------------------------

def test_full_path_upheld_gives_the_deal_to_the_disputing_referral(world, deal, dispute):
    attribution, loser, winner = deal
    disputes.vendor_respond(partnerships(world), dispute, "We saw both; fine by us.")
    assert fresh(dispute).status == Dispute.VENDOR_RESPONDED
    disputes.take_under_review(cm(world), dispute)
    assert (fresh(dispute).status, dispute.assigned_to) == (Dispute.UNDER_REVIEW, cm(world))
    disputes.resolve(cm(world), dispute, Dispute.UPHELD,
                     "The earlier registration had lapsed contact; the disputing one did the work.")
    dispute = fresh(dispute)
    attribution = fresh(attribution)
    assert (dispute.status, dispute.decided_by) == (Dispute.UPHELD, cm(world).user)
    assert attribution.referral == loser and attribution.partner == world.partner
    assert attribution.status == Attribution.OVERTURNED
    assert AttributionCandidate.objects.get(attribution=attribution, referral=loser).kept
    assert not AttributionCandidate.objects.get(attribution=attribution, referral=winner).kept
    actions = list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))
    for action in ("dispute.opened", "dispute.responded", "dispute.under_review",
                   "attribution.overturned", "dispute.upheld"):
        assert action in actions
    assert [m.status_to for m in dispute.messages.all()] == [
        Dispute.VENDOR_RESPONDED, Dispute.UNDER_REVIEW, Dispute.UPHELD]
    # Both sides hear the decision; the previous winner only that its credit changed.
    decided = set(Notification.objects.filter(kind="dispute_decided")
                  .values_list("user_id", flat=True))
    assert {world.member(PA, "rep").user_id, world.member(PA, "owner").user_id,
            partnerships(world).user_id, world.member(VE, "admin").user_id} <= decided
    summit = Notification.objects.filter(user__in=[world.others["partner2_owner"].user,
                                                   world.others["partner2_rep"].user])
    assert {n.kind for n in summit} == {"attribution_changed"}
    for n in summit:
        assert "Brightpath" not in n.title + n.body and "dispute" not in (n.title + n.body).lower()
    entry = winner.timeline.filter(kind=TimelineEntry.EVENT).get()
    assert "no longer credited" in entry.body and "Brightpath" not in entry.body
    assert "Brightpath" not in attribution.decision_note


def test_overturned_keeps_the_attribution_and_confirms_it(world, deal, dispute):
    attribution, _, winner = deal
    disputes.take_under_review(cm(world), dispute)
    disputes.resolve(cm(world), dispute, Dispute.OVERTURNED, "The first registration holds.")
    attribution = fresh(attribution)
    assert fresh(dispute).status == Dispute.OVERTURNED
    assert attribution.referral == winner and attribution.status == Attribution.CONFIRMED
    assert AuditEvent.objects.filter(action="dispute.overturned").exists()
    assert not Notification.objects.filter(kind="attribution_changed").exists()


def test_vendor_dispute_upheld_moves_the_deal_as_the_resolution_says(world, deal):
    attribution, loser, winner = deal
    d = disputes.open_vendor_dispute(partnerships(world), attribution, Dispute.WRONG_PARTNER,
                                     "Brightpath brought the customer, not Summit.")
    disputes.take_under_review(world.member(OP, "admin"), d)
    with pytest.raises(ServiceError, match="changes the attribution"):
        disputes.resolve(world.member(OP, "admin"), d, Dispute.UPHELD, "Yes.",
                         str(winner.public_id))
    disputes.resolve(world.member(OP, "admin"), d, Dispute.UPHELD, "Yes.", str(loser.public_id))
    assert fresh(attribution).referral == loser
    # The gaining partner hears it is theirs now; the losing one that it is not.
    assert Notification.objects.filter(kind="attribution_changed",
                                       user=world.member(PA, "rep").user).exists()
    assert Notification.objects.filter(kind="attribution_changed",
                                       user=world.others["partner2_rep"].user).exists()


def test_vendor_dispute_upheld_to_nobody(world, deal):
    attribution, _, _ = deal
    d = disputes.open_vendor_dispute(partnerships(world), attribution,
                                     Dispute.NOT_A_REFERRAL_DEAL, "Came in through our ads.")
    disputes.take_under_review(cm(world), d)
    disputes.resolve(cm(world), d, Dispute.UPHELD, "Inbound lead; no partner involved.", None)
    attribution = fresh(attribution)
    assert attribution.referral is None and attribution.partner is None
    assert attribution.status == Attribution.OVERTURNED


def test_rejection_dispute_upheld_reinstates_the_registration(world, programs):
    referral = ReferralFactory(program=programs["acme"], partner=world.partner,
                               submitted_by=world.member(PA, "rep").user,
                               status=Referral.REJECTED, rejection_code="duplicate",
                               decided_at=_now() - timedelta(days=2),
                               closed_at=_now() - timedelta(days=2))
    d = disputes.open_partner_dispute(world.member(PA, "rep"), referral,
                                      Dispute.WRONGLY_REJECTED, "Nobody else registered it.")
    disputes.vendor_respond(partnerships(world), d, "We mixed it up.")
    disputes.take_under_review(cm(world), d)
    disputes.resolve(cm(world), d, Dispute.UPHELD, "Wrongly rejected as a duplicate.")
    referral = fresh(referral)
    assert referral.status == Referral.ACCEPTED and referral.rejection_code == ""
    assert referral.protected_until > _now() + timedelta(days=89)
    assert referral.closed_at is None and referral.decided_at > _now() - timedelta(minutes=1)
    entry = referral.timeline.get(kind=TimelineEntry.STATUS)
    assert (entry.from_status, entry.to_status) == (Referral.REJECTED, Referral.ACCEPTED)
    assert AuditEvent.objects.get(action="referral.reinstated").after["dispute"] == \
        str(d.public_id)


def _rejected_and_disputed(world, programs, **fields):
    referral = ReferralFactory(program=programs["acme"], partner=world.partner,
                               submitted_by=world.member(PA, "rep").user,
                               status=Referral.REJECTED, decided_at=_now() - timedelta(days=2),
                               closed_at=_now() - timedelta(days=2), **fields)
    d = disputes.open_partner_dispute(world.member(PA, "rep"), referral,
                                      Dispute.WRONGLY_REJECTED, "Nobody else registered it.")
    disputes.take_under_review(cm(world), d)
    return referral, d


def test_a_registration_is_not_reinstated_over_another_partners_accepted_one(world, programs):
    """Reinstating is accepting again: the account may be protected for one partner only."""
    referral, d = _rejected_and_disputed(world, programs, company_name="Initech Inc",
                                         website="https://initech.com")
    ReferralFactory(program=programs["acme"], partner=world.partner2,
                    submitted_by=world.others["partner2_rep"].user, status=Referral.ACCEPTED,
                    company_name="Initech GmbH", website="https://www.initech.com",
                    decided_at=_now(), protected_until=_now() + timedelta(days=30))
    with pytest.raises(ServiceError, match="one account is protected for one partner"):
        disputes.resolve(cm(world), d, Dispute.UPHELD, "Wrongly rejected.")
    assert fresh(referral).status == Referral.REJECTED
    assert fresh(d).status == Dispute.UNDER_REVIEW
    # Deciding it the other way is still possible.
    disputes.resolve(cm(world), d, Dispute.OVERTURNED, "The account is another's now.")
    assert fresh(d).status == Dispute.OVERTURNED


def test_a_registration_is_not_reinstated_next_to_the_partners_newer_one(world, programs):
    referral, d = _rejected_and_disputed(world, programs, company_name="Initech Inc",
                                         website="https://initech.com")
    ReferralFactory(program=programs["acme"], partner=world.partner,
                    submitted_by=world.member(PA, "rep").user, status=Referral.SUBMITTED,
                    company_name="Initech", website="https://initech.com")
    with pytest.raises(ServiceError, match="registered this account again since"):
        disputes.resolve(cm(world), d, Dispute.UPHELD, "Wrongly rejected.")
    assert fresh(referral).status == Referral.REJECTED


def test_another_partners_pending_registration_does_not_block_a_reinstatement(world, programs):
    referral, d = _rejected_and_disputed(world, programs, company_name="Initech Inc",
                                         website="https://initech.com")
    ReferralFactory(program=programs["acme"], partner=world.partner2,
                    submitted_by=world.others["partner2_rep"].user, status=Referral.SUBMITTED,
                    company_name="Initech", website="https://initech.com")
    disputes.resolve(cm(world), d, Dispute.UPHELD, "Wrongly rejected.")
    assert fresh(referral).status == Referral.ACCEPTED


def test_expiry_dispute_upheld_keeps_the_original_acceptance(world, programs):
    accepted = _now() - timedelta(days=100)
    referral = ReferralFactory(program=programs["acme"], partner=world.partner,
                               submitted_by=world.member(PA, "rep").user,
                               status=Referral.EXPIRED, decided_at=accepted,
                               protected_until=_now() - timedelta(days=10),
                               closed_at=_now() - timedelta(days=10))
    d = disputes.open_partner_dispute(world.member(PA, "owner"), referral,
                                      Dispute.WRONGLY_EXPIRED, "We asked for an extension.")
    disputes.take_under_review(cm(world), d)
    disputes.resolve(cm(world), d, Dispute.UPHELD, "The extension was promised.")
    referral = fresh(referral)
    assert referral.status == Referral.ACCEPTED and referral.decided_at == accepted
    assert referral.protected_until > _now()


def test_rejection_dispute_overturned_changes_nothing(world, programs):
    referral = ReferralFactory(program=programs["acme"], partner=world.partner,
                               submitted_by=world.member(PA, "rep").user,
                               status=Referral.REJECTED, decided_at=_now())
    d = disputes.open_partner_dispute(world.member(PA, "rep"), referral, Dispute.OTHER, "x")
    disputes.take_under_review(cm(world), d)
    disputes.resolve(cm(world), d, Dispute.OVERTURNED, "Rightly rejected.")
    assert fresh(referral).status == Referral.REJECTED


@pytest.mark.parametrize("steps", [[], ["respond"], ["respond", "review"], ["review"]])
def test_the_disputing_side_withdraws_before_a_decision(world, dispute, steps):
    if "respond" in steps:
        disputes.vendor_respond(partnerships(world), dispute, "x")
    if "review" in steps:
        disputes.take_under_review(cm(world), dispute)
    disputes.withdraw(world.member(PA, "manager"), dispute, "Settled with the vendor.")
    assert fresh(dispute).status == Dispute.WITHDRAWN
    assert AuditEvent.objects.filter(action="dispute.withdrawn").exists()


def test_illegal_transitions(world, dispute, deal):
    partner_side = world.member(PA, "rep")
    with pytest.raises(ServiceError, match="under review before"):
        disputes.resolve(cm(world), dispute, Dispute.UPHELD, "x")
    disputes.vendor_respond(partnerships(world), dispute, "x")
    with pytest.raises(ServiceError, match="cannot become"):
        disputes.vendor_respond(partnerships(world), dispute, "again")
    disputes.take_under_review(cm(world), dispute)
    with pytest.raises(ServiceError, match="cannot become"):
        disputes.take_under_review(cm(world), dispute)
    with pytest.raises(ServiceError, match="upheld or overturned"):
        disputes.resolve(cm(world), dispute, Dispute.WITHDRAWN, "x")
    with pytest.raises(ServiceError, match="cannot be empty"):
        disputes.resolve(cm(world), dispute, Dispute.UPHELD, "  ")
    disputes.resolve(cm(world), dispute, Dispute.OVERTURNED, "No.")
    for action in (lambda: disputes.withdraw(partner_side, dispute),
                   lambda: disputes.take_under_review(cm(world), dispute),
                   lambda: disputes.resolve(cm(world), dispute, Dispute.UPHELD, "x")):
        with pytest.raises(ServiceError):
            action()
    with pytest.raises(ServiceError, match="closed"):
        disputes.post_message(partner_side, dispute, "But…")


def test_the_vendor_does_not_respond_to_its_own_dispute(world, deal):
    d = disputes.open_vendor_dispute(partnerships(world), deal[0], Dispute.OTHER, "x")
    with pytest.raises(ServiceError, match="Only partners"):
        disputes.vendor_respond(partnerships(world), d, "x")
    disputes.take_under_review(cm(world), d)  # straight from open
    assert fresh(d).status == Dispute.UNDER_REVIEW


def test_only_the_disputing_side_withdraws(world, dispute, deal):
    for member in (partnerships(world), cm(world), world.member(OP, "admin"),
                   world.others["partner2_owner"]):
        with pytest.raises(PermissionDenied):
            disputes.withdraw(member, dispute)
    vendor_dispute = disputes.open_vendor_dispute(partnerships(world), deal[0], Dispute.OTHER,
                                                  "x")
    with pytest.raises(PermissionDenied):
        disputes.withdraw(world.member(PA, "owner"), vendor_dispute)


def test_assignment_take_over_and_reassign(world, dispute):
    other_cm = MembershipFactory(organization=world.operator, role="channel_manager")
    assign_perm("accounts.in_portfolio", other_cm.user, world.partner)
    outsider_cm = MembershipFactory(organization=world.operator, role="channel_manager")
    disputes.take_under_review(cm(world), dispute)
    with pytest.raises(ServiceError, match="assigned to"):
        disputes.resolve(other_cm, dispute, Dispute.UPHELD, "x")
    with pytest.raises(PermissionDenied):
        disputes.resolve(outsider_cm, dispute, Dispute.UPHELD, "x")
    with pytest.raises(PermissionDenied):
        disputes.reassign(cm(world), dispute, other_cm)
    admin = world.member(OP, "admin")
    with pytest.raises(ServiceError, match="portfolio covers"):
        disputes.reassign(admin, dispute, outsider_cm)
    disputes.reassign(admin, dispute, other_cm)
    assert fresh(dispute).assigned_to == other_cm
    event = AuditEvent.objects.get(action="dispute.reassigned")
    assert (event.before, event.after) == ({"assigned_to": cm(world).user.email},
                                           {"assigned_to": other_cm.user.email})
    assert Notification.objects.filter(kind="dispute_updated", user=other_cm.user).exists()
    with pytest.raises(ServiceError, match="assigned to"):
        disputes.resolve(cm(world), dispute, Dispute.UPHELD, "x")
    disputes.resolve(other_cm, dispute, Dispute.OVERTURNED, "Stands.")


def test_messages_reach_the_participants_only(world, dispute):
    disputes.post_message(world.member(PA, "rep"), dispute, "Here is the email thread.",
                          [upload("thread.eml", b"From: a@b.c\r\nSubject: hi\r\n\r\nbody")])
    told = set(Notification.objects.filter(kind="dispute_message")
               .values_list("user_id", flat=True))
    assert partnerships(world).user_id in told and cm(world).user_id in told
    assert world.others["partner2_owner"].user_id not in told
    with pytest.raises(PermissionDenied):
        disputes.post_message(world.member(VE, "admin"), dispute, "x")  # reads, doesn't speak
    with pytest.raises(PermissionDenied):
        disputes.post_message(world.member(OP, "auditor"), dispute, "x")


def test_vendor_and_operator_texts_never_name_the_other_partner(world, dispute):
    with pytest.raises(ServiceError, match="names of other partners"):
        disputes.vendor_respond(partnerships(world), dispute, "Summit registered first.")
    with pytest.raises(ServiceError, match="names of other partners"):
        disputes.post_message(cm(world), dispute, "I asked summit about it.")
    disputes.take_under_review(cm(world), dispute)
    with pytest.raises(ServiceError, match="names of other partners"):
        disputes.resolve(cm(world), dispute, Dispute.OVERTURNED, "SUMMIT was first.")
    disputes.post_message(cm(world), dispute, "Brightpath, please send the contract.")


# --- Evidence --------------------------------------------------------------------------------

@pytest.mark.parametrize("name, content", [
    ("contract.pdf", PDF), ("screenshot.png", PNG), ("photo.JPG", JPEG),
    ("photo.jpeg", JPEG), ("pipeline.csv", b"company,stage\nKestrel,won\n"),
    ("notes.txt", "Déjà vu: the CFO called.\n".encode()),
    ("legacy.txt", "Caf\xe9 notes".encode("cp1252")),
    ("mail.eml", b"Received: by mx\r\nFrom: cfo@kestrel.com\r\n\r\nYes."),
    ("book.xlsx", ooxml("xl/workbook.xml")), ("memo.docx", ooxml("word/document.xml")),
])
def test_allowed_evidence(name, content):
    checked = check_evidence(upload(name, content))
    assert checked.name == name and checked.size == len(content)


@pytest.mark.parametrize("name, content, message", [
    ("tool.exe", EXE, "not accepted"),
    ("page.html", b"<html></html>", "not accepted"),
    ("contract.pdf", EXE, "not a real PDF"),  # spoofed extension
    ("screenshot.png", JPEG, "not a real PNG"),
    ("photo.jpg", PNG, "not a real JPG"),
    ("data.csv", PNG, "not a real CSV"),
    ("notes.txt", EXE, "not a real TXT"),
    ("notes.txt", PDF, "not a real TXT"),
    ("mail.eml", b"just some words", "not a real EML"),
    ("book.xlsx", ooxml("word/document.xml"), "not a real XLSX"),
    ("memo.docx", b"PK\x03\x04garbage", "not a real DOCX"),
    ("empty.pdf", b"", "empty"),
])
def test_rejected_evidence(name, content, message):
    with pytest.raises(ServiceError, match=message):
        check_evidence(upload(name, content))


def test_evidence_size_limit():
    big = PDF + b"0" * (MAX_EVIDENCE_BYTES - len(PDF))
    assert check_evidence(upload("big.pdf", big)).size == MAX_EVIDENCE_BYTES
    with pytest.raises(ServiceError, match="larger than 10 MB"):
        check_evidence(upload("bigger.pdf", big + b"0"))
    with pytest.raises(ServiceError, match="at most 10 files"):
        check_evidence_files([upload(f"{i}.pdf", PDF) for i in range(11)])


def test_a_spoofed_file_is_a_clear_form_error_and_nothing_is_saved(world, deal):
    _, loser, _ = deal
    client = world.client_for(world.member(PA, "rep"))
    url = reverse("attribution:dispute_open_partner", args=[loser.public_id])
    page = client.get(url)
    assert page.status_code == 200
    value = page.context["form"].fields["subject"].choices[0][0]
    response = client.post(url, {"subject": value, "text": "Ours.",
                                 "files": [upload("contract.pdf", EXE)]})
    assert response.status_code == 400
    assert "contract.pdf is not a real PDF file" in response.content.decode()
    assert not Dispute.objects.exists()
    response = client.post(url, {"subject": value, "text": "Ours.",
                                 "files": [upload("contract.pdf", PDF),
                                           upload("notes.txt", b"call log")]})
    assert response.status_code == 302
    d = Dispute.objects.get()
    assert sorted(d.evidence.values_list("name", flat=True)) == ["contract.pdf", "notes.txt"]


@pytest.mark.parametrize("role", ALL_ROLES, ids=ROLE_IDS)
def test_evidence_downloads_only_through_a_visible_dispute(world, deal, role):
    _, loser, _ = deal
    d = disputes.open_partner_dispute(world.member(PA, "rep"), loser, Dispute.OTHER, "x",
                                      [upload("contract.pdf", PDF)])
    evidence = d.evidence.get()
    url = reverse("attribution:dispute_evidence", args=[d.public_id, evidence.public_id])
    response = world.client_for(world.member(*role)).get(url)
    if role in SEES_PARTNER_DISPUTE:
        assert response.status_code == 200
        assert b"".join(response.streaming_content) == PDF
        assert response["Content-Type"] == "application/pdf"
        assert response["Content-Disposition"].startswith("attachment")
    else:
        assert response.status_code == 404


def test_evidence_of_another_dispute_is_404(world, deal, programs):
    _, loser, _ = deal
    d = disputes.open_partner_dispute(world.member(PA, "rep"), loser, Dispute.OTHER, "x",
                                      [upload("a.pdf", PDF)])
    attribution2, loser2, _ = make_deal(world, programs["acme"], 1)
    d2 = disputes.open_partner_dispute(world.member(PA, "owner"), loser2, Dispute.OTHER, "x")
    url = reverse("attribution:dispute_evidence", args=[d2.public_id, d.evidence.get().public_id])
    assert world.client_for(world.member(PA, "owner")).get(url).status_code == 404


# --- Visibility and permissions over the 14 roles --------------------------------------------

@pytest.mark.parametrize("role", ALL_ROLES, ids=ROLE_IDS)
def test_queue_and_detail_per_role(world, dispute, role):
    client = world.client_for(world.member(*role))
    queue = client.get(reverse("attribution:dispute_queue"))
    detail = client.get(reverse("attribution:dispute_detail", args=[dispute.public_id]))
    if role in HAS_QUEUE:
        assert queue.status_code == 200
        assert [r.public_id for r in queue.context["rows"]] == [str(dispute.public_id)]
    else:
        assert queue.status_code == 404
    assert detail.status_code == (200 if role in SEES_PARTNER_DISPUTE else 404)


def test_anonymous_is_sent_to_log_in(client, world, dispute):
    for url in (reverse("attribution:dispute_queue"),
                reverse("attribution:dispute_detail", args=[dispute.public_id])):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login")


@pytest.mark.parametrize("who", ["partner2_owner", "partner2_rep", "foreign_owner",
                                 "foreign_vendor_admin", "vendor2_admin", "other_rep",
                                 "outside_cm"])
def test_outsiders_get_404_and_an_empty_queue(world, dispute, who):
    if who == "other_rep":
        member = MembershipFactory(organization=world.partner, role="rep")
    elif who == "outside_cm":
        member = MembershipFactory(organization=world.operator, role="channel_manager")
    else:
        member = world.others[who]
    client = world.client_for(member, host="partners.elsewhere.test"
                              if who.startswith("foreign") else "testserver")
    detail = client.get(reverse("attribution:dispute_detail", args=[dispute.public_id]))
    assert detail.status_code == 404
    queue = client.get(reverse("attribution:dispute_queue") + "?status=all")
    assert queue.status_code == 200 and queue.context["rows"] == []


ACTIONS = {
    # action -> (roles that succeed, how to post)
    "respond": ({(VE, "partnerships")}, "dispute_respond", {"text": "Our side."}),
    "message": ({(PA, "owner"), (PA, "manager"), (PA, "rep"), (VE, "partnerships"),
                 (OP, "admin"), (OP, "channel_manager")}, "dispute_message", {"body": "Hello."}),
    "review": ({(OP, "admin"), (OP, "channel_manager")}, "dispute_review", {}),
    "withdraw": ({(PA, "owner"), (PA, "manager"), (PA, "rep")}, "dispute_withdraw", {}),
}


@pytest.mark.parametrize("action", sorted(ACTIONS))
@pytest.mark.parametrize("role", ALL_ROLES, ids=ROLE_IDS)
def test_actions_per_role(world, dispute, role, action):
    allowed, name, data = ACTIONS[action]
    client = world.client_for(world.member(*role))
    response = client.post(reverse(f"attribution:{name}", args=[dispute.public_id]), data)
    if role in allowed:
        assert response.status_code == 302, response.content[:300]
        assert AuditEvent.objects.filter(target_id=str(dispute.public_id)).count() == 2
    else:
        assert response.status_code == 404
        assert AuditEvent.objects.filter(target_id=str(dispute.public_id)).count() == 1


@pytest.mark.parametrize("role", ALL_ROLES, ids=ROLE_IDS)
def test_resolve_and_reassign_per_role(world, dispute, role):
    disputes.take_under_review(world.member(OP, "admin"), dispute)
    client = world.client_for(world.member(*role))
    reassign = client.post(reverse("attribution:dispute_reassign", args=[dispute.public_id]),
                           {"channel_manager": str(cm(world).public_id)})
    assert reassign.status_code == (302 if role == (OP, "admin") else 404)
    if role == (OP, "admin"):
        assert fresh(dispute).assigned_to == cm(world)
    resolve = client.post(reverse("attribution:dispute_resolve", args=[dispute.public_id]),
                          {"outcome": "upheld", "resolution": "The claim holds."})
    resolvers = {(OP, "admin"), (OP, "channel_manager")}
    assert resolve.status_code == (302 if role in resolvers else 404)
    # The admin took it (and may always step in); the channel manager is refused politely,
    # since the dispute is the admin's.
    assert (fresh(dispute).status == Dispute.UPHELD) == (role == (OP, "admin"))


def test_the_assigned_channel_manager_resolves_through_the_page(world, dispute, deal):
    client = world.client_for(cm(world))
    url = reverse("attribution:dispute_detail", args=[dispute.public_id])
    client.post(reverse("attribution:dispute_review", args=[dispute.public_id]))
    page = client.get(url)
    assert page.context["actions"]["resolve"]
    bad = client.post(reverse("attribution:dispute_resolve", args=[dispute.public_id]),
                      {"outcome": "upheld", "resolution": ""})
    assert bad.status_code == 400
    response = client.post(reverse("attribution:dispute_resolve", args=[dispute.public_id]),
                           {"outcome": "upheld", "resolution": "Yours."}, follow=True)
    assert response.status_code == 200
    assert fresh(deal[0]).referral == deal[1]
    assert "Upheld" in response.content.decode()


# --- The other partner -----------------------------------------------------------------------

def test_the_other_partner_never_sees_the_dispute_nor_who_disputed(world, deal, dispute):
    _, _, winner = deal
    disputes.vendor_respond(partnerships(world), dispute, "Noted.")
    disputes.take_under_review(cm(world), dispute)
    disputes.resolve(cm(world), dispute, Dispute.UPHELD, "The disputing registration wins.")
    for member in (world.others["partner2_owner"], world.others["partner2_rep"]):
        assert not Dispute.objects.visible_to(member).exists()
        client = world.client_for(member)
        assert client.get(reverse("attribution:dispute_detail",
                                  args=[dispute.public_id])).status_code == 404
        panel = client.get(reverse("attribution:referral_disputes", args=[winner.public_id]))
        assert panel.status_code == 200
        assert str(dispute.public_id) not in panel.content.decode()
        assert b"Brightpath" not in panel.content
        # Having lost the deal now, Summit may dispute in turn, like anyone who lost it.
        assert b"Dispute this" in panel.content
        referral_page = client.get(reverse("referrals:detail", args=[winner.public_id]))
        body = referral_page.content.decode()
        assert "Brightpath" not in body and "We met their CFO" not in body
        for n in Notification.objects.filter(user=member.user):
            assert "Brightpath" not in f"{n.title} {n.body}"


def test_the_disputing_partner_never_reads_the_winners_name(world, deal, dispute):
    client = world.client_for(world.member(PA, "rep"))
    body = client.get(reverse("attribution:dispute_detail", args=[dispute.public_id])) \
        .content.decode()
    assert "Another partner" in body and "Summit" not in body
    queue = client.get(reverse("attribution:dispute_queue")).content.decode()
    assert "Summit" not in queue
    # The vendor, a participant, sees who is credited.
    vendor_body = world.client_for(partnerships(world)).get(
        reverse("attribution:dispute_detail", args=[dispute.public_id])).content.decode()
    assert "Summit" in vendor_body


def test_vendor_disputes_stay_away_from_partners(world, deal):
    d = disputes.open_vendor_dispute(partnerships(world), deal[0], Dispute.WRONG_PARTNER, "x")
    for member in (world.member(PA, "owner"), world.others["partner2_owner"],
                   world.others["partner2_rep"]):
        assert not Dispute.objects.visible_to(member).filter(pk=d.pk).exists()
    assert Dispute.objects.visible_to(cm(world)).filter(pk=d.pk).exists()
    partner_users = [world.member(PA, r).user for r in ("owner", "manager", "rep", "finance")]
    partner_users += [world.others["partner2_owner"].user, world.others["partner2_rep"].user]
    assert not Notification.objects.filter(user__in=partner_users).exists()


# --- The queue -------------------------------------------------------------------------------

def test_queue_filters_and_overdue_badge(world, programs):
    made = [make_deal(world, programs["acme"], n) for n in range(3)]
    ds = [disputes.open_partner_dispute(world.member(PA, "rep"), loser, Dispute.OTHER, "x")
          for _, loser, _ in made]
    Dispute.objects.filter(pk=ds[0].pk).update(sla_due_at=_now() - timedelta(hours=1))
    disputes.take_under_review(cm(world), ds[1])
    disputes.withdraw(world.member(PA, "rep"), ds[2])
    client = world.client_for(cm(world))
    url = reverse("attribution:dispute_queue")

    def ids(query=""):
        return [r.public_id for r in client.get(url + query).context["rows"]]

    assert ids() == [str(ds[0].public_id), str(ds[1].public_id)]  # pending, by due date
    assert ids("?status=all") == [str(d.public_id) for d in ds]
    assert ids("?status=withdrawn") == [str(ds[2].public_id)]
    assert ids("?overdue=on") == [str(ds[0].public_id)]
    assert ids("?mine=on") == [str(ds[1].public_id)]
    assert ids(f"?vendor={world.vendor.public_id}&status=all") == [str(d.public_id) for d in ds]
    assert ids(f"?vendor={world.vendor2.public_id}") == []
    assert ids("?status=nonsense") == []
    page = client.get(url).content.decode()
    assert page.count("badge bad\">overdue") == 1
    assert list(Dispute.objects.overdue()) == [ds[0]]


def test_queue_query_count_does_not_grow_with_rows(world, programs, django_assert_max_num_queries):
    def count():
        client = world.client_for(cm(world))
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse("attribution:dispute_queue") + "?status=all") \
                .status_code == 200
        return len(ctx.captured_queries)

    for n in range(2):
        _, loser, _ = make_deal(world, programs["acme"], n)
        disputes.open_partner_dispute(world.member(PA, "rep"), loser, Dispute.OTHER, "x")
    few = count()
    for n in range(2, 14):
        attribution, loser, _ = make_deal(world, programs["acme"], n)
        d = disputes.open_partner_dispute(world.member(PA, "rep"), loser, Dispute.OTHER, "x")
        if n % 2:
            disputes.take_under_review(cm(world), d)
        if n % 3 == 0:
            disputes.open_vendor_dispute(partnerships(world), attribution, Dispute.OTHER, "x")
    many = count()
    assert many == few
    client = world.client_for(cm(world))
    with django_assert_max_num_queries(few):
        client.get(reverse("attribution:dispute_queue"))


def test_the_referral_panel_offers_dispute_this(world, deal):
    _, loser, winner = deal
    client = world.client_for(world.member(PA, "rep"))
    panel = client.get(reverse("attribution:referral_disputes", args=[loser.public_id]))
    open_url = reverse("attribution:dispute_open_partner", args=[loser.public_id])
    assert open_url in panel.content.decode()
    # The winner has nothing to dispute; the vendor sees the panel without the button.
    winner_panel = world.client_for(world.others["partner2_rep"]).get(
        reverse("attribution:referral_disputes", args=[winner.public_id]))
    assert b"Dispute this" not in winner_panel.content
    assert world.client_for(partnerships(world)).get(
        reverse("attribution:referral_disputes", args=[loser.public_id])).status_code == 200


def test_the_vendor_form_opens_a_vendor_dispute(world, deal):
    attribution, _, _ = deal
    client = world.client_for(partnerships(world))
    url = reverse("attribution:dispute_open_vendor", args=[attribution.public_id])
    assert client.get(url).status_code == 200
    response = client.post(url, {"category": Dispute.WRONG_PARTNER, "text": "Not theirs.",
                                 "files": [upload("crm.csv", b"deal,source\nD-0,ads\n")]})
    assert response.status_code == 302
    d = Dispute.objects.get()
    assert d.side == Dispute.VENDOR and d.evidence.get().content_type == "text/csv"
    for role in ((VE, "admin"), (VE, "sales"), (PA, "owner"), (OP, "channel_manager")):
        assert world.client_for(world.member(*role)).get(url).status_code == 404


def test_deciding_a_vendor_dispute_on_the_page(world, deal):
    attribution, loser, winner = deal
    d = disputes.open_vendor_dispute(partnerships(world), attribution, Dispute.WRONG_PARTNER,
                                     "The other registration did the work.")
    client = world.client_for(cm(world))
    client.post(reverse("attribution:dispute_review", args=[d.public_id]))
    page = client.get(reverse("attribution:dispute_detail", args=[d.public_id]))
    choices = dict(page.context["resolve_form"].fields["new_referral"].choices)
    assert set(choices) == {"", str(loser.public_id), str(winner.public_id)}
    assert "Brightpath" in choices[str(loser.public_id)]
    same = client.post(reverse("attribution:dispute_resolve", args=[d.public_id]), {
        "outcome": "upheld", "resolution": "Moves.", "new_referral": str(winner.public_id)})
    assert same.status_code == 400
    assert "changes the attribution" in same.content.decode()
    client.post(reverse("attribution:dispute_resolve", args=[d.public_id]), {
        "outcome": "upheld", "resolution": "Moves.", "new_referral": str(loser.public_id)})
    assert fresh(attribution).referral == loser and fresh(d).status == Dispute.UPHELD
