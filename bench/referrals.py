"""Referral list and conflict-check benchmark at scale, on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/partnerhub_bench \
        .venv/bin/python bench/referrals.py [--scale 200000] [--runs 50]

Creates the bench database if it is missing, migrates, seeds the demo network and tops the
referrals up to --scale (only the missing amount, so reruns are quick), runs VACUUM ANALYZE and
then times, per scenario, `--runs` requests through django.test.Client (the whole server side:
middleware, view, queries, template) or direct calls of the conflict check. Prints p50/p95 in
milliseconds, the number of SQL queries of a run and the median time spent in them.
See bench/README.md.
"""

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchdb import ensure_database  # noqa: E402 (the script's own folder is on the path)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "partnerhub.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/partnerhub_bench")
os.environ.setdefault("DEBUG", "0")  # time what production runs, not the debug machinery
os.environ.setdefault("LOG_LEVEL", "WARNING")

HOST = "127.0.0.1"
PARTNER_OWNER = "owner@brightpath.example"
PARTNER_REP = "rep@brightpath.example"
VENDOR = "partnerships@acmecloud.example"
OPERATOR = "admin@northwind.example"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=200_000,
                        help="total referrals in the bench database (default 200000)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per scenario")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs per scenario")
    parser.add_argument("--only", default="", help="run only scenarios containing this text")
    parser.add_argument("--explain", action="store_true",
                        help="print EXPLAIN ANALYZE of each scenario's slowest query")
    parser.add_argument("--force", action="store_true",
                        help="allow a database whose name does not contain 'bench'")
    return parser.parse_args()


def prepare(scale: int) -> None:
    from django.core.management import call_command
    from django.db import connection

    from referrals import demo
    from referrals.models import Referral

    started = time.perf_counter()
    call_command("migrate", interactive=False, verbosity=0)
    call_command("seed_demo", verbosity=0, stdout=open(os.devnull, "w"))
    missing = scale - Referral.objects.count()
    if missing > 0:
        print(f"Generating {missing} referrals...", file=sys.stderr)
        demo.seed_scale(missing)
    with connection.cursor() as cursor:
        # Autovacuum would get there on its own after a bulk load; do it now so that every
        # run sees the same statistics and visibility map.
        cursor.execute("VACUUM ANALYZE referrals_referral")
        cursor.execute("ANALYZE")
    print(f"Prepared {Referral.objects.count()} referrals in "
          f"{time.perf_counter() - started:.1f}s.", file=sys.stderr)


def client_for(email: str):
    from django.test import Client

    from accounts.models import Membership

    membership = Membership.objects.select_related("user").get(
        user__email=email, status="active")
    client = Client(HTTP_HOST=HOST)
    client.force_login(membership.user, backend="django.contrib.auth.backends.ModelBackend")
    session = client.session
    session["active_membership"] = str(membership.public_id)
    session.save()
    return client


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def measure(name, call, runs, warmup, explain):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    sql_time = [0.0]

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            sql_time[0] += time.perf_counter() - started

    for _ in range(warmup):
        call()
    samples, sql_ms = [], []
    for _ in range(runs):
        sql_time[0] = 0.0
        with CaptureQueriesContext(connection) as ctx, connection.execute_wrapper(timed):
            started = time.perf_counter()
            call()
            samples.append((time.perf_counter() - started) * 1000)
        sql_ms.append(sql_time[0] * 1000)
    if explain:
        slowest = max(ctx.captured_queries, key=lambda q: float(q["time"]))
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + slowest["sql"])
            plan = "\n".join(row[0] for row in cursor.fetchall())
        print(f"\n-- {name}: slowest query ({float(slowest['time']) * 1000:.1f} ms)\n"
              f"{slowest['sql']}\n{plan}\n", file=sys.stderr)
    return dict(name=name, runs=runs, p50=statistics.median(samples),
                p95=percentile(samples, 95), sql=statistics.median(sql_ms),
                queries=len(ctx.captured_queries))


def http_scenarios(scale):
    """(name, client, path, text the page must contain)."""
    page50 = "Page 50 of" if scale >= 20_000 else ""
    owner, rep = client_for(PARTNER_OWNER), client_for(PARTNER_REP)
    vendor, operator = client_for(VENDOR), client_for(OPERATOR)
    return [
        ("partner list, organization", owner, "/referrals/", "Our referrals"),
        ("partner list, organization, page 50", owner, "/referrals/?page=50", page50),
        ("partner list, own", rep, "/referrals/", "My referrals"),
        ("partner list, own, page 50", rep, "/referrals/?page=50", page50),
        ("vendor inbox, triage order", vendor, "/referrals/", "Inbound referrals"),
        ("vendor inbox, page 50", vendor, "/referrals/?page=50", page50),
        ("vendor inbox, status=submitted", vendor, "/referrals/?status=submitted", "Submitted"),
        ("vendor inbox, conflict=yes", vendor, "/referrals/?conflict=yes", "conflict"),
        ("vendor inbox, value 10k-200k", vendor,
         "/referrals/?min_value=10000&max_value=200000", "Inbound referrals"),
        ("vendor inbox, q=north", vendor, "/referrals/?q=north", "North"),
        ("vendor inbox, q=summit orbit", vendor, "/referrals/?q=summit+orbit", "Summit Orbit"),
        ("vendor inbox, sort=-amount", vendor, "/referrals/?sort=-amount_minor",
         "Inbound referrals"),
        ("operator admin list", operator, "/referrals/", "Referrals"),
        ("operator admin list, page 50", operator, "/referrals/?page=50", page50),
    ] + [
        (f"{who}, sort={sort}", client, f"/referrals/?sort={sort}", "")
        for who, client in (("partner list", owner), ("vendor inbox", vendor),
                            ("operator admin list", operator))
        for sort in ("-submitted_at", "submitted_at", "-amount_minor", "company_name")
    ]


def http_call(client, path, expect):
    def call():
        response = client.get(path)
        if response.status_code != 200:
            raise SystemExit(f"GET {path}: HTTP {response.status_code}")
        if expect and expect not in response.content.decode():
            raise SystemExit(f"GET {path}: the page does not contain {expect!r}")
    return call


def conflict_scenarios():
    """The submit-time check as lifecycle.submit_referral runs it: vendor lock, then the
    exact (domain or name) and fuzzy (trigram, then rapidfuzz) lookups, in one transaction."""
    from django.db import transaction

    from accounts.models import Organization
    from referrals.conflicts import check_conflicts, lock_vendor
    from referrals.models import Referral
    from referrals.normalize import normalize_company_name

    vendor = Organization.objects.get(slug="acme-cloud")
    program = vendor.programs.get()
    active = Referral.objects.active_registrations().filter(vendor=vendor)
    pks = list(active.order_by("pk").values_list("pk", flat=True))
    existing = list(active.filter(pk__in=pks[::max(1, len(pks) // 10)][:10])
                    .values_list("domain", "normalized_name"))
    # Not registered, but built from the same words as thousands of registered names: the
    # fuzzy lookup's worst case. And names that share nothing with them.
    similar = [(f"{a}{b}ventures.com", normalize_company_name(f"{a.title()} {b.title()} Ventures"))
               for a, b in [("north", "blue"), ("summit", "orbit"), ("apex", "lumen"),
                            ("cedar", "falcon"), ("vertex", "pixel"), ("atlas", "crest"),
                            ("nova", "river"), ("matrix", "harbor"), ("zenith", "solar"),
                            ("beacon", "delta")]]
    unrelated = [(f"{w}.io", normalize_company_name(f"{w.title()} Holdings GmbH"))
                 for w in ("kestrel", "wombat", "quokka", "marzipan", "tundra", "gazebo",
                           "fjord", "yodel", "bramble", "quince")]

    def make(cases):
        state = {"i": 0}

        def call():
            domain, name = cases[state["i"] % len(cases)]
            state["i"] += 1
            with transaction.atomic():
                lock_vendor(vendor.pk)
                check_conflicts(vendor_id=vendor.pk, domain=domain, normalized_name=name,
                                threshold=program.fuzzy_threshold)
        return call

    return [("conflict check, existing name", make(existing)),
            ("conflict check, new similar name", make(similar)),
            ("conflict check, new unrelated name", make(unrelated))]


def main():
    args = parse_args()
    ensure_database(os.environ["DATABASE_URL"], args.force)

    import django

    django.setup()
    from django.db import connection

    prepare(args.scale)
    scenarios = [(name, http_call(client, path, expect))
                 for name, client, path, expect in http_scenarios(args.scale)]
    scenarios += conflict_scenarios()
    results = []
    for name, call in scenarios:
        if args.only and args.only not in name:
            continue
        results.append(measure(name, call, args.runs, args.warmup, args.explain))
        print(f"  {name}: done", file=sys.stderr)

    from referrals.models import Referral

    version = connection.cursor().connection.info.server_version
    print(f"\n{Referral.objects.count()} referrals, PostgreSQL "
          f"{version // 10000}.{version % 10000}, {os.cpu_count()} CPUs, "
          f"{args.runs} runs after {args.warmup} warm-up runs, load average "
          f"{os.getloadavg()[0]:.1f} at the end\n")
    width = max(len(r["name"]) for r in results)
    print(f"| {'scenario':<{width}} | runs | p50 ms | p95 ms | queries | SQL p50 ms |")
    print(f"|{'-' * (width + 2)}|-----:|-------:|-------:|--------:|-----------:|")
    for r in results:
        print(f"| {r['name']:<{width}} | {r['runs']:>4} | {r['p50']:>6.1f} | {r['p95']:>6.1f} "
              f"| {r['queries']:>7} | {r['sql']:>10.1f} |")


if __name__ == "__main__":
    main()
