"""What a vendor or operator writes to a partner never names another partner of the same
account (issue 17): dispute texts, referral messages and rejection reasons, matched by the
distinctive words of the other partners' names and their domains, refused with a form error
that names what to remove."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.errors import ServiceError
from accounts.models import Organization
from attribution import disputes
from attribution.models import Dispute
from referrals import services
from referrals.models import Referral, TimelineEntry
from referrals.other_partners import OtherPartner, named_partner_words
from tests.attribution.test_disputes import make_deal
from tests.referrals.factories import ReferralFactory

GUARD = "names of other partners"


@pytest.fixture
def names(world):
    """Realistic names: Brightpath Consulting (brightpath.example) registered the account
    first; Summit Integrators (summit-int.example) registered it again."""
    Organization.objects.filter(pk=world.partner.pk).update(
        name="Brightpath Consulting", website_domain="brightpath.example")
    Organization.objects.filter(pk=world.partner2.pk).update(
        name="Summit Integrators", website_domain="summit-int.example")
    world.partner.refresh_from_db()
    world.partner2.refresh_from_db()
    return world


@pytest.fixture
def pair(names, programs):
    """The same account registered by both partners with Acme: Brightpath's accepted
    registration, and Summit's later one that conflicts with it."""
    now = timezone.now()
    first = ReferralFactory(program=programs["acme"], partner=names.partner,
                            submitted_by=names.member("partner", "rep").user,
                            company_name="Kestrel Freight", website="https://kestrelfreight.com",
                            status=Referral.ACCEPTED, decided_at=now - timedelta(days=3),
                            protected_until=now + timedelta(days=80))
    second = ReferralFactory(program=programs["acme"], partner=names.partner2,
                             submitted_by=names.others["partner2_rep"].user,
                             company_name="Kestrel Freight Ltd",
                             website="https://www.kestrelfreight.com", conflict_with=first)
    return first, second


BRIGHTPATH = [OtherPartner("Brightpath Consulting", "brightpath.example")]


@pytest.mark.parametrize("text, found", [
    ("Brightpath registered it first (see brightpath.example)", ["Brightpath",
                                                                 "brightpath.example"]),
    ("brightpath's registration came first", ["brightpath"]),
    ("BRIGHTPATH CONSULTING LLC was first.", ["BRIGHTPATH"]),
    ("Ask the people at www.brightpath.example", ["brightpath", "brightpath.example"]),
    ("Another partner registered it first; our consulting team agrees.", []),
    ("We checked the path: it was bright and early.", []),
])
def test_names_are_found_by_distinctive_words_and_domain(text, found):
    assert named_partner_words(text, BRIGHTPATH) == found


def test_a_name_of_generic_words_only_is_matched_whole():
    partners = [OtherPartner("Global Solutions Group")]
    assert named_partner_words("As Global Solutions Group said, it's theirs.", partners) == [
        "Global Solutions Group"]
    assert named_partner_words("As global-solutions group said", partners) == [
        "Global Solutions Group"]
    assert named_partner_words("Our global solutions team agrees.", partners) == []


def test_words_the_reader_may_see_are_allowed():
    partners = [OtherPartner("Kestrel Partners")]  # shares a word with the customer
    assert named_partner_words("Kestrel Freight signed.", partners,
                               readers_may_see=["Kestrel Freight"]) == []


def test_the_vendor_cannot_name_the_other_partner_in_a_referral_message(pair):
    first, second = pair
    vendor = pair[0].vendor
    partnerships = next(m for m in vendor.memberships.all() if m.role == "partnerships")
    with pytest.raises(ServiceError, match=GUARD) as caught:
        services.post_message(partnerships, second,
                              "Brightpath registered it first (see brightpath.example)")
    assert caught.value.field == "body"
    assert "“Brightpath”" in caught.value.message and "brightpath.example" in caught.value.message
    assert not TimelineEntry.objects.filter(referral=second, kind=TimelineEntry.MESSAGE).exists()
    # The referral's own partner, the customer and internal notes are fine.
    services.post_message(partnerships, second, "Summit, Kestrel Freight is registered already.")
    services.post_message(partnerships, second, "Brightpath has it (internal)", internal=True)


def test_the_vendor_cannot_name_the_other_partner_in_a_rejection_reason(pair):
    _, second = pair
    partnerships = next(m for m in second.vendor.memberships.all() if m.role == "partnerships")
    with pytest.raises(ServiceError, match=GUARD) as caught:
        services.reject_referral(partnerships, second, "other",
                                 "Already registered by Brightpath.")
    assert caught.value.field == "text"
    second.refresh_from_db()
    assert second.status == Referral.SUBMITTED
    services.reject_referral(partnerships, second, "other", "Another partner registered it.")


def test_the_pages_warn_the_writer_in_the_form_and_keep_the_text(pair):
    _, second = pair
    partnerships = next(m for m in second.vendor.memberships.all() if m.role == "partnerships")
    client = _client(partnerships)
    url = reverse("referrals:message", args=[second.public_id])
    response = client.post(url, {"body": "See brightpath.example for who was first"})
    assert response.status_code == 400
    page = response.content.decode()
    assert GUARD in page and "brightpath.example" in page
    assert "See brightpath.example for who was first</textarea>" in page
    response = client.post(reverse("referrals:reject", args=[second.public_id]),
                           {"code": "other", "text": "Brightpath was first"})
    assert response.status_code == 400 and GUARD in response.content.decode()
    assert "<details class=\"subform\" open>" in response.content.decode()
    second.refresh_from_db()
    assert second.status == Referral.SUBMITTED


def _client(membership):
    from django.test import Client

    client = Client()
    client.force_login(membership.user, backend="django.contrib.auth.backends.ModelBackend")
    session = client.session
    session["active_membership"] = str(membership.public_id)
    session.save()
    return client


def test_dispute_texts_catch_the_name_by_its_words_and_domain(names, programs):
    _, loser, _ = make_deal(names, programs["acme"])
    dispute = disputes.open_partner_dispute(
        names.member("partner", "rep"), loser, Dispute.TO_ANOTHER_PARTNER,
        "We met their CFO in March; our registration predates the deal.")
    partnerships = names.member("vendor", "partnerships")
    with pytest.raises(ServiceError, match=GUARD):
        disputes.vendor_respond(partnerships, dispute, "Summit registered it first.")
    with pytest.raises(ServiceError, match=GUARD):
        disputes.vendor_respond(partnerships, dispute, "See summit-int.example's CRM entry.")
    with pytest.raises(ServiceError, match=GUARD):
        disputes.post_message(names.member("operator", "channel_manager"), dispute,
                              "The Summit team says they met them first")
    disputes.vendor_respond(partnerships, dispute, "Brightpath Consulting: the other partner "
                            "met them in January.")


def test_attribution_decision_notes_name_no_partner_considered(names, programs):
    """Every partner considered for the deal reads the decision note on its attribution."""
    from attribution.decisions import confirm_attribution, reassign_attribution

    attribution, loser, _ = make_deal(names, programs["acme"])
    admin = names.member("vendor", "admin")
    with pytest.raises(ServiceError, match=GUARD) as caught:
        reassign_attribution(admin, attribution, str(loser.public_id),
                             "Brightpath introduced the buyer")
    assert caught.value.field == "note"
    with pytest.raises(ServiceError, match=GUARD):
        confirm_attribution(admin, attribution, "Checked with summit-int.example")
    attribution.refresh_from_db()
    assert attribution.decided_by_id is None
    confirm_attribution(admin, attribution, "Checked with the account executive.")
