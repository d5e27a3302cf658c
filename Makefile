# PartnerHub: `make run` serves the demo, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1:8000

.PHONY: run test test-setup install install-dev worker beat lint migrate seed clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

migrate: install
	$(BIN)/python manage.py migrate --noinput

seed: migrate
	$(BIN)/python manage.py seed_demo

# With eager Celery (the quick start: no REDIS_URL) there is no worker, and beat runs beside the
# server: it executes each due job inline (Task.apply_async honours task_always_eager). It stops
# with the server. With Redis, run `make worker` and `make beat` instead.
run: seed
	@if $(BIN)/python manage.py shell -v 0 -c "from django.conf import settings; \
	raise SystemExit(not settings.CELERY_TASK_ALWAYS_EAGER)"; then \
	  mkdir -p var; \
	  $(BIN)/celery -A partnerhub --quiet beat --loglevel WARNING \
	    --schedule var/celerybeat-schedule & \
	  trap "kill $$! 2>/dev/null" EXIT INT TERM; \
	fi; \
	$(BIN)/python manage.py runserver $(HOST)

# Runs against PostgreSQL and Redis from DATABASE_URL / REDIS_URL (default: the local services).
# test-setup first installs Chromium and starts the local services when it may (root or
# passwordless sudo), or stops with one line saying what to run.
test: test-setup install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-setup:
	@PYTEST_ARGS='$(subst ','"'"',$(PYTEST_ARGS))' scripts/test-setup.sh

worker: install
	$(BIN)/celery -A partnerhub worker -Q default,crm,attribution,payouts -l info

beat: install
	$(BIN)/celery -A partnerhub beat -l info --schedule var/celerybeat-schedule

lint: install-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var/partnerhub.sqlite3 staticfiles
