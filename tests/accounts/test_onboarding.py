"""Self-serve onboarding: apply, verify the email, (auto-)approve or reject, and who may review."""

import html
import re
import time

import pytest
from django.core import mail, signing
from django.test import Client
from django.utils import timezone
from guardian.shortcuts import assign_perm

from accounts import roles
from accounts.errors import ServiceError
from accounts.models import AuditEvent, Membership, Organization, User
from accounts.services import approve_application, reject_application, verify_email
from accounts.services.onboarding import Application, apply_for_organization, verification_token
from tests.accounts.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.conftest import ALL_ROLES, ROLE_IDS

PASSWORD = "Plum-orchard-lantern-88"
REVIEWING_ROLES = {(roles.OPERATOR, "admin"), (roles.OPERATOR, "channel_manager"),
                   (roles.OPERATOR, "onboarding")}


def text(response) -> str:
    return html.unescape(response.content.decode())


def form_data(**overrides):
    data = {
        "company_name": "Lumen Advisory",
        "website": "https://www.lumen-advisory.com",
        "country": "DE",
        "partner_type": "agency",
        "full_name": "Lena Vogel",
        "email": "lena@lumen-advisory.com",
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    }
    data.update(overrides)
    return data


def application(**overrides) -> Application:
    data = dict(kind=roles.PARTNER, company_name="Lumen Advisory",
                website="https://www.lumen-advisory.com", country="de",
                full_name="Lena Vogel", email="Lena@Lumen-Advisory.com", password=PASSWORD,
                partner_type="agency")
    data.update(overrides)
    return Application(**data)


def verify_link(message) -> str:
    match = re.search(r"https?://[^/\s]+(/verify/[^/\s]+/)", message.body)
    assert match, f"no verification link in: {message.body}"
    return match.group(1)


def apply_via_view(client, capture, kind="partner", **overrides):
    with capture(execute=True):
        return client.post(f"/apply/{kind}/", form_data(**overrides))


def pending_application(network, *, verified=True, name="Quartz Labs", domain="quartzlabs.io"):
    org = OrganizationFactory(network=network, kind=roles.PARTNER, status=Organization.PENDING,
                              name=name, website_domain=domain, approved_at=None,
                              verified_at=timezone.now() if verified else None)
    owner = MembershipFactory(organization=org, role="owner",
                              user=UserFactory(email=f"founder@{domain}"))
    return org, owner


# --- Applying -------------------------------------------------------------------------------


def test_applying_through_the_service_creates_a_pending_org_owned_by_the_applicant(
        network, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        org = apply_for_organization(network, application())

    org.refresh_from_db()
    assert org.status == Organization.PENDING
    assert org.network == network
    assert org.website_domain == "lumen-advisory.com"
    assert org.country == "DE"
    assert org.partner_type == "agency"
    assert org.applied_at is not None and org.verified_at is None and org.approved_at is None
    owner = org.memberships.get()
    assert owner.role == "owner" and owner.status == Membership.ACTIVE
    assert owner.user.email == "lena@lumen-advisory.com"
    assert owner.user.check_password(PASSWORD)
    assert owner.user.email_verified_at is None
    assert AuditEvent.objects.filter(action="organization.applied",
                                     target_id=str(org.public_id), actor=owner.user).exists()

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["lena@lumen-advisory.com"]
    assert "Lumen Advisory" in message.subject
    assert "/verify/" in message.body
    html_parts = [content for content, mimetype in message.alternatives if mimetype == "text/html"]
    assert len(html_parts) == 1 and verify_link(message) in html_parts[0]


def test_a_vendor_applicant_becomes_the_vendor_admin(network, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        org = apply_for_organization(network, application(kind=roles.VENDOR,
                                                          partner_type="agency"))
    assert org.kind == roles.VENDOR
    assert org.partner_type == ""
    assert org.memberships.get().role == "admin"
    assert len(mail.outbox) == 1


def test_only_partners_and_vendors_can_apply(network, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(ServiceError):
            apply_for_organization(network, application(kind=roles.OPERATOR))
    assert not Organization.objects.filter(name="Lumen Advisory").exists()
    assert not User.objects.filter(email="lena@lumen-advisory.com").exists()
    assert mail.outbox == []


def test_applying_through_the_form_sends_the_verification_email_whose_link_logs_in(
        network, client, django_capture_on_commit_callbacks):
    response = apply_via_view(client, django_capture_on_commit_callbacks)

    assert response.status_code == 302
    assert response["Location"] == "/apply-done/"
    org = Organization.objects.get(name="Lumen Advisory")
    assert org.status == Organization.PENDING and org.applied_at is not None
    assert org.memberships.get().role == "owner"
    assert [m.to for m in mail.outbox] == [["lena@lumen-advisory.com"]]
    assert any(mimetype == "text/html" for _, mimetype in mail.outbox[0].alternatives)
    # Nobody is logged in by the form (its answer must not differ for a known email, issue 17);
    # the verification link, followed in this browser, logs the new owner in, and they see
    # their (pending) organization's dashboard.
    assert "_auth_user_id" not in client.session
    with django_capture_on_commit_callbacks(execute=True):
        client.get(verify_link(mail.outbox[0]))
    home = client.get("/")
    assert home.status_code == 200
    assert "Lumen Advisory" in text(home)


def test_vendor_form_has_no_partner_type(network, client, django_capture_on_commit_callbacks):
    page = client.get("/apply/vendor/")
    assert page.status_code == 200
    assert 'name="partner_type"' not in text(page)
    data = form_data(company_name="Vendo", website="vendo.io", email="ops@vendo.io")
    del data["partner_type"]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/apply/vendor/", data)
    assert response.status_code == 302
    assert Organization.objects.get(name="Vendo").kind == roles.VENDOR


@pytest.mark.parametrize("kind", ["operator", "admin", "reseller"])
def test_unknown_application_kind_is_not_found(network, client, kind):
    assert client.get(f"/apply/{kind}/").status_code == 404
    assert client.post(f"/apply/{kind}/", form_data()).status_code == 404
    assert not Organization.objects.filter(name="Lumen Advisory").exists()


@pytest.mark.parametrize("overrides, error", [
    ({"password_confirm": "Something-else-99"}, "The two passwords do not match."),
    ({"website": ""}, "This field is required."),
    ({"website": "localhost"}, "Enter your company's website"),
    ({"email": "not-an-email"}, "Enter a valid email address."),
    ({"country": "XX"}, "Select a valid choice."),
    ({"password": "12345678", "password_confirm": "12345678"}, "This password is too common."),
    ({"company_name": ""}, "This field is required."),
])
def test_bad_application_input_shows_form_errors(network, client,
                                                django_capture_on_commit_callbacks, overrides,
                                                error):
    response = apply_via_view(client, django_capture_on_commit_callbacks, **overrides)
    assert response.status_code == 200
    assert error in text(response)
    assert not Organization.objects.filter(name="Lumen Advisory").exists()
    assert not User.objects.filter(email="lena@lumen-advisory.com").exists()
    assert mail.outbox == []


def test_applying_for_a_domain_with_an_active_org_points_to_an_invite_by_email(
        network, client, django_capture_on_commit_callbacks):
    OrganizationFactory(network=network, name="Lumen GmbH", website_domain="lumen-advisory.com")

    response = apply_via_view(client, django_capture_on_commit_callbacks,
                              website="https://eu.lumen-advisory.com/de")

    # The page answers as for any application (issue 17); the advice goes to the mailbox.
    assert response.status_code == 302 and response["Location"] == "/apply-done/"
    [advice] = mail.outbox
    assert advice.to == ["lena@lumen-advisory.com"]
    assert "lumen-advisory.com already has an organization on this network" in advice.body
    assert "invite" in advice.body
    assert Organization.objects.filter(website_domain="lumen-advisory.com").count() == 1
    assert not User.objects.filter(email="lena@lumen-advisory.com").exists()


def test_applying_for_a_domain_with_a_pending_application_says_it_waits_for_review(
        network, client, django_capture_on_commit_callbacks):
    pending_application(network, domain="lumen-advisory.com")

    response = apply_via_view(client, django_capture_on_commit_callbacks)

    # The page answers as for any application (issue 17); the advice goes to the mailbox, and
    # the pending application's founder hears that someone asked.
    assert response.status_code == 302 and response["Location"] == "/apply-done/"
    [advice] = [m for m in mail.outbox if m.to == ["lena@lumen-advisory.com"]]
    assert "An application for lumen-advisory.com is already waiting for review" in advice.body
    assert [m.to for m in mail.outbox if m is not advice] == [["founder@lumen-advisory.com"]]
    assert Organization.objects.filter(website_domain="lumen-advisory.com").count() == 1


def test_same_domain_in_another_network_does_not_block_an_application(
        network, client, django_capture_on_commit_callbacks):
    from tests.accounts.factories import NetworkFactory

    elsewhere = NetworkFactory()
    OrganizationFactory(network=elsewhere, website_domain="lumen-advisory.com")
    response = apply_via_view(client, django_capture_on_commit_callbacks)
    assert response.status_code == 302
    assert Organization.objects.filter(network=network, name="Lumen Advisory").exists()


def test_applying_with_an_email_that_already_has_an_account_is_refused_by_email(
        network, client, django_capture_on_commit_callbacks):
    UserFactory(email="lena@lumen-advisory.com")

    response = apply_via_view(client, django_capture_on_commit_callbacks,
                              email="LENA@lumen-advisory.com")

    # The page answers as for any application (issue 17); the account's owner is told.
    assert response.status_code == 302 and response["Location"] == "/apply-done/"
    assert not Organization.objects.filter(name="Lumen Advisory").exists()
    [notice] = mail.outbox
    assert notice.to == ["lena@lumen-advisory.com"]
    assert "already has a PartnerHub account" in notice.body


# --- Verifying the email --------------------------------------------------------------------


def test_verification_link_marks_the_user_and_the_organization_verified(
        world, client, django_capture_on_commit_callbacks):
    apply_via_view(client, django_capture_on_commit_callbacks, email="lena@gmail.com")
    link = verify_link(mail.outbox[0])
    mail.outbox.clear()
    anonymous = Client()

    with django_capture_on_commit_callbacks(execute=True):
        response = anonymous.get(link, follow=True)

    assert response.status_code == 200
    assert "Thanks, Lena: your email is verified." in text(response)
    user = User.objects.get(email="lena@gmail.com")
    org = Organization.objects.get(name="Lumen Advisory")
    assert user.email_verified_at is not None
    assert org.verified_at is not None
    assert org.status == Organization.PENDING
    assert AuditEvent.objects.filter(action="user.email_verified", actor=user).count() == 1
    verified_at = org.verified_at
    reviewer_mails = len(mail.outbox)
    assert reviewer_mails == 1

    # A second click changes nothing and still lands on a friendly page.
    with django_capture_on_commit_callbacks(execute=True):
        again = client.get(link, follow=True)
    assert again.status_code == 200
    assert "your email is verified" in text(again)
    org.refresh_from_db()
    assert org.verified_at == verified_at
    assert AuditEvent.objects.filter(action="user.email_verified", actor=user).count() == 1
    assert len(mail.outbox) == reviewer_mails


def test_tampered_verification_link_shows_an_error_page(network, client,
                                                       django_capture_on_commit_callbacks):
    apply_via_view(client, django_capture_on_commit_callbacks)
    link = verify_link(mail.outbox[0])
    tampered = link[:-3] + ("A" if link[-3] != "A" else "B") + link[-2:]

    response = client.get(tampered)

    assert response.status_code == 400
    assert "This verification link is not valid." in text(response)
    assert User.objects.get(email="lena@lumen-advisory.com").email_verified_at is None
    assert Organization.objects.get(name="Lumen Advisory").verified_at is None


def test_expired_verification_link_shows_an_error_page(network, client, settings,
                                                      django_capture_on_commit_callbacks,
                                                      monkeypatch):
    apply_via_view(client, django_capture_on_commit_callbacks)
    user = User.objects.get(email="lena@lumen-advisory.com")
    long_ago = time.time() - (settings.EMAIL_VERIFICATION_TTL_DAYS + 1) * 86400
    with monkeypatch.context() as patch:
        patch.setattr(signing.time, "time", lambda: long_ago)
        old_token = verification_token(user)

    response = client.get(f"/verify/{old_token}/")

    assert response.status_code == 400
    assert "This verification link has expired" in text(response)
    user.refresh_from_db()
    assert user.email_verified_at is None
    assert Organization.objects.get(name="Lumen Advisory").verified_at is None


def test_verifying_an_unmatched_or_free_mail_application_alerts_reviewers(
        world, client, django_capture_on_commit_callbacks):
    world.network.auto_approve_matching_domains = True
    world.network.save()
    apply_via_view(client, django_capture_on_commit_callbacks, email="lena.vogel@gmail.com")
    link = verify_link(mail.outbox[0])
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        client.get(link)

    org = Organization.objects.get(name="Lumen Advisory")
    assert org.status == Organization.PENDING
    assert org.auto_approved is False
    assert len(mail.outbox) == 1
    alert = mail.outbox[0]
    assert sorted(alert.to) == sorted([
        world.member(roles.OPERATOR, "admin").user.email,
        world.member(roles.OPERATOR, "onboarding").user.email,
    ])
    assert "Lumen Advisory" in alert.subject
    assert f"/network/applications/{org.public_id}/" in alert.body
    assert any(mimetype == "text/html" for _, mimetype in alert.alternatives)


def test_a_website_that_differs_from_the_email_domain_is_not_auto_approved(
        world, client, django_capture_on_commit_callbacks):
    world.network.auto_approve_matching_domains = True
    world.network.save()
    apply_via_view(client, django_capture_on_commit_callbacks, email="lena@lumen-consult.de")
    with django_capture_on_commit_callbacks(execute=True):
        client.get(verify_link(mail.outbox[0]))

    org = Organization.objects.get(name="Lumen Advisory")
    assert org.status == Organization.PENDING and org.auto_approved is False
    assert not AuditEvent.objects.filter(action="organization.auto_approved").exists()
    assert any(world.member(roles.OPERATOR, "onboarding").user.email in m.to
               for m in mail.outbox)


def test_matching_domain_is_not_auto_approved_when_the_network_has_it_off(
        world, client, django_capture_on_commit_callbacks):
    assert world.network.auto_approve_matching_domains is False
    apply_via_view(client, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        client.get(verify_link(mail.outbox[0]))
    org = Organization.objects.get(name="Lumen Advisory")
    assert org.status == Organization.PENDING and org.verified_at is not None


def test_matching_work_domain_is_auto_approved_flagged_and_confirmable(
        world, client, django_capture_on_commit_callbacks):
    world.network.auto_approve_matching_domains = True
    world.network.save()
    apply_via_view(client, django_capture_on_commit_callbacks)
    link = verify_link(mail.outbox[0])
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        client.get(link)

    org = Organization.objects.get(name="Lumen Advisory")
    assert org.status == Organization.ACTIVE
    assert org.auto_approved is True
    assert org.approved_at is not None and org.auto_approval_reviewed_at is None
    event = AuditEvent.objects.get(action="organization.auto_approved")
    assert event.actor is None and event.actor_email == "system"
    assert event.after == {"status": "active", "auto_approved": True}
    assert [m.to for m in mail.outbox] == [["lena@lumen-advisory.com"]]
    assert "approved" in mail.outbox[0].subject

    reviewer = world.client_for(world.member(roles.OPERATOR, "onboarding"))
    auto_list = reviewer.get("/network/applications/?view=auto")
    assert auto_list.status_code == 200
    assert "Lumen Advisory" in text(auto_list)
    assert "Lumen Advisory" not in text(reviewer.get("/network/applications/"))

    confirmed = reviewer.post(f"/network/applications/{org.public_id}/confirm/", follow=True)

    assert "Auto-approval of Lumen Advisory confirmed." in text(confirmed)
    org.refresh_from_db()
    assert org.auto_approval_reviewed_at is not None
    assert org.reviewed_by == world.member(roles.OPERATOR, "onboarding").user
    assert "Lumen Advisory" not in text(reviewer.get("/network/applications/?view=auto"))
    assert AuditEvent.objects.filter(action="organization.auto_approval_confirmed",
                                     target_id=str(org.public_id)).count() == 1

    again = reviewer.post(f"/network/applications/{org.public_id}/confirm/", follow=True)
    assert "There is nothing left to review" in text(again)
    assert AuditEvent.objects.filter(action="organization.auto_approval_confirmed").count() == 1


# --- Reviewing ------------------------------------------------------------------------------


def test_onboarding_member_approves_a_verified_application(world,
                                                           django_capture_on_commit_callbacks):
    reviewer = world.member(roles.OPERATOR, "onboarding")
    client = world.client_for(reviewer)
    org, owner = world.pending, world.others["pending_owner"]

    detail = client.get(f"/network/applications/{org.public_id}/")
    assert detail.status_code == 200
    assert owner.user.email in text(detail)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/network/applications/{org.public_id}/approve/", follow=True)

    assert response.redirect_chain[0] == ("/network/applications/", 302)
    assert "Nimbus is approved and has been told by email." in text(response)
    org.refresh_from_db()
    assert org.status == Organization.ACTIVE
    assert org.approved_at is not None and org.auto_approved is False
    assert org.reviewed_by == reviewer.user
    assert [m.to for m in mail.outbox] == [[owner.user.email]]
    assert mail.outbox[0].subject == "Nimbus is approved"
    assert any(mimetype == "text/html" for _, mimetype in mail.outbox[0].alternatives)
    event = AuditEvent.objects.get(action="organization.approved")
    assert event.actor == reviewer.user and event.membership == reviewer
    assert event.role == "onboarding"
    assert event.target_type == "organization" and event.target_id == str(org.public_id)
    assert event.before == {"status": "pending"}
    assert event.after == {"status": "active", "auto_approved": False}
    # The new owner now has their full permissions, e.g. the team page with management.
    assert world.client_for(owner).get("/team/").status_code == 200


def test_approving_twice_shows_a_message_and_records_one_event(
        world, django_capture_on_commit_callbacks):
    client = world.client_for(world.member(roles.OPERATOR, "onboarding"))
    url = f"/network/applications/{world.pending.public_id}/approve/"
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url)
        second = client.post(url, follow=True)

    assert second.redirect_chain[0] == (f"/network/applications/{world.pending.public_id}/", 302)
    assert "This application was already active." in text(second)
    assert AuditEvent.objects.filter(action="organization.approved").count() == 1
    assert len(mail.outbox) == 1


def test_approving_an_unverified_application_is_refused(world,
                                                        django_capture_on_commit_callbacks):
    org, _ = pending_application(world.network, verified=False)
    client = world.client_for(world.member(roles.OPERATOR, "onboarding"))

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/network/applications/{org.public_id}/approve/", follow=True)

    assert response.status_code == 200
    assert "The applicant has not verified their email address yet." in text(response)
    org.refresh_from_db()
    assert org.status == Organization.PENDING and org.approved_at is None
    assert not AuditEvent.objects.filter(action="organization.approved").exists()
    assert mail.outbox == []


def test_onboarding_member_rejects_with_a_reason_the_applicant_receives(
        world, django_capture_on_commit_callbacks):
    reviewer = world.member(roles.OPERATOR, "onboarding")
    client = world.client_for(reviewer)
    org, owner = world.pending, world.others["pending_owner"]

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/network/applications/{org.public_id}/reject/",
                               {"reason_code": "not_a_fit",
                                "details": "We only take EU agencies."}, follow=True)

    assert "Nimbus was rejected; the applicant has been told why." in text(response)
    org.refresh_from_db()
    assert org.status == Organization.REJECTED
    assert org.rejected_at is not None and org.reviewed_by == reviewer.user
    assert org.rejection_reason == "Not a fit for this network. We only take EU agencies."
    assert [m.to for m in mail.outbox] == [[owner.user.email]]
    assert "We only take EU agencies." in mail.outbox[0].body
    assert any(mimetype == "text/html" for _, mimetype in mail.outbox[0].alternatives)
    event = AuditEvent.objects.get(action="organization.rejected")
    assert event.actor == reviewer.user and event.role == "onboarding"
    assert event.after["reason"] == org.rejection_reason
    # A rejected organization's owner no longer gets in.
    assert world.client_for(owner).get("/").status_code == 302


@pytest.mark.parametrize("data, error", [
    ({}, "This field is required."),
    ({"reason_code": "", "details": "Looks fishy"}, "This field is required."),
    ({"reason_code": "other", "details": "  "}, "Explain the reason to the applicant."),
    ({"reason_code": "because"}, "Select a valid choice."),
])
def test_rejecting_without_a_reason_is_a_400_and_changes_nothing(
        world, django_capture_on_commit_callbacks, data, error):
    client = world.client_for(world.member(roles.OPERATOR, "onboarding"))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/network/applications/{world.pending.public_id}/reject/", data)

    assert response.status_code == 400
    assert error in text(response)
    world.pending.refresh_from_db()
    assert world.pending.status == Organization.PENDING
    assert world.pending.rejected_at is None and world.pending.rejection_reason == ""
    assert not AuditEvent.objects.filter(action="organization.rejected").exists()
    assert mail.outbox == []


def test_reject_service_requires_a_reason(world, django_capture_on_commit_callbacks):
    with pytest.raises(ServiceError, match="reason"):
        reject_application(world.member(roles.OPERATOR, "onboarding"), world.pending, "  ")
    world.pending.refresh_from_db()
    assert world.pending.status == Organization.PENDING


def test_a_decided_application_cannot_be_rejected_afterwards(world,
                                                             django_capture_on_commit_callbacks):
    reviewer = world.member(roles.OPERATOR, "onboarding")
    with django_capture_on_commit_callbacks(execute=True):
        approve_application(reviewer, world.pending)
    client = world.client_for(reviewer)
    response = client.post(f"/network/applications/{world.pending.public_id}/reject/",
                           {"reason_code": "duplicate"}, follow=True)
    assert "This application was already active." in text(response)
    world.pending.refresh_from_db()
    assert world.pending.status == Organization.ACTIVE
    assert not AuditEvent.objects.filter(action="organization.rejected").exists()


def test_full_journey_apply_verify_and_get_approved(world, client,
                                                    django_capture_on_commit_callbacks):
    apply_via_view(client, django_capture_on_commit_callbacks, email="lena@outlook.com")
    with django_capture_on_commit_callbacks(execute=True):
        verify_email(verify_link(mail.outbox[0]).split("/")[2])
    org = Organization.objects.get(name="Lumen Advisory")
    reviewer = world.client_for(world.member(roles.OPERATOR, "admin"))
    queue = reviewer.get("/network/applications/")
    assert "Lumen Advisory" in text(queue)
    assert "free-mail address" in text(queue)

    with django_capture_on_commit_callbacks(execute=True):
        reviewer.post(f"/network/applications/{org.public_id}/approve/")

    org.refresh_from_db()
    assert org.status == Organization.ACTIVE
    assert "Lumen Advisory" in text(reviewer.get("/network/applications/?view=decided"))
    assert "Lumen Advisory" not in text(reviewer.get("/network/applications/"))


# --- Who may review -------------------------------------------------------------------------


@pytest.mark.parametrize("kind, role", ALL_ROLES, ids=ROLE_IDS)
def test_only_reviewing_roles_see_the_application_queue(world, kind, role):
    client = world.client_for(world.member(kind, role))
    queue = client.get("/network/applications/")
    detail = client.get(f"/network/applications/{world.pending.public_id}/")
    if (kind, role) in REVIEWING_ROLES:
        assert queue.status_code == 200
        assert "Applications" in text(queue)
    else:
        assert queue.status_code == 404
        assert detail.status_code == 404


NON_REVIEWERS = [k for k in ALL_ROLES if k not in REVIEWING_ROLES]


@pytest.mark.parametrize("kind, role", NON_REVIEWERS, ids=[f"{k}.{r}" for k, r in NON_REVIEWERS])
def test_roles_without_review_permission_cannot_approve_or_reject(
        world, django_capture_on_commit_callbacks, kind, role):
    client = world.client_for(world.member(kind, role))
    with django_capture_on_commit_callbacks(execute=True):
        approve = client.post(f"/network/applications/{world.pending.public_id}/approve/")
        reject = client.post(f"/network/applications/{world.pending.public_id}/reject/",
                             {"reason_code": "not_a_fit"})
    assert approve.status_code == 404
    assert reject.status_code == 404
    world.pending.refresh_from_db()
    assert world.pending.status == Organization.PENDING
    assert mail.outbox == []


def test_anonymous_visitors_are_sent_to_log_in(world, client):
    response = client.get("/network/applications/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_pending_applicant_cannot_review_their_own_application(
        world, django_capture_on_commit_callbacks):
    client = world.client_for(world.others["pending_owner"])
    assert client.get("/network/applications/").status_code == 404
    assert client.post(
        f"/network/applications/{world.pending.public_id}/approve/").status_code == 404
    world.pending.refresh_from_db()
    assert world.pending.status == Organization.PENDING


def test_channel_manager_only_sees_applications_in_their_portfolio(
        world, django_capture_on_commit_callbacks):
    manager = world.member(roles.OPERATOR, "channel_manager")
    mine, _ = pending_application(world.network, name="Portfolio Pending", domain="mine.io")
    assign_perm("accounts.in_portfolio", manager.user, mine)
    client = world.client_for(manager)

    queue = text(client.get("/network/applications/"))
    assert "Portfolio Pending" in queue
    assert "Nimbus" not in queue
    assert client.get(f"/network/applications/{world.pending.public_id}/").status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        refused = client.post(f"/network/applications/{world.pending.public_id}/approve/")
        approved = client.post(f"/network/applications/{mine.public_id}/approve/")
    assert refused.status_code == 404
    world.pending.refresh_from_db()
    assert world.pending.status == Organization.PENDING
    assert approved.status_code == 302
    mine.refresh_from_db()
    assert mine.status == Organization.ACTIVE


def test_reviewers_never_reach_applications_of_another_network(
        world, django_capture_on_commit_callbacks):
    foreign = OrganizationFactory(network=world.other_network, status=Organization.PENDING,
                                  name="Overseas Pending", approved_at=None)
    client = world.client_for(world.member(roles.OPERATOR, "admin"))
    assert "Overseas Pending" not in text(client.get("/network/applications/"))
    assert client.get(f"/network/applications/{foreign.public_id}/").status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/network/applications/{foreign.public_id}/approve/")
    assert response.status_code == 404
    foreign.refresh_from_db()
    assert foreign.status == Organization.PENDING


def test_applications_list_every_pending_org_with_its_evidence(world):
    unverified, _ = pending_application(world.network, verified=False, name="Unverified Co",
                                        domain="unverified.io")
    client = world.client_for(world.member(roles.OPERATOR, "onboarding"))
    page = text(client.get("/network/applications/"))
    assert "Nimbus" in page and "Unverified Co" in page
    assert "email not verified" in page
    # Verified applications come first: they can be decided now.
    assert page.index("Nimbus") < page.index("Unverified Co")
    assert "Waiting (2)" in page


def test_application_queue_query_count_does_not_grow_with_applications(
        world, django_assert_max_num_queries):
    for n in range(20):  # with Nimbus, 21 rows: one page
        pending_application(world.network, name=f"Applicant {n}", domain=f"applicant{n}.io")
    client = world.client_for(world.member(roles.OPERATOR, "onboarding"))
    with django_assert_max_num_queries(10):
        response = client.get("/network/applications/")
    page = text(response)
    assert "Waiting (21)" in page
    assert "Applicant 0" in page and "founder@applicant19.io" in page
