"""Payout batch benchmark at scale, on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/partnerhub_payout_bench \
        .venv/bin/python bench/payout_batch.py [--partners 15000] [--commissions 500000]

Creates the bench database if it is missing, migrates, and seeds (once, set-based with
INSERT ... SELECT over generate_series) a network with an operator, four vendors and plans in
USD, EUR and GBP, --partners partner organizations with payout accounts and tax profiles (a
few missing or incomplete, a few under the minimum, a few owing clawbacks from an earlier
payout) and --commissions approved commissions with their deals, attributions, earned ledger
entries and balances. Then it builds twice, as production does: `payouts.batches.request_batch`
(the web request's part) and `payouts.batches.run_build` (the Celery task's), on a small period
(the commissions of 1% of the partners) and on everything; cancels each batch afterwards the
same way (`request_cancel`, then `run_cancel`: so the database can be reused) and prints the
seconds, the SQL statements of the build task by kind and what the batch holds. It fails if
the full build runs more statements than the small one.
See bench/README.md.
"""

import argparse
import os
import sys
import time
from collections import Counter
from datetime import UTC, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchdb import ensure_database  # noqa: E402 (the script's own folder is on the path)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "partnerhub.settings")
os.environ.setdefault("DATABASE_URL",
                      "postgres://postgres@127.0.0.1:5432/partnerhub_payout_bench")
os.environ.setdefault("DEBUG", "0")  # time what production runs, not the debug machinery
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("EMAIL_URL", "dummy:")  # the approvers' emails go nowhere
os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "1")  # no worker here: tasks run inline

OPS_SLUG = "bench-payout-ops"
# (vendor slug, currency, payout minimum): the plans commissions are spread over.
PLANS = [("bench-vendor-a", "USD", 5_000), ("bench-vendor-b", "EUR", 10_000),
         ("bench-vendor-c", "USD", 20_000), ("bench-vendor-d", "GBP", 5_000)]
# Partners by (number % 50): what makes them special. The rest are paid.
TINY, OWES_ALL, OWES_SOME, NO_ACCOUNT, NOT_READY, NO_TAX, TAX_INCOMPLETE = 1, 2, 3, 4, 5, 6, 7
SMALL_EVERY = 100  # one partner in SMALL_EVERY had its commissions released early


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partners", type=int, default=15_000)
    parser.add_argument("--commissions", type=int, default=500_000)
    parser.add_argument("--force", action="store_true",
                        help="allow a database whose name does not contain 'bench'")
    return parser.parse_args()


def log(message):
    print(message, file=sys.stderr, flush=True)


def table(model):
    return model._meta.db_table


# --- seeding -------------------------------------------------------------------------------

def seed(partners: int, commissions: int) -> None:
    """Everything in one transaction: a half-seeded database is never left behind."""
    from django.db import connection, transaction
    from django.utils import timezone

    from accounts.models import Membership, Network, Organization, User
    from attribution.models import Attribution, DealSnapshot
    from payouts.models import (
        Balance,
        Commission,
        CommissionPlan,
        LedgerEntry,
        Payout,
        PayoutAccount,
        PayoutBatch,
        TaxProfile,
    )
    from referrals.models import Program

    now = timezone.now()
    with transaction.atomic():
        network = Network.objects.filter(is_default=True).first() or Network.objects.create(
            name="Bench", slug="bench", is_default=True)
        ops = Organization.objects.create(network=network, kind="operator", status="active",
                                          name="Bench Ops", slug=OPS_SLUG)
        for role in ("finance", "admin"):
            user = User.objects.create_user(f"{role}@{OPS_SLUG}.example", full_name=role.title())
            Membership.objects.create(user=user, organization=ops, role=role)
        plan_ids = []
        for slug, currency, minimum in PLANS:
            vendor = Organization.objects.create(network=network, kind="vendor",
                                                 status="active", name=slug.title(), slug=slug)
            program = Program.objects.create(vendor=vendor, name=f"{slug} program", terms="-",
                                             status="active", accepted_currencies=[currency])
            plan = CommissionPlan.objects.create(
                vendor=vendor, program=program, version=1, kind="percent", rate_bp=1000,
                currency=currency, payout_minimum_minor=minimum)
            plan_ids.append(plan.pk)

        with connection.cursor() as cursor:
            def run(sql, params=None):
                started = time.perf_counter()
                cursor.execute(sql, params or {})
                log(f"  {sql.split()[2]}: {cursor.rowcount} rows in "
                    f"{time.perf_counter() - started:.1f}s")

            p = {"network": network.pk, "n": partners, "c": commissions, "now": now,
                 "plans": plan_ids, "tiny": TINY, "owes_all": OWES_ALL,
                 "owes_some": OWES_SOME, "no_account": NO_ACCOUNT, "not_ready": NOT_READY,
                 "no_tax": NO_TAX, "tax_incomplete": TAX_INCOMPLETE, "small": SMALL_EVERY}
            run(f"""
                INSERT INTO {table(Organization)} (public_id, network_id, kind, status, name,
                    slug, website, website_domain, country, partner_type, applied_at,
                    verified_at, approved_at, rejection_reason, auto_approved, created_at)
                SELECT gen_random_uuid(), %(network)s, 'partner', 'active',
                       'Bench Partner ' || g, 'bench-partner-' || g,
                       'https://partner' || g || '.example', 'partner' || g || '.example',
                       'US', 'agency', %(now)s, %(now)s, %(now)s, '', false, %(now)s
                  FROM generate_series(1, %(n)s) AS g""", p)
            # Partner number g = the slug's suffix; `bp` maps it to the row's id.
            cursor.execute(f"""
                CREATE TEMP TABLE bp ON COMMIT DROP AS
                SELECT id, substring(slug from 15)::int AS g FROM {table(Organization)}
                 WHERE network_id = %(network)s AND slug LIKE 'bench-partner-%%'""", p)
            cursor.execute("CREATE INDEX ON bp (g)")
            run(f"""
                INSERT INTO {table(PayoutAccount)} (partner_id, network_id, stripe_account_id,
                    country, default_currency, details_submitted, payouts_enabled,
                    transfers_active, requirements_due, disabled_reason,
                    last_bank_payout_status, last_bank_payout_failure, synced_at, created_at)
                SELECT id, %(network)s, 'acct_bench' || g, 'US', 'usd', true,
                       g %% 50 <> %(not_ready)s, g %% 50 <> %(not_ready)s, '[]', '', '', '',
                       %(now)s, %(now)s
                  FROM bp WHERE g %% 50 <> %(no_account)s""", p)
            run(f"""
                INSERT INTO {table(TaxProfile)} (partner_id, network_id, country, entity_type,
                    us_person, form, form_status, form_signed_on, legal_name, address_line1,
                    address_line2, city, region, postal_code, updated_at)
                SELECT id, %(network)s, 'US', 'llc', true, 'w9', 'received', DATE '2024-01-05',
                       'Bench Partner ' || g,
                       CASE WHEN g %% 50 = %(tax_incomplete)s THEN '' ELSE g || ' Main St' END,
                       '', 'Springfield', 'IL', '62701', %(now)s
                  FROM bp WHERE g %% 50 <> %(no_tax)s""", p)
            # Commission i goes to partner i % n (+1), under plan (i / n) % 4: about
            # c / n commissions per partner, spread over every plan and so every currency.
            cursor.execute("""
                CREATE TEMP TABLE bc ON COMMIT DROP AS
                SELECT i, bp.id AS partner_id,
                       (%(plans)s::bigint[])[1 + (i / %(n)s) %% 4] AS plan_id,
                       CASE WHEN bp.g %% 50 = %(tiny)s THEN 100
                            ELSE 1000 + (i::bigint * 7919) %% 49000 END AS amount,
                       %(now)s::timestamptz - CASE WHEN bp.g %% %(small)s = 0
                            THEN interval '60 days' ELSE interval '10 days' END AS payable_at
                  FROM generate_series(0, %(c)s - 1) AS i
                  JOIN bp ON bp.g = i %% %(n)s + 1""", p)
            run(f"""
                INSERT INTO {table(DealSnapshot)} (public_id, vendor_id, provider,
                    external_deal_id, version, account_domain, account_name, amount_minor,
                    currency, stage, outcome, closed_at, raw, received_at)
                SELECT gen_random_uuid(), pl.vendor_id, 'bench', 'bench-deal-' || bc.i, '1',
                       '', 'Bench deal ' || bc.i, bc.amount * 10, pl.currency, 'won', 'won',
                       bc.payable_at - interval '30 days', '{{}}',
                       bc.payable_at - interval '30 days'
                  FROM bc JOIN {table(CommissionPlan)} pl ON pl.id = bc.plan_id""", p)
            run(f"""
                INSERT INTO {table(Attribution)} (public_id, network_id, vendor_id, provider,
                    external_deal_id, snapshot_id, partner_id, rule, match, confidence, status,
                    decision, inputs_digest, decision_note, created_at, updated_at)
                SELECT gen_random_uuid(), %(network)s, s.vendor_id, 'bench', s.external_deal_id,
                       s.id, bc.partner_id, 'first_accepted', 'exact', 100, 'auto_confirmed',
                       '{{}}', 'bench', '', %(now)s, %(now)s
                  FROM {table(DealSnapshot)} s
                  JOIN bc ON s.external_deal_id = 'bench-deal-' || bc.i
                 WHERE s.provider = 'bench'""", p)
            run(f"""
                INSERT INTO {table(Commission)} (public_id, network_id, vendor_id, partner_id,
                    program_id, plan_id, attribution_id, external_deal_id, deal_name,
                    deal_amount_minor, amount_minor, currency, basis, earned_at, payable_at,
                    clawback_until, status, decided_at, rejection_reason, retired_reason,
                    created_at)
                SELECT gen_random_uuid(), %(network)s, pl.vendor_id, bc.partner_id,
                       pl.program_id, pl.id, a.id, a.external_deal_id, 'Bench deal ' || bc.i,
                       bc.amount * 10, bc.amount, pl.currency, '{{}}',
                       bc.payable_at - interval '30 days', bc.payable_at,
                       bc.payable_at + interval '60 days', 'approved', %(now)s, '', '', %(now)s
                  FROM bc
                  JOIN {table(CommissionPlan)} pl ON pl.id = bc.plan_id
                  JOIN {table(Attribution)} a ON a.provider = 'bench'
                   AND a.vendor_id = pl.vendor_id AND a.external_deal_id = 'bench-deal-' || bc.i
                """, p)
            # Fresh statistics, or the joins below plan as if the tables were empty.
            cursor.execute(f"ANALYZE {table(DealSnapshot)}, {table(Attribution)}, "
                           f"{table(Commission)}")
            # Owing partners: an earlier, sent batch paid each a USD commission that was
            # clawed back since (earned +D, paid -D, clawback -D: the partner owes D).
            history = PayoutBatch.objects.create(
                network=network, period_end=(now - timedelta(days=90)).date(),
                status=PayoutBatch.SENT, created_by=User.objects.get(
                    email=f"finance@{OPS_SLUG}.example"), sent_at=now - timedelta(days=85))
            cursor.execute("""
                CREATE TEMP TABLE owed ON COMMIT DROP AS
                SELECT bp.id AS partner_id, bp.g,
                       CASE WHEN bp.g %% 50 = %(owes_all)s THEN 10000000 ELSE 50000 END AS debt
                  FROM bp WHERE bp.g %% 50 IN (%(owes_all)s, %(owes_some)s)""", p)
            run(f"""
                INSERT INTO {table(DealSnapshot)} (public_id, vendor_id, provider,
                    external_deal_id, version, account_domain, account_name, amount_minor,
                    currency, stage, outcome, raw, received_at)
                SELECT gen_random_uuid(), pl.vendor_id, 'bench', 'bench-old-' || o.g, '1', '',
                       'Old deal', o.debt * 10, 'USD', 'lost', 'lost', '{{}}', %(now)s
                  FROM owed o
                  JOIN {table(CommissionPlan)} pl ON pl.id = (%(plans)s::bigint[])[1]""", p)
            run(f"""
                INSERT INTO {table(Attribution)} (public_id, network_id, vendor_id, provider,
                    external_deal_id, snapshot_id, partner_id, rule, match, confidence, status,
                    decision, inputs_digest, decision_note, created_at, updated_at)
                SELECT gen_random_uuid(), %(network)s, s.vendor_id, 'bench', s.external_deal_id,
                       s.id, o.partner_id, 'first_accepted', 'exact', 100, 'auto_confirmed',
                       '{{}}', 'bench', '', %(now)s, %(now)s
                  FROM owed o JOIN {table(DealSnapshot)} s
                    ON s.provider = 'bench' AND s.external_deal_id = 'bench-old-' || o.g""", p)
            run(f"""
                INSERT INTO {table(Payout)} (public_id, batch_id, network_id, partner_id,
                    currency, gross_minor, offset_minor, amount_minor, commission_count,
                    status, carry_reason, stripe_account_id, stripe_transfer_id, failure_code,
                    failure_message, attempts, paid_at, reversed_minor, created_at)
                SELECT gen_random_uuid(), %(batch)s, %(network)s, o.partner_id, 'USD', o.debt,
                       0, o.debt, 1, 'paid', '', 'acct_bench' || o.g, 'tr_bench' || o.g, '', '',
                       1, %(now)s - interval '85 days', 0, %(now)s - interval '90 days'
                  FROM owed o""", {**p, "batch": history.pk})
            run(f"""
                INSERT INTO {table(Commission)} (public_id, network_id, vendor_id, partner_id,
                    program_id, plan_id, attribution_id, external_deal_id, deal_name,
                    deal_amount_minor, amount_minor, currency, basis, earned_at, payable_at,
                    clawback_until, status, decided_at, rejection_reason, retired_reason,
                    retired_at, payout_id, created_at)
                SELECT gen_random_uuid(), %(network)s, pl.vendor_id, o.partner_id,
                       pl.program_id, pl.id, a.id, a.external_deal_id, 'Old deal',
                       o.debt * 10, o.debt, 'USD', '{{}}', %(now)s - interval '150 days',
                       %(now)s - interval '120 days', %(now)s + interval '1 day', 'clawed_back',
                       %(now)s - interval '120 days', '', 'deal lost', %(now)s, po.id,
                       %(now)s - interval '150 days'
                  FROM owed o
                  JOIN {table(CommissionPlan)} pl ON pl.id = (%(plans)s::bigint[])[1]
                  JOIN {table(Attribution)} a ON a.provider = 'bench'
                   AND a.external_deal_id = 'bench-old-' || o.g
                  JOIN {table(Payout)} po ON po.batch_id = %(batch)s
                   AND po.partner_id = o.partner_id""", {**p, "batch": history.pk})
            # The ledger: an earned entry per commission; paid and clawback entries for the
            # old ones. Append-only: inserts only.
            run(f"""
                INSERT INTO {table(LedgerEntry)} (network_id, partner_id, currency, amount_minor,
                    kind, commission_id, memo, created_at)
                SELECT network_id, partner_id, currency, amount_minor, 'earned', id,
                       'Commission earned', earned_at
                  FROM {table(Commission)} WHERE network_id = %(network)s""", p)
            run(f"""
                INSERT INTO {table(LedgerEntry)} (network_id, partner_id, currency, amount_minor,
                    kind, commission_id, payout_id, memo, created_at)
                SELECT c.network_id, c.partner_id, c.currency, -c.amount_minor, k.kind,
                       CASE WHEN k.kind = 'clawback' THEN c.id END,
                       CASE WHEN k.kind = 'paid' THEN c.payout_id END, k.memo, %(now)s
                  FROM {table(Commission)} c
                 CROSS JOIN (VALUES ('paid', 'Payout sent'),
                                    ('clawback', 'Clawed back: deal lost')) AS k(kind, memo)
                 WHERE c.network_id = %(network)s AND c.status = 'clawed_back'""", p)
            run(f"""
                INSERT INTO {table(Balance)} (partner_id, network_id, currency, amount_minor,
                    updated_at)
                SELECT partner_id, network_id, currency, SUM(amount_minor), %(now)s
                  FROM {table(LedgerEntry)} WHERE network_id = %(network)s
                 GROUP BY partner_id, network_id, currency""", p)


def prepare(partners: int, commissions: int) -> None:
    from django.core.management import call_command
    from django.db import connection

    from accounts.models import Organization
    from payouts.models import Commission

    started = time.perf_counter()
    call_command("migrate", interactive=False, verbosity=0)
    if not Organization.objects.filter(slug=OPS_SLUG).exists():
        log(f"Seeding {partners} partners and {commissions} commissions...")
        seed(partners, commissions)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    have = Commission.objects.filter(status=Commission.APPROVED).count()
    if have != commissions:
        sys.exit(f"The bench database holds {have} approved commissions, not {commissions}: "
                 f"drop it (dropdb partnerhub_payout_bench) to seed another size.")
    log(f"Prepared in {time.perf_counter() - started:.1f}s.")


# --- timing --------------------------------------------------------------------------------

def vacuum():
    """Each build and cancel rewrites every claimed commission row: clean up after the last
    run so that every run starts from the same table (autovacuum would, later)."""
    from django.db import connection

    from payouts.models import Commission, Payout

    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {table(Commission)}, {table(Payout)}")


def measure(actor, period_end):
    """Request a batch for `period_end`, build it, then cancel it; the seconds of each part and
    the build task's statements.

    No worker runs here: the tasks queued on commit are dropped and their work (`run_build`,
    `run_cancel`) is called directly. The build runs inside an outer transaction (its own
    atomic block becomes a savepoint) so that the COMMIT, where PostgreSQL checks the deferred
    foreign keys of every row written, is timed on its own."""
    from django.db import connection, transaction

    from payouts import batches
    from payouts.models import PayoutBatch

    batches._enqueue = lambda task, batch_id: None  # the bench calls the tasks' work itself
    statements = []

    def record(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            statements.append((sql, time.perf_counter() - started))

    vacuum()
    started = time.perf_counter()
    batch = batches.request_batch(actor, period_end)
    request_seconds = time.perf_counter() - started
    with connection.execute_wrapper(record):
        started = time.perf_counter()
        with transaction.atomic():
            status = batches.run_build(batch.pk)
            built = time.perf_counter()
        finished = time.perf_counter()
    assert status == PayoutBatch.DRAFT, PayoutBatch.objects.get(pk=batch.pk).build_error
    batch.refresh_from_db()
    seconds = finished - started
    # The savepoints' own statements are an artefact of the outer transaction.
    statements = [s for s in statements if not s[0].lstrip().upper().startswith(
        ("SAVEPOINT", "RELEASE SAVEPOINT"))]
    summary = describe(batch)
    summary["request_seconds"] = request_seconds
    summary["commit_seconds"] = finished - built  # with the approvers' notifications after it
    started = time.perf_counter()
    batches.request_cancel(actor, batch)
    summary["cancel_request_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    batches.run_cancel(batch.pk)
    summary["cancel_seconds"] = time.perf_counter() - started
    return seconds, statements, summary


def describe(batch):
    from django.db.models import Count, Sum

    from payouts.models import Commission, Payout

    reasons = dict(batch.payouts.filter(status=Payout.CARRIED_OVER).values_list("carry_reason")
                   .annotate(n=Count("pk")).order_by())
    offsets = batch.payouts.filter(status=Payout.READY).aggregate(
        n=Count("pk", distinct=True), total=Sum("offset_minor"))
    return {"payouts": batch.payout_count, "carried_over": batch.carried_over_count,
            "reasons": reasons, "totals": batch.totals,
            "commissions": Commission.objects.filter(payout__batch=batch).count(),
            "netted": offsets["total"] or 0}


def kind_of(sql: str) -> str:
    words = sql.lstrip().split(None, 3)
    head = words[0].upper() if words else "?"
    if head == "SELECT" and "pg_advisory_xact_lock" in sql:
        return "SELECT (advisory lock)"
    if head == "SELECT" and "SKIP LOCKED" in sql.upper():
        return "SELECT ... FOR UPDATE SKIP LOCKED (claim the batch)"
    if head in ("INSERT", "UPDATE") and len(words) > 2:
        target = (words[2] if head == "INSERT" else words[1]).strip('"')
        return f"{head} {target}"
    if head == "SELECT" and " FROM " in sql:
        table_name = sql.split(" FROM ", 1)[1].split()[0].strip('"')
        return "SELECT (debts: union of 3 tables)" if table_name == "(" else f"SELECT {table_name}"
    return head


def report(name, seconds, statements, summary):
    kinds = Counter()
    times = Counter()
    for sql, took in statements:
        kinds[kind_of(sql)] += 1
        times[kind_of(sql)] += took
    sql = sum(t for _, t in statements)
    commit = summary["commit_seconds"]
    print(f"\n{name}: {summary['commissions']} commissions claimed by {summary['payouts']} "
          f"payouts, "
          f"{summary['carried_over']} carried over; requested in "
          f"{summary['request_seconds']:.3f}s, built by the task in {seconds:.2f}s with "
          f"{len(statements)} SQL statements: {sql:.2f}s in them, {commit:.2f}s in COMMIT, "
          f"{seconds - sql - commit:.2f}s in Python; cancel requested in "
          f"{summary['cancel_request_seconds']:.3f}s, released by the task in "
          f"{summary['cancel_seconds']:.2f}s")
    print(f"  to send: {summary['totals']}; netted clawbacks: {summary['netted']} (minor, "
          f"all currencies); carried over by reason: {summary['reasons']}")
    print("  | statement | count | seconds |")
    print("  |---|---:|---:|")
    for kind, n in sorted(kinds.items(), key=lambda kv: -times[kv[0]]):
        print(f"  | {kind} | {n} | {times[kind]:.3f} |")


def main():
    args = parse_args()
    ensure_database(os.environ["DATABASE_URL"], args.force)

    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from accounts.models import Membership
    from payouts.models import PayoutBatch

    prepare(args.partners, args.commissions)
    actor = Membership.objects.select_related("organization", "user").get(
        organization__slug=OPS_SLUG, role="finance")
    # Left over from an interrupted run: release their commissions, drop a half-done request.
    from payouts import batches

    for batch in PayoutBatch.objects.filter(status=PayoutBatch.DRAFT):
        batches.cancel_batch(actor, batch)
    for batch in PayoutBatch.objects.filter(status=PayoutBatch.CANCELLING):
        batches.run_cancel(batch.pk)
    PayoutBatch.objects.filter(status=PayoutBatch.BUILDING).update(
        status=PayoutBatch.BUILD_FAILED, build_error="Interrupted benchmark run.")

    today = timezone.now().astimezone(UTC).date()
    small = measure(actor, today - timedelta(days=40))  # the early 1% of the partners
    full = measure(actor, today)

    version = connection.cursor().connection.info.server_version
    print(f"\n{args.partners} partners, {args.commissions} approved commissions, PostgreSQL "
          f"{version // 10000}.{version % 10000}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    report("small period", *small)
    report("full period", *full)
    assert len(full[1]) <= len(small[1]), (
        f"the build ran {len(full[1])} statements for {full[2]['commissions']} commissions "
        f"but {len(small[1])} for {small[2]['commissions']}: something runs per row")
    print(f"\nStatements do not grow with the commissions: {len(small[1])} for "
          f"{small[2]['commissions']}, {len(full[1])} for {full[2]['commissions']}.")


if __name__ == "__main__":
    main()
