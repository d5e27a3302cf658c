"""Messages between partner and vendor on a referral, and vendor-internal notes."""

from django.db import transaction

from accounts import roles
from accounts.errors import PermissionDenied, ServiceError
from accounts.models import Membership
from accounts.permissions import can
from referrals.models import Referral, TimelineEntry
from referrals.other_partners import check_referral_text
from referrals.services.events import notify_submitter, notify_vendor_deciders

MAX_LENGTH = 5000


def may_post(membership, referral) -> bool:
    """Partners and vendors in scope talk on a referral; read-only roles and operators read."""
    if not can(membership, roles.REFERRAL_VIEW, referral) or membership.role_def.read_only:
        return False
    return membership.organization_id in (referral.partner_id, referral.vendor_id)


@transaction.atomic
def post_message(actor: Membership, referral: Referral, body: str,
                 internal: bool = False) -> TimelineEntry:
    if not may_post(actor, referral):
        raise PermissionDenied()
    body = (body or "").strip()
    if not body:
        raise ServiceError("Write a message first.", field="body")
    if len(body) > MAX_LENGTH:
        raise ServiceError(f"Keep messages under {MAX_LENGTH} characters.", field="body")
    from_vendor = actor.organization_id == referral.vendor_id
    if internal and not from_vendor:
        raise PermissionDenied()
    if from_vendor and not internal:
        check_referral_text(body, referral, "body")  # the partner reads it
    entry = TimelineEntry.objects.create(
        referral=referral, kind=TimelineEntry.NOTE if internal else TimelineEntry.MESSAGE,
        visibility=TimelineEntry.VENDOR_ONLY if internal else TimelineEntry.EVERYONE,
        author=actor.user, author_organization_id=actor.organization_id, body=body)
    if internal:
        return entry
    title = f"New message on {referral.company_name}"
    excerpt = body[:300]
    if from_vendor:
        notify_submitter(referral, "referral_message", title, excerpt, exclude=actor.user)
    else:
        notify_vendor_deciders(referral, "referral_message", title, excerpt, exclude=actor.user)
    return entry
