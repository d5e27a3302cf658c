"""EMAIL_URL is read as the README writes it (finding 6)."""

from partnerhub.env import envemail


def test_a_file_url_keeps_its_absolute_path(monkeypatch):
    monkeypatch.setenv("EMAIL_URL", "file:///var/mail/partnerhub")
    config = envemail("EMAIL_URL", "console:")
    assert config["EMAIL_BACKEND"] == "django.core.mail.backends.filebased.EmailBackend"
    assert config["EMAIL_FILE_PATH"] == "/var/mail/partnerhub"


def test_a_file_url_with_a_relative_path_stays_relative(monkeypatch):
    monkeypatch.setenv("EMAIL_URL", "file://var/mail")
    assert envemail("EMAIL_URL", "console:")["EMAIL_FILE_PATH"] == "var/mail"


def test_smtp_and_the_default_still_parse(monkeypatch):
    monkeypatch.setenv("EMAIL_URL", "smtp://user:pass@mail.example:587/?tls=True")
    config = envemail("EMAIL_URL", "console:")
    assert (config["EMAIL_HOST"], config["EMAIL_PORT"], config["EMAIL_USE_TLS"]) == (
        "mail.example", 587, True)
    monkeypatch.delenv("EMAIL_URL")
    assert envemail("EMAIL_URL", "console:")["EMAIL_BACKEND"].endswith("console.EmailBackend")


def test_the_settings_module_uses_the_absolute_path():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; "
         "print(settings.EMAIL_FILE_PATH)"],
        cwd=root, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "partnerhub.settings",
             "EMAIL_URL": "file:///var/mail/partnerhub"})
    assert out.stdout.strip() == "/var/mail/partnerhub", out.stderr
