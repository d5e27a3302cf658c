# PartnerHub application image: gunicorn (web), Celery worker and Celery beat all run from it.
# See docker-compose.yml and the README's "Docker compose" section.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app

# The code in /app stays owned by root (read-only to the app); the user may write only var/ and
# its home (gunicorn keeps its control socket there).
RUN groupadd --system --gid 10001 partnerhub \
    && useradd --system --uid 10001 --gid partnerhub --create-home --home-dir /home/partnerhub \
       --shell /usr/sbin/nologin partnerhub

# Dependencies first, in their own layer: `pip install .` on pyproject.toml alone installs every
# runtime dependency (and an empty "partnerhub" distribution), so this layer is rebuilt only
# when pyproject.toml changes. The code itself runs from /app (PYTHONPATH): settings find
# templates/ and static files beside the packages, not inside site-packages.
COPY pyproject.toml ./
RUN pip install . && rm -rf build *.egg-info

COPY . .

# Static files are collected at build time with the production storage (WhiteNoise's
# CompressedManifestStaticFilesStorage writes the manifest that production pages need).
# DJANGO_ENV=production refuses the development keys, so throwaway build-only values are given
# here; they exist only for this one command and are never part of the image's environment.
RUN DJANGO_ENV=production \
    SECRET_KEY=build-only-collectstatic-key-not-used-at-runtime-0123456789abcdef \
    FIELD_ENCRYPTION_KEY=build-only-collectstatic \
    python manage.py collectstatic --noinput \
    && mkdir -p var/media \
    && chown -R partnerhub:partnerhub var

USER partnerhub

EXPOSE 8000

# gunicorn reads WEB_CONCURRENCY for its worker count (compose sets it). Forwarded headers are
# left to Django (TRUSTED_PROXIES); gunicorn itself trusts them only from 127.0.0.1.
CMD ["gunicorn", "partnerhub.wsgi:application", "--bind", "0.0.0.0:8000", "--access-logfile", "-"]
