"""The attribution decision, rule by rule and edge by edge (attribution.engine.decide, pure).

The standard account: a deal for acme.co.uk ("acme"), created 1 March 2024 and won 1 June 2024;
the standard candidate registered it on 1 February, was accepted on 5 February and is protected
until 5 May. Each table row changes one thing about that picture.
"""

from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from attribution.engine import (
    DOMAIN,
    EXACT,
    FUZZY,
    NONE,
    CandidateFacts,
    DealFacts,
    Settings,
    decide,
)
from referrals.normalize import normalize_company_name, normalize_domain


def at(text: str, tz: str = "UTC") -> datetime:
    """An aware moment: "2024-03-01 12:00" read in `tz`."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz))


DEAL = DealFacts(external_deal_id="D-1", referral_id="", domain="acme.co.uk",
                 normalized_name="acme", deal_created_at=at("2024-03-01 12:00"),
                 closed_at=at("2024-06-01 12:00"))


def deal(**changes) -> DealFacts:
    return replace(DEAL, **changes)


def cand(referral_id: str = "R-1", partner_id: str = "P-1", **changes) -> CandidateFacts:
    base = CandidateFacts(referral_id=referral_id, partner_id=partner_id, status="accepted",
                          domain="acme.co.uk", normalized_name="acme",
                          submitted_at=at("2024-02-01 09:00"),
                          accepted_at=at("2024-02-05 09:00"),
                          protected_until=at("2024-05-05 09:00"))
    return replace(base, **changes)


def verdicts_by_id(decision) -> dict:
    return {v.referral_id: v for v in decision.verdicts}


# --- Eligibility ---------------------------------------------------------------------------

CREATED = DEAL.deal_created_at

ELIGIBILITY = [
    # id, candidate changes, deal changes, kept, reason fragment
    ("accepted", {}, {}, True, "wins by first accepted"),
    ("won_status_counts_as_accepted", {"status": "won"}, {}, True, "wins"),
    ("lost_status_counts_as_accepted", {"status": "lost"}, {}, True, "wins"),
    ("submitted_never_accepted", {"status": "submitted", "accepted_at": None}, {}, False,
     "never accepted (status submitted)"),
    ("rejected", {"status": "rejected", "accepted_at": None}, {}, False,
     "never accepted (status rejected)"),
    ("rejected_even_with_a_decision_time", {"status": "rejected"}, {}, False,
     "never accepted (status rejected)"),
    ("withdrawn_after_acceptance", {"status": "withdrawn"}, {}, False,
     "never accepted (status withdrawn)"),
    ("draft", {"status": "draft", "accepted_at": None, "submitted_at": None}, {}, False,
     "never accepted"),
    ("expired_without_ever_being_accepted", {"status": "expired", "accepted_at": None}, {},
     False, "never accepted (status expired)"),
    ("expired_but_protected_when_the_deal_was_created",
     {"status": "expired", "protected_until": CREATED + timedelta(days=10)}, {}, True, "wins"),
    ("registered_after_the_deal_was_created",
     {"submitted_at": CREATED + timedelta(seconds=1)}, {}, False,
     "registered after the deal was created"),
    ("registered_the_same_instant_the_deal_was_created", {"submitted_at": CREATED}, {}, True,
     "wins"),
    ("accepted_after_the_deal_was_created_but_registered_before",
     {"accepted_at": CREATED + timedelta(days=3),
      "protected_until": CREATED + timedelta(days=93)}, {}, True, "wins"),
    ("protection_ended_before_the_deal_was_created",
     {"status": "expired", "protected_until": CREATED - timedelta(seconds=1)}, {}, False,
     "not protected when the deal was created"),
    ("protection_ending_the_instant_the_deal_was_created", {"protected_until": CREATED}, {},
     True, "wins"),
    ("no_protection_recorded", {"protected_until": None}, {}, False,
     "not protected when the deal was created"),
    ("closed_outside_the_window", {}, {"closed_at": at("2025-02-02 12:00")}, False,
     "outside the 365-day window"),
    ("no_close_date_no_window_check", {}, {"closed_at": None}, True, "wins"),
]


@pytest.mark.parametrize(("candidate", "deal_changes", "kept", "reason"),
                         [row[1:] for row in ELIGIBILITY], ids=[row[0] for row in ELIGIBILITY])
def test_eligibility(candidate, deal_changes, kept, reason):
    decision = decide(deal(**deal_changes), [cand(**candidate)], Settings())
    (verdict,) = decision.verdicts
    assert verdict.kept is kept
    assert reason in verdict.reason
    assert verdict.match == DOMAIN  # the account matched; only eligibility differs
    assert decision.referral_id == ("R-1" if kept else None)
    assert decision.partner_id == ("P-1" if kept else None)
    if not kept:
        assert (decision.match, decision.confidence, decision.needs_review) == (NONE, 0, False)


def test_an_ineligible_exact_match_leaves_the_deal_to_an_eligible_domain_match():
    linked = cand("R-linked", "P-1", domain="elsewhere.com", normalized_name="elsewhere",
                  submitted_at=CREATED + timedelta(days=1))
    by_domain = cand("R-domain", "P-2")
    decision = decide(deal(referral_id="R-linked"), [linked, by_domain], Settings())
    assert (decision.referral_id, decision.match) == ("R-domain", DOMAIN)
    verdicts = verdicts_by_id(decision)
    assert verdicts["R-linked"].match == EXACT
    assert verdicts["R-linked"].reason == "registered after the deal was created"


# --- Attribution window: calendar days in the vendor's time zone ----------------------------

WINDOW = [
    # id, time zone, registered, closed (both UTC), window days, kept
    ("utc_closed_on_the_last_day", "UTC", "2024-03-01 23:59", "2024-03-31 00:00", 30, True),
    ("utc_closed_late_on_the_last_day", "UTC", "2024-03-01 00:00", "2024-03-31 23:59", 30, True),
    ("utc_closed_the_day_after", "UTC", "2024-03-01 23:59", "2024-04-01 00:00", 30, False),
    ("utc_closed_the_same_day", "UTC", "2024-03-01 08:00", "2024-03-01 09:00", 0, True),
    ("utc_zero_day_window_next_day", "UTC", "2024-03-01 23:00", "2024-03-02 01:00", 0, False),
    ("utc_default_year_last_day", "UTC", "2024-03-01 10:00", "2025-03-01 10:00", 365, True),
    ("utc_default_year_day_after", "UTC", "2024-03-01 10:00", "2025-03-02 10:00", 365, False),
    # Los Angeles: registered on the evening of 1 January local (2 January UTC).
    ("la_local_day_30_counts", "America/Los_Angeles", "2024-01-02 03:00", "2024-02-01 05:00",
     30, True),
    ("la_local_day_31_is_out_though_utc_says_30", "America/Los_Angeles", "2024-01-02 03:00",
     "2024-02-01 17:00", 30, False),
    ("utc_reading_of_the_same_la_deal_is_in", "UTC", "2024-01-02 03:00", "2024-02-01 17:00",
     30, True),
    # Auckland: registered just after midnight on 2 January local (1 January UTC).
    ("auckland_local_day_30_counts_though_utc_says_31", "Pacific/Auckland", "2024-01-01 12:30",
     "2024-02-01 10:00", 30, True),
    ("utc_reading_of_the_same_auckland_deal_is_out", "UTC", "2024-01-01 12:30",
     "2024-02-01 10:00", 30, False),
    ("auckland_local_day_31_is_out", "Pacific/Auckland", "2024-01-01 12:30", "2024-02-01 11:30",
     30, False),
]


@pytest.mark.parametrize(("tz", "registered", "closed", "window", "kept"),
                         [row[1:] for row in WINDOW], ids=[row[0] for row in WINDOW])
def test_attribution_window_counts_calendar_days_in_the_vendor_time_zone(
        tz, registered, closed, window, kept):
    submitted = at(registered)
    candidate = cand(submitted_at=submitted, accepted_at=submitted,
                     protected_until=submitted + timedelta(days=400))
    the_deal = deal(deal_created_at=submitted + timedelta(minutes=1), closed_at=at(closed))
    decision = decide(the_deal, [candidate], Settings(window_days=window, time_zone=tz))
    (verdict,) = decision.verdicts
    assert verdict.kept is kept, verdict.reason
    if not kept:
        assert f"outside the {window}-day window" in verdict.reason


def test_the_window_reason_names_the_days_counted():
    decision = decide(deal(closed_at=at("2024-03-04 12:00")),
                      [cand(submitted_at=at("2024-02-01 09:00"))], Settings(window_days=10))
    assert decision.verdicts[0].reason == (
        "deal closed 32 days after registration, outside the 10-day window")


# --- Matching: exact id, then registrable domain, then fuzzy name --------------------------

def _three_ways():
    exact = cand("R-exact", "P-exact", domain="other.example", normalized_name="zeta widgets",
                 accepted_at=at("2024-02-20 09:00"))
    by_domain = cand("R-domain", "P-domain", normalized_name="something else",
                     accepted_at=at("2024-02-10 09:00"))
    by_name = cand("R-name", "P-name", domain="acme-group.com",
                   accepted_at=at("2024-02-02 09:00"))
    return exact, by_domain, by_name


def test_exact_id_beats_domain_beats_fuzzy_whatever_the_rule_says():
    exact, by_domain, by_name = _three_ways()  # accepted last, middle, first
    decision = decide(deal(referral_id="R-exact"), [by_name, by_domain, exact], Settings())
    assert (decision.referral_id, decision.partner_id) == ("R-exact", "P-exact")
    assert (decision.match, decision.confidence, decision.needs_review) == (EXACT, 100, False)
    verdicts = verdicts_by_id(decision)
    assert verdicts["R-exact"].kept and verdicts["R-exact"].reason == (
        "wins by first accepted (exact match)")
    assert verdicts["R-domain"].match == DOMAIN
    assert verdicts["R-domain"].reason == "a stronger match (exact) exists"
    assert verdicts["R-name"].match == FUZZY
    assert verdicts["R-name"].reason == "a stronger match (exact) exists"


def test_domain_beats_fuzzy_without_an_exact_link():
    exact, by_domain, by_name = _three_ways()
    decision = decide(deal(), [by_name, by_domain, exact], Settings())
    assert (decision.referral_id, decision.match, decision.confidence) == ("R-domain", DOMAIN, 90)
    assert decision.needs_review is False
    verdicts = verdicts_by_id(decision)
    assert verdicts["R-name"].reason == "a stronger match (domain) exists"
    assert (verdicts["R-exact"].match, verdicts["R-exact"].kept) == (NONE, False)
    assert verdicts["R-exact"].reason == "does not match the deal's account"


def test_a_fuzzy_match_wins_alone_and_needs_review():
    _, _, by_name = _three_ways()
    decision = decide(deal(), [by_name], Settings())
    assert (decision.referral_id, decision.match) == ("R-name", FUZZY)
    assert decision.needs_review is True
    assert decision.confidence == 80  # identical normalized names still only reach 80


def test_a_fuzzy_match_needs_no_review_when_the_program_says_so():
    _, _, by_name = _three_ways()
    decision = decide(deal(), [by_name], Settings(fuzzy_needs_review=False))
    assert decision.referral_id == "R-name"
    assert decision.needs_review is False


@pytest.mark.parametrize(("deal_name", "candidate_name", "threshold", "match", "score"), [
    ("northwind traders", "northwind trader", 90, FUZZY, 97),
    ("northwind traders", "northwind trader", 97, FUZZY, 97),
    ("northwind traders", "northwind trader", 98, NONE, 0),
    ("umbrella", "umbrela", 90, FUZZY, 93),
    ("acme", "acme s", 90, NONE, 0),
    ("acme", "acme s", 80, FUZZY, 80),
    ("northwind traders", "southwind logistics", 30, FUZZY, 39),
    ("northwind traders", "southwind logistics", 90, NONE, 0),
    ("initech", "initech solutions", 90, NONE, 0),
])
def test_fuzzy_names_match_at_or_above_the_threshold_only(deal_name, candidate_name, threshold,
                                                          match, score):
    candidate = cand(domain="unrelated.example", normalized_name=candidate_name)
    decision = decide(deal(normalized_name=deal_name), [candidate],
                      Settings(fuzzy_threshold=threshold))
    (verdict,) = decision.verdicts
    assert (verdict.match, verdict.score) == (match, score)
    assert verdict.kept is (match == FUZZY)
    if match == NONE:
        assert decision.referral_id is None
        assert verdict.reason == "does not match the deal's account"


def test_empty_domains_and_names_never_match_each_other():
    candidate = cand(domain="", normalized_name="")
    decision = decide(deal(domain="", normalized_name=""), [candidate], Settings())
    assert decision.verdicts[0].match == NONE
    assert decision.referral_id is None


@pytest.mark.parametrize(("deal_website", "candidate_website", "match"), [
    ("https://eu.acme.co.uk/pricing", "https://www.acme.co.uk", DOMAIN),
    ("shop.eu.acme.co.uk", "acme.co.uk", DOMAIN),
    ("EU.Acme.CO.UK", "http://acme.co.uk/", DOMAIN),
    ("https://app.acme.com", "https://www.acme.com/about", DOMAIN),
    ("https://eu.acme.co.uk", "https://other.co.uk", NONE),  # a public suffix is no account
    ("https://acme.co.uk", "https://acme.com", NONE),
])
def test_deals_on_a_subdomain_match_the_registrable_domain(deal_website, candidate_website,
                                                          match):
    candidate = cand(domain=normalize_domain(candidate_website), normalized_name="zeta")
    decision = decide(deal(domain=normalize_domain(deal_website), normalized_name="omega"),
                      [candidate], Settings())
    assert decision.verdicts[0].match == match
    assert (decision.referral_id == "R-1") is (match == DOMAIN)


def test_company_names_are_compared_normalized():
    candidate = cand(domain="", normalized_name=normalize_company_name("ACME, Ltd."))
    decision = decide(deal(domain="", normalized_name=normalize_company_name("Acme Limited")),
                      [candidate], Settings())
    assert (decision.match, decision.verdicts[0].score) == (FUZZY, 100)


# --- Rules: who wins among equally strong, eligible matches --------------------------------

def _contenders():
    """Three partners registered the same account; each rule picks a different one."""
    return [
        cand("R-a", "P-a", submitted_at=at("2024-01-01 09:00"),
             accepted_at=at("2024-02-20 09:00")),  # first submitted
        cand("R-b", "P-b", submitted_at=at("2024-01-10 09:00"),
             accepted_at=at("2024-01-15 09:00")),  # first accepted
        cand("R-c", "P-c", submitted_at=at("2024-02-15 09:00"),
             accepted_at=at("2024-03-05 09:00"),  # last touch (accepted after the deal began)
             protected_until=at("2024-06-05 09:00")),
    ]


@pytest.mark.parametrize(("rule", "winner"), [
    ("first_accepted", "R-b"), ("first_submitted", "R-a"), ("last_touch", "R-c")])
def test_each_rule_picks_its_winner_among_several_partners(rule, winner):
    decision = decide(deal(), _contenders(), Settings(rule=rule))
    assert decision.rule == rule
    assert decision.referral_id == winner
    assert decision.partner_id == winner.replace("R-", "P-")
    assert (decision.match, decision.confidence) == (DOMAIN, 80)  # 90, less 10 for contention
    label = rule.replace("_", " ")
    for verdict in decision.verdicts:
        if verdict.referral_id == winner:
            assert verdict.kept and verdict.reason == f"wins by {label} (domain match)"
        else:
            assert not verdict.kept and verdict.reason == f"eligible, but loses by {label}"


@pytest.mark.parametrize("rule", ["first_accepted", "first_submitted", "last_touch"])
def test_two_partners_on_one_account_only_the_eligible_one_can_win(rule):
    early, late = _contenders()[1], _contenders()[2]
    late = replace(late, status="withdrawn")
    decision = decide(deal(), [late, early], Settings(rule=rule))
    assert decision.referral_id == "R-b"
    assert decision.confidence == 90  # no contention among eligible candidates
    assert verdicts_by_id(decision)["R-c"].reason == "never accepted (status withdrawn)"


def test_last_touch_ignores_registrations_made_after_the_deal_was_created():
    contenders = _contenders() + [cand("R-late", "P-late", submitted_at=at("2024-03-02 09:00"),
                                       accepted_at=at("2024-03-02 10:00"))]
    decision = decide(deal(), contenders, Settings(rule="last_touch"))
    assert decision.referral_id == "R-c"
    assert verdicts_by_id(decision)["R-late"].reason == "registered after the deal was created"


@pytest.mark.parametrize("rule", ["first_accepted", "first_submitted", "last_touch"])
def test_exact_ties_are_broken_by_referral_id(rule):
    twins = [cand("R-2", "P-2"), cand("R-1", "P-1"), cand("R-3", "P-3")]
    assert decide(deal(), twins, Settings(rule=rule)).referral_id == "R-1"


def test_first_accepted_breaks_an_acceptance_tie_by_registration_time():
    same_moment = at("2024-02-10 09:00")
    first = cand("R-z", "P-z", submitted_at=at("2024-01-05 09:00"), accepted_at=same_moment)
    second = cand("R-a", "P-a", submitted_at=at("2024-01-06 09:00"), accepted_at=same_moment)
    assert decide(deal(), [second, first], Settings()).referral_id == "R-z"


def test_two_fuzzy_contenders_need_review_with_lower_confidence():
    near = cand("R-near", "P-1", domain="", normalized_name="northwind trader",
                accepted_at=at("2024-02-03 09:00"))
    also = cand("R-also", "P-2", domain="", normalized_name="northwind tradrs",
                accepted_at=at("2024-02-04 09:00"))
    decision = decide(deal(domain="", normalized_name="northwind traders"), [also, near],
                      Settings())
    assert (decision.referral_id, decision.match, decision.needs_review) == (
        "R-near", FUZZY, True)
    assert decision.confidence == 70  # min(80, 97 - 10), less 10 for contention


# --- Confidence, verdicts, errors ----------------------------------------------------------

@pytest.mark.parametrize(("candidates", "deal_changes", "program", "confidence"), [
    ([cand()], {"referral_id": "R-1"}, Settings(), 100),
    ([cand()], {}, Settings(), 90),
    ([cand("R-1"), cand("R-2", "P-2")], {}, Settings(), 80),
    ([cand(domain="")], {}, Settings(), 80),  # identical name
    ([cand(domain="", normalized_name="acme s")], {}, Settings(fuzzy_threshold=80), 70),
    ([cand(domain="", normalized_name="northwind trader")],
     {"normalized_name": "northwind traders"}, Settings(), 80),
    ([cand(domain="", normalized_name="globex systems")], {"normalized_name": "globex"},
     Settings(fuzzy_threshold=5), 50),
    ([cand(domain="", normalized_name="zz")], {"normalized_name": "acme"},
     Settings(fuzzy_threshold=0), 0),  # never below zero
    ([], {}, Settings(), 0),
], ids=["exact", "domain", "two_domain", "same_name", "fuzzy_80", "fuzzy_97", "fuzzy_60",
        "fuzzy_0", "nobody"])
def test_confidence(candidates, deal_changes, program, confidence):
    assert decide(deal(**deal_changes), candidates, program).confidence == confidence


def test_no_candidates_means_no_winner():
    decision = decide(deal(), [], Settings(rule="last_touch"))
    assert decision.referral_id is None and decision.partner_id is None
    assert (decision.rule, decision.match, decision.confidence) == ("last_touch", NONE, 0)
    assert decision.needs_review is False
    assert decision.verdicts == ()


def test_every_candidate_appears_in_the_verdicts_with_a_reason():
    candidates = _contenders() + [
        cand("R-exact", "P-x", domain="x.example", normalized_name="x"),
        cand("R-rejected", "P-r", status="rejected", accepted_at=None),
        cand("R-stale", "P-s", protected_until=at("2024-02-20 09:00")),
        cand("R-nomatch", "P-n", domain="beta.example", normalized_name="beta"),
        cand("R-name", "P-f", domain="", normalized_name="acme"),
        cand("R-after", "P-l", submitted_at=at("2024-04-01 09:00")),
    ]
    decision = decide(deal(referral_id="R-exact"), candidates, Settings())
    assert [v.referral_id for v in decision.verdicts] == sorted(c.referral_id
                                                                for c in candidates)
    assert all(v.reason for v in decision.verdicts)
    assert [v.referral_id for v in decision.verdicts if v.kept] == ["R-exact"]
    partners = {c.referral_id: c.partner_id for c in candidates}
    assert all(v.partner_id == partners[v.referral_id] for v in decision.verdicts)
    as_dict = decision.as_dict()
    assert as_dict["referral_id"] == "R-exact"
    assert len(as_dict["candidates"]) == len(candidates)
    assert {"referral_id", "partner_id", "match", "kept", "reason", "score"} <= set(
        as_dict["candidates"][0])


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown attribution rule 'most_recent'"):
        decide(deal(), [cand()], Settings(rule="most_recent"))


def test_an_unknown_rule_is_refused_even_without_candidates():
    with pytest.raises(ValueError):
        decide(deal(), [], Settings(rule=""))


# --- Known gaps (strict: these turn red once fixed, so the marker comes off) ---------------

def test_a_registration_made_after_the_deal_closed_never_wins_when_creation_is_unknown():
    candidate = cand(submitted_at=at("2024-06-10 09:00"), accepted_at=at("2024-06-11 09:00"),
                     protected_until=at("2024-09-11 09:00"))
    decision = decide(deal(deal_created_at=None), [candidate], Settings())
    assert decision.referral_id is None
