"""How django-axes names the account in a login attempt: the normalized email, so that
changing the case or padding the address does not escape a lockout."""

from accounts.models import normalize_email


def lockout_username(request, credentials=None) -> str:
    value = (credentials or {}).get("username") or request.POST.get("username", "")
    return normalize_email(value)
