"""A notification that asks for an action is done, for every recipient, once anyone does it
(issue 11): nobody is left with a "please decide" someone else already handled. The payout
ones are in tests/payouts/test_batch_status.py."""

import pytest

from accounts.models import Notification
from integrations import connections
from referrals import services
from referrals.models import Program
from tests.accounts.factories import MembershipFactory
from tests.referrals.test_lifecycle import data


def unread(kind):
    return Notification.objects.filter(kind=kind, read_at__isnull=True)


@pytest.fixture
def submitted(world, programs):
    MembershipFactory(organization=world.vendor, role="partnerships")  # a second decider
    referral = services.submit_referral(world.member("partner", "rep"), programs["acme"],
                                        data())
    assert unread("referral_submitted").count() >= 3  # admin and both partnerships members
    return referral


@pytest.mark.parametrize("decide", [
    lambda w, r: services.accept_referral(w.member("vendor", "partnerships"), r),
    lambda w, r: services.reject_referral(w.member("vendor", "admin"), r, "duplicate", ""),
    lambda w, r: services.withdraw_referral(w.member("partner", "rep"), r),
], ids=["accepted", "rejected", "withdrawn"])
def test_a_new_referral_stops_asking_once_it_is_decided(world, submitted, decide):
    other = services.submit_referral(world.member("partner", "rep"), submitted.program,
                                     data(company_name="Hooli", website="hooli.com"))
    decide(world, submitted)
    assert not unread("referral_submitted").filter(url__contains=str(submitted.public_id))
    # The other referral still waits for a decision.
    assert unread("referral_submitted").filter(url__contains=str(other.public_id)).exists()


def test_an_enrolment_request_stops_asking_once_decided(world, programs):
    program = programs["acme"]
    Program.objects.filter(pk=program.pk).update(enrolment_requires_approval=True)
    program.refresh_from_db()
    program.enrolments.filter(partner=world.partner).delete()
    enrolment = services.request_enrolment(world.member("partner", "owner"), program)
    assert unread("enrolment_requested").exists()
    services.decide_enrolment(world.member("vendor", "admin"), enrolment, approve=True)
    assert not unread("enrolment_requested").exists()


def test_a_rejected_crm_credential_stops_asking_once_the_connection_works(world):
    admin = world.member("vendor", "admin")
    MembershipFactory(organization=world.vendor, role="admin")
    connection = connections.connect(admin, provider="builtin", credentials={})
    connections.mark_connection_error(connection, "401 Unauthorized")
    assert unread("crm_connection_error").count() == 2
    connections.test_connection(admin, connection)
    assert not unread("crm_connection_error").exists()
