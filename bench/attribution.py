"""Attribution backfill benchmark at scale, on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/partnerhub_attr_bench \
        .venv/bin/python bench/attribution.py [--referrals 1000000] [--deals 100000]

Creates the bench database if it is missing, migrates, seeds the demo network, tops the
referrals up to --referrals (referrals.demo.seed_scale: look-alike names, or with --names varied
invented brand and trade words, in a database of their own) and the won deals of the demo
vendors up to --deals (one DealSnapshot each: most share a referral's domain, some carry our
referral id, some have a misspelt name, some match nothing), runs VACUUM ANALYZE, and then, per
scenario, clears the bench deals' attributions and times attribution.runner.backfill for each
vendor twice: a first run that attributes every deal, and a re-run on unchanged inputs (the
digest short-circuit). Scenarios: the programs as seeded (fuzzy names on: threshold 90) and
with fuzzy-name matching off (fuzzy_threshold 100), all deals unless --fuzzy-sample or
--exact-sample say fewer. Prints deals per second, SQL queries per deal and the time in them,
what the deals were attributed to, and EXPLAIN ANALYZE of each candidate lookup.
See bench/README.md.
"""

import argparse
import os
import random
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchdb import ensure_database  # noqa: E402 (the script's own folder is on the path)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "partnerhub.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/partnerhub_attr_bench")
os.environ.setdefault("DEBUG", "0")  # time what production runs, not the debug machinery
os.environ.setdefault("LOG_LEVEL", "WARNING")

PROVIDER = "bench"
VENDORS = ("acme-cloud", "globex-analytics")
# Share of the deals per kind of match (the rest match nothing).
MIX = {"domain": 0.70, "exact": 0.10, "fuzzy": 0.10}
# Words that never occur in seed_scale's names (referrals.demo.WORDS).
OTHER_WORDS = ("kestrel wombat quokka marzipan tundra gazebo fjord yodel bramble quince "
               "walrus juniper saffron pelican thistle").split()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--referrals", type=int, default=1_000_000,
                        help="total referrals in the bench database (default 1000000)")
    parser.add_argument("--deals", type=int, default=100_000,
                        help="won deals of the demo vendors (default 100000)")
    parser.add_argument("--batch", type=int, default=500, help="backfill batch size")
    parser.add_argument("--workers", default="1,2",
                        help="comma-separated backfill process counts to time each run with "
                             "(default 1,2); queries are counted in single-process runs only")
    parser.add_argument("--runs", default="first,unchanged",
                        help="timed runs per scenario, in order: first (fresh attributions), "
                             "unchanged (re-run); '' only prepares the database")
    parser.add_argument("--fuzzy-sample", type=int, default=0,
                        help="time the programs as seeded (fuzzy names on) on the latest N "
                             "deals only (default 0: all of them; -1 skips)")
    parser.add_argument("--exact-sample", type=int, default=0,
                        help="time the programs with fuzzy names off (threshold 100) on the "
                             "latest N deals only (default 0: all of them; -1 skips)")
    parser.add_argument("--names", choices=("lookalike", "varied"), default="lookalike",
                        help="how seed_scale names the generated referrals: 'lookalike' (two "
                             "of 25 words plus a number: the fuzzy lookup's worst case) or "
                             "'varied' (invented brand and trade words); use one database per "
                             "kind, e.g. partnerhub_attr_bench_varied")
    parser.add_argument("--force", action="store_true",
                        help="allow a database whose name does not contain 'bench'")
    return parser.parse_args()


def log(message):
    print(message, file=sys.stderr, flush=True)


def prepare(referrals: int, deals: int, names: str = "lookalike") -> None:
    from django.core.management import call_command
    from django.db import connection

    from attribution.models import DealSnapshot
    from referrals import demo
    from referrals.models import Referral

    started = time.perf_counter()
    call_command("migrate", interactive=False, verbosity=0)
    call_command("seed_demo", verbosity=0, stdout=open(os.devnull, "w"))
    missing = referrals - Referral.objects.count()
    if missing > 0:
        log(f"Generating {missing} referrals...")
        demo.seed_scale(missing, names=names)
    have = DealSnapshot.objects.filter(provider=PROVIDER).count()
    if deals > have:
        log(f"Generating {deals - have} won deals...")
        seed_deals(deals - have, start=have)
    with connection.cursor() as cursor:
        # Autovacuum would get there on its own after a bulk load; do it now so that every
        # run sees the same statistics and visibility map.
        cursor.execute("VACUUM ANALYZE referrals_referral")
        cursor.execute("VACUUM ANALYZE attribution_dealsnapshot")
        cursor.execute("ANALYZE")
    # What `manage.py reattribute` and the nightly task do: which words the fuzzy-name lookup
    # leaves out (attribution.name_keys).
    from attribution.name_keys import refresh_common_words
    refresh_common_words()
    log(f"Prepared {Referral.objects.count()} referrals and "
        f"{DealSnapshot.objects.filter(provider=PROVIDER).count()} bench deals in "
        f"{time.perf_counter() - started:.1f}s.")


def _sample(vendor_id, statuses, count, seed):
    """A deterministic pseudo-random sample of the vendor's referrals (no ORDER BY random())."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, domain, company_name, submitted_at FROM referrals_referral "
            "WHERE vendor_id = %s AND status = ANY(%s) AND submitted_at IS NOT NULL "
            "ORDER BY md5(id::text || %s) LIMIT %s",
            [vendor_id, list(statuses), str(seed), count])
        return cursor.fetchall()


def _misspell(name: str, rng: random.Random) -> str:
    """Drop one letter of the first word: "North Blue 123 Inc" -> "Nrth Blue 123 Inc"."""
    first, _, rest = name.partition(" ")
    i = rng.randrange(1, len(first)) if len(first) > 2 else 0
    return f"{first[:i]}{first[i + 1:]} {rest}".strip()


def _timeline(submitted, now, rng: random.Random):
    """Deal created a few days to weeks after the registration (now and then after its
    protection ran out), closed weeks to months later, never in the future."""
    created = submitted + min(timedelta(days=rng.randint(1, 130), hours=rng.randint(0, 23)),
                              (now - submitted) * 0.3)
    closed = created + min(timedelta(days=rng.randint(7, 200), hours=rng.randint(0, 23)),
                           (now - created) * 0.9)
    return created, closed


def seed_deals(count: int, *, start: int, seed: int = 11) -> None:
    """Won DealSnapshots of the demo vendors, shared in proportion to their referrals."""
    from django.utils import timezone

    from accounts.models import Organization
    from attribution.models import DealSnapshot
    from referrals.models import Referral

    rng = random.Random(seed + start)
    now = timezone.now()
    vendors = list(Organization.objects.filter(slug__in=VENDORS).order_by("slug"))
    sizes = {v.pk: Referral.objects.filter(vendor=v).count() for v in vendors}
    total = sum(sizes.values()) or 1
    made = 0
    for index, vendor in enumerate(vendors):
        share = (count - made if index == len(vendors) - 1
                 else round(count * sizes[vendor.pk] / total))
        # Won deals mostly come from accepted registrations; some from any other state.
        accepted = _sample(vendor.pk, ["accepted"], share, f"{seed}-{start}-a")
        other = _sample(vendor.pk, ["submitted", "rejected", "won", "lost", "expired",
                                    "withdrawn"], share, f"{seed}-{start}-o")
        rows = []
        for i in range(share):
            n = start + made + i
            kind = rng.random()
            pool = accepted if (rng.random() < 0.8 or not other) else other
            pk, domain, company, submitted = pool[i % len(pool)] if pool else (None,) * 4
            referral_id, name = None, company
            if pk is None or kind >= sum(MIX.values()):
                a, b = rng.sample(OTHER_WORDS, 2)
                name, domain = f"{a.title()} {b.title()} {n} Ltd", f"{a}{b}{n}.net"
                submitted = now - timedelta(days=rng.randint(30, 700))
            elif kind < MIX["domain"]:
                pass  # the CRM account has the registered domain (and name)
            elif kind < MIX["domain"] + MIX["exact"]:
                referral_id = pk  # the deal carries our referral id
                domain = f"{domain.removesuffix('.com')}-hq.com"
            else:  # a misspelt account name on another domain
                name = _misspell(company, rng)
                domain = f"{domain.removesuffix('.com')}.io"
            created, closed = _timeline(submitted, now, rng)
            rows.append(DealSnapshot(
                vendor=vendor, provider=PROVIDER, external_deal_id=f"deal-{n}", version="1",
                referral_id=referral_id, account_domain=domain, account_name=name[:200],
                amount_minor=rng.randint(10, 900) * 100000, currency="USD",
                stage="closedwon", outcome=DealSnapshot.WON, deal_created_at=created,
                closed_at=closed, received_at=closed, raw={}))
        DealSnapshot.objects.bulk_create(rows, batch_size=5000)
        made += share


def clear_attributions() -> None:
    """Forget the bench deals' attributions, so that the first run attributes every deal."""
    from django.db import connection, transaction

    bench = "SELECT id FROM attribution_attribution WHERE provider = %s"
    with transaction.atomic(), connection.cursor() as cursor:
        for table in ("attribution_attributioncandidate", "attribution_attributionchange"):
            cursor.execute(f"DELETE FROM {table} WHERE attribution_id IN ({bench})", [PROVIDER])
        cursor.execute("DELETE FROM attribution_attribution WHERE provider = %s", [PROVIDER])
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE attribution_attributioncandidate")
        cursor.execute("VACUUM ANALYZE attribution_attribution")


class QueryCounter:
    """Counts queries (and time in them) through connection.execute_wrapper, remembering one
    example of each candidate lookup for EXPLAIN."""

    def __init__(self):
        self.count, self.seconds = 0, 0.0
        self.kinds, self.kind_seconds = Counter(), Counter()
        self.examples = {}

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        kind = _kind(sql)
        self.kinds[kind] += 1
        if kind.startswith("candidates: ") and kind not in self.examples:
            self.examples[kind] = (sql, params)
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed = time.perf_counter() - started
            self.seconds += elapsed
            self.kind_seconds[kind] += elapsed


def _kind(sql: str) -> str:
    """What a statement is for, by its verb and first table."""
    verb = sql.lstrip().split(None, 1)[0].upper()
    if verb in ("SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT", "SET"):
        return "transaction"
    lowered = sql.lower()
    if "pg_advisory_xact_lock" in lowered:
        return "lock groups"
    if "nextval(" in lowered:
        return "keys for new rows"
    after = {"SELECT": " from ", "DELETE": " from ", "INSERT": " into ", "UPDATE": "update ",
             "COPY": "copy "}
    table = (lowered.split(after[verb], 1)[1].split(None, 1)[0].strip('"')
             if verb in after and after[verb] in lowered else "")
    if "partnerhub_name_keys" in lowered:
        return ("candidates: shared words" if verb == "WITH"
                else "candidates: every word (no distinctive word)")
    if table == "referrals_referral" and verb == "SELECT":
        if "similarity" in lowered:
            return "candidates: similar names"
        if any(f'"{column}" {op}' in lowered for column in ("domain", "normalized_name")
               for op in ("in", "=")):
            return "candidates: id/domain/name"
        return "candidates: rows by id"
    return f"{table.split('_', 1)[-1]} {verb.lower()}"


def timed_backfill(label, vendors, since, batch, workers=1):
    from django.db import connection

    from attribution.runner import backfill

    counter = QueryCounter()
    total = 0
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        for vendor in vendors:
            last = [time.perf_counter()]

            def progress(done, of, vendor=vendor, last=last):
                if time.perf_counter() - last[0] > 10 or done == of:
                    last[0] = time.perf_counter()
                    log(f"  {label}: {vendor.slug} {done}/{of} deals, "
                        f"{time.perf_counter() - started:.0f}s")

            total += backfill(vendor.pk, since, batch=batch, progress=progress,
                              workers=workers)
    elapsed = time.perf_counter() - started
    # A parallel run's queries happen in its worker processes, out of the counter's sight.
    return dict(label=label, deals=total, seconds=elapsed,
                queries=counter.count if workers == 1 else None,
                sql=counter.seconds, kinds=counter.kinds, kind_seconds=counter.kind_seconds,
                examples=counter.examples)


def latest_deals_since(vendors, count):
    """The close date from which the vendors' latest `count` won deals were closed."""
    from datetime import UTC, datetime

    from attribution.models import DealSnapshot

    everything = datetime(2000, 1, 1, tzinfo=UTC)
    if count <= 0:
        return everything
    closed = list(DealSnapshot.objects.filter(vendor__in=vendors, outcome=DealSnapshot.WON)
                  .order_by("-closed_at").values_list("closed_at", flat=True)[count - 1:count])
    return closed[0] if closed else everything


def with_fuzzy_threshold(vendors, threshold):
    """Set the vendors' programs' fuzzy-name threshold; returns the previous values."""
    from referrals.models import Program

    previous = dict(Program.objects.filter(vendor__in=vendors)
                    .values_list("pk", "fuzzy_threshold"))
    if threshold is not None:
        Program.objects.filter(pk__in=previous).update(fuzzy_threshold=threshold)
    return previous


def restore_fuzzy_thresholds(previous):
    from referrals.models import Program

    for pk, threshold in previous.items():
        Program.objects.filter(pk=pk).update(fuzzy_threshold=threshold)


def explain(examples) -> None:
    from django.db import connection, transaction

    for kind, (sql, params) in sorted(examples.items()):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")  # as attribution.name_keys runs it
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            # Long IN lists make long plan lines: the shape is what matters.
            plan = "\n".join(row[0] if len(row[0]) < 240 else row[0][:240] + " ..."
                             for row in cursor.fetchall())
        verdict = ("NOT INDEXED: sequential scan of the referrals" if
                   "Seq Scan on referrals_referral" in plan else "indexed")
        shown = sql if len(sql) < 600 else sql[:600] + " ..."
        print(f"\n-- {kind} ({verdict}):\n{shown}\n{plan}")


def outcome_summary():
    from django.db.models import Count

    from attribution.models import Attribution, AttributionCandidate

    bench = Attribution.objects.filter(provider=PROVIDER)
    matches = dict(bench.values_list("match").annotate(n=Count("pk")).order_by("match"))
    statuses = dict(bench.values_list("status").annotate(n=Count("pk")).order_by("status"))
    candidates = AttributionCandidate.objects.filter(attribution__provider=PROVIDER).count()
    return (f"matches {matches}, statuses {statuses}, "
            f"{candidates / (sum(matches.values()) or 1):.1f} candidates per deal")


def scenarios(args):
    """(label, fuzzy threshold to set or None for the programs' own, deals to time or 0 for
    all)."""
    found = []
    if args.fuzzy_sample >= 0:
        found.append(("fuzzy names on", None, args.fuzzy_sample))
    if args.exact_sample >= 0:
        found.append(("fuzzy names off", 100, args.exact_sample))
    return found


def main():
    args = parse_args()
    ensure_database(os.environ["DATABASE_URL"], args.force)

    import django

    django.setup()
    from django.db import connection

    from accounts.models import Organization
    from attribution.models import DealSnapshot
    from referrals.models import Program, Referral

    prepare(args.referrals, args.deals, args.names)
    vendors = list(Organization.objects.filter(slug__in=VENDORS).order_by("slug"))
    results, summaries = [], {}
    worker_counts = [int(n) for n in args.workers.split(",") if n.strip()]
    for name, threshold, sample in scenarios(args):
        since = latest_deals_since(vendors, sample)
        previous = with_fuzzy_threshold(vendors, threshold)
        thresholds = sorted(set(Program.objects.filter(vendor__in=vendors)
                                .values_list("fuzzy_threshold", flat=True)))
        try:
            for workers in worker_counts:
                clear_attributions()
                for run in filter(None, args.runs.split(",")):
                    label = (f"{name}, {'first run' if run == 'first' else 'unchanged re-run'}"
                             f", {workers} worker{'s' if workers > 1 else ''}")
                    log(f"{label} (fuzzy threshold {thresholds}, deals closed since "
                        f"{since:%Y-%m-%d %H:%M})...")
                    results.append(timed_backfill(label, vendors, since, args.batch, workers))
                    if run == "first":
                        summaries[name] = outcome_summary()
        finally:
            restore_fuzzy_thresholds(previous)

    version = connection.cursor().connection.info.server_version
    print(f"\n{Referral.objects.count()} referrals, "
          f"{DealSnapshot.objects.filter(outcome='won').count()} won deal snapshots, "
          f"PostgreSQL {version // 10000}.{version % 10000}, {os.cpu_count()} CPUs, "
          f"batch {args.batch}, load average {os.getloadavg()[0]:.1f} at the end")
    for name, summary in summaries.items():
        print(f"{name}: {summary}")
    if not results:
        return
    width = max(len(r["label"]) for r in results)
    print(f"\n| {'run':<{width}} |  deals | seconds | deals/s | queries/deal | SQL s | SQL % |")
    print(f"|{'-' * (width + 2)}|-------:|--------:|--------:|-------------:|------:|------:|")
    for r in results:
        deals = r["deals"] or 1
        counted = (f"{r['queries'] / deals:>12.3f} | {r['sql']:>5.1f} "
                   f"| {100 * r['sql'] / r['seconds']:>5.0f}" if r["queries"] is not None
                   else f"{'-':>12} | {'-':>5} | {'-':>5}")
        print(f"| {r['label']:<{width}} | {r['deals']:>6} | {r['seconds']:>7.1f} "
              f"| {r['deals'] / r['seconds']:>7.0f} | {counted} |")
    for r in (r for r in results if r["queries"] is not None):
        deals = r["deals"] or 1
        print(f"\n{r['label']}, per 1,000 deals: queries (ms in them) by kind:\n  " +
              "\n  ".join(f"{kind}: {1000 * n / deals:.1f} "
                          f"({1e6 * r['kind_seconds'][kind] / deals:.1f} ms)"
                          for kind, n in sorted(r["kinds"].items())))
    examples = {}
    for r in results:
        examples = {**r["examples"], **examples}
    explain(examples)


if __name__ == "__main__":
    main()
