"""Strict readers for environment variables (settings come only from here)."""

import os

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name} must be a boolean (true/false), got {raw!r}")


def envint(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def envlist(name: str, default: str = "") -> list[str]:
    """Comma-separated list; blanks dropped."""
    raw = os.environ.get(name, default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def envemail(name: str, default: str) -> dict:
    """Django's email settings from an email URL (dj-email-url), with file paths read right.

    dj-email-url drops the first character of the path, so `file:///var/mail` would write to
    `var/mail` under the current folder. Everything after `file://` is the path here:
    `file:///var/mail` is absolute, `file://var/mail` relative.
    """
    import urllib.parse

    import dj_email_url

    raw = os.environ.get(name) or default
    config = dj_email_url.parse(raw)
    parsed = urllib.parse.urlsplit(raw)
    if parsed.scheme == "file":
        config["EMAIL_FILE_PATH"] = urllib.parse.unquote(parsed.netloc + parsed.path)
        config["EMAIL_HOST"] = None
    return config
