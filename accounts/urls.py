from django.urls import path

from accounts.views import (
    audit,
    members,
    network,
    notifications,
    onboarding,
    session,
    twofactor,
)

app_name = "accounts"

urlpatterns = [
    path("accounts/no-membership/", session.no_membership, name="no_membership"),
    path("switch/", session.switch, name="switch"),
    # Two-factor sign-in
    path("accounts/two-factor/verify/", twofactor.verify, name="two_factor_verify"),
    path("accounts/two-factor/setup/", twofactor.enrol, name="two_factor_enrol"),
    path("accounts/two-factor/", twofactor.security, name="two_factor_security"),
    path("accounts/two-factor/recovery-codes/", twofactor.recovery_codes_regenerate,
         name="two_factor_recovery_codes"),
    path("accounts/two-factor/turn-off/", twofactor.turn_off, name="two_factor_turn_off"),
    path("team/<uuid:public_id>/two-factor/reset/", twofactor.member_reset,
         name="member_two_factor_reset"),
    # Onboarding
    path("apply/<str:kind>/", onboarding.apply, name="apply"),
    path("apply-done/", onboarding.apply_done, name="apply_done"),
    path("verify/resend/", onboarding.resend_verification, name="resend_verification"),
    path("verify/<str:token>/", onboarding.verify_email, name="verify_email"),
    path("network/applications/", onboarding.application_queue, name="application_queue"),
    path("network/applications/<uuid:public_id>/", onboarding.application_detail,
         name="application_detail"),
    path("network/applications/<uuid:public_id>/approve/", onboarding.application_approve,
         name="application_approve"),
    path("network/applications/<uuid:public_id>/reject/", onboarding.application_reject,
         name="application_reject"),
    path("network/applications/<uuid:public_id>/confirm/", onboarding.application_confirm,
         name="application_confirm"),
    # Team
    path("team/", members.team, name="team"),
    path("team/<uuid:public_id>/role/", members.member_role, name="member_role"),
    path("team/<uuid:public_id>/deactivate/", members.member_deactivate,
         name="member_deactivate"),
    path("team/invitations/<uuid:public_id>/revoke/", members.invitation_revoke,
         name="invitation_revoke"),
    path("invitations/<str:token>/", members.accept_invitation, name="accept_invitation"),
    # Network operator
    path("network/organizations/", network.organizations, name="organizations"),
    path("network/organizations/<uuid:public_id>/", network.organization_detail,
         name="organization_detail"),
    path("network/organizations/<uuid:public_id>/portfolio/add/", network.portfolio_add,
         name="portfolio_add"),
    path("network/organizations/<uuid:public_id>/portfolio/remove/", network.portfolio_remove,
         name="portfolio_remove"),
    path("network/users/", network.user_lookup, name="user_lookup"),
    path("network/settings/", network.network_settings, name="network_settings"),
    path("network/audit/", audit.audit_log, name="audit_log"),
    path("network/audit/export.csv", audit.audit_export, name="audit_export"),
    # Notifications (the bell)
    path("notifications/", notifications.notifications, name="notifications"),
    path("notifications/<uuid:public_id>/open/", notifications.notification_open,
         name="notification_open"),
    path("notifications/read-all/", notifications.notifications_read_all,
         name="notifications_read_all"),
    path("notifications/preferences/", notifications.notification_preferences,
         name="notification_preferences"),
]
