import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_countries.fields import CountryField
from django_otp.models import Device, ThrottlingMixin
from guardian.models import UserObjectPermissionBase

from accounts import roles
from accounts.querysets import (
    AuditEventQuerySet,
    InvitationQuerySet,
    MembershipQuerySet,
    NotificationQuerySet,
    OrganizationQuerySet,
)


def public_id_field():
    return models.UUIDField(default=uuid.uuid4, unique=True, editable=False)


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email, password, **extra):
        if not email:
            raise ValueError("Users need an email address.")
        user = self.model(email=normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email, password=None, **extra):
        extra.update(is_staff=True, is_superuser=True)
        return self._create_user(email, password, **extra)

    def get_by_natural_key(self, username):
        return self.get(email=normalize_email(username))


def normalize_email(email: str) -> str:
    # One account per mailbox: emails are stored lowercased and compared that way.
    return (email or "").strip().lower()


class User(AbstractBaseUser, PermissionsMixin):
    """A global login. What it can see comes from its memberships."""

    public_id = public_id_field()
    email = models.EmailField(unique=True)
    full_name = models.CharField(max_length=150)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False, help_text="May use the Django admin.")
    email_verified_at = models.DateTimeField(null=True, blank=True)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = ["full_name"]

    def __str__(self):
        return self.email

    def get_full_name(self):
        return self.full_name or self.email

    def get_short_name(self):
        return (self.full_name or self.email).split(" ")[0]


class Network(models.Model):
    """The tenant: one referral network. Every organization belongs to exactly one."""

    public_id = public_id_field()
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True, help_text="Subdomain of the base domain.")
    domain = models.CharField(
        max_length=253, unique=True, null=True, blank=True, help_text="Custom domain, if any."
    )
    is_default = models.BooleanField(default=False)
    auto_approve_matching_domains = models.BooleanField(
        default=False,
        help_text="Approve applicants whose verified email domain matches their company website "
        "(free-mail domains excluded); such approvals are flagged for later review.",
    )
    # Two-factor sign-in (accounts.twofactor). New networks require it of the roles flagged
    # `requires_2fa`; the demo network turns it off so its logins work with a password alone.
    TWO_FACTOR_OFF, TWO_FACTOR_ROLES, TWO_FACTOR_EVERYONE = "off", "roles", "everyone"
    TWO_FACTOR_POLICIES = [
        (TWO_FACTOR_OFF, "Optional for everyone"),
        (TWO_FACTOR_ROLES, "Required for admins and finance of vendors and the operator"),
        (TWO_FACTOR_EVERYONE, "Required for every member"),
    ]
    two_factor_policy = models.CharField(
        max_length=10, choices=TWO_FACTOR_POLICIES, default=TWO_FACTOR_ROLES)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="one_default_network"
            )
        ]

    def __str__(self):
        return self.name


class Organization(models.Model):
    PENDING, ACTIVE, SUSPENDED, REJECTED = "pending", "active", "suspended", "rejected"
    STATUSES = [
        (PENDING, "Pending review"),
        (ACTIVE, "Active"),
        (SUSPENDED, "Suspended"),
        (REJECTED, "Rejected"),
    ]
    PARTNER_TYPES = [
        ("consultant", "Consultant"),
        ("agency", "Agency"),
        ("integrator", "Systems integrator"),
        ("reseller", "Reseller"),
        ("other", "Other"),
    ]

    public_id = public_id_field()
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="organizations")
    kind = models.CharField(max_length=10, choices=roles.KINDS)
    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING)
    name = models.CharField(max_length=160)
    slug = models.SlugField(max_length=80)
    website = models.URLField(blank=True)
    website_domain = models.CharField(max_length=253, blank=True)
    country = CountryField(blank=True)
    partner_type = models.CharField(max_length=20, choices=PARTNER_TYPES, blank=True)

    # Onboarding timeline: what "weeks to days" is measured with.
    applied_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    first_referral_at = models.DateTimeField(null=True, blank=True)
    rejected_at = models.DateTimeField(null=True, blank=True)
    rejection_reason = models.TextField(blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    auto_approved = models.BooleanField(default=False)
    auto_approval_reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = OrganizationQuerySet.as_manager()

    class Meta:
        permissions = [("in_portfolio", "Is in a channel manager's portfolio")]
        constraints = [
            models.UniqueConstraint(fields=["network", "slug"], name="org_slug_unique_in_network")
        ]
        indexes = [
            models.Index(fields=["network", "kind", "status", "name"]),
            models.Index(fields=["network", "status", "applied_at"]),
            models.Index(fields=["network", "website_domain"]),
        ]

    def __str__(self):
        return self.name

    @property
    def is_active(self):
        return self.status == self.ACTIVE


class OrganizationPortfolioGrant(UserObjectPermissionBase):
    """A channel manager's portfolio: guardian object grants with a direct foreign key, so scope
    filters read them as an indexed EXISTS instead of guardian's generic-key table."""

    content_object = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="portfolio_grants"
    )

    class Meta(UserObjectPermissionBase.Meta):
        indexes = [models.Index(fields=["user", "permission", "content_object"])]


class Membership(models.Model):
    ACTIVE, DEACTIVATED = "active", "deactivated"
    STATUSES = [(ACTIVE, "Active"), (DEACTIVATED, "Deactivated")]

    public_id = public_id_field()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="memberships")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                     related_name="memberships")
    role = models.CharField(max_length=20, choices=[(n, n) for n in roles.ALL_ROLE_NAMES])
    status = models.CharField(max_length=12, choices=STATUSES, default=ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)
    deactivated_at = models.DateTimeField(null=True, blank=True)

    objects = MembershipQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="one_membership_per_org")
        ]
        indexes = [
            models.Index(fields=["organization", "status", "role"]),
            models.Index(fields=["user", "status"]),
        ]

    def __str__(self):
        return f"{self.user} · {self.organization} · {self.role}"

    @property
    def role_def(self) -> roles.Role:
        return roles.role_for(self.organization.kind, self.role)

    @property
    def network_id(self):
        return self.organization.network_id

    @property
    def kind(self):
        return self.organization.kind

    @property
    def is_active(self):
        return self.status == self.ACTIVE


class Invitation(models.Model):
    public_id = public_id_field()
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE,
                                     related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=20)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["organization", "accepted_at", "revoked_at"])]

    def __str__(self):
        return f"{self.email} → {self.organization} ({self.role})"

    @property
    def is_open(self):
        return self.accepted_at is None and self.revoked_at is None

    @property
    def is_expired(self):
        return timezone.now() >= self.expires_at


class AuditEvent(models.Model):
    """Append-only record of every business action. Written only by service functions; the
    database refuses UPDATE and DELETE on this table (see the migration's trigger)."""

    public_id = public_id_field()
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                              on_delete=models.PROTECT, related_name="+")
    actor_email = models.CharField(max_length=254, blank=True)
    membership = models.ForeignKey(Membership, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    organization = models.ForeignKey(Organization, null=True, blank=True,
                                     on_delete=models.PROTECT, related_name="+",
                                     help_text="The actor's organization.")
    role = models.CharField(max_length=20, blank=True)
    action = models.CharField(max_length=60)
    target_type = models.CharField(max_length=40)
    target_id = models.CharField(max_length=64)
    target_label = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=400, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["network", "-created_at"]),
            models.Index(fields=["network", "action", "-created_at"]),
            models.Index(fields=["network", "actor", "-created_at"]),
            models.Index(fields=["network", "target_type", "target_id"]),
        ]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_email} {self.action}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AuditLogImmutable("Audit events cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditLogImmutable("Audit events cannot be deleted.")


class AuditLogImmutable(Exception):
    pass


class Notification(models.Model):
    """An in-app notification (the bell). Email copies go out unless the user muted the kind."""

    public_id = public_id_field()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="notifications")
    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=40)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    url = models.CharField(max_length=300, blank=True)
    # What a notification that asks for an action is about ("payout_batch:<id>:approval"):
    # once anyone does it, accounts.notifications.resolve() marks every copy read.
    subject = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["user", "network", "read_at", "-created_at"]),
                   models.Index(fields=["subject"], name="notification_open_subject",
                                condition=Q(read_at__isnull=True) & ~Q(subject=""))]

    def __str__(self):
        return self.title


class NotificationMute(models.Model):
    """The user does not want email for this kind of notification (the bell still shows it)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="notification_mutes")
    kind = models.CharField(max_length=40)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "kind"], name="one_mute_per_kind")]

    def __str__(self):
        return f"{self.user_id} mutes {self.kind}"


class RecoveryCodeDevice(ThrottlingMixin, Device):
    """A user's one-time recovery codes, as a django-otp device so that a session verified with
    one is as verified as one verified with the authenticator app. django-otp's own static
    device keeps its tokens in clear text; these are stored as SHA-256 digests (the codes are
    80 random bits, so a digest cannot be reversed by trying them all)."""

    class Meta(Device.Meta):
        verbose_name = "recovery code set"

    def get_throttle_factor(self):
        return getattr(settings, "OTP_TOTP_THROTTLE_FACTOR", 1)

    def verify_token(self, token):
        from accounts.twofactor import hash_recovery_code

        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        code = self.codes.filter(code_hash=hash_recovery_code(token), used_at__isnull=True)\
            .select_for_update().first()
        if code is None:
            self.throttle_increment()
            return False
        code.used_at = timezone.now()
        code.save(update_fields=["used_at"])
        self.throttle_reset()
        return True


class RecoveryCode(models.Model):
    device = models.ForeignKey(RecoveryCodeDevice, on_delete=models.CASCADE, related_name="codes")
    code_hash = models.CharField(max_length=64)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["device", "code_hash"])]

    def __str__(self):
        return f"recovery code {self.pk} ({'used' if self.used_at else 'unused'})"
