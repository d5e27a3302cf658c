# PartnerHub: `make run` serves the demo, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1:8000

.PHONY: run test install install-dev worker beat lint migrate seed clean

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

run: seed
	$(BIN)/python manage.py runserver $(HOST)

# Runs against PostgreSQL and Redis from DATABASE_URL / REDIS_URL (default: the local services).
test: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

worker: install
	$(BIN)/celery -A partnerhub worker -Q default,crm,attribution,payouts -l info

beat: install
	$(BIN)/celery -A partnerhub beat -l info --schedule var/celerybeat-schedule

lint: install-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var/partnerhub.sqlite3 staticfiles
