"""Running the attribution engine against the database: gather candidates with indexed
queries, decide (attribution.engine, pure), and upsert one Attribution per deal.

Re-running on the same inputs changes nothing (an inputs digest says so); a person's decision
(confirmed / overturned) is never overwritten; any other change is recorded in the
attribution's history.

Deals go through in chunks (`attribute_deals`; `attribute_deal` is a chunk of one): the
candidates of every deal gathered with one query per kind of match and vendor, then one
transaction that locks the chunk's deals and existing attributions and writes in bulk (COPY
for new rows): a few dozen statements per chunk of 500 deals. `backfill` runs a vendor's deals
chunk by chunk, in one process or several.
"""

import hashlib
import itertools
import json
import multiprocessing
import multiprocessing.util
import zlib
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor

from django.db import connection, connections, transaction
from django.db.models import Case, Exists, OuterRef, Q, When
from django.utils import timezone

from accounts.models import Organization
from attribution import engine, name_keys
from attribution.models import Attribution, AttributionCandidate, AttributionChange, DealSnapshot
from partnerhub.copyinsert import copy_insert, copy_rows
from referrals.models import Program, Referral
from referrals.normalize import normalize_company_name

FUZZY_CANDIDATES = 200


def settings_for(snapshot: DealSnapshot, programs: dict | None = None) -> engine.Settings:
    """The program that governs a deal: the linked referral's, else the vendor's oldest open
    program (vendors usually run one). `programs` caches the latter per vendor for a chunk."""
    if snapshot.referral_id:
        program = snapshot.referral.program
    elif programs is not None and snapshot.vendor_id in programs:
        program = programs[snapshot.vendor_id]
    else:
        program = (Program.objects.filter(vendor_id=snapshot.vendor_id)
                   .order_by(Case(When(status="active", then=0), default=1), "created_at")
                   .first())
        if programs is not None:
            programs[snapshot.vendor_id] = program
    if program is None:
        return engine.Settings()
    return engine.Settings(rule=program.attribution_rule,
                           window_days=program.attribution_window_days,
                           fuzzy_threshold=program.fuzzy_threshold,
                           fuzzy_needs_review=program.fuzzy_needs_review,
                           time_zone=program.time_zone or "UTC")


def deal_facts(snapshot: DealSnapshot) -> engine.DealFacts:
    return engine.DealFacts(
        external_deal_id=snapshot.external_deal_id,
        referral_id=str(snapshot.referral.public_id) if snapshot.referral_id else "",
        domain=snapshot.account_domain,
        normalized_name=normalize_company_name(snapshot.account_name),
        deal_created_at=snapshot.deal_created_at,
        closed_at=snapshot.closed_at)


def candidate_referrals(snapshot: DealSnapshot, deal: engine.DealFacts, threshold: int):
    """Every referral of the vendor that could match: the linked one, the same domain, the
    same normalized name, and (PostgreSQL) names close enough to score. Indexed lookups."""
    return _candidates([(snapshot, deal, threshold)])[0]


def _candidates(deals) -> list[list[Referral]]:
    """`candidate_referrals` for many (snapshot, deal facts, fuzzy threshold) at once: per
    vendor, one query for the linked ids, domains and names of all the deals, and one
    statement of index probes for the referrals whose names resemble theirs (`_similar`)."""
    found = [{} for _ in deals]
    by_vendor = defaultdict(list)
    for i, (snapshot, _, _) in enumerate(deals):
        by_vendor[snapshot.vendor_id].append(i)
    for vendor_id, members in by_vendor.items():
        of_vendor = Referral.objects.filter(vendor_id=vendor_id).exclude(status="draft")
        linked = {deals[i][0].referral_id for i in members} - {None}
        domains = {deals[i][1].domain for i in members} - {""}
        names = {deals[i][1].normalized_name for i in members} - {""}
        by_pk, by_domain, by_name = {}, defaultdict(list), defaultdict(list)
        for referral in of_vendor.filter(Q(pk__in=linked) | Q(domain__in=domains)
                                         | Q(normalized_name__in=names)):
            by_pk[referral.pk] = referral
            by_domain[referral.domain].append(referral)
            by_name[referral.normalized_name].append(referral)
        for i in members:
            snapshot, deal, _ = deals[i]
            same = ([by_pk[snapshot.referral_id]] if snapshot.referral_id in by_pk else [])
            same += by_domain.get(deal.domain, []) if deal.domain else []
            same += by_name.get(deal.normalized_name, []) if deal.normalized_name else []
            found[i] = {r.pk: r for r in same}
        fuzzy = [i for i in members if deals[i][1].normalized_name and deals[i][2] < 100]
        if fuzzy and connection.vendor == "postgresql":
            similar = _similar(vendor_id, {deals[i][1].normalized_name for i in fuzzy},
                               min(deals[i][2] for i in fuzzy))
            missing = {pk for pks in similar.values() for pk in pks} - by_pk.keys()
            loaded = {**by_pk, **of_vendor.in_bulk(missing)}
            for i in fuzzy:
                for pk in similar.get(deals[i][1].normalized_name, ()):
                    found[i].setdefault(pk, loaded[pk])
    return [list(f.values()) for f in found]


def _similar(vendor_id: int, names: set[str], threshold: int) -> dict[str, list[int]]:
    """For each name, the ids of the vendor's (non-draft) referrals whose name scores at least
    `threshold` against it, best first (ties by id, so a re-run sees the same): found through
    the distinctive words they share (attribution.name_keys: one statement for all the
    names), or for a name of common words only, through all its words."""
    common = name_keys.common_words(vendor_id)
    keys_by_name = {name: name_keys.lookup_keys(vendor_id, name, common)
                    for name in sorted(names)}
    pairs = name_keys.sharing_a_word(vendor_id, keys_by_name)
    for name in (name for name, keys in keys_by_name.items() if not keys):
        pairs += name_keys.sharing_every_word(vendor_id, name)
    scored = defaultdict(list)
    for name, pk, other in pairs:
        score = engine.name_score(name, other)
        if score >= threshold:
            scored[name].append((-score, pk))
    return {name: [pk for _, pk in sorted(found)[:FUZZY_CANDIDATES]]
            for name, found in scored.items()}


def _facts(referral: Referral) -> engine.CandidateFacts:
    return engine.CandidateFacts(
        referral_id=str(referral.public_id), partner_id=str(referral.partner_id),
        status=referral.status, domain=referral.domain,
        normalized_name=referral.normalized_name, submitted_at=referral.submitted_at,
        accepted_at=referral.decided_at if referral.status != "rejected" else None,
        protected_until=referral.protected_until)


def _digest(deal, candidates, settings, money=()) -> str:
    # The amount is not a decision input, but commissions follow it: a new amount must move
    # the attribution to the new snapshot and show in its history.
    payload = json.dumps([deal.__dict__, sorted((c.__dict__ for c in candidates),
                                                key=lambda c: c["referral_id"]),
                          settings.__dict__, list(money)], default=str, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _summary(a: Attribution | None) -> dict | None:
    if a is None:
        return None
    return {"referral": str(a.referral.public_id) if a.referral_id else None,
            "status": a.status, "match": a.match, "confidence": a.confidence}


def _deal_key(snapshot_or_attribution) -> tuple:
    return (snapshot_or_attribution.vendor_id, snapshot_or_attribution.provider,
            snapshot_or_attribution.external_deal_id)


def attribute_deal(snapshot: DealSnapshot) -> Attribution | None:
    """Decide (or re-decide) who earned the deal of this snapshot."""
    return attribute_deals([snapshot])[0]


def attribute_deals(snapshots, *, durable: bool = True) -> list[Attribution | None]:
    """`attribute_deal` for each snapshot, in one transaction with bulk statements. Returns
    the attributions in the snapshots' order.

    `durable=False` (a backfill's batches) commits without waiting for the disk: a crash may
    lose the last moments' batches, never half of one, and re-running the backfill redoes
    them."""
    snapshots = list(snapshots)
    if len({_deal_key(s) for s in snapshots}) < len(snapshots):
        # Two versions of one deal: the second must see what the first wrote.
        return [attribute_deal(s) for s in snapshots]
    # Gathering the candidates only reads (and, with fuzzy names, is the slow part): done
    # before the transaction takes its locks, so a person confirming or reassigning an
    # attribution never waits for it. Under READ COMMITTED each statement sees the latest
    # committed referrals either way.
    programs = {}
    won = [(i, s, deal_facts(s), settings_for(s, programs)) for i, s in enumerate(snapshots)
           if s.outcome == DealSnapshot.WON]
    candidates = _candidates([(s, deal, settings.fuzzy_threshold)
                              for _, s, deal, settings in won])
    networks = _network_ids([s for _, s, _, _ in won])
    own_transaction = not connection.in_atomic_block
    with transaction.atomic():
        if not durable and own_transaction and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit = off")
        return _attribute_chunk(snapshots, won, candidates, networks)


# What a re-run reads of an existing attribution: not the stored decision (it is only ever
# replaced, and parsing it is most of the cost of an unchanged re-run).
_LOCKED_FIELDS = [f.name for f in Attribution._meta.concrete_fields if f.name != "decision"]


# A vendor's deals are locked in this many groups (by a stable hash of the deal): concurrent
# runs that share no group, such as the workers of a parallel backfill, never wait for each
# other. Changing it lets runs of two versions lock differently: stop them first.
LOCK_GROUPS = 16


def lock_group(deal_key: tuple) -> int:
    """The lock group of a deal (vendor, provider, external id); the same in every process,
    unlike hash()."""
    _, provider, external_id = deal_key
    return zlib.crc32(f"{provider}\x1f{external_id}".encode()) % LOCK_GROUPS


def _lock_existing(snapshots) -> dict:
    """The chunk's attributions, locked (in id order, so concurrent runs cannot deadlock).

    Deals without one yet have no row to lock: a transaction-level lock per vendor and lock
    group of the chunk's deals (taken in order) makes concurrent runs (backfills, tasks) on
    the same deals take turns here, so the second sees the first's rows instead of inserting
    the same deal again. Only this short write phase is serialized."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for vendor_id, group in sorted({(s.vendor_id, lock_group(_deal_key(s)))
                                            for s in snapshots}):
                cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                               [f"attribution.runner:vendor:{vendor_id}:{group}"])
    deals = defaultdict(set)
    for s in snapshots:
        deals[(s.vendor_id, s.provider)].add(s.external_deal_id)
    match = Q(pk__in=[])
    for (vendor_id, provider), ids in deals.items():
        match |= Q(vendor_id=vendor_id, provider=provider, external_deal_id__in=ids)
    rows = list(Attribution.objects.select_for_update(of=("self",)).only(*_LOCKED_FIELDS)
                .filter(match).order_by("pk"))
    # Of the credited referrals the history shows only the id, read on its own: joined into
    # the locking query, a planner with stale statistics (a first backfill into an empty
    # table) merged it with the whole referral table, 0.6 s per chunk.
    credited = Referral.objects.only("pk", "public_id").in_bulk(
        {a.referral_id for a in rows} - {None})
    for a in rows:
        if a.referral_id:
            a.referral = credited[a.referral_id]
    return {_deal_key(a): a for a in rows}


def _attribute_chunk(snapshots, won, candidates, networks) -> list[Attribution | None]:
    existing = _lock_existing(snapshots)
    results = [None] * len(snapshots)
    for i, snapshot in enumerate(snapshots):
        if snapshot.outcome != DealSnapshot.WON:
            results[i] = _deal_no_longer_won(existing.get(_deal_key(snapshot)), snapshot)
    writes = _Writes()
    for (i, snapshot, deal, settings), referrals in zip(won, candidates, strict=True):
        results[i] = _decide(snapshot, deal, settings, referrals,
                             existing.get(_deal_key(snapshot)), networks, writes)
    writes.save()
    return results


def _network_ids(snapshots) -> dict:
    """Vendor id -> network id, without loading each snapshot's vendor."""
    networks = {s.vendor_id: s.vendor.network_id for s in snapshots
                if DealSnapshot.vendor.is_cached(s)}
    missing = {s.vendor_id for s in snapshots} - networks.keys()
    if missing:
        networks.update(Organization.objects.filter(pk__in=missing)
                        .values_list("pk", "network_id"))
    return networks


def _decide(snapshot, deal, settings, referrals, existing, networks, writes) -> Attribution:
    referrals = {str(r.public_id): r for r in referrals}
    facts = [_facts(r) for r in referrals.values()]
    digest = _digest(deal, facts, settings, (snapshot.amount_minor, snapshot.currency))
    if existing is not None and existing.inputs_digest == digest:
        return existing  # same inputs, same answer: nothing to write
    decision = engine.decide(deal, facts, settings)
    winner = referrals.get(decision.referral_id) if decision.referral_id else None
    before = _summary(existing)
    if existing is not None and existing.status in Attribution.HUMAN_DECIDED:
        existing.snapshot, existing.inputs_digest = snapshot, digest
        writes.touched.append(existing)
        writes.change(existing, "deal changed; a person's decision stands", before,
                      {"engine_would_pick": decision.referral_id})
        return existing
    if existing is None:
        reason = "attributed"
    elif existing.snapshot_id != snapshot.pk:
        reason = "deal changed; re-evaluated"
    else:  # the same deal, judged again: what changed is around it
        reason = "registrations or the program's rules changed; re-evaluated"
    attribution = existing or Attribution(
        network_id=networks[snapshot.vendor_id], vendor_id=snapshot.vendor_id,
        provider=snapshot.provider, external_deal_id=snapshot.external_deal_id)
    attribution.snapshot = snapshot
    attribution.referral = winner
    attribution.partner_id = winner.partner_id if winner else None
    attribution.rule, attribution.match = decision.rule, decision.match
    attribution.confidence = decision.confidence
    attribution.status = (Attribution.NEEDS_REVIEW if decision.needs_review
                          else Attribution.AUTO_CONFIRMED)
    attribution.decision = decision.as_dict()
    attribution.inputs_digest = digest
    (writes.updated if existing else writes.created).append(attribution)
    for v in decision.verdicts:
        referral = referrals[v.referral_id]
        writes.candidates.append((attribution, referral.pk, referral.partner_id, v.kept,
                                  v.match, v.reason[:200]))
    after = _summary(attribution)
    # Past the digest check, an existing attribution's inputs did change: always say so.
    writes.change(attribution, reason, before, after)
    return attribution


class _Writes:
    """What a chunk changes, written with one statement per kind (COPY for new rows).
    Candidates and history are kept as rows, not model instances: nothing reads them back,
    and building thousands of instances per chunk showed in the profile."""

    DECIDED = ["snapshot", "referral", "partner", "rule", "match", "confidence", "status",
               "decision", "inputs_digest", "updated_at"]
    CANDIDATE = ("attribution_id", "referral_id", "partner_id", "kept", "match", "reason")
    CHANGE = ("attribution_id", "at", "actor_id", "reason", "before", "after")

    def __init__(self):
        self.created, self.updated, self.touched = [], [], []
        self.candidates, self.changes = [], []  # rows whose attribution comes first
        self.now = timezone.now()

    def change(self, attribution, reason, before, after):
        self.changes.append((attribution, self.now, None, reason, before, after))

    def save(self):
        for attribution in self.updated + self.touched:
            attribution.updated_at = self.now  # bulk_update does not apply auto_now
        copy_insert(self.created)
        if self.updated:
            Attribution.objects.bulk_update(self.updated, self.DECIDED, batch_size=100)
            AttributionCandidate.objects.filter(
                attribution_id__in=[a.pk for a in self.updated]).delete()
        if self.touched:
            Attribution.objects.bulk_update(
                self.touched, ["snapshot", "inputs_digest", "updated_at"], batch_size=100)
        copy_rows(AttributionCandidate, self.CANDIDATE,
                  ((a.pk, *rest) for a, *rest in self.candidates))
        copy_rows(AttributionChange, self.CHANGE, ((a.pk, *rest) for a, *rest in self.changes))


def _deal_no_longer_won(existing, snapshot):
    """A deal reopened or lost after it was attributed: flag it for review (unless a person
    already decided) so the change is seen; commissions follow this in the payouts app."""
    if existing is None or existing.status in Attribution.HUMAN_DECIDED:
        return existing
    if existing.status == Attribution.NEEDS_REVIEW and existing.snapshot_id == snapshot.pk:
        return existing
    before = _summary(existing)
    existing.snapshot, existing.status = snapshot, Attribution.NEEDS_REVIEW
    existing.inputs_digest = ""
    existing.save(update_fields=["snapshot", "status", "inputs_digest", "updated_at"])
    AttributionChange.objects.create(attribution=existing, before=before,
                                     after=_summary(existing),
                                     reason=f"deal is {snapshot.outcome} again")
    return existing


# What attribution reads of a snapshot (not the CRM's raw payload, which can be large). A
# field missing here costs a query per deal: bench/attribution.py shows it.
_DECIDED_ON = ("vendor", "provider", "external_deal_id", "referral", "account_domain",
               "account_name", "amount_minor", "currency", "outcome", "deal_created_at",
               "closed_at")


def backfill(vendor_id: int, since, batch: int = 500, progress=None, workers: int = 1) -> int:
    """Re-run attribution for the vendor's deals won (closed) since `since`, judging each by
    its newest snapshot whatever it says now (a deal reopened since stays flagged), in batches
    (one transaction each). Returns how many deals were processed.

    With `workers` > 1 (PostgreSQL only; SQLite takes one writer at a time) the batches go to
    that many processes, each batch drawn from one worker's share of the lock groups so that
    the workers do not wait for each other's locks. Batches commit as they finish, so it must
    not run inside a transaction."""
    deals = _latest_per_deal(vendor_id, since)
    if workers > 1 and connection.vendor == "postgresql":
        results = _in_processes(_batches_per_worker(deals, batch, workers), workers)
    else:
        ids = [pk for pk, _ in deals]
        results = map(_attribute_ids, (ids[i:i + batch] for i in range(0, len(ids), batch)))
    done = 0
    for count in results:
        done += count
        if progress:
            progress(done, len(deals))
    return done


def _attribute_ids(ids) -> int:
    attribute_deals(DealSnapshot.objects.filter(pk__in=ids)
                    .select_related("referral__program").only(*_DECIDED_ON), durable=False)
    return len(ids)


def _latest_per_deal(vendor_id: int, since) -> list[tuple[int, tuple]]:
    """(snapshot id, deal key) of the newest snapshot of each of the vendor's deals that was
    won with a close on or after `since`."""
    won_since = DealSnapshot.objects.filter(
        vendor_id=OuterRef("vendor_id"), provider=OuterRef("provider"),
        external_deal_id=OuterRef("external_deal_id"), outcome=DealSnapshot.WON,
        closed_at__gte=since)
    of_deals = (DealSnapshot.objects.filter(vendor_id=vendor_id).filter(Exists(won_since))
                .order_by("provider", "external_deal_id", "-received_at", "-pk"))
    rows = of_deals.values_list("pk", "provider", "external_deal_id")
    if connection.vendor == "postgresql":
        rows = rows.distinct("provider", "external_deal_id")
    latest, seen = [], set()
    for pk, provider, external_id in rows:
        if (provider, external_id) not in seen:  # the first row of each deal is its newest
            seen.add((provider, external_id))
            latest.append((pk, (vendor_id, provider, external_id)))
    return latest


def _batches_per_worker(deals, batch: int, workers: int) -> list[list[int]]:
    """The deals' snapshot ids in batches, worker by worker in turn, each worker's batches
    holding only the deals of its lock groups: run in that order by `workers` processes,
    concurrent batches seldom share a lock group."""
    shares = [[] for _ in range(workers)]
    for pk, key in deals:
        shares[lock_group(key) % workers].append(pk)
    per_worker = [[share[i:i + batch] for i in range(0, len(share), batch)] for share in shares]
    return [ids for turn in itertools.zip_longest(*per_worker) for ids in turn if ids]


def _in_processes(batches, workers: int):
    """`_attribute_ids` of each batch in `workers` forked processes; yields the counts in the
    batches' order."""
    if connection.in_atomic_block:
        raise RuntimeError("A parallel backfill commits batch by batch: run it outside a "
                           "transaction.")
    # A forked process must not use (nor close) its parent's database connection: each opens
    # its own, and the parent reconnects when it next needs one.
    connections.close_all()
    executor = ProcessPoolExecutor(max_workers=workers, initializer=_worker_started,
                                   mp_context=multiprocessing.get_context("fork"))
    try:
        yield from executor.map(_attribute_ids, batches)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _worker_started():
    # Say goodbye to the server when the worker exits, rather than dropping the socket.
    multiprocessing.util.Finalize(None, connections.close_all, exitpriority=10)
