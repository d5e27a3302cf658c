from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from accounts.models import AuditEvent, Invitation, Membership, Network, Organization, User

# The Django admin is a superuser's tool; every other person works in the product's pages.
admin.site.has_permission = lambda request: request.user.is_active and request.user.is_superuser


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "full_name", "is_active", "is_superuser", "date_joined"]
    search_fields = ["email", "full_name"]
    fieldsets = [
        (None, {"fields": ["email", "password", "full_name"]}),
        ("Status", {"fields": ["is_active", "is_staff", "is_superuser", "email_verified_at"]}),
    ]
    add_fieldsets = [(None, {"fields": ["email", "full_name", "password1", "password2"]})]
    list_filter = ["is_active", "is_superuser"]
    filter_horizontal = []


@admin.register(Network)
class NetworkAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "domain", "is_default"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "status", "network", "website_domain", "applied_at"]
    list_filter = ["kind", "status", "network"]
    search_fields = ["name", "website_domain"]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "role", "status"]
    list_filter = ["role", "status"]
    raw_id_fields = ["user", "organization"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "organization", "role", "expires_at", "accepted_at", "revoked_at"]
    exclude = ["token_hash"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor_email", "action", "target_type", "target_label"]
    list_filter = ["action"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
