from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, reverse_lazy

from accounts.password_reset import SiteURLPasswordResetForm
from accounts.views.session import LoginView
from partnerhub import views
from partnerhub.securitytxt import security_txt

_reset = {"form_class": SiteURLPasswordResetForm,  # links from SITE_URL, not the Host header
          "email_template_name": "emails/password_reset.txt",
          "html_email_template_name": "emails/password_reset.html",
          "subject_template_name": "emails/password_reset.subject.txt",
          "template_name": "accounts/password_reset.html",
          "success_url": reverse_lazy("password_reset_done")}

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path(".well-known/security.txt", security_txt, name="security_txt"),
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password-reset/", auth_views.PasswordResetView.as_view(**_reset),
         name="password_reset"),
    path("accounts/password-reset/sent/", auth_views.PasswordResetDoneView.as_view(
        template_name="accounts/password_reset_done.html"), name="password_reset_done"),
    path("accounts/reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(
        template_name="accounts/password_reset_confirm.html",
        success_url=reverse_lazy("password_reset_complete")), name="password_reset_confirm"),
    path("accounts/reset/done/", auth_views.PasswordResetCompleteView.as_view(
        template_name="accounts/password_reset_complete.html"), name="password_reset_complete"),
    path("", include("accounts.urls")),
    path("", include("referrals.urls")),
    path("", include("integrations.urls")),
    path("", include("attribution.urls")),
    path("", include("payouts.urls")),
    path("django-admin/", admin.site.urls),
]
