"""Running the attribution engine against the database: gather candidates with indexed
queries, decide (attribution.engine, pure), and upsert one Attribution per deal.

Re-running on the same inputs changes nothing (an inputs digest says so); a person's decision
(confirmed / overturned) is never overwritten; any other change is recorded in the
attribution's history.
"""

import hashlib
import json

from django.contrib.postgres.search import TrigramSimilarity
from django.db import connection, transaction
from django.db.models import Q

from attribution import engine
from attribution.models import Attribution, AttributionCandidate, AttributionChange, DealSnapshot
from referrals.models import Program, Referral
from referrals.normalize import normalize_company_name

FUZZY_CANDIDATES = 200


def settings_for(snapshot: DealSnapshot) -> engine.Settings:
    """The program that governs a deal: the linked referral's, else the vendor's oldest open
    program (vendors usually run one)."""
    program = snapshot.referral.program if snapshot.referral_id else (
        Program.objects.filter(vendor_id=snapshot.vendor_id).order_by("-status", "created_at")
        .first())
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
    of_vendor = Referral.objects.filter(vendor_id=snapshot.vendor_id).exclude(status="draft")
    match = Q(pk=snapshot.referral_id) if snapshot.referral_id else Q(pk__in=[])
    if deal.domain:
        match |= Q(domain=deal.domain)
    if deal.normalized_name:
        match |= Q(normalized_name=deal.normalized_name)
    found = {r.pk: r for r in of_vendor.filter(match)}
    if deal.normalized_name and threshold < 100 and connection.vendor == "postgresql":
        similar = (of_vendor.filter(normalized_name__trigram_similar=deal.normalized_name)
                   .annotate(similarity=TrigramSimilarity("normalized_name",
                                                          deal.normalized_name))
                   .order_by("-similarity")[:FUZZY_CANDIDATES])
        for referral in similar:
            found.setdefault(referral.pk, referral)
    return list(found.values())


def _facts(referral: Referral) -> engine.CandidateFacts:
    return engine.CandidateFacts(
        referral_id=str(referral.public_id), partner_id=str(referral.partner_id),
        status=referral.status, domain=referral.domain,
        normalized_name=referral.normalized_name, submitted_at=referral.submitted_at,
        accepted_at=referral.decided_at if referral.status != "rejected" else None,
        protected_until=referral.protected_until)


def _digest(deal, candidates, settings) -> str:
    payload = json.dumps([deal.__dict__, sorted((c.__dict__ for c in candidates),
                                                key=lambda c: c["referral_id"]),
                          settings.__dict__], default=str, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _summary(a: Attribution | None) -> dict | None:
    if a is None:
        return None
    return {"referral": str(a.referral.public_id) if a.referral_id else None,
            "status": a.status, "match": a.match, "confidence": a.confidence}


@transaction.atomic
def attribute_deal(snapshot: DealSnapshot) -> Attribution | None:
    """Decide (or re-decide) who earned the deal of this snapshot."""
    existing = (Attribution.objects.select_for_update()
                .filter(vendor_id=snapshot.vendor_id, provider=snapshot.provider,
                        external_deal_id=snapshot.external_deal_id).first())
    if snapshot.outcome != DealSnapshot.WON:
        return _deal_no_longer_won(existing, snapshot)
    settings = settings_for(snapshot)
    deal = deal_facts(snapshot)
    referrals = {str(r.public_id): r for r in
                 candidate_referrals(snapshot, deal, settings.fuzzy_threshold)}
    facts = [_facts(r) for r in referrals.values()]
    digest = _digest(deal, facts, settings)
    if existing is not None and existing.inputs_digest == digest:
        return existing  # same inputs, same answer: nothing to write
    decision = engine.decide(deal, facts, settings)
    winner = referrals.get(decision.referral_id) if decision.referral_id else None
    before = _summary(existing)
    if existing is not None and existing.status in Attribution.HUMAN_DECIDED:
        existing.snapshot, existing.inputs_digest = snapshot, digest
        existing.save(update_fields=["snapshot", "inputs_digest", "updated_at"])
        AttributionChange.objects.create(
            attribution=existing, reason="deal changed; a person's decision stands",
            before=before, after={"engine_would_pick": decision.referral_id})
        return existing
    attribution = existing or Attribution(
        network_id=snapshot.vendor.network_id, vendor_id=snapshot.vendor_id,
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
    attribution.save()
    attribution.candidates.all().delete()
    AttributionCandidate.objects.bulk_create([
        AttributionCandidate(attribution=attribution, referral=referrals[v.referral_id],
                             partner_id=referrals[v.referral_id].partner_id, kept=v.kept,
                             match=v.match, reason=v.reason[:200])
        for v in decision.verdicts])
    after = _summary(attribution)
    if before != after or existing is None:
        AttributionChange.objects.create(
            attribution=attribution, before=before, after=after,
            reason="attributed" if existing is None else "deal changed; re-evaluated")
    return attribution


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


def backfill(vendor_id: int, since, batch: int = 500, progress=None) -> int:
    """Re-run attribution for the vendor's won deals closed since `since`, latest snapshot
    of each deal, in batches. Returns how many deals were processed."""
    if connection.vendor == "postgresql":
        ids = list(DealSnapshot.objects.filter(vendor_id=vendor_id, outcome=DealSnapshot.WON,
                                               closed_at__gte=since)
                   .order_by("provider", "external_deal_id", "-received_at", "-pk")
                   .distinct("provider", "external_deal_id").values_list("pk", flat=True))
    else:
        ids = _latest_per_deal_portable(vendor_id, since)
    done = 0
    for start in range(0, len(ids), batch):
        chunk = (DealSnapshot.objects.filter(pk__in=ids[start:start + batch])
                 .select_related("vendor", "referral", "referral__program"))
        for snapshot in chunk:
            attribute_deal(snapshot)
        done += len(ids[start:start + batch])
        if progress:
            progress(done, len(ids))
    return done


def _latest_per_deal_portable(vendor_id, since) -> list[int]:
    seen, ids = set(), []
    for pk, provider, deal in (DealSnapshot.objects
                               .filter(vendor_id=vendor_id, outcome=DealSnapshot.WON,
                                       closed_at__gte=since)
                               .order_by("-received_at", "-pk")
                               .values_list("pk", "provider", "external_deal_id")):
        if (provider, deal) not in seen:
            seen.add((provider, deal))
            ids.append(pk)
    return ids

