"""Commission plans: versions, and what a won deal earns under one.

`commission_for(plan, deal_amount_minor, deal_currency, tier)` is pure integer arithmetic:
basis points, half-up rounding, the cap. A plan change writes a new version effective from
now; a deal is paid by the version in effect when it was won."""

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from accounts import audit, roles
from accounts.errors import ServiceError
from accounts.services.guards import require
from partnerhub.money import MAX_MINOR
from payouts.models import CommissionPlan
from referrals.models import Program

TIERS = ("registered", "silver", "gold", "platinum")
MAX_DAYS = 3650  # holding and clawback periods: ten years at most
PLAN_FIELDS = ("kind", "rate_bp", "flat_minor", "tier_rates_bp", "cap_minor", "currency",
               "holding_days", "clawback_days", "payout_minimum_minor")


@dataclass(frozen=True)
class Earned:
    amount_minor: int  # 0 when nothing is earned (see basis["reason"])
    currency: str
    basis: dict


def percent_of(amount_minor: int, rate_bp: int) -> int:
    """amount x rate, rounded half up to the minor unit, in integers only."""
    return (amount_minor * rate_bp + 5_000) // 10_000


def commission_for(plan: CommissionPlan, deal_amount_minor: int | None, deal_currency: str,
                   tier: str = "registered") -> Earned:
    basis = {"plan_version": plan.version, "kind": plan.kind}
    if plan.kind == CommissionPlan.FLAT:
        amount = plan.flat_minor or 0
        basis["flat_minor"] = amount
    else:
        if deal_amount_minor is None:
            return Earned(0, plan.currency, {**basis, "reason": "The deal has no amount."})
        if deal_currency and deal_currency != plan.currency:
            # No exchange rates here: a percentage of a EUR deal is not a USD amount.
            return Earned(0, plan.currency, {
                **basis, "reason": f"The deal is in {deal_currency}; the plan pays "
                                   f"{plan.currency}."})
        if plan.kind == CommissionPlan.TIERED:
            rates = plan.tier_rates_bp or {}
            rate = rates.get(tier, rates.get("registered", 0))
            basis["tier"] = tier if tier in rates else "registered"
        else:
            rate = plan.rate_bp or 0
        amount = percent_of(max(deal_amount_minor, 0), rate)
        basis.update(rate_bp=rate, deal_amount_minor=deal_amount_minor)
    if plan.cap_minor is not None and amount > plan.cap_minor:
        basis.update(capped=True, uncapped_minor=amount, cap_minor=plan.cap_minor)
        amount = plan.cap_minor
    return Earned(amount, plan.currency, basis)


def current_plan(program: Program) -> CommissionPlan | None:
    return program.commission_plans.order_by("-version").first()


def plan_in_effect(program_id: int, at) -> CommissionPlan | None:
    """The version in effect at `at` (the moment a deal was won)."""
    return (CommissionPlan.objects.filter(program_id=program_id, effective_from__lte=at)
            .order_by("-effective_from", "-version").first())


def validate_plan(data: dict) -> dict:
    """Checks a plan's fields as one whole; returns the cleaned values or raises
    ServiceError naming the field."""
    kind = data.get("kind")
    if kind not in dict(CommissionPlan.KINDS):
        raise ServiceError("Choose how the plan pays.", field="kind")
    clean = {name: data.get(name) for name in PLAN_FIELDS}
    if kind == CommissionPlan.PERCENT and not clean["rate_bp"]:
        raise ServiceError("Give the percentage of the deal amount.", field="rate_bp")
    if kind == CommissionPlan.FLAT and not clean["flat_minor"]:
        raise ServiceError("Give the amount paid per won deal.", field="flat_minor")
    if kind == CommissionPlan.TIERED:
        rates = {t: r for t, r in (clean["tier_rates_bp"] or {}).items() if r is not None}
        if "registered" not in rates:
            raise ServiceError("Give at least the rate for the Registered tier.",
                               field="tier_rates_bp")
        if any(t not in TIERS for t in rates):
            raise ServiceError("Unknown partner tier.", field="tier_rates_bp")
        clean["tier_rates_bp"] = rates
    else:
        clean["tier_rates_bp"] = {}
    if kind != CommissionPlan.PERCENT:
        clean["rate_bp"] = None
    if kind != CommissionPlan.FLAT:
        clean["flat_minor"] = None
    for name in ("rate_bp",):
        if clean[name] is not None and not 0 < clean[name] <= 10_000:
            raise ServiceError("A percentage is between 0.01 and 100.", field=name)
    if any(not 0 < r <= 10_000 for r in clean["tier_rates_bp"].values()):
        raise ServiceError("A percentage is between 0.01 and 100.", field="tier_rates_bp")
    if clean["flat_minor"] is not None and clean["flat_minor"] < 0:
        raise ServiceError("The amount per won deal must be more than zero.",
                           field="flat_minor")
    if clean["cap_minor"] is not None and clean["cap_minor"] <= 0:
        raise ServiceError("A cap must be more than zero (or left empty).", field="cap_minor")
    if clean["payout_minimum_minor"] is None or clean["payout_minimum_minor"] < 0:
        raise ServiceError("The payout minimum cannot be negative.",
                           field="payout_minimum_minor")
    for name in ("flat_minor", "cap_minor", "payout_minimum_minor"):
        if clean[name] is not None and clean[name] > MAX_MINOR:
            raise ServiceError(f"At most {MAX_MINOR:,} in minor units.", field=name)
    for name in ("holding_days", "clawback_days"):
        if clean[name] is None or not 0 <= clean[name] <= MAX_DAYS:
            raise ServiceError(f"Give a number of days from 0 to {MAX_DAYS}.", field=name)
    if not clean["currency"] or len(clean["currency"]) != 3:
        raise ServiceError("Choose the currency the plan pays in.", field="currency")
    clean["currency"] = clean["currency"].upper()
    return clean


@transaction.atomic
def save_plan(actor, program: Program, data: dict) -> CommissionPlan:
    """Write a new plan version for the program, effective now (deals won from now on).
    Saving the same terms again writes nothing."""
    require(actor, roles.PROGRAM_MANAGE, program)
    clean = validate_plan(data)
    program = Program.objects.select_for_update().get(pk=program.pk)
    current = current_plan(program)
    if current is not None and all(getattr(current, f) == clean[f] for f in PLAN_FIELDS):
        return current
    version = (program.commission_plans.aggregate(v=Max("version"))["v"] or 0) + 1
    plan = CommissionPlan.objects.create(
        vendor_id=program.vendor_id, program=program, version=version,
        effective_from=timezone.now(), created_by=actor.user, **clean)
    audit.record("commission_plan.saved", program, actor=actor,
                 before=_terms(current), after=_terms(plan))
    return plan


def _terms(plan: CommissionPlan | None) -> dict | None:
    if plan is None:
        return None
    return {"version": plan.version, **{f: getattr(plan, f) for f in PLAN_FIELDS}}


def describe(plan: CommissionPlan) -> str:
    """One line for people: "10% of the deal amount, capped at 5,000.00 USD"."""
    from partnerhub.money import format_money

    if plan.kind == CommissionPlan.FLAT:
        text = f"{format_money(plan.flat_minor, plan.currency)} per won deal"
    elif plan.kind == CommissionPlan.PERCENT:
        text = f"{_pct(plan.rate_bp)} of the deal amount"
    else:
        text = "By partner tier: " + ", ".join(
            f"{t.title()} {_pct(plan.tier_rates_bp[t])}" for t in TIERS
            if t in plan.tier_rates_bp)
    if plan.cap_minor is not None:
        text += f", capped at {format_money(plan.cap_minor, plan.currency)} per deal"
    return text


def _pct(rate_bp: int) -> str:
    whole, frac = divmod(rate_bp, 100)
    return f"{whole}%" if not frac else f"{whole}.{frac:02d}".rstrip("0") + "%"


@transaction.atomic
def set_partner_tier(actor, enrolment, tier: str):
    """The vendor places an enrolled partner in a tier; tiered plans pay by it (for deals won
    from now on: commissions already earned keep their amount)."""
    require(actor, roles.PROGRAM_MANAGE, enrolment.program)
    if tier not in TIERS:
        raise ServiceError("Choose one of the tiers.", field="tier")
    before = enrolment.tier
    if before == tier:
        return enrolment
    enrolment.tier = tier
    enrolment.save(update_fields=["tier"])
    audit.record("enrolment.tier_changed", enrolment, actor=actor, before={"tier": before},
                 after={"tier": tier})
    return enrolment
