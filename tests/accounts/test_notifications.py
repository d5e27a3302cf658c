"""Notifications: notify() writes the bell rows and emails the unmuted; the bell, the list, opening,
read-all and email preferences only ever touch the user's own rows in the current network."""

import html
import re
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import roles
from accounts.models import Notification, NotificationMute
from accounts.notifications import KINDS, notify
from tests.accounts.factories import UserFactory
from tests.conftest import ALL_ROLES, ROLE_IDS

FOREIGN_HOST = "partners.elsewhere.test"
URLS = ["/notifications/", "/notifications/read-all/", "/notifications/preferences/"]


def text(response) -> str:
    return html.unescape(response.content.decode())


def bell_label(response) -> str:
    match = re.search(r'<a class="bell"[^>]*aria-label="([^"]*)"', text(response))
    assert match, "no bell in the header"
    return match.group(1)


def make(user, network, n=1, **fields):
    """n notifications for `user` in `network`, newest last."""
    fields.setdefault("kind", "referral_accepted")
    title = fields.pop("title", None)
    rows = [Notification.objects.create(user=user, network=network, title=title or f"Note {i}",
                                        **fields) for i in range(n)]
    return rows[0] if n == 1 else rows


@pytest.fixture
def rep(world):
    return world.member(roles.PARTNER, "rep")


@pytest.fixture
def rep_client(world, rep):
    return world.client_for(rep)


# --- notify() -------------------------------------------------------------------------------

def test_notify_creates_one_row_per_distinct_active_user(
        network, django_capture_on_commit_callbacks):
    ana, ben, gone, me = UserFactory.create_batch(4)
    gone.is_active = False
    gone.save()

    with django_capture_on_commit_callbacks(execute=True):
        count = notify([ana, ben, ana, None, gone, me], "referral_accepted",
                       network_id=network.pk, title="Accepted", exclude_user=me)

    assert count == 2
    rows = Notification.objects.filter(network=network)
    assert sorted(rows.values_list("user_id", flat=True)) == sorted([ana.pk, ben.pk])
    assert {r.read_at for r in rows} == {None}
    assert sorted(m.to[0] for m in mail.outbox) == sorted([ana.email, ben.email])


def test_notify_with_nobody_left_writes_nothing(network, django_capture_on_commit_callbacks):
    me = UserFactory()
    with django_capture_on_commit_callbacks(execute=True):
        assert notify([me], "referral_message", network_id=network.pk, title="Hi",
                      exclude_user=me) == 0
    assert not Notification.objects.exists()
    assert mail.outbox == []


def test_notify_emails_only_users_who_did_not_mute_the_kind(
        network, django_capture_on_commit_callbacks):
    wants, muted, muted_other_kind = UserFactory.create_batch(3)
    NotificationMute.objects.create(user=muted, kind="referral_rejected")
    NotificationMute.objects.create(user=muted_other_kind, kind="referral_message")

    with django_capture_on_commit_callbacks(execute=True):
        notify([wants, muted, muted_other_kind], "referral_rejected", network_id=network.pk,
               title="Referral rejected", body="Not a fit this quarter.",
               url="/referrals/abc/")

    # The bell shows it to everyone; only the mute decides about email.
    assert Notification.objects.filter(kind="referral_rejected").count() == 3
    assert sorted(m.to[0] for m in mail.outbox) == sorted([wants.email, muted_other_kind.email])
    message = next(m for m in mail.outbox if m.to == [wants.email])
    assert "Referral rejected" in message.subject
    assert "Not a fit this quarter." in message.body
    # The email links through the bell's "open" URL, so reading it also clears the bell.
    own = Notification.objects.get(user=wants, kind="referral_rejected")
    assert f"/notifications/{own.public_id}/open/" in message.body
    assert "/notifications/preferences/" in message.body
    (html_body, mimetype), = message.alternatives
    assert mimetype == "text/html"
    assert "Not a fit this quarter." in html_body
    assert "/notifications/preferences/" in html_body


def test_notify_sends_no_email_before_commit(network, django_capture_on_commit_callbacks):
    user = UserFactory()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        notify([user], "referral_assigned", network_id=network.pk, title="Yours now")
    assert mail.outbox == []
    assert len(callbacks) == 1


def test_notify_rejects_an_unknown_kind(network):
    with pytest.raises(ValueError, match="unknown notification kind"):
        notify([UserFactory()], "referral_exploded", network_id=network.pk, title="Boom")
    assert not Notification.objects.exists()


# --- The bell -------------------------------------------------------------------------------

def test_the_bell_shows_the_unread_count_of_this_network(world, rep, rep_client):
    make(rep.user, world.network, 3)
    make(rep.user, world.network, read_at=timezone.now())
    make(rep.user, world.other_network, 2)
    make(world.member(roles.PARTNER, "owner").user, world.network, 4)

    response = rep_client.get("/")

    assert bell_label(response) == "Notifications, 3 unread"
    assert '<span class="bell-count" aria-hidden="true">3</span>' in text(response)


def test_the_bell_has_no_count_when_everything_is_read(world, rep, rep_client):
    make(rep.user, world.network, read_at=timezone.now())
    response = rep_client.get("/")
    assert bell_label(response) == "Notifications"
    assert "bell-count" not in text(response)


def test_the_bell_caps_a_large_count(world, rep, rep_client):
    make(rep.user, world.network, 100)
    response = rep_client.get("/")
    assert bell_label(response) == "Notifications, 100 unread"
    assert ">99+</span>" in text(response)


def test_there_is_no_bell_without_a_membership(db, network):
    client = Client()
    client.force_login(UserFactory(), backend="django.contrib.auth.backends.ModelBackend")
    response = client.get("/accounts/no-membership/")
    assert response.status_code == 403
    assert 'class="bell"' not in text(response)


# --- The list -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,role", ALL_ROLES, ids=ROLE_IDS)
def test_every_role_sees_its_own_notifications(world, kind, role):
    membership = world.member(kind, role)
    make(membership.user, world.network, title="Yours truly")
    response = world.client_for(membership).get("/notifications/")
    assert response.status_code == 200
    assert "Yours truly" in text(response)


def test_the_list_shows_only_own_notifications_of_this_network(world, rep, rep_client):
    make(rep.user, world.network, title="Mine here", url="/mine/")
    make(rep.user, world.other_network, title="Mine elsewhere")
    make(world.member(roles.PARTNER, "owner").user, world.network, title="The owner's")
    make(world.others["foreign_owner"].user, world.other_network, title="A foreigner's")

    body = text(rep_client.get("/notifications/"))

    assert "Mine here" in body
    assert "Mine elsewhere" not in body
    assert "The owner's" not in body
    assert "A foreigner's" not in body


def test_the_same_user_sees_the_other_networks_rows_only_on_that_network(world, rep):
    # The rep also belongs to an organization in the other network.
    foreign = world.foreign_partner.memberships.create(user=rep.user, role="owner")
    make(rep.user, world.network, title="Northwind news")
    make(rep.user, world.other_network, title="Elsewhere news")

    body = text(world.client_for(foreign, host=FOREIGN_HOST).get("/notifications/"))

    assert "Elsewhere news" in body
    assert "Northwind news" not in body


def test_the_list_is_newest_first_and_marks_unread(world, rep, rep_client):
    old = make(rep.user, world.network, title="Older one", read_at=timezone.now())
    old.created_at = timezone.now() - timedelta(days=2)
    old.save()
    make(rep.user, world.network, title="Newer one")

    body = text(rep_client.get("/notifications/"))

    assert body.index("Newer one") < body.index("Older one")
    assert body.count('<li class="unread">') == 1
    assert body.count('<li class="read">') == 1
    assert "Mark all as read" in body


def test_the_list_is_paginated(world, rep, rep_client):
    make(rep.user, world.network, 30)
    first = text(rep_client.get("/notifications/"))
    second = text(rep_client.get("/notifications/?page=2"))
    assert first.count("/open/") == 25
    assert second.count("/open/") == 5
    assert "Page 2 of 2" in second


def test_an_empty_list_explains_itself(world, rep_client):
    body = text(rep_client.get("/notifications/"))
    assert "No notifications yet" in body
    assert "Mark all as read" not in body
    assert "/notifications/preferences/" in body


def test_the_list_costs_the_same_queries_for_3_rows_as_for_30(world, rep, rep_client):
    def queries():
        with CaptureQueriesContext(connection) as ctx:
            response = rep_client.get("/notifications/")
        assert response.status_code == 200
        return len(ctx.captured_queries)

    make(rep.user, world.network, 3)
    few = queries()
    make(rep.user, world.network, 27)
    many = queries()
    assert many == few
    assert many <= 10


# --- Opening --------------------------------------------------------------------------------

def test_opening_marks_read_and_follows_the_link(world, rep, rep_client):
    note = make(rep.user, world.network, url="/referrals/123/")

    response = rep_client.get(f"/notifications/{note.public_id}/open/")

    assert response.status_code == 302
    assert response["Location"] == "/referrals/123/"
    note.refresh_from_db()
    assert note.read_at is not None


def test_opening_again_keeps_the_first_read_time(world, rep, rep_client):
    first_read = timezone.now() - timedelta(days=1)
    note = make(rep.user, world.network, url="/x/", read_at=first_read)
    rep_client.get(f"/notifications/{note.public_id}/open/")
    note.refresh_from_db()
    assert note.read_at == first_read


def test_opening_one_without_a_link_lands_on_the_list(world, rep, rep_client):
    note = make(rep.user, world.network, url="")
    response = rep_client.get(f"/notifications/{note.public_id}/open/")
    assert response["Location"] == "/notifications/"


@pytest.mark.parametrize("url", [
    "https://evil.example/phish",
    "//evil.example/phish",
    "/\\evil.example/phish",
    "javascript:alert(1)",
    "referrals/123/",
])
def test_opening_never_follows_a_link_off_the_site(world, rep, rep_client, url):
    note = make(rep.user, world.network, url=url)
    response = rep_client.get(f"/notifications/{note.public_id}/open/")
    assert response.status_code == 302
    assert response["Location"] == "/notifications/"
    note.refresh_from_db()
    assert note.read_at is not None


def test_opening_someone_elses_notification_is_a_404(world, rep_client):
    theirs = make(world.member(roles.PARTNER, "owner").user, world.network, url="/x/")
    response = rep_client.get(f"/notifications/{theirs.public_id}/open/")
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.read_at is None


def test_opening_own_notification_of_another_network_is_a_404(world, rep, rep_client):
    elsewhere = make(rep.user, world.other_network, url="/x/")
    response = rep_client.get(f"/notifications/{elsewhere.public_id}/open/")
    assert response.status_code == 404
    elsewhere.refresh_from_db()
    assert elsewhere.read_at is None


def test_opening_a_missing_notification_is_a_404(world, rep_client):
    response = rep_client.get("/notifications/00000000-0000-0000-0000-000000000000/open/")
    assert response.status_code == 404


# --- Read all -------------------------------------------------------------------------------

def test_read_all_marks_only_own_rows_of_this_network(world, rep, rep_client):
    mine = make(rep.user, world.network, 3)
    mine_elsewhere = make(rep.user, world.other_network)
    theirs = make(world.member(roles.PARTNER, "owner").user, world.network)

    response = rep_client.post("/notifications/read-all/", follow=True)

    assert response.redirect_chain == [("/notifications/", 302)]
    assert "All notifications are marked as read." in text(response)
    assert bell_label(response) == "Notifications"
    assert all(n.read_at for n in Notification.objects.filter(pk__in=[n.pk for n in mine]))
    mine_elsewhere.refresh_from_db()
    theirs.refresh_from_db()
    assert mine_elsewhere.read_at is None
    assert theirs.read_at is None


def test_read_all_needs_a_post(world, rep, rep_client):
    note = make(rep.user, world.network)
    assert rep_client.get("/notifications/read-all/").status_code == 405
    note.refresh_from_db()
    assert note.read_at is None


# --- Email preferences ----------------------------------------------------------------------

def test_preferences_list_every_kind_ticked_unless_muted(world, rep, rep_client):
    NotificationMute.objects.create(user=rep.user, kind="referral_message")

    body = text(rep_client.get("/notifications/preferences/"))

    for kind, label in KINDS:
        assert label in body
        ticked = f'value="{kind}" id="email-{kind}" checked' in body
        assert ticked == (kind != "referral_message"), kind


def test_saving_preferences_mutes_and_unmutes_and_notify_respects_it(
        world, rep, rep_client, django_capture_on_commit_callbacks):
    NotificationMute.objects.create(user=rep.user, kind="referral_message")
    wanted = [k for k, _ in KINDS if k != "referral_accepted"]  # untick accepted, tick message

    response = rep_client.post("/notifications/preferences/",
                               {"email": wanted + ["not_a_kind"]}, follow=True)

    assert response.redirect_chain == [("/notifications/preferences/", 302)]
    assert "Your email preferences are saved." in text(response)
    assert list(NotificationMute.objects.filter(user=rep.user)
                .values_list("kind", flat=True)) == ["referral_accepted"]

    with django_capture_on_commit_callbacks(execute=True):
        notify([rep.user], "referral_accepted", network_id=world.network.pk, title="Muted one")
        notify([rep.user], "referral_message", network_id=world.network.pk, title="Wanted one")
    assert [m.subject for m in mail.outbox if "Muted one" in m.subject] == []
    assert len([m for m in mail.outbox if "Wanted one" in m.subject]) == 1
    # The bell still has both.
    assert bell_label(rep_client.get("/")) == "Notifications, 2 unread"


def test_unticking_everything_mutes_every_kind(world, rep, rep_client):
    rep_client.post("/notifications/preferences/", {})
    assert set(NotificationMute.objects.filter(user=rep.user)
               .values_list("kind", flat=True)) == {k for k, _ in KINDS}
    # Saving the same choice twice is fine.
    assert rep_client.post("/notifications/preferences/", {}).status_code == 302


def test_preferences_are_per_user(world, rep, rep_client):
    owner = world.member(roles.PARTNER, "owner")
    NotificationMute.objects.create(user=owner.user, kind="referral_message")
    rep_client.post("/notifications/preferences/", {"email": [k for k, _ in KINDS]})
    assert NotificationMute.objects.filter(user=owner.user).count() == 1


# --- Who may come in ------------------------------------------------------------------------

@pytest.mark.parametrize("url", URLS)
def test_anonymous_is_sent_to_log_in(world, url):
    note = make(world.member(roles.PARTNER, "rep").user, world.network)
    for path in [url, f"/notifications/{note.public_id}/open/"]:
        response = Client().get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")
    assert Client().post("/notifications/read-all/")["Location"].startswith("/accounts/login/")
    note.refresh_from_db()
    assert note.read_at is None


@pytest.mark.parametrize("url", URLS)
def test_a_user_without_a_membership_here_is_told_why(world, url):
    # The foreign owner has no membership in network A.
    client = world.client_for(world.others["foreign_owner"])
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/no-membership/"
