"""CRM push benchmark: referrals through the real sync engine and HubSpot connector
(hubspot-api-client) into the fake HubSpot of tests/fakes/hubspot.py, served in-process.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/partnerhub_crm_bench \
        .venv/bin/python bench/crm_push.py [--referrals 10000]

Creates the bench database if it is missing and migrates it, replaces the bench vendor's
referrals with --referrals accepted ones (bulk_create) and their outbox rows, then times
`integrations.sync.push_connection` twice: the first push (everything is created) and a re-push
of every row (everything exists: updates only). Prints referrals per second and HubSpot API
calls per referral. HubSpot's own rate limit is lifted for the run (the connection's
`requests_per_10s`): the numbers measure PartnerHub, and the line after them says what the
documented limit would allow.
"""

import argparse
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "partnerhub.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/partnerhub_crm_bench")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# The engine schedules follow-up runs with apply_async: run them in-process, never on a broker.
os.environ["CELERY_TASK_ALWAYS_EAGER"] = "1"

VENDOR_SLUG, PARTNER_SLUG = "crm-bench-vendor", "crm-bench-partner"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--referrals", type=int, default=10_000)
    return parser.parse_args()


def ensure_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql", "pgsql"):
        sys.exit("The benchmark needs PostgreSQL: set DATABASE_URL=postgres://...")
    name = parts.path.lstrip("/")
    if "bench" not in name:
        sys.exit(f"Refusing to seed {name!r}: use a database named *bench*.")
    conninfo = dict(host=parts.hostname or "127.0.0.1", port=parts.port or 5432,
                    user=parts.username or "postgres", dbname="postgres")
    if parts.password:
        conninfo["password"] = parts.password
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"Created database {name}.", file=sys.stderr)


def seed(count: int, fake):
    """The bench vendor with `count` accepted referrals, a HubSpot connection to the fake and
    one due outbox row per referral."""
    from django.db import transaction
    from django.utils import timezone

    from accounts import roles
    from accounts.models import Network, Organization, User
    from integrations.models import CrmConnection, SyncRecord
    from referrals.models import Program, Referral

    network = Network.objects.filter(is_default=True).first() or Network.objects.create(
        name="Northwind", slug="northwind", is_default=True)
    now = timezone.now()

    def org(slug, kind, name):
        return Organization.objects.get_or_create(slug=slug, network=network, defaults=dict(
            kind=kind, name=name, status=Organization.ACTIVE, website=f"https://{slug}.example",
            website_domain=f"{slug}.example", applied_at=now, approved_at=now))[0]

    vendor = org(VENDOR_SLUG, roles.VENDOR, "Bench Vendor")
    partner = org(PARTNER_SLUG, roles.PARTNER, "Bench Partner")
    user = User.objects.get_or_create(email="crm-bench@partnerhub.example",
                                      defaults={"full_name": "CRM Bench"})[0]
    program = Program.objects.get_or_create(vendor=vendor, name="Bench program", defaults=dict(
        terms="Bench.", status=Program.ACTIVE, accepted_currencies=["USD"]))[0]
    with transaction.atomic():
        CrmConnection.objects.filter(vendor=vendor).delete()
        Referral.objects.filter(vendor=vendor).delete()
        Referral.objects.bulk_create([Referral(
            network=network, program=program, vendor=vendor, partner=partner,
            submitted_by=user, status=Referral.ACCEPTED, company_name=f"Bench Customer {n}",
            website=f"https://customer{n}.example", domain=f"customer{n}.example",
            normalized_name=f"bench customer {n}", country="US", contact_name="Jane Buyer",
            contact_email=f"jane@customer{n}.example", contact_phone="+14155550100",
            amount_minor=2_500_000 + n, currency="USD", notes="Seeded by bench/crm_push.py",
            submitted_at=now, decided_at=now) for n in range(count)], batch_size=2000)
        connection = CrmConnection(
            vendor=vendor, provider=CrmConnection.HUBSPOT, base_url=fake.url,
            object_mode="company_contact_deal", pipeline_id="default",
            stage_mapping={"appointmentscheduled": "open", "closedwon": "won",
                           "closedlost": "lost"}, webhook_token="crm-bench")
        connection.credentials = {"access_token": fake.token,
                                  "requests_per_10s": 1_000_000_000}
        connection.save()
        SyncRecord.objects.bulk_create(
            [SyncRecord(connection=connection, referral=r)
             for r in Referral.objects.filter(vendor=vendor).only("pk")], batch_size=2000)
    return connection


def time_connector_calls() -> dict:
    """Wrap HubSpotConnector.push to split the run into the connector's share (the SDK, HTTP
    and the in-process fake server) and the engine's (claiming rows, building payloads,
    recording outcomes)."""
    from integrations.hubspot.connector import HubSpotConnector

    spent = {"push": 0.0}
    push = HubSpotConnector.push

    def timed(self, payloads):
        started = time.perf_counter()
        try:
            return push(self, payloads)
        finally:
            spent["push"] += time.perf_counter() - started

    HubSpotConnector.push = timed
    return spent


def timed_push(connection, fake, spent: dict, label: str, count: int) -> None:
    from integrations import sync
    from integrations.models import SyncRecord

    fake.calls.clear()
    spent["push"] = 0.0
    started = time.perf_counter()
    summary = Counter()
    while True:  # one run drains everything due; loop only if something was re-queued
        result = sync.push_connection(connection.pk)
        summary.update(result)
        if not result["pushed"] and not result["retry"]:
            break
    elapsed = time.perf_counter() - started
    done = SyncRecord.objects.filter(connection=connection, status=SyncRecord.DONE).count()
    calls = fake.total_calls
    print(f"{label}: {count} referrals in {elapsed:.2f} s = {count / elapsed:,.0f} referrals/s; "
          f"{calls} HubSpot API calls = {calls / count:.3f} per referral; "
          f"done {done}/{count}; {dict(summary)}")
    print(f"    connector.push (SDK + HTTP + fake server) {spent['push']:.2f} s, "
          f"engine {elapsed - spent['push']:.2f} s")
    print("    calls: " + ", ".join(f"{k} {v}" for k, v in sorted(fake.calls.items())))


def main():
    args = parse_args()
    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command
    from pytest_httpserver import HTTPServer

    from integrations.hubspot.connector import CALLS_PER_PUSH, REQUESTS_PER_10S
    from integrations.models import SyncRecord
    from tests.fakes.hubspot import FakeHubSpot

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    call_command("migrate", interactive=False, verbosity=0)
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    try:
        fake = FakeHubSpot(server)
        spent = time_connector_calls()
        started = time.perf_counter()
        connection = seed(args.referrals, fake)
        print(f"Seeded {args.referrals} accepted referrals and outbox rows in "
              f"{time.perf_counter() - started:.1f} s.")
        timed_push(connection, fake, spent, "first push", args.referrals)
        assert len(fake.objects["deals"]) == args.referrals, "every referral became one deal"
        SyncRecord.objects.filter(connection=connection).update(status=SyncRecord.PENDING,
                                                                attempts=0)
        timed_push(connection, fake, spent, "re-push   ", args.referrals)
        assert len(fake.objects["deals"]) == args.referrals, "a re-push creates nothing"
        ceiling = REQUESTS_PER_10S // CALLS_PER_PUSH * 100 / 10
        print(f"Under HubSpot's documented {REQUESTS_PER_10S} requests / 10 s "
              f"(PartnerHub's default pacing) a connection pushes at most {ceiling:,.0f} "
              "referrals/s.")
    finally:
        server.clear()
        server.stop()


if __name__ == "__main__":
    main()
