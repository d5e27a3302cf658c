from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Identity and access"

    def ready(self):
        # Connects the user_logged_in receiver that flags logins made without a code.
        from accounts import twofactor  # noqa: F401
