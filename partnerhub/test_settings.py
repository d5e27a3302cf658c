"""Test settings: real PostgreSQL and Redis (from DATABASE_URL / REDIS_URL, defaulting to the
local services), fast hashing, in-memory email, eager Celery for on-commit tasks."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/partnerhub")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")

from partnerhub.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
CELERY_TASK_ALWAYS_EAGER = True
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ["REDIS_URL"],
        "KEY_PREFIX": f"partnerhub-test-{os.getpid()}",  # parallel runs share one Redis
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.db"
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
ALLOWED_HOSTS = ["*"]
PARTNERHUB_BASE_DOMAIN = "partnerhub.test"
LOGGING["root"]["level"] = "WARNING"  # noqa: F405

# A test database per test process, so parallel runs on one server never trip over each other.
DATABASES["default"]["TEST"] = {  # noqa: F405
    "NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"  # noqa: F405
}
