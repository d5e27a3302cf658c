"""Production mode refuses insecure defaults and passes Django's deployment checks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOOD = {
    "DJANGO_ENV": "production",
    "SECRET_KEY": "k" * 20 + "-production-secret-for-the-deploy-check-" + "x" * 20,
    "FIELD_ENCRYPTION_KEY": "a-real-encryption-key-for-this-test",
    "ALLOWED_HOSTS": "partners.example.com",
    "DATABASE_URL": "sqlite:////tmp/partnerhub-deploy-check.sqlite3",
}


def manage(*args, **env):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DJANGO_SETTINGS_MODULE", "SECRET_KEY", "FIELD_ENCRYPTION_KEY",
                          "DJANGO_ENV", "DEBUG",
                          # set for Playwright by tests/browser/conftest.py in this process
                          "DJANGO_ALLOW_ASYNC_UNSAFE")}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**clean, "DJANGO_SETTINGS_MODULE": "partnerhub.settings",
                                          **env}, timeout=120)


@pytest.mark.parametrize("missing,message", [
    ("SECRET_KEY", "SECRET_KEY"),
    ("FIELD_ENCRYPTION_KEY", "FIELD_ENCRYPTION_KEY"),
])
def test_production_refuses_to_start_with_a_default_secret(missing, message):
    env = {k: v for k, v in GOOD.items() if k != missing}
    result = manage("check", **env)
    assert result.returncode != 0
    assert message in result.stderr


def test_production_refuses_debug():
    result = manage("check", **GOOD, DEBUG="true")
    assert result.returncode != 0 and "DEBUG" in result.stderr


def test_production_passes_the_deploy_check():
    result = manage("check", "--deploy", "--fail-level", "ERROR", **GOOD)
    assert result.returncode == 0, result.stderr
    # Only the deliberate HSTS-preload opt-in may remain as a warning.
    warnings = [line for line in result.stderr.splitlines() if "(security." in line]
    assert all("security.W021" in line for line in warnings), warnings


def test_production_refuses_stripe_without_a_webhook_secret():
    result = manage("check", **GOOD, STRIPE_API_KEY="sk_live_example")
    assert result.returncode != 0 and "STRIPE_WEBHOOK_SECRET" in result.stderr
    fine = manage("check", **GOOD, STRIPE_API_KEY="sk_live_example",
                  STRIPE_WEBHOOK_SECRET="whsec_example")
    assert fine.returncode == 0, fine.stderr


def test_production_sends_the_content_security_and_permissions_policies():
    script = ("from django.conf import settings as s; import json; print(json.dumps("
              "[s.MIDDLEWARE, s.CONTENT_SECURITY_POLICY['DIRECTIVES'], s.PERMISSIONS_POLICY,"
              " s.EMAIL_BACKEND, s.EMAIL_FILE_PATH], default=repr))")
    result = manage("shell", "-c", script, **GOOD, EMAIL_URL="file:///var/mail/partnerhub")
    assert result.returncode == 0, result.stderr
    import json

    middleware, csp, permissions, backend, path = json.loads(result.stdout.splitlines()[-1])
    assert "csp.middleware.CSPMiddleware" in middleware
    assert "partnerhub.middleware.PermissionsPolicyMiddleware" in middleware
    assert csp["script-src"][0] == csp["style-src"][0] == "'self'"
    assert "NONCE" in csp["script-src"][1].upper() and "NONCE" in csp["style-src"][1].upper()
    assert not any("unsafe" in source for sources in csp.values() for source in sources)
    assert permissions["camera"] == [] and permissions["geolocation"] == []
    assert (backend, path) == ("django.core.mail.backends.filebased.EmailBackend",
                               "/var/mail/partnerhub")
