"""PartnerHub settings: twelve-factor, every value from the environment.

With nothing set, the app runs as a zero-config quickstart: SQLite under var/, eager Celery,
console email. DJANGO_ENV=production refuses insecure defaults.
"""

from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from partnerhub.env import envbool, envemail, envint, envlist, envstr

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

DJANGO_ENV = envstr("DJANGO_ENV", "development")
PRODUCTION = DJANGO_ENV == "production"

_DEV_SECRET_KEY = "dev-insecure-secret-key-change-me-in-production"
_DEV_ENCRYPTION_KEY = "dev-insecure-field-encryption-key"

SECRET_KEY = envstr("SECRET_KEY", _DEV_SECRET_KEY)
FIELD_ENCRYPTION_KEYS = envlist("FIELD_ENCRYPTION_KEY", _DEV_ENCRYPTION_KEY)
DEBUG = envbool("DEBUG", not PRODUCTION)

if PRODUCTION:
    if SECRET_KEY == _DEV_SECRET_KEY or len(SECRET_KEY) < 50:
        raise ImproperlyConfigured("Set SECRET_KEY to a random string of 50+ characters.")
    if _DEV_ENCRYPTION_KEY in FIELD_ENCRYPTION_KEYS:
        raise ImproperlyConfigured("Set FIELD_ENCRYPTION_KEY to a real key.")
    if DEBUG:
        raise ImproperlyConfigured("DEBUG must be off in production.")

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "" if PRODUCTION else "127.0.0.1,localhost,.localhost")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")
# Networks on subdomains of this domain are found by slug (acme.partnerhub.example).
PARTNERHUB_BASE_DOMAIN = envstr("PARTNERHUB_BASE_DOMAIN", "")
SITE_URL = envstr("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

# --- Behind a proxy / CDN --------------------------------------------------------------
# Forwarded headers are trusted only when the peer is one of these proxies (CIDRs).
TRUSTED_PROXIES = envlist("TRUSTED_PROXIES")
# Header that carries the real client IP from a trusted proxy: X-Forwarded-For, or
# CF-Connecting-IP behind Cloudflare.
CLIENT_IP_HEADER = envstr("CLIENT_IP_HEADER", "X-Forwarded-For")
if TRUSTED_PROXIES:
    USE_X_FORWARDED_HOST = envbool("USE_X_FORWARDED_HOST", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "django_countries",
    "django.contrib.postgres",
    "guardian",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "partnerhub",
    "accounts",
    "referrals",
    "attribution",
    "payouts",
    "integrations",
]

MIDDLEWARE = [
    "partnerhub.middleware.ClientIPMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "partnerhub.middleware.PermissionsPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "partnerhub.middleware.TenancyMiddleware",
    "accounts.twofactor.TwoFactorMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "partnerhub.urls"
WSGI_APPLICATION = "partnerhub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "partnerhub.context_processors.tenancy",
            ],
        },
    },
]

VAR_DIR.mkdir(exist_ok=True)
DATABASES = {
    "default": dj_database_url.parse(
        envstr("DATABASE_URL", f"sqlite:///{VAR_DIR / 'partnerhub.sqlite3'}"),
        conn_max_age=envint("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Login lockout: 5 failures for one email from one IP lock that pair out for 15 minutes.
AXES_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = envint("LOGIN_LOCKOUT_MINUTES", 15) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "partnerhub.clientip.client_ip"
AXES_USERNAME_FORM_FIELD = "username"
AXES_USERNAME_CALLABLE = "accounts.lockout.lockout_username"
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

GUARDIAN_RAISE_403 = False
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user row

# --- Redis: cache, sessions, Celery --------------------------------------------------
REDIS_URL = envstr("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "partnerhub",
        }
    }
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Without Redis tasks run eagerly; the in-memory broker still gets a host name, or kombu warns
# "No hostname was supplied" each time an eager task picks its serializer.
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "integrations.*": {"queue": "crm"},
    "attribution.*": {"queue": "attribution"},
    "payouts.*": {"queue": "payouts"},
}
# Every schedule lives here; each task is safe to run twice. Later issues add their jobs.
CELERY_BEAT_SCHEDULE = {
    "referral-protection": {
        "task": "referrals.tasks.daily_protection_job",
        "schedule": crontab(hour=6, minute=0),
    },
    "crm-push-safety-net": {"task": "integrations.tasks.push_due", "schedule": 60},
    "crm-poll": {"task": "integrations.tasks.poll_all", "schedule": 5 * 60},
    "commission-release": {"task": "payouts.tasks.release_commissions",
                           "schedule": crontab(minute=15)},
    "commission-reconcile": {"task": "payouts.tasks.reconcile_commissions",
                             "schedule": crontab(hour=3, minute=30)},
    # Every minute: it also makes the automatic retries of transient transfer failures.
    "payout-sweep": {"task": "payouts.tasks.sweep_stuck_payouts", "schedule": 60},
    "payout-batch-sweep": {"task": "payouts.tasks.sweep_stuck_batches", "schedule": 5 * 60},
    "common-name-words": {"task": "attribution.tasks.recount_common_words",
                          "schedule": crontab(hour=2, minute=45)},
    "tax-form-expiry": {"task": "payouts.tasks.expire_tax_forms",
                        "schedule": crontab(hour=4, minute=0)},
}

# --- Email -----------------------------------------------------------------------------
vars().update(envemail("EMAIL_URL", "smtp://localhost:25" if PRODUCTION else "console:"))
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "PartnerHub <no-reply@partnerhub.localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Static files ----------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
# Outside production, serve straight from the apps' static folders (no collectstatic needed).
WHITENOISE_AUTOREFRESH = not PRODUCTION
WHITENOISE_USE_FINDERS = not PRODUCTION
MEDIA_ROOT = Path(envstr("MEDIA_ROOT", str(VAR_DIR / "media")))

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Security --------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Content-Security-Policy (django-csp): scripts and styles only from this site and carrying
# the response's nonce (request.csp_nonce, used by templates/base.html); no inline handlers or
# style attributes, no eval, no framing, no plugins.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "frame-ancestors": [NONE],
    },
}
# Permissions-Policy (partnerhub.middleware): browser features no page needs, off everywhere.
PERMISSIONS_POLICY = {feature: [] for feature in (
    "accelerometer", "autoplay", "camera", "display-capture", "geolocation", "gyroscope",
    "magnetometer", "microphone", "midi", "payment", "publickey-credentials-get",
    "screen-wake-lock", "serial", "usb", "xr-spatial-tracking")}
# Where to report a security problem (/.well-known/security.txt): an email address or https
# URL; empty means security@ the host of SITE_URL.
SECURITY_CONTACT = envstr("SECURITY_CONTACT", "")
if PRODUCTION:
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 60 * 60 * 24 * 365)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", False)

# --- Analytics (Segment); disabled without a write key --------------------------------
SEGMENT_WRITE_KEY = envstr("SEGMENT_WRITE_KEY", "")
SEGMENT_HOST = envstr("SEGMENT_HOST", "")  # default: Segment's own API
SEGMENT_SYNC_MODE = envbool("SEGMENT_SYNC_MODE", False)

# --- Payments (Stripe Connect); payouts stay off without an API key -------------------
STRIPE_API_KEY = envstr("STRIPE_API_KEY", "")
STRIPE_WEBHOOK_SECRET = envstr("STRIPE_WEBHOOK_SECRET", "")
# Stripe's own addresses by default; tests point the real SDK at a local fake.
STRIPE_API_BASE = envstr("STRIPE_API_BASE", "")
STRIPE_CONNECT_BASE = envstr("STRIPE_CONNECT_BASE", "")
STRIPE_MAX_NETWORK_RETRIES = envint("STRIPE_MAX_NETWORK_RETRIES", 2)
# The platform account's country: partners elsewhere get connected accounts under Stripe's
# `recipient` service agreement, the only one it pays out to across borders.
STRIPE_PLATFORM_COUNTRY = envstr("STRIPE_PLATFORM_COUNTRY", "US").strip().upper()
if not (len(STRIPE_PLATFORM_COUNTRY) == 2 and STRIPE_PLATFORM_COUNTRY.isascii()
        and STRIPE_PLATFORM_COUNTRY.isalpha()):
    raise ImproperlyConfigured("STRIPE_PLATFORM_COUNTRY must be a two-letter country code.")
if PRODUCTION and STRIPE_API_KEY and not STRIPE_WEBHOOK_SECRET:
    # Without it every webhook is refused: account states would never update.
    raise ImproperlyConfigured("Set STRIPE_WEBHOOK_SECRET when STRIPE_API_KEY is set.")

# --- Product settings ------------------------------------------------------------------
INVITATION_TTL_DAYS = envint("INVITATION_TTL_DAYS", 7)
EMAIL_VERIFICATION_TTL_DAYS = envint("EMAIL_VERIFICATION_TTL_DAYS", 3)
DEMO_PASSWORD = envstr("DEMO_PASSWORD", "partnerhub-demo")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"},
                "celery.app.trace": {"level": "WARNING" if not PRODUCTION else "INFO"}},
}

# Tasks told (after commit) which attributions changed: commissions follow attributions.
ATTRIBUTION_CHANGE_TASKS = ["payouts.tasks.sync_commissions"]
