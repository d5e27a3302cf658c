"""Demo money: commission plans on both demo programs, deals won through Acme Cloud's built-in
pipeline (so attributions and commissions arise the real way), commissions in every state,
a tax profile and a ready payout account for Brightpath, and one paid batch. Each step runs on
the day of its story (partnerhub.democlock): registered, accepted, won, released after the
holding period, approved, paid, in that order.

Stripe is not reachable from a demo machine: the paid batch is recorded as paid with a
demo transfer id instead of being sent. Idempotent: runs once per database."""

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from integrations import connections
from integrations.builtin.services import move_stage
from integrations.models import CrmConnection
from partnerhub.democlock import days_ago
from payouts import ledger
from payouts.approvals import approve_commissions
from payouts.batches import approve_batch, build_batch
from payouts.models import Commission, Payout, PayoutAccount, TaxProfile
from payouts.plans import save_plan
from payouts.transfers import record_transfer
from referrals import services
from referrals.models import Program, Referral

ACME_PLAN = {"kind": "percent", "rate_bp": 1000, "flat_minor": None, "tier_rates_bp": {},
             "cap_minor": 2_500_000, "currency": "USD", "holding_days": 30, "clawback_days": 90,
             "payout_minimum_minor": 5000}
GLOBEX_PLAN = {"kind": "tiered", "rate_bp": None, "flat_minor": None,
               "tier_rates_bp": {"registered": 500, "silver": 700, "gold": 1000},
               "cap_minor": None, "currency": "EUR", "holding_days": 45, "clawback_days": 120,
               "payout_minimum_minor": 10_000}
# (partner slug, company, website, amount, days since the win, what happened next). Each was
# registered REGISTERED_BEFORE_WIN days before its win and accepted a day later; approved
# commissions were approved two days after their holding period ended; the batch was paid
# PAID_DAYS_AGO.
DEALS = [
    ("brightpath-consulting", "Umbrella Health", "umbrella-health.example", 3_200_000, 75, "paid"),
    ("brightpath-consulting", "Soylent Foods", "soylent-foods.example", 1_850_000, 50,
     "approved"),
    ("brightpath-consulting", "Cyberdyne Labs", "cyberdyne-labs.example", 4_100_000, 40,
     "payable"),
    ("summit-integrators", "Tyrell Systems", "tyrell-systems.example", 2_700_000, 35,
     "payable"),
    ("keystone-agency", "Oscorp Media", "oscorp-media.example", 950_000, 5, "pending"),
    ("brightpath-consulting", "Massive Dynamic", "massive-dynamic.example", 1_200_000, 3,
     "pending"),
]


REGISTERED_BEFORE_WIN = 45
PAID_DAYS_AGO = 13
PLANS_DAYS_AGO = 180
# Referrals the referrals demo registered whose deals were won later: (company, days ago).
LATER_WINS = [("Wonka Industries", 10)]


def _member(slug, role):
    from referrals.demo import _member as member

    return member(slug, role)


def seed() -> None:
    acme = Program.objects.filter(vendor__slug="acme-cloud").first()
    globex = Program.objects.filter(vendor__slug="globex-analytics").first()
    if acme is None or acme.commission_plans.exists():
        return
    admin = _member("acme-cloud", "admin")
    with days_ago(PLANS_DAYS_AGO), transaction.atomic():
        save_plan(admin, acme, dict(ACME_PLAN))
        if globex is not None:
            save_plan(_member("globex-analytics", "admin"), globex, dict(GLOBEX_PLAN))
        if not CrmConnection.objects.live().filter(vendor=admin.organization).exists():
            connections.connect(admin, provider="builtin", credentials={})
    won = [(_register(acme, *deal[:4], days_ago_won=deal[4]), deal[4], deal[5])
           for deal in DEALS]
    won += [(Referral.objects.get(program=acme, company_name=company), days, "pending")
            for company, days in LATER_WINS]
    # Each win commits on its day: attribution and the commission follow on commit.
    for referral, days, _ in sorted(won, key=lambda w: -w[1]):
        with days_ago(days), transaction.atomic():
            move_stage(admin, referral, "won")
    _settle(won)


def _register(program, slug, company, site, amount, *, days_ago_won):
    actor = _member(slug, "rep")
    with days_ago(days_ago_won + REGISTERED_BEFORE_WIN), transaction.atomic():
        referral = services.submit_referral(actor, program, services.ReferralData(
            company_name=company, website=f"https://{site}", country="US",
            contact_name="Jordan Example", contact_email=f"jordan@{site}",
            contact_title="COO", amount_minor=amount, currency="USD"))
    with days_ago(days_ago_won + REGISTERED_BEFORE_WIN - 1), transaction.atomic():
        return services.accept_referral(_member("acme-cloud", "partnerships"), referral)


def _settle(won) -> None:
    """Holding periods end (the hourly release job), finance approves, one batch is paid."""
    finance = _member("acme-cloud", "finance")
    to_pay = []
    for referral, days, fate in sorted(won, key=lambda w: -w[1]):
        if fate not in ("approved", "paid"):
            continue
        commission = _live_commission(referral)
        with days_ago(days - commission.plan.holding_days - 2), transaction.atomic():
            ledger.release_due()
            approve_commissions(finance, [commission.public_id])
        if fate == "paid":
            to_pay.append(commission)
    if to_pay:
        with days_ago(PAID_DAYS_AGO + 7):
            _brightpath_ready_to_be_paid()
        with days_ago(PAID_DAYS_AGO):
            _paid_batch(to_pay)
    ledger.release_due()  # today: whatever finished its holding period is payable


def _live_commission(referral) -> Commission:
    return (Commission.objects.select_related("plan").filter(referral=referral)
            .exclude(status__in=Commission.RETIRED).get())


def _paid_batch(commissions) -> None:
    """Operator finance builds a batch of the commissions released by then, the admin approves
    it, and its transfers are recorded as made (a demo has no Stripe to send them to)."""
    period_end = max(c.payable_at for c in commissions).date()
    batch = build_batch(_member("northwind-ops", "finance"), period_end)
    with transaction.atomic():
        approve_batch(_member("northwind-ops", "admin"), batch)
        for payout in batch.payouts.filter(status=Payout.READY).select_related("partner"):
            account = PayoutAccount.objects.get(partner_id=payout.partner_id)
            record_transfer(payout.pk, {"id": f"tr_demo{payout.partner_id:06d}",
                                        "destination": account.stripe_account_id},
                            source="demo")


def _brightpath_ready_to_be_paid() -> None:
    owner = _member("brightpath-consulting", "owner")
    org = owner.organization
    TaxProfile.objects.update_or_create(partner=org, defaults=dict(
        network_id=org.network_id, country="US", entity_type="llc", us_person=True,
        form=TaxProfile.W9, form_status="received",
        form_signed_on=timezone.localdate() - timedelta(days=120),
        legal_name="Brightpath Consulting LLC", address_line1="100 Market Street",
        city="San Francisco", region="CA", postal_code="94105", updated_by=owner.user))
    PayoutAccount.objects.update_or_create(partner=org, defaults=dict(
        network_id=org.network_id, stripe_account_id=f"acct_demo{org.pk:06d}", country="US",
        default_currency="usd", details_submitted=True, payouts_enabled=True,
        transfers_active=True, synced_at=timezone.now(), created_by=owner.user))
