"""Forms for plans, commission filters and decisions. People type decimals and percentages;
the services receive integers (minor units, basis points)."""

from decimal import Decimal

from django import forms
from django.db.models import Q

from partnerhub.forms import HardenedForm
from partnerhub.money import from_minor, parse_decimal, to_minor
from payouts.models import Commission, CommissionPlan
from payouts.plans import TIERS
from referrals.models import CURRENCIES

TIER_LABELS = {"registered": "Registered", "silver": "Silver", "gold": "Gold",
               "platinum": "Platinum"}


def to_bp(value) -> int | None:
    """'10.5' (percent) -> 1050 basis points; at most two decimals."""
    if value in (None, ""):
        return None
    number = parse_decimal(str(value).strip().rstrip("%").strip())
    if number is None or "," in str(value):
        raise forms.ValidationError("Enter a percentage such as 10 or 12.5.")
    if not 0 <= number <= 100:
        raise forms.ValidationError("A percentage is between 0.01 and 100.")
    scaled = number * 100
    if scaled != scaled.to_integral_value():
        raise forms.ValidationError("Percentages have at most two decimals.")
    return int(scaled)


def from_bp(bp: int | None) -> str:
    if bp is None:
        return ""
    return f"{Decimal(bp) / 100:f}".rstrip("0").rstrip(".")


class PlanForm(HardenedForm):
    kind = forms.ChoiceField(choices=CommissionPlan.KINDS, widget=forms.RadioSelect,
                             label="The plan pays")
    currency = forms.ChoiceField(choices=[(c, c) for c in CURRENCIES])
    rate = forms.CharField(required=False, label="Percent of the deal amount",
                           help_text="For example 10 or 12.5")
    flat = forms.CharField(required=False, label="Amount per won deal")
    cap = forms.CharField(required=False, label="Cap per deal",
                          help_text="Leave empty for no cap.")
    holding_days = forms.IntegerField(min_value=0, max_value=3650, initial=30,
                                      help_text="Days after the win before it can be paid.")
    clawback_days = forms.IntegerField(min_value=0, max_value=3650, initial=90,
                                       help_text="Days after the win in which a lost, reopened "
                                                 "or refunded deal takes it back.")
    payout_minimum = forms.CharField(initial="50.00", label="Payout minimum per partner")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for tier in TIERS:
            self.fields[f"tier_{tier}"] = forms.CharField(
                required=False, label=f"{TIER_LABELS[tier]} tier, percent")

    @property
    def tier_fields(self):
        return [self[f"tier_{tier}"] for tier in TIERS]

    @classmethod
    def initial_from(cls, plan: CommissionPlan | None, currency: str = "USD") -> dict:
        if plan is None:
            return {"kind": CommissionPlan.PERCENT, "currency": currency, "holding_days": 30,
                    "clawback_days": 90, "payout_minimum": "50.00"}
        money = lambda minor: "" if minor is None else f"{from_minor(minor, plan.currency)}"  # noqa: E731
        initial = {"kind": plan.kind, "currency": plan.currency, "rate": from_bp(plan.rate_bp),
                   "flat": money(plan.flat_minor), "cap": money(plan.cap_minor),
                   "holding_days": plan.holding_days, "clawback_days": plan.clawback_days,
                   "payout_minimum": money(plan.payout_minimum_minor)}
        for tier, bp in (plan.tier_rates_bp or {}).items():
            initial[f"tier_{tier}"] = from_bp(bp)
        return initial

    def clean(self):
        data = super().clean()
        currency = data.get("currency") or "USD"
        terms = {"kind": data.get("kind"), "currency": currency,
                 "holding_days": data.get("holding_days"),
                 "clawback_days": data.get("clawback_days")}
        for field, name, convert in (("rate", "rate_bp", to_bp), ("flat", "flat_minor", None),
                                     ("cap", "cap_minor", None),
                                     ("payout_minimum", "payout_minimum_minor", None)):
            raw = (data.get(field) or "").strip()
            try:
                if convert:
                    terms[name] = convert(raw)
                else:
                    terms[name] = to_minor(raw, currency) if raw else None
            except (ValueError, forms.ValidationError) as exc:
                self.add_error(field, exc.messages[0] if hasattr(exc, "messages") else str(exc))
        rates = {}
        for tier in TIERS:
            try:
                bp = to_bp(data.get(f"tier_{tier}"))
            except forms.ValidationError as exc:
                self.add_error(f"tier_{tier}", exc)
                continue
            if bp is not None:
                rates[tier] = bp
        terms["tier_rates_bp"] = rates
        data["terms"] = terms
        return data


class CommissionFilterForm(HardenedForm):
    q = forms.CharField(required=False, label="Deal", max_length=100)
    status = forms.ChoiceField(required=False, choices=[("", "Any status"),
                                                        *Commission.STATUSES])
    currency = forms.ChoiceField(required=False,
                                 choices=[("", "Any currency"), *[(c, c) for c in CURRENCIES]])
    vendor = forms.UUIDField(required=False, widget=forms.HiddenInput)
    partner = forms.UUIDField(required=False, widget=forms.HiddenInput)

    def apply(self, queryset):
        """The commissions matching this (bound) filter; an unreadable filter shows nothing,
        never more."""
        if not self.is_bound:
            return queryset
        if not self.is_valid():
            return queryset.none()
        d = self.cleaned_data
        if d.get("q"):
            q = d["q"].strip()
            queryset = queryset.filter(Q(deal_name__icontains=q) | Q(external_deal_id=q))
        for name in ("status", "currency"):
            if d.get(name):
                queryset = queryset.filter(**{name: d[name]})
        for name in ("vendor", "partner"):
            if d.get(name):
                queryset = queryset.filter(**{f"{name}__public_id": d[name]})
        return queryset


class RejectForm(HardenedForm):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000,
                             label="Why (the partner sees this)")
