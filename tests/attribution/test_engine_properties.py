"""Properties of the attribution decision over generated deals and candidate lists: it is
deterministic, the order of candidates does not matter, and a winner is always an eligible,
matching candidate that its program's rule prefers over every other one of its match tier."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rapidfuzz import fuzz

from attribution.engine import NONE, RULES, CandidateFacts, DealFacts, Settings, decide

EPOCH = datetime(2024, 1, 1, tzinfo=ZoneInfo("UTC"))
IDS = [f"R-{n:02d}" for n in range(12)]
PARTNERS = ["P-1", "P-2", "P-3"]
STATUSES = ["draft", "submitted", "accepted", "rejected", "won", "lost", "expired", "withdrawn"]
DOMAINS = ["acme.com", "acme.co.uk", "globex.com", ""]
NAMES = ["acme", "acme s", "acme cloud", "globex", "northwind traders", "northwind trader", ""]
ZONES = ["UTC", "America/Los_Angeles", "Pacific/Auckland"]
WAS_ACCEPTED = {"accepted", "won", "lost", "expired"}
STRENGTH = {"exact": 3, "domain": 2, "fuzzy": 1}

PROPERTY_SETTINGS = hypothesis_settings(max_examples=150, deadline=None)

hours = st.integers

# Mostly statuses that were accepted, so that contests between eligible candidates are common.
statuses = st.sampled_from(STATUSES + ["accepted", "accepted", "won", "expired"])
domains = st.sampled_from(DOMAINS)
names = st.sampled_from(NAMES)


def _sometimes_missing(draw, value):
    return None if draw(st.integers(0, 7)) == 0 else value


@st.composite
def scenarios(draw):
    """A deal, its program and up to eight candidates, their moments placed around the deal's
    creation (some registered after it, some with protection that ended before it)."""
    created = EPOCH + timedelta(hours=draw(hours(0, 100 * 24)))
    closed = created + timedelta(hours=draw(hours(0, 420 * 24)))
    deal = DealFacts(external_deal_id="D-1", referral_id=draw(st.sampled_from([""] + IDS[:4])),
                     domain=draw(domains), normalized_name=draw(names),
                     deal_created_at=_sometimes_missing(draw, created),
                     closed_at=_sometimes_missing(draw, closed))
    program = draw(st.builds(Settings, rule=st.sampled_from(RULES),
                             window_days=st.sampled_from([30, 365]) | st.integers(0, 400),
                             fuzzy_threshold=st.integers(50, 100),
                             fuzzy_needs_review=st.booleans(),
                             time_zone=st.sampled_from(ZONES)))
    candidates = []
    for rid in draw(st.lists(st.sampled_from(IDS), unique=True, max_size=8)):
        submitted = created - timedelta(hours=draw(hours(-48, 120 * 24)))
        accepted = submitted + timedelta(hours=draw(hours(0, 30 * 24)))
        protected = created + timedelta(hours=draw(hours(-10 * 24, 200 * 24)))
        candidates.append(CandidateFacts(
            referral_id=rid, partner_id=draw(st.sampled_from(PARTNERS)),
            status=draw(statuses),
            domain=draw(st.just(deal.domain) | domains),
            normalized_name=draw(st.just(deal.normalized_name) | names),
            submitted_at=_sometimes_missing(draw, submitted),
            accepted_at=_sometimes_missing(draw, accepted),
            protected_until=_sometimes_missing(draw, protected)))
    return deal, candidates, program


def _eligible(deal: DealFacts, c: CandidateFacts, program: Settings) -> bool:
    """The eligibility rules of the issue, written out independently of the engine."""
    if c.status not in WAS_ACCEPTED or c.accepted_at is None or c.submitted_at is None:
        return False
    created = deal.deal_created_at or deal.closed_at  # a dateless deal is judged at close
    if created is not None:
        if c.submitted_at > created:
            return False
        if c.protected_until is None or c.protected_until < created:
            return False
    if deal.closed_at is not None:
        tz = ZoneInfo(program.time_zone)
        days = (deal.closed_at.astimezone(tz).date() - c.submitted_at.astimezone(tz).date()).days
        if days > program.window_days:
            return False
    return True


def _match(deal: DealFacts, c: CandidateFacts, program: Settings) -> str:
    if deal.referral_id and deal.referral_id == c.referral_id:
        return "exact"
    if deal.domain and deal.domain == c.domain:
        return "domain"
    if deal.normalized_name and c.normalized_name and round(fuzz.token_sort_ratio(
            deal.normalized_name, c.normalized_name)) >= program.fuzzy_threshold:
        return "fuzzy"
    return NONE


def _outcome(decision):
    return (decision.referral_id, decision.partner_id, decision.rule, decision.match,
            decision.confidence, decision.needs_review, frozenset(decision.verdicts))


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_the_decision_is_deterministic(scenario):
    deal, candidates, program = scenario
    first = decide(deal, list(candidates), program)
    again = decide(deal, list(candidates), program)
    assert first == again
    assert first.as_dict() == again.as_dict()


@PROPERTY_SETTINGS
@given(scenario=scenarios(), data=st.data())
def test_the_order_of_candidates_does_not_matter(scenario, data):
    deal, candidates, program = scenario
    shuffled = data.draw(st.permutations(candidates), label="shuffled")
    original = decide(deal, candidates, program)
    permuted = decide(deal, shuffled, program)
    assert permuted.referral_id == original.referral_id
    assert _outcome(permuted) == _outcome(original)


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_the_winner_is_an_eligible_match_that_the_rule_prefers(scenario):
    deal, candidates, program = scenario
    decision = decide(deal, candidates, program)
    by_id = {c.referral_id: c for c in candidates}
    verdicts = {v.referral_id: v for v in decision.verdicts}
    assert set(verdicts) == set(by_id)  # every candidate, once, with a reason
    assert all(v.reason for v in verdicts.values())
    contenders = {rid: _match(deal, c, program) for rid, c in by_id.items()
                  if _match(deal, c, program) != NONE and _eligible(deal, c, program)}
    kept = [rid for rid, v in verdicts.items() if v.kept]
    event(f"winner: {decision.match}, {len(contenders)} eligible")

    if decision.referral_id is None:
        assert not contenders
        assert kept == [] and decision.match == NONE and decision.confidence == 0
        return
    winner = by_id[decision.referral_id]
    assert kept == [winner.referral_id]
    assert decision.partner_id == winner.partner_id
    assert decision.referral_id in contenders
    assert decision.match == contenders[winner.referral_id] == verdicts[winner.referral_id].match
    assert decision.needs_review == (decision.match == "fuzzy" and program.fuzzy_needs_review)
    assert 0 <= decision.confidence <= 100
    best = max(STRENGTH[kind] for kind in contenders.values())
    assert STRENGTH[decision.match] == best
    tier = [by_id[rid] for rid, kind in contenders.items() if STRENGTH[kind] == best]
    for other in tier:
        if program.rule == "first_accepted":
            assert winner.accepted_at <= other.accepted_at
        elif program.rule == "first_submitted":
            assert winner.submitted_at <= other.submitted_at
        else:
            assert winner.submitted_at >= other.submitted_at
