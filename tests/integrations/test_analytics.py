"""Product analytics go to Segment's batch API after commit, without contact details.

A local HTTP server stands in for Segment's `/v1/batch` endpoint; the real
segment-analytics-python client talks to it.
"""

import base64
import json

import pytest
from django.urls import reverse

from integrations import analytics
from referrals import services
from referrals.models import Referral
from tests.referrals.factories import ReferralFactory


@pytest.fixture
def segment(httpserver, settings):
    settings.SEGMENT_WRITE_KEY = "test-write-key"
    settings.SEGMENT_HOST = httpserver.url_for("/").rstrip("/")
    settings.SEGMENT_SYNC_MODE = True
    analytics.reset_client()
    httpserver.expect_request("/v1/batch", method="POST").respond_with_json({"success": True})
    yield httpserver
    analytics.reset_client()


def _events(server):
    events = []
    for request, _ in server.log:
        body = request.get_data()
        if request.headers.get("Content-Encoding") == "gzip":
            import gzip

            body = gzip.decompress(body)
        events += json.loads(body)["batch"]
    return events


def test_lifecycle_events_reach_segment_after_commit(world, programs, segment,
                                                     django_capture_on_commit_callbacks):
    vendor = world.member("vendor", "partnerships")
    referral = ReferralFactory(program=programs["acme"], partner=world.partner,
                               submitted_by=world.member("partner", "rep").user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.accept_referral(vendor, referral)
    assert _events(segment) == []  # nothing leaves before the transaction commits
    for callback in callbacks:
        callback()
    (event,) = [e for e in _events(segment) if e["type"] == "track"]
    assert event["event"] == "Referral Accepted"
    assert event["userId"] == str(vendor.user.public_id)
    assert event["properties"]["referral_id"] == str(referral.public_id)
    assert event["properties"]["amount_minor"] == referral.amount_minor
    auth = segment.log[0][0].headers["Authorization"]
    assert base64.b64decode(auth.split()[1]).decode().startswith("test-write-key:")


def test_events_never_carry_contact_details(world, programs, segment,
                                            django_capture_on_commit_callbacks):
    rep = world.member("partner", "rep")
    client = world.client_for(rep)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("referrals:new"), {
            "program": str(programs["acme"].public_id), "company_name": "Initech",
            "website": "initech.com", "country": "US", "contact_name": "Peter Gibbons",
            "contact_email": "peter@initech.com", "contact_phone": "+1 415 555 0100",
            "amount": "1000", "currency": "USD", "action": "submit"})
    assert response.status_code == 302
    assert Referral.objects.filter(company_name="Initech", status="submitted").exists()
    payload = json.dumps(_events(segment))
    assert "Referral Submitted" in payload
    for secret in ("Peter Gibbons", "peter@initech.com", "+14155550100"):
        assert secret not in payload


def test_contact_properties_are_refused_outright(settings):
    settings.SEGMENT_WRITE_KEY = ""
    with pytest.raises(ValueError, match="contact details"):
        analytics.track("Referral Submitted", properties={"contact_email": "x@y.com"})


def test_without_a_write_key_nothing_is_sent(world, programs, settings, httpserver,
                                             django_capture_on_commit_callbacks):
    settings.SEGMENT_WRITE_KEY = ""
    analytics.reset_client()
    referral = ReferralFactory(program=programs["acme"], partner=world.partner)
    with django_capture_on_commit_callbacks(execute=True):
        services.accept_referral(world.member("vendor", "admin"), referral)
    assert httpserver.log == []
    assert analytics.client() is None


def test_login_identifies_and_approval_groups_without_contact_details(
        world, segment, client, django_capture_on_commit_callbacks):
    from accounts import services

    owner = world.others["pending_owner"]
    with django_capture_on_commit_callbacks(execute=True):
        services.approve_application(world.member("operator", "onboarding"), world.pending)
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/accounts/login/", {"username": owner.user.email,
                                         "password": "correct-horse-battery"})
    events = _events(segment)
    kinds = {e["type"] for e in events}
    assert {"identify", "group", "track"} <= kinds
    (grouping,) = [e for e in events if e["type"] == "group"]
    assert grouping["groupId"] == str(world.pending.public_id)
    assert grouping["userId"] == str(owner.user.public_id)
    assert any(e.get("event") == "Organization Approved" for e in events)
    payload = json.dumps(events)
    assert owner.user.email not in payload and owner.user.full_name not in payload
