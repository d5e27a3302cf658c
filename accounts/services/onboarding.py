"""Self-serve onboarding: apply -> verify email -> (auto-)approve or reject."""

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core import signing
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from accounts import audit, roles
from accounts.errors import ServiceError
from accounts.models import Membership, Organization, User, normalize_email
from accounts.services.guards import require
from partnerhub.domains import email_domain, is_free_mail, registrable_domain
from partnerhub.mail import send_templated_email

_VERIFY_SALT = "accounts.verify-email"


@dataclass
class Application:
    kind: str
    company_name: str
    website: str
    country: str
    full_name: str
    email: str
    password: str
    partner_type: str = ""


def _unique_slug(network, name: str) -> str:
    base = slugify(name)[:70] or "org"
    slug, n = base, 1
    taken = set(
        Organization.objects.filter(network=network, slug__startswith=base).values_list(
            "slug", flat=True
        )
    )
    while slug in taken:
        n += 1
        slug = f"{base}-{n}"
    return slug


def existing_organization_for_domain(network, domain: str):
    if not domain:
        return None
    return (
        Organization.objects.filter(
            network=network,
            website_domain=domain,
            status__in=[Organization.ACTIVE, Organization.PENDING],
        )
        .only("status", "name")
        .first()
    )


@transaction.atomic
def apply_for_organization(network, application: Application) -> Organization | None:
    """Create a pending organization with the applicant as its owner and send the verification
    email.

    The answer must not tell a stranger whether an email has an account or a domain an
    organization here. So when one of them does, nothing is created and the caller answers as
    for a new application ("check your inbox"); the news goes by email instead, to the
    mailbox of the address concerned: the existing account's owner hears that someone tried
    to apply with their address, the applicant that their company is already here (and its
    owners that someone asked). Returns None then."""
    if application.kind not in (roles.PARTNER, roles.VENDOR):
        raise ServiceError("Only partners and vendors can apply.")
    domain = registrable_domain(application.website)
    if not domain:
        raise ServiceError("Enter your company's website, e.g. acme.com.", field="website")
    email = normalize_email(application.email)
    existing_user = User.objects.filter(email=email).first()
    if existing_user is not None:
        _tell_about_an_application_in_use(network, application, existing_user)
        return None
    existing = existing_organization_for_domain(network, domain)
    if existing is not None:
        _tell_about_a_domain_in_use(network, application, email, domain, existing)
        return None
    now = timezone.now()
    try:
        with transaction.atomic():
            user = User.objects.create_user(
                email=email, password=application.password, full_name=application.full_name
            )
    except IntegrityError:  # a concurrent application with the same email won the race
        return None
    org = Organization.objects.create(
        network=network,
        kind=application.kind,
        status=Organization.PENDING,
        name=application.company_name.strip(),
        slug=_unique_slug(network, application.company_name),
        website=application.website.strip(),
        website_domain=domain,
        country=application.country.upper(),
        partner_type=application.partner_type if application.kind == roles.PARTNER else "",
        applied_at=now,
    )
    Membership.objects.create(user=user, organization=org, role=roles.OWNER_ROLE[org.kind])
    audit.record(
        "organization.applied",
        org,
        actor=user,
        after={"kind": org.kind, "name": org.name, "domain": domain,
               "country": org.country.code},
    )
    send_verification_email(user, org)
    return org


def _tell_about_an_application_in_use(network, application, user) -> None:
    make_password(application.password)  # as long as creating the account would take
    send_templated_email(user.email, "application_email_in_use", {
        "user": user, "network": network, "company_name": application.company_name.strip(),
        "login_url": settings.SITE_URL + reverse("login"),
        "reset_url": settings.SITE_URL + reverse("password_reset"),
    })


def _tell_about_a_domain_in_use(network, application, email, domain, existing) -> None:
    make_password(application.password)
    send_templated_email(email, "application_domain_in_use", {
        "full_name": application.full_name.strip(), "network": network, "domain": domain,
        "pending": existing.status == Organization.PENDING,
    })
    owners = list(User.objects.filter(
        memberships__organization=existing, memberships__status=Membership.ACTIVE,
        memberships__role=roles.OWNER_ROLE[existing.kind]).values_list("email", flat=True))
    send_templated_email(owners, "application_domain_attempt", {
        "organization": existing, "network": network, "domain": domain, "email": email,
        "full_name": application.full_name.strip(),
        "team_url": settings.SITE_URL + reverse("accounts:team"),
    })


def verification_token(user) -> str:
    return signing.dumps({"u": str(user.public_id)}, salt=_VERIFY_SALT)


def send_verification_email(user, org) -> None:
    url = settings.SITE_URL + reverse("accounts:verify_email", args=[verification_token(user)])
    send_templated_email(
        user.email,
        "verify_email",
        {"user": user, "organization": org, "url": url,
         "ttl_days": settings.EMAIL_VERIFICATION_TTL_DAYS},
    )


RESEND_INTERVAL_SECONDS = 60


def resend_verification(user) -> bool:
    """Send the verification link again (at most once a minute). False when throttled or
    there is nothing to verify."""
    from django.core.cache import cache

    if user.email_verified_at is not None:
        return False
    org = Organization.objects.filter(memberships__user=user, status=Organization.PENDING).first()
    if org is None or not cache.add(f"verify-resend:{user.pk}", 1, RESEND_INTERVAL_SECONDS):
        return False
    send_verification_email(user, org)
    return True


@transaction.atomic
def verify_email(token: str) -> User:
    """Mark the applicant's email verified; run the auto-approval rule or alert reviewers."""
    try:
        data = signing.loads(
            token, salt=_VERIFY_SALT, max_age=settings.EMAIL_VERIFICATION_TTL_DAYS * 86400
        )
    except signing.SignatureExpired:
        raise ServiceError("This verification link has expired. Log in to get a new one.") from None
    except signing.BadSignature:
        raise ServiceError("This verification link is not valid.") from None
    user = User.objects.select_for_update().filter(public_id=data["u"]).first()
    if user is None:
        raise ServiceError("This verification link is not valid.")
    if user.email_verified_at is not None:
        return user  # idempotent: a second click changes nothing
    now = timezone.now()
    user.email_verified_at = now
    user.save(update_fields=["email_verified_at"])
    audit.record("user.email_verified", user, actor=user,
                 network_id=_first_network_id(user))
    pending = Organization.objects.select_for_update().filter(
        memberships__user=user,
        memberships__role__in=set(roles.OWNER_ROLE.values()),
        status=Organization.PENDING,
        verified_at__isnull=True,
    ).select_related("network")
    for org in pending:
        org.verified_at = now
        org.save(update_fields=["verified_at"])
        if qualifies_for_auto_approval(org, user):
            _approve(org, actor=None, auto=True)
        else:
            _notify_reviewers(org)
    return user


def _first_network_id(user):
    membership = user.memberships.select_related("organization").first()
    return membership.organization.network_id if membership else None


def qualifies_for_auto_approval(org, user) -> bool:
    return (
        org.network.auto_approve_matching_domains
        and user.email_verified_at is not None
        and not is_free_mail(user.email)
        and email_domain(user.email) == org.website_domain
    )


def _notify_reviewers(org) -> None:
    reviewers = (
        Membership.objects.filter(
            organization__network_id=org.network_id,
            organization__kind=roles.OPERATOR,
            organization__status=Organization.ACTIVE,
            status=Membership.ACTIVE,
            role__in=["admin", "onboarding"],
        )
        .values_list("user__email", flat=True)
    )
    url = settings.SITE_URL + reverse("accounts:application_detail", args=[org.public_id])
    send_templated_email(list(reviewers), "application_received", {"organization": org,
                                                                    "url": url})


def _owner_emails(org) -> list[str]:
    return list(
        org.memberships.filter(status=Membership.ACTIVE, role=roles.OWNER_ROLE[org.kind])
        .values_list("user__email", flat=True)
    )


def _approve(org, *, actor, auto: bool) -> None:
    before = {"status": org.status}
    org.status = Organization.ACTIVE
    org.approved_at = timezone.now()
    org.auto_approved = auto
    org.reviewed_by = actor.user if actor else None
    org.save(update_fields=["status", "approved_at", "auto_approved", "reviewed_by"])
    audit.record(
        "organization.auto_approved" if auto else "organization.approved",
        org,
        actor=actor,
        before=before,
        after={"status": org.status, "auto_approved": auto},
    )
    from integrations import analytics

    for owner in org.memberships.filter(status=Membership.ACTIVE).select_related("user"):
        analytics.group(owner.user, org, traits={"auto_approved": auto})
    analytics.track("Organization Approved", organization_id=org.public_id,
                    properties={"kind": org.kind, "auto_approved": auto})
    send_templated_email(
        _owner_emails(org),
        "application_approved",
        {"organization": org, "url": settings.SITE_URL + reverse("login")},
    )


def _lock_pending(org) -> Organization:
    locked = Organization.objects.select_for_update().select_related("network").get(pk=org.pk)
    if locked.status != Organization.PENDING:
        raise ServiceError(f"This application was already {locked.get_status_display().lower()}.")
    return locked


@transaction.atomic
def approve_application(actor: Membership, org: Organization) -> Organization:
    require(actor, roles.APPLICATIONS_REVIEW, org)
    org = _lock_pending(org)
    if org.verified_at is None:
        raise ServiceError("The applicant has not verified their email address yet.")
    _approve(org, actor=actor, auto=False)
    return org


@transaction.atomic
def reject_application(actor: Membership, org: Organization, reason: str) -> Organization:
    require(actor, roles.APPLICATIONS_REVIEW, org)
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Give the applicant a reason.", field="reason")
    org = _lock_pending(org)
    org.status = Organization.REJECTED
    org.rejected_at = timezone.now()
    org.rejection_reason = reason
    org.reviewed_by = actor.user
    org.save(update_fields=["status", "rejected_at", "rejection_reason", "reviewed_by"])
    audit.record("organization.rejected", org, actor=actor,
                 before={"status": Organization.PENDING},
                 after={"status": org.status, "reason": reason})
    send_templated_email(_owner_emails(org), "application_rejected",
                         {"organization": org, "reason": reason})
    return org


@transaction.atomic
def confirm_auto_approval(actor: Membership, org: Organization) -> Organization:
    """A reviewer looked at an auto-approved organization after the fact and agrees."""
    require(actor, roles.APPLICATIONS_REVIEW, org)
    org = Organization.objects.select_for_update().get(pk=org.pk)
    if not org.auto_approved or org.auto_approval_reviewed_at is not None:
        raise ServiceError("There is nothing left to review for this organization.")
    org.auto_approval_reviewed_at = timezone.now()
    org.reviewed_by = actor.user
    org.save(update_fields=["auto_approval_reviewed_at", "reviewed_by"])
    audit.record("organization.auto_approval_confirmed", org, actor=actor)
    return org
