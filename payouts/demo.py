"""Demo money: commission plans on both demo programs, deals won through Acme Cloud's built-in
pipeline (so attributions and commissions arise the real way), commissions in every state,
a tax profile and a ready payout account for Brightpath, and one paid batch.

Stripe is not reachable from a demo machine: the paid batch is recorded as paid with a
demo transfer id instead of being sent. Idempotent: runs once per database."""

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from integrations import connections
from integrations.builtin.services import move_stage
from integrations.models import CrmConnection
from payouts import ledger
from payouts.approvals import approve_commissions
from payouts.models import (
    Commission,
    LedgerEntry,
    Payout,
    PayoutAccount,
    PayoutBatch,
    TaxProfile,
)
from payouts.plans import save_plan
from referrals import services
from referrals.models import Program

ACME_PLAN = {"kind": "percent", "rate_bp": 1000, "flat_minor": None, "tier_rates_bp": {},
             "cap_minor": 2_500_000, "currency": "USD", "holding_days": 30, "clawback_days": 90,
             "payout_minimum_minor": 5000}
GLOBEX_PLAN = {"kind": "tiered", "rate_bp": None, "flat_minor": None,
               "tier_rates_bp": {"registered": 500, "silver": 700, "gold": 1000},
               "cap_minor": None, "currency": "EUR", "holding_days": 45, "clawback_days": 120,
               "payout_minimum_minor": 10_000}
# (partner slug, company, website, amount, days since the win, what happened next)
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


def _member(slug, role):
    from referrals.demo import _member as member

    return member(slug, role)


def seed() -> None:
    acme = Program.objects.filter(vendor__slug="acme-cloud").first()
    globex = Program.objects.filter(vendor__slug="globex-analytics").first()
    if acme is None or acme.commission_plans.exists():
        return
    with transaction.atomic():
        save_plan(_member("acme-cloud", "admin"), acme, dict(ACME_PLAN))
        if globex is not None:
            save_plan(_member("globex-analytics", "admin"), globex, dict(GLOBEX_PLAN))
        admin = _member("acme-cloud", "admin")
        if not CrmConnection.objects.live().filter(vendor=admin.organization).exists():
            connections.connect(admin, provider="builtin", credentials={})
        won = []
        for slug, company, site, amount, days, fate in DEALS:
            actor = _member(slug, "rep")
            referral = services.submit_referral(actor, acme, services.ReferralData(
                company_name=company, website=f"https://{site}", country="US",
                contact_name="Jordan Example", contact_email=f"jordan@{site}",
                contact_title="COO", amount_minor=amount, currency="USD"))
            referral = services.accept_referral(_member("acme-cloud", "partnerships"), referral)
            won.append((referral, days, fate))
    # Wins after the registrations committed: attribution and commissions follow on commit.
    for referral, _, _ in won:
        with transaction.atomic():
            move_stage(admin, referral, "won")
    _age_and_settle(won)
    _brightpath_ready_to_be_paid()


def _age_and_settle(won) -> None:
    now = timezone.now()
    finance = _member("acme-cloud", "finance")
    to_approve, to_pay = [], []
    for referral, days, fate in won:
        commission = Commission.objects.filter(referral=referral).exclude(
            status__in=Commission.RETIRED).first()
        if commission is None:
            continue
        earned = now - timedelta(days=days)
        plan = commission.plan
        status = Commission.PENDING if fate == "pending" else Commission.PAYABLE
        Commission.objects.filter(pk=commission.pk).update(
            earned_at=earned, payable_at=earned + timedelta(days=plan.holding_days),
            clawback_until=earned + timedelta(days=plan.clawback_days), status=status)
        if fate in ("approved", "paid"):
            to_approve.append(commission.public_id)
        if fate == "paid":
            to_pay.append(commission)
    approve_commissions(finance, to_approve)
    if to_pay:
        _paid_batch(to_pay)


def _paid_batch(commissions) -> None:
    operator = _member("northwind-ops", "finance")
    approver = _member("northwind-ops", "admin")
    now = timezone.now()
    with transaction.atomic():
        batch = PayoutBatch.objects.create(
            network_id=commissions[0].network_id, period_end=(now - timedelta(days=14)).date(),
            status=PayoutBatch.SENT, created_by=operator.user, approved_by=approver.user,
            approved_at=now - timedelta(days=13), sent_at=now - timedelta(days=13))
        by_partner = {}
        for c in commissions:
            by_partner.setdefault((c.partner_id, c.currency), []).append(c)
        totals = {}
        for (partner_id, currency), rows in by_partner.items():
            gross = sum(c.amount_minor for c in rows)
            payout = Payout.objects.create(
                batch=batch, network_id=batch.network_id, partner_id=partner_id,
                currency=currency, gross_minor=gross, amount_minor=gross,
                commission_count=len(rows), status=Payout.PAID,
                stripe_account_id=f"acct_demo{partner_id:06d}",
                stripe_transfer_id=f"tr_demo{partner_id:06d}", attempts=1,
                paid_at=now - timedelta(days=13))
            Commission.objects.filter(pk__in=[c.pk for c in rows]).update(
                status=Commission.PAID, payout=payout)
            ledger.post([LedgerEntry(network_id=batch.network_id, partner_id=partner_id,
                                     currency=currency, kind=LedgerEntry.PAID,
                                     amount_minor=-gross, payout=payout,
                                     memo="Demo payout (recorded, not sent)")])
            totals[currency] = totals.get(currency, 0) + gross
        batch.totals, batch.payout_count = totals, len(by_partner)
        batch.save(update_fields=["totals", "payout_count"])


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
