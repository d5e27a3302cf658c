"""Notifications: a row per recipient for the in-app bell, plus an email unless muted.

Callers pass users and a kind from KINDS; everything is written in the caller's transaction and
the emails leave after commit.

A notification that asks for an action ("a payout batch awaits your approval") names what it is
about in `subject`; the service that does the action calls `resolve(subject)`, which marks every
recipient's copy read, so nobody is left with a request someone else already handled.
"""

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from accounts.models import Notification, NotificationMute
from partnerhub.mail import send_templated_email

KINDS = [
    ("referral_submitted", "A partner submits a referral to us"),
    ("referral_accepted", "The vendor accepts my referral"),
    ("referral_rejected", "The vendor rejects my referral"),
    ("referral_message", "A new message on a referral"),
    ("referral_withdrawn", "A partner withdraws a referral to us"),
    ("referral_won", "A referred deal is won"),
    ("referral_lost", "A referred deal is lost"),
    ("referral_assigned", "A referral is assigned to me"),
    ("protection_expiring", "A registration's protection is about to expire"),
    ("referral_expired", "A registration expired"),
    ("enrolment_requested", "A partner asks to join our program"),
    ("enrolment_decided", "A vendor decides on our enrolment"),
    ("crm_connection_error", "Our CRM connection stops working"),
    ("dispute_opened", "A dispute is opened on our deals or in my portfolio"),
    ("dispute_message", "A new message on a dispute I take part in"),
    ("dispute_updated", "A dispute I take part in moves on (response, review, withdrawal)"),
    ("dispute_decided", "A dispute I take part in is decided"),
    ("attribution_changed", "A deal's attribution to one of our referrals changes"),
    ("commissions_payable", "Commissions are ready for our approval"),
    ("commission_rejected", "The vendor rejects one of our commissions"),
    ("payout_batch", "A payout batch needs my approval, was sent or failed"),
    ("payout_sent", "A payout to us is sent"),
    ("payout_failed", "A payout to us fails"),
    ("payout_account", "Our payout account needs attention"),
]
KIND_LABELS = dict(KINDS)


def notify(users, kind: str, *, network_id, title: str, body: str = "", url: str = "",
           exclude_user=None, subject: str = "") -> int:
    """Notify each distinct active user once. Returns how many were notified. `subject` names
    the action a notification asks for, for `resolve()`."""
    if kind not in KIND_LABELS:
        raise ValueError(f"unknown notification kind {kind!r}")
    recipients = {u.pk: u for u in users if u is not None and u.is_active}
    if exclude_user is not None:
        recipients.pop(exclude_user.pk, None)
    if not recipients:
        return 0
    created = Notification.objects.bulk_create([
        Notification(user_id=pk, network_id=network_id, kind=kind, title=title[:200],
                     body=body, url=url, subject=subject)
        for pk in recipients
    ])
    by_user = {n.user_id: n for n in created}
    muted = set(NotificationMute.objects.filter(user_id__in=recipients, kind=kind)
                .values_list("user_id", flat=True))
    for pk, user in recipients.items():
        if pk not in muted:
            # Through the bell's "open" link, so reading the email clears the bell too.
            link = settings.SITE_URL + reverse("accounts:notification_open",
                                               args=[by_user[pk].public_id]) if url else ""
            send_templated_email(user.email, "notification", {
                "user": user, "title": title, "body": body, "url": link,
                "kind_label": KIND_LABELS[kind],
                "preferences_url": settings.SITE_URL + "/notifications/preferences/",
            })
    return len(recipients)


def resolve(subject: str) -> int:
    """What the notifications about `subject` asked for is done (someone approved the batch,
    no commission is left to approve): every recipient's unread copy is marked read. Runs in the
    caller's transaction. Returns how many were marked."""
    if not subject:
        return 0
    return Notification.objects.filter(subject=subject, read_at__isnull=True).update(
        read_at=timezone.now())


def unread_count(user, network_id) -> int:
    if not user.is_authenticated or network_id is None:
        return 0
    return Notification.objects.filter(user=user, network_id=network_id,
                                       read_at__isnull=True).count()
