"""Team management: invitations, role changes, deactivation and the last-owner rule."""

import html
import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from accounts import roles
from accounts.models import (
    AuditEvent,
    Invitation,
    Membership,
    OrganizationPortfolioGrant,
    User,
)
from tests.accounts.factories import MembershipFactory, UserFactory

PASSWORD = "Copper-kettle-meadow-71"
NO_MANAGE = [(roles.PARTNER, "rep"), (roles.PARTNER, "manager"), (roles.PARTNER, "finance"),
             (roles.VENDOR, "partnerships"), (roles.VENDOR, "sales")]


def text(response) -> str:
    return html.unescape(response.content.decode())


def invite(client, capture, email, role):
    with capture(execute=True):
        return client.post("/team/", {"email": email, "role": role}, follow=True)


def token_from(message) -> str:
    match = re.search(r"https?://[^/\s]+/invitations/([^/\s]+)/", message.body)
    assert match, f"no invitation link in: {message.body}"
    return match.group(1)


@pytest.fixture
def owner(world):
    return world.member(roles.PARTNER, "owner")


@pytest.fixture
def owner_client(world, owner):
    return world.client_for(owner)


@pytest.fixture
def invited(owner_client, django_capture_on_commit_callbacks):
    """An open invitation to Brightpath as a rep; returns (invitation, token)."""
    invite(owner_client, django_capture_on_commit_callbacks, "Nora.Diaz@Example.org", "rep")
    invitation = Invitation.objects.get(email="nora.diaz@example.org")
    return invitation, token_from(mail.outbox[-1])


# --- Invitations ----------------------------------------------------------------------------


def test_owner_invites_someone_by_email(world, owner, owner_client,
                                        django_capture_on_commit_callbacks):
    response = invite(owner_client, django_capture_on_commit_callbacks,
                      "Nora.Diaz@Example.org", "rep")

    assert response.status_code == 200
    page = text(response)
    assert "Invitation sent to Nora.Diaz@Example.org." in page
    assert "nora.diaz@example.org" in page  # listed among the open invitations
    invitation = Invitation.objects.get()
    assert invitation.organization == world.partner
    assert invitation.email == "nora.diaz@example.org" and invitation.role == "rep"
    assert invitation.invited_by == owner.user
    assert invitation.expires_at > timezone.now() + timedelta(days=6)
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["nora.diaz@example.org"]
    assert "Brightpath" in message.subject
    token = token_from(message)
    assert invitation.token_hash != token  # only the hash is stored
    html_body = [c for c, mimetype in message.alternatives if mimetype == "text/html"]
    assert html_body and f"/invitations/{token}/" in html_body[0]
    assert AuditEvent.objects.filter(action="invitation.created",
                                     target_id=str(invitation.public_id)).count() == 1


def test_new_person_accepts_by_signing_up(world, invited):
    invitation, token = invited
    visitor = Client()

    page = visitor.get(f"/invitations/{token}/")
    assert page.status_code == 200
    assert "Create your account for" in text(page)
    assert "nora.diaz@example.org" in text(page)

    response = visitor.post(f"/invitations/{token}/", {"full_name": "Nora Diaz",
                                                        "password": PASSWORD})

    assert response.status_code == 302 and response["Location"] == "/"
    user = User.objects.get(email="nora.diaz@example.org")
    assert user.check_password(PASSWORD) and user.email_verified_at is not None
    membership = Membership.objects.get(user=user)
    assert membership.organization == world.partner and membership.role == "rep"
    invitation.refresh_from_db()
    assert invitation.accepted_at is not None and invitation.accepted_by == user
    home = visitor.get("/")
    assert home.status_code == 200
    assert "Welcome to Brightpath." in text(home)


def test_signup_through_an_invitation_validates_the_password(world, invited):
    _, token = invited
    response = Client().post(f"/invitations/{token}/", {"full_name": "Nora", "password": "123"})
    assert response.status_code == 200
    assert "This password is too short" in text(response)
    assert not User.objects.filter(email="nora.diaz@example.org").exists()


def test_logged_in_invitee_accepts_with_one_click(world, owner_client,
                                                  django_capture_on_commit_callbacks):
    elsewhere = world.others["partner2_rep"]  # already a member of another organization
    invite(owner_client, django_capture_on_commit_callbacks, elsewhere.user.email.upper(),
           "manager")
    token = token_from(mail.outbox[-1])
    client = world.client_for(elsewhere)

    page = client.get(f"/invitations/{token}/")
    assert page.status_code == 200
    assert "Accept the invitation" in text(page)

    response = client.post(f"/invitations/{token}/", follow=True)

    assert response.status_code == 200
    assert "You joined Brightpath." in text(response)
    joined = Membership.objects.get(user=elsewhere.user, organization=world.partner)
    assert joined.role == "manager" and joined.status == Membership.ACTIVE
    # The session now acts for the organization just joined.
    assert "Brightpath · Manager" in text(response)


def test_existing_account_is_asked_to_log_in_first(world, invited):
    UserFactory(email="nora.diaz@example.org")
    _, token = invited
    page = Client().get(f"/invitations/{token}/")
    assert page.status_code == 200
    assert "Log in to accept" in text(page)
    response = Client().post(f"/invitations/{token}/", {"full_name": "Mallory",
                                                         "password": PASSWORD})
    assert response.status_code == 200
    assert not Membership.objects.filter(organization__name="Brightpath",
                                         user__email="nora.diaz@example.org").exists()


def test_invitation_opened_by_someone_logged_in_with_another_email_is_refused(world, invited):
    invitation, token = invited
    stranger = world.others["partner2_owner"]
    client = world.client_for(stranger)

    response = client.post(f"/invitations/{token}/")

    assert response.status_code == 400
    assert (f"This invitation was sent to nora.diaz@example.org, but you are logged in as "
            f"{stranger.user.email}") in text(response)
    assert not Membership.objects.filter(user=stranger.user, organization=world.partner).exists()
    invitation.refresh_from_db()
    assert invitation.accepted_at is None


def test_invitation_link_works_only_once(world, invited):
    _, token = invited
    Client().post(f"/invitations/{token}/", {"full_name": "Nora Diaz", "password": PASSWORD})

    again = Client().get(f"/invitations/{token}/")

    assert again.status_code == 400
    assert "This invitation has already been used." in text(again)
    assert Membership.objects.filter(user__email="nora.diaz@example.org").count() == 1


def test_expired_invitation_is_refused(world, invited):
    invitation, token = invited
    Invitation.objects.filter(pk=invitation.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1))

    page = Client().get(f"/invitations/{token}/")
    post = Client().post(f"/invitations/{token}/", {"full_name": "Nora", "password": PASSWORD})

    assert page.status_code == 400 and post.status_code == 400
    assert "This invitation has expired." in text(page)
    assert not User.objects.filter(email="nora.diaz@example.org").exists()


def test_revoked_invitation_is_invalid(world, owner_client, invited):
    invitation, token = invited

    revoked = owner_client.post(f"/team/invitations/{invitation.public_id}/revoke/", follow=True)
    assert "Invitation to nora.diaz@example.org revoked." in text(revoked)

    page = Client().get(f"/invitations/{token}/")
    assert page.status_code == 400
    assert "This invitation link is not valid." in text(page)
    assert not User.objects.filter(email="nora.diaz@example.org").exists()


def test_inviting_the_same_email_again_invalidates_the_first_link(
        world, owner_client, invited, django_capture_on_commit_callbacks):
    _, first_token = invited
    invite(owner_client, django_capture_on_commit_callbacks, "nora.diaz@example.org", "manager")
    second_token = token_from(mail.outbox[-1])

    assert Client().get(f"/invitations/{first_token}/").status_code == 400
    Client().post(f"/invitations/{second_token}/", {"full_name": "Nora", "password": PASSWORD})
    assert Membership.objects.get(user__email="nora.diaz@example.org").role == "manager"


def test_unknown_invitation_token_is_invalid(world):
    page = Client().get("/invitations/not-a-real-token/")
    assert page.status_code == 400
    assert "This invitation link is not valid." in text(page)


@pytest.mark.parametrize("role", ["admin", "channel_manager", "sales", "superuser"])
def test_inviting_with_a_role_of_another_kind_is_a_form_error(
        world, owner_client, django_capture_on_commit_callbacks, role):
    response = invite(owner_client, django_capture_on_commit_callbacks, "nora@example.org", role)

    assert response.status_code == 200
    assert "Select a valid choice." in text(response)
    assert not Invitation.objects.exists()
    assert mail.outbox == []


def test_inviting_an_active_member_is_a_form_error(world, owner_client,
                                                   django_capture_on_commit_callbacks):
    rep = world.member(roles.PARTNER, "rep")
    response = invite(owner_client, django_capture_on_commit_callbacks, rep.user.email, "manager")
    assert f"{rep.user.email} is already a member of Brightpath." in text(response)
    assert not Invitation.objects.exists()
    assert mail.outbox == []


@pytest.mark.parametrize("kind, role", NO_MANAGE, ids=[f"{k}.{r}" for k, r in NO_MANAGE])
def test_members_without_members_manage_cannot_invite(world, django_capture_on_commit_callbacks,
                                                      kind, role):
    client = world.client_for(world.member(kind, role))
    page = client.get("/team/")
    assert page.status_code == 200
    assert "Send invitation" not in text(page)
    invite(client, django_capture_on_commit_callbacks, "nora@example.org", "rep")
    assert not Invitation.objects.exists()
    assert mail.outbox == []


# --- Role changes and deactivation ----------------------------------------------------------


def test_owner_changes_a_members_role(world, owner_client):
    rep = world.member(roles.PARTNER, "rep")

    response = owner_client.post(f"/team/{rep.public_id}/role/", {"role": "manager"}, follow=True)

    assert response.redirect_chain[0] == ("/team/", 302)
    assert f"{rep.user.full_name} is now Manager." in text(response)
    rep.refresh_from_db()
    assert rep.role == "manager"


@pytest.mark.parametrize("role", ["admin", "", "auditor"])
def test_changing_to_a_role_not_offered_is_refused(world, owner_client, role):
    rep = world.member(roles.PARTNER, "rep")
    response = owner_client.post(f"/team/{rep.public_id}/role/", {"role": role}, follow=True)
    assert "Choose one of the roles offered." in text(response)
    rep.refresh_from_db()
    assert rep.role == "rep"


def test_owner_deactivates_a_member(world, owner_client):
    rep = world.member(roles.PARTNER, "rep")

    response = owner_client.post(f"/team/{rep.public_id}/deactivate/", follow=True)

    assert f"{rep.user.full_name} no longer has access." in text(response)
    rep.refresh_from_db()
    assert rep.status == Membership.DEACTIVATED and rep.deactivated_at is not None
    again = owner_client.post(f"/team/{rep.public_id}/deactivate/", follow=True)
    assert "This member is already deactivated." in text(again)


def test_role_change_and_deactivation_require_post(world, owner_client):
    rep = world.member(roles.PARTNER, "rep")
    assert owner_client.get(f"/team/{rep.public_id}/deactivate/").status_code == 405
    assert owner_client.get(f"/team/{rep.public_id}/role/").status_code == 405
    rep.refresh_from_db()
    assert rep.status == Membership.ACTIVE


@pytest.mark.parametrize("kind, owner_role", [(roles.PARTNER, "owner"), (roles.VENDOR, "admin"),
                                              (roles.OPERATOR, "admin")])
def test_the_last_owner_can_be_neither_demoted_nor_deactivated(world, kind, owner_role):
    last = world.member(kind, owner_role)
    client = world.client_for(last)
    other_role = next(r.name for r in roles.roles_of_kind(kind) if r.name != owner_role)

    demoted = client.post(f"/team/{last.public_id}/role/", {"role": other_role}, follow=True)
    assert f"An organization needs at least one {owner_role}." in text(demoted)

    removed = client.post(f"/team/{last.public_id}/deactivate/", follow=True)
    assert f"You cannot remove the last {owner_role} of an organization." in text(removed)

    last.refresh_from_db()
    assert last.role == owner_role and last.status == Membership.ACTIVE
    assert not AuditEvent.objects.filter(target_id=str(last.public_id)).exists()


def test_a_second_owner_makes_demotion_possible_until_one_is_left(world, owner, owner_client):
    second = MembershipFactory(organization=world.partner, role="owner")

    demoted = owner_client.post(f"/team/{second.public_id}/role/", {"role": "finance"},
                                follow=True)
    assert "is now Finance." in text(demoted)
    second.refresh_from_db()
    assert second.role == "finance"

    # Back to one owner: demoting them is refused again.
    refused = owner_client.post(f"/team/{owner.public_id}/role/", {"role": "manager"},
                                follow=True)
    assert "An organization needs at least one owner." in text(refused)
    owner.refresh_from_db()
    assert owner.role == "owner"


def test_with_a_second_owner_the_first_can_step_down(world, owner, owner_client):
    MembershipFactory(organization=world.partner, role="owner")

    response = owner_client.post(f"/team/{owner.public_id}/deactivate/", follow=True)

    owner.refresh_from_db()
    assert owner.status == Membership.DEACTIVATED
    # Having removed themselves, they no longer have an organization here.
    assert response.redirect_chain[-1] == ("/accounts/no-membership/", 302)


def test_a_deactivated_owner_does_not_count_as_the_second_owner(world, owner, owner_client):
    MembershipFactory(organization=world.partner, role="owner", status=Membership.DEACTIVATED)
    response = owner_client.post(f"/team/{owner.public_id}/deactivate/", follow=True)
    assert "You cannot remove the last owner of an organization." in text(response)
    owner.refresh_from_db()
    assert owner.status == Membership.ACTIVE


@pytest.mark.parametrize("kind, role", NO_MANAGE, ids=[f"{k}.{r}" for k, r in NO_MANAGE])
def test_members_without_members_manage_get_404_on_management_endpoints(world, kind, role):
    actor = world.member(kind, role)
    client = world.client_for(actor)
    target = world.member(kind, "finance")

    new_role = "manager" if kind == roles.PARTNER else "sales"
    assert client.post(f"/team/{target.public_id}/role/", {"role": new_role}).status_code == 404
    assert client.post(f"/team/{target.public_id}/deactivate/").status_code == 404
    assert client.post(f"/team/{actor.public_id}/role/",
                       {"role": roles.OWNER_ROLE[kind]}).status_code == 404

    target.refresh_from_db()
    actor.refresh_from_db()
    assert target.status == Membership.ACTIVE and target.role == "finance"
    assert actor.role == role


@pytest.mark.parametrize("actor_key, target_key", [
    ((roles.PARTNER, "owner"), "partner2_rep"),
    ((roles.PARTNER, "owner"), "foreign_owner"),
    ((roles.VENDOR, "admin"), "partner2_rep"),
    # Network-wide roles may look memberships up, but manage only their own organization's.
    ((roles.OPERATOR, "admin"), "partner2_rep"),
])
def test_managing_a_membership_of_another_organization_is_not_found(world, actor_key,
                                                                    target_key):
    client = world.client_for(world.member(*actor_key))
    target = world.others[target_key]
    role_before = target.role

    # A role the actor could hand out in their own organization, so only the target decides.
    valid_role = {roles.PARTNER: "manager", roles.VENDOR: "sales",
                  roles.OPERATOR: "support"}[actor_key[0]]

    assert client.post(f"/team/{target.public_id}/role/",
                       {"role": valid_role}).status_code == 404
    assert client.post(f"/team/{target.public_id}/deactivate/").status_code == 404

    target.refresh_from_db()
    assert target.status == Membership.ACTIVE and target.role == role_before
    assert not AuditEvent.objects.filter(target_id=str(target.public_id)).exists()


def test_another_organizations_member_is_not_listed_on_the_team_page(world, owner_client):
    page = text(owner_client.get("/team/"))
    assert world.member(roles.PARTNER, "rep").user.email in page
    assert world.others["partner2_rep"].user.email not in page


def test_revoking_another_organizations_invitation_is_not_found(
        world, invited, django_capture_on_commit_callbacks):
    invitation, _ = invited
    client = world.client_for(world.others["partner2_owner"])
    assert client.post(f"/team/invitations/{invitation.public_id}/revoke/").status_code == 404
    invitation.refresh_from_db()
    assert invitation.revoked_at is None


def test_deactivating_a_channel_manager_revokes_their_portfolio(world):
    manager = world.member(roles.OPERATOR, "channel_manager")
    assert OrganizationPortfolioGrant.objects.filter(user=manager.user).count() == 2
    manager_client = world.client_for(manager)
    assert "Acme Cloud" in text(manager_client.get("/network/organizations/"))
    admin_client = world.client_for(world.member(roles.OPERATOR, "admin"))

    response = admin_client.post(f"/team/{manager.public_id}/deactivate/", follow=True)

    assert "no longer has access." in text(response)
    assert not OrganizationPortfolioGrant.objects.filter(user=manager.user).exists()
    manager.refresh_from_db()
    assert manager.status == Membership.DEACTIVATED
    assert manager_client.get("/network/organizations/")["Location"] == \
        "/accounts/no-membership/"


def test_moving_a_channel_manager_to_another_role_revokes_their_portfolio(world):
    manager = world.member(roles.OPERATOR, "channel_manager")
    admin_client = world.client_for(world.member(roles.OPERATOR, "admin"))

    admin_client.post(f"/team/{manager.public_id}/role/", {"role": "support"})

    manager.refresh_from_db()
    assert manager.role == "support"
    assert not OrganizationPortfolioGrant.objects.filter(user=manager.user).exists()


def test_deactivated_member_no_longer_sees_the_organization(world, owner_client):
    rep = world.member(roles.PARTNER, "rep")
    rep_client = world.client_for(rep)
    assert rep_client.get("/team/").status_code == 200

    owner_client.post(f"/team/{rep.public_id}/deactivate/")

    for path in ("/", "/team/"):
        response = rep_client.get(path)
        assert response.status_code == 302
        assert response["Location"] == "/accounts/no-membership/"
    page = rep_client.get("/accounts/no-membership/")
    assert page.status_code == 403
    assert "No active organization" in text(page)
    assert "Brightpath" not in text(page)


def test_a_reinvited_former_member_is_reactivated(world, owner_client,
                                                  django_capture_on_commit_callbacks):
    rep = world.member(roles.PARTNER, "rep")
    owner_client.post(f"/team/{rep.public_id}/deactivate/")
    invite(owner_client, django_capture_on_commit_callbacks, rep.user.email, "manager")
    token = token_from(mail.outbox[-1])

    response = world.client_for(rep).post(f"/invitations/{token}/", follow=True)

    assert "You joined Brightpath." in text(response)
    rep.refresh_from_db()
    assert rep.status == Membership.ACTIVE and rep.role == "manager"
    assert rep.deactivated_at is None


def test_team_page_query_count_does_not_grow_with_members(world, owner_client,
                                                          django_assert_max_num_queries):
    for _ in range(20):
        MembershipFactory(organization=world.partner, role="rep")
    with django_assert_max_num_queries(10):
        response = owner_client.get("/team/")
    assert text(response).count("Change role") == 24  # the 4 members of `world` and 20 reps
