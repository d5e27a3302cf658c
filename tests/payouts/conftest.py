"""Payout fixtures: the Acme program with a commission plan, and deals won through the
built-in pipeline so that commissions arise the way they do in production (snapshot ->
attribution -> commission, each step after commit)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from integrations import connections
from integrations.builtin.services import move_stage
from payouts.models import Commission
from payouts.plans import save_plan
from referrals import services
from tests.referrals.factories import ReferralFactory

PLAN = {"kind": "percent", "rate_bp": 1000, "flat_minor": None, "tier_rates_bp": {},
        "cap_minor": None, "currency": "USD", "holding_days": 30, "clawback_days": 90,
        "payout_minimum_minor": 5000}


@pytest.fixture
def pipeline(world):
    """Acme Cloud works its deals in the built-in pipeline."""
    return connections.connect(world.member("vendor", "admin"), provider="builtin",
                               credentials={})


@pytest.fixture
def run_on_commit(django_capture_on_commit_callbacks):
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def plan(world, programs):
    """10 % of the deal amount in USD, 30 days holding, 90 days clawback, 50.00 minimum."""
    return save_plan(world.member("vendor", "admin"), programs["acme"], dict(PLAN))


def set_plan(world, program, **terms):
    return save_plan(world.member("vendor", "admin"), program, {**PLAN, **terms})


def register_and_accept(world, program, *, partner=None, amount_minor=1_000_000,
                        currency="USD", days_ago=10, **fields):
    partner = partner or world.partner
    submitter = (world.member("partner", "rep") if partner == world.partner
                 else world.others["partner2_rep"])
    referral = ReferralFactory(program=program, partner=partner, submitted_by=submitter.user,
                               amount_minor=amount_minor, currency=currency,
                               submitted_at=timezone.now() - timedelta(days=days_ago),
                               **fields)
    return services.accept_referral(world.member("vendor", "partnerships"), referral)


def win(world, referral, run_on_commit, stage="won"):
    """Move the deal in the built-in pipeline; the attribution and the commission follow."""
    with run_on_commit():
        move_stage(world.member("vendor", "admin"), referral, stage)
    return live_commission(referral)


def live_commission(referral):
    return (Commission.objects.filter(referral=referral)
            .exclude(status__in=Commission.RETIRED).first())


@pytest.fixture
def won(world, programs, plan, pipeline, run_on_commit):
    """A 10,000.00 USD deal Brightpath referred, won today: a 1,000.00 USD commission."""
    referral = register_and_accept(world, programs["acme"])
    return win(world, referral, run_on_commit)
from tests.fakes.stripe import fake_stripe  # noqa: E402,F401
