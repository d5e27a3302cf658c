"""The bell: a user's own notifications in the current network, and which kinds they get by email.

Notifications belong to a person rather than an organization, so there is no permission to check
beyond holding a membership here; `visible_to` narrows to the user and the network.
"""

from django.contrib import messages
from django.db import transaction
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.decorators import membership_required
from accounts.models import Notification, NotificationMute
from accounts.notifications import KINDS
from accounts.permissions import get_object_for
from partnerhub.pagination import paginate
from partnerhub.redirects import is_local_url


@membership_required
@require_http_methods(["GET", "HEAD"])
def notifications(request):
    rows = Notification.objects.visible_to(request.membership).order_by("-created_at", "-pk")
    return render(request, "accounts/notifications.html", {"page": paginate(request, rows)})


@membership_required
@require_http_methods(["GET", "HEAD"])
def notification_open(request, public_id):
    notification = get_object_for(request.membership, Notification, public_id)
    Notification.objects.visible_to(request.membership).filter(pk=notification.pk).mark_read()
    if is_local_url(notification.url):
        return redirect(notification.url)
    return redirect("accounts:notifications")


@membership_required
@require_POST
def notifications_read_all(request):
    marked = Notification.objects.visible_to(request.membership).mark_read()
    if marked:
        messages.success(request, "All notifications are marked as read.")
    return redirect("accounts:notifications")


@membership_required
@require_http_methods(["GET", "HEAD", "POST"])
def notification_preferences(request):
    if request.method == "POST":
        _save_email_preferences(request.user, set(request.POST.getlist("email")))
        messages.success(request, "Your email preferences are saved.")
        return redirect("accounts:notification_preferences")
    muted = set(NotificationMute.objects.filter(user=request.user)
                .values_list("kind", flat=True))
    return render(request, "accounts/notification_preferences.html", {
        "kinds": [(kind, label, kind not in muted) for kind, label in KINDS],
    })


@transaction.atomic
def _save_email_preferences(user, emailed: set[str]) -> None:
    """Mute every known kind that is not ticked; unknown kinds in the form are ignored, and mutes
    for kinds that no longer exist are left alone."""
    known = {kind for kind, _ in KINDS}
    emailed &= known
    NotificationMute.objects.filter(user=user, kind__in=emailed).delete()
    NotificationMute.objects.bulk_create(
        [NotificationMute(user=user, kind=kind) for kind in sorted(known - emailed)],
        ignore_conflicts=True,
    )
