"""Tax profiles and reporting: what a payee must have told us before it can be paid, the yearly
1099-NEC view for operator finance, and each partner's annual statement.

The TIN itself is collected by Stripe's onboarding and never stored here, nor in the audit log.

The 1099-NEC threshold depends on the calendar year of the payment (see NEC_THRESHOLDS_MINOR).
Amounts are never converted between currencies: a payee paid in EUR is listed with its EUR
total and a note, and only USD counts towards the threshold.
"""

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from django.db import transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone
from django_countries import countries

from accounts import audit, roles
from accounts.errors import PermissionDenied, ServiceError
from accounts.models import Organization
from accounts.services.guards import require
from payouts.models import LedgerEntry, Payout, TaxProfile

RECEIVED, MISSING, EXPIRED = "received", "missing", "expired"
W8_FORMS = (TaxProfile.W8BEN, TaxProfile.W8BENE)
FORM_LABELS = dict(TaxProfile.FORMS)
SHORT_FORM_NAMES = {TaxProfile.W9: "W-9", TaxProfile.W8BEN: "W-8BEN",
                    TaxProfile.W8BENE: "W-8BEN-E"}
ENTITY_LABELS = dict(TaxProfile.ENTITY_TYPES)
INDIVIDUALS = ("individual", "sole_proprietor")
PROFILE_FIELDS = ("legal_name", "country", "entity_type", "us_person", "form", "form_signed_on",
                  "address_line1", "address_line2", "city", "region", "postal_code")
_TEXT_FIELDS = ("legal_name", "address_line1", "address_line2", "city", "region",
                "postal_code")
# Looks like an SSN/ITIN (123-45-6789) or an EIN (12-3456789): never stored here.
_TIN_PATTERN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b|\b\d{2}-\d{7}\b")

# 1099-NEC reporting threshold in USD cents, by the calendar year of the payment. Each row
# (first year, threshold) applies from that year until the next row; years before the first
# row use the first row. $600 applies to payments made through 2025; $2,000 to payments made
# in 2026, and, until a row is added, to every later year. The $2,000 threshold is indexed
# for inflation from 2027: add a row when the IRS publishes each year's amount.
NEC_THRESHOLDS_MINOR = [(2025, 60_000), (2026, 200_000)]
REPORT_CURRENCY = "USD"
MIN_YEAR = 2000


def nec_threshold(year: int) -> int:
    """The 1099-NEC threshold (USD minor units) for payments made in `year`."""
    threshold = NEC_THRESHOLDS_MINOR[0][1]
    for first_year, amount in NEC_THRESHOLDS_MINOR:
        if year >= first_year:
            threshold = amount
    return threshold


def year_bounds(year: int) -> tuple[datetime, datetime]:
    """The calendar year in UTC, as [start, end)."""
    return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)


def valid_year(year: int) -> bool:
    """A year a report or statement can be asked for: from MIN_YEAR to this year."""
    return MIN_YEAR <= year <= timezone.now().year


# --- Profiles -----------------------------------------------------------------------------------

def expected_form(profile: TaxProfile) -> str | None:
    """W-9 for US persons; W-8BEN for foreign individuals; W-8BEN-E for foreign entities."""
    if profile.us_person is None:
        return None
    if profile.us_person:
        return TaxProfile.W9
    return TaxProfile.W8BEN if profile.entity_type in INDIVIDUALS else TaxProfile.W8BENE


def form_expires_on(profile: TaxProfile) -> date | None:
    """A W-8 is valid until the end of the third calendar year after the year it was signed
    (signed any day in 2024: valid through 31 December 2027). A W-9 does not expire."""
    if profile.form in W8_FORMS and profile.form_signed_on is not None:
        return date(profile.form_signed_on.year + 3, 12, 31)
    return None


def form_expired(profile: TaxProfile, today: date | None = None) -> bool:
    if profile.form_status == EXPIRED:
        return True
    expires = form_expires_on(profile)
    return expires is not None and (today or timezone.now().date()) > expires


def profile_problems(profile: TaxProfile | None, *, today: date | None = None) -> list[str]:
    """What is missing before this partner can be paid; empty when the profile is complete."""
    if profile is None:
        return ["No tax profile yet."]
    today = today or timezone.now().date()
    problems = []
    if not profile.legal_name.strip():
        problems.append("Legal name is missing.")
    if not profile.country:
        problems.append("Country is missing.")
    if not profile.entity_type:
        problems.append("Entity type is missing.")
    if profile.us_person is None:
        problems.append("Say whether the payee is a US person.")
    if not (profile.address_line1.strip() and profile.city.strip() and profile.postal_code.strip()):
        problems.append("Address for reporting is incomplete.")
    form = expected_form(profile)
    if form and profile.form != form:
        problems.append(f"The {FORM_LABELS[form]} form is required.")
    elif profile.form_signed_on is None or profile.form_status == MISSING or not profile.form:
        problems.append("The tax form has not been received (with its date).")
    elif form_expired(profile, today):
        expires = form_expires_on(profile)
        when = f" on {expires:%-d %B %Y}" if expires else ""
        problems.append(f"The {SHORT_FORM_NAMES[profile.form]} form expired{when}: "
                        "sign a new one.")
    elif profile.form_signed_on > today:
        problems.append("The tax form's date is in the future.")
    return problems


def _snapshot(profile: TaxProfile) -> dict:
    return {name: getattr(profile, name) for name in (*PROFILE_FIELDS, "form_status")}


def _status_for(values: dict, today: date) -> str:
    if not values["form"] or values["form_signed_on"] is None:
        return MISSING
    probe = TaxProfile(form=values["form"], form_signed_on=values["form_signed_on"])
    return EXPIRED if form_expired(probe, today) else RECEIVED


def validate_profile(values: dict, today: date) -> dict:
    """Check the merged profile values as one whole; returns them cleaned or raises
    ServiceError naming the field."""
    clean = dict(values)
    for name in _TEXT_FIELDS:
        text = " ".join(str(clean.get(name) or "").split())
        limit = TaxProfile._meta.get_field(name).max_length
        if len(text) > limit:
            raise ServiceError(f"At most {limit} characters.", field=name)
        if _TIN_PATTERN.search(text):
            raise ServiceError("Do not enter a tax identification number here: Stripe collects "
                               "it securely during payout onboarding.", field=name)
        clean[name] = text
    clean["country"] = (clean.get("country") or "").strip().upper()
    if clean["country"] and clean["country"] not in dict(countries):
        raise ServiceError("Choose a country from the list.", field="country")
    clean["entity_type"] = clean.get("entity_type") or ""
    if clean["entity_type"] and clean["entity_type"] not in ENTITY_LABELS:
        raise ServiceError("Choose an entity type from the list.", field="entity_type")
    if clean.get("us_person") not in (True, False, None):
        raise ServiceError("Say whether the payee is a US person.", field="us_person")
    clean["form"] = clean.get("form") or ""
    if clean["form"] and clean["form"] not in FORM_LABELS:
        raise ServiceError("Choose a tax form from the list.", field="form")
    signed = clean.get("form_signed_on")
    if signed is not None and not isinstance(signed, date):
        raise ServiceError("Enter the date the form was signed.", field="form_signed_on")
    if isinstance(signed, datetime):
        clean["form_signed_on"] = signed = signed.date()
    if signed is not None and signed > today:
        raise ServiceError("A form cannot be signed in the future.", field="form_signed_on")
    if signed is not None and not clean["form"]:
        raise ServiceError("Choose the form that was signed on this date.", field="form")
    if clean["form"]:
        if clean["us_person"] is None:
            raise ServiceError("Say whether the payee is a US person first: it decides the "
                               "form.", field="us_person")
        if not clean["entity_type"]:
            raise ServiceError("Choose the entity type first: it decides the form.",
                               field="entity_type")
        wanted = expected_form(TaxProfile(us_person=clean["us_person"],
                                          entity_type=clean["entity_type"]))
        if clean["form"] != wanted:
            who = ("A US person" if clean["us_person"] else
                   "A foreign individual" if clean["entity_type"] in INDIVIDUALS
                   else "A foreign entity")
            raise ServiceError(f"{who} signs the {FORM_LABELS[wanted]} form, not the "
                               f"{SHORT_FORM_NAMES[clean['form']]}.", field="form")
        if signed is None:
            raise ServiceError("Give the date the form was signed.", field="form_signed_on")
    return clean


@transaction.atomic
def save_tax_profile(actor, partner_org: Organization, data: dict) -> TaxProfile:
    """Create or update the partner's tax profile. Fields absent from `data` keep their value;
    the form status follows from the form and its date (received, or expired for a W-8 past
    its validity). Records an audit event with the changed fields, before and after."""
    require(actor, roles.TAX_PROFILE_MANAGE)
    if partner_org.pk != actor.organization_id or partner_org.kind != roles.PARTNER:
        raise PermissionDenied()
    unknown = set(data) - set(PROFILE_FIELDS)
    if unknown:
        raise ServiceError(f"Unknown tax profile field: {', '.join(sorted(unknown))}.")
    today = timezone.now().date()
    # The organization row lock serializes concurrent first saves (one profile per partner).
    Organization.objects.select_for_update().filter(pk=partner_org.pk).first()
    profile = TaxProfile.objects.select_for_update().filter(partner=partner_org).first()
    created = profile is None
    if created:
        profile = TaxProfile(partner=partner_org, network_id=partner_org.network_id)
    before = _snapshot(profile)
    clean = validate_profile({**{n: getattr(profile, n) for n in PROFILE_FIELDS}, **data}, today)
    clean["form_status"] = _status_for(clean, today)
    changed = {name for name, value in clean.items() if before[name] != value}
    if not changed and not created:
        return profile
    for name, value in clean.items():
        setattr(profile, name, value)
    profile.updated_by, profile.updated_at = actor.user, timezone.now()
    profile.save()
    audit.record("tax_profile.created" if created else "tax_profile.updated", profile,
                 actor=actor, before=None if created else {n: before[n] for n in sorted(changed)},
                 after={n: clean[n] for n in sorted(changed)})
    return profile


def expire_w8_forms(today: date | None = None) -> int:
    """Mark received W-8 forms past their validity as expired (a yearly job; safe to run
    any number of times). Payouts stop until a new form is signed. Returns the count."""
    today = today or timezone.now().date()
    # Valid through 31 Dec of signed year + 3: expired once today's year passes that.
    signed_before = date(today.year - 3, 1, 1)
    with transaction.atomic():
        due = list(TaxProfile.objects.select_for_update(skip_locked=True).filter(
            form__in=W8_FORMS, form_status=RECEIVED, form_signed_on__lt=signed_before))
        TaxProfile.objects.filter(pk__in=[p.pk for p in due]).update(form_status=EXPIRED)
        for profile in due:
            audit.record("tax_profile.form_expired", profile, network_id=profile.network_id,
                         before={"form_status": RECEIVED}, after={
                             "form_status": EXPIRED, "form": profile.form,
                             "expired_on": form_expires_on(profile)})
    return len(due)


# --- The yearly report --------------------------------------------------------------------------

@dataclass(frozen=True)
class Payee:
    """One partner paid in the year, with its tax profile as it stands now."""

    public_id: str
    name: str
    has_profile: bool
    legal_name: str
    country: str
    entity_type: str
    us_person: bool | None
    form: str
    form_status: str
    form_signed_on: date | None
    totals: dict  # currency -> net amount paid in the year (minor units), USD first
    payout_count: int
    nec_due: bool
    nec_reason: str  # why no 1099-NEC is due; empty when one is
    notes: tuple

    @property
    def country_name(self) -> str:
        return countries.name(self.country) if self.country else ""

    @property
    def entity_label(self) -> str:
        return ENTITY_LABELS.get(self.entity_type, "")

    @property
    def form_label(self) -> str:
        return SHORT_FORM_NAMES.get(self.form, "")

    @property
    def us_person_label(self) -> str:
        return {True: "yes", False: "no"}.get(self.us_person, "unknown")

    @property
    def needs_conversion(self) -> bool:
        return any(currency != REPORT_CURRENCY for currency in self.totals)


@dataclass
class TaxReport:
    year: int
    threshold_minor: int
    payees: list = field(default_factory=list)
    totals: dict = field(default_factory=dict)  # currency -> net amount, USD first

    @property
    def nec_due_count(self) -> int:
        return sum(1 for p in self.payees if p.nec_due)

    @property
    def threshold_currency(self) -> str:
        return REPORT_CURRENCY


def _currency_order(currency: str):
    return (currency != REPORT_CURRENCY, currency)


def paid_in_year(network, year: int):
    """Payouts that left in the calendar year (UTC): paid ones and reversed ones, which count
    net of what the reversal took back (in the year they were paid)."""
    start, end = year_bounds(year)
    return Payout.objects.filter(network=network, status__in=(Payout.PAID, Payout.REVERSED),
                                 paid_at__gte=start, paid_at__lt=end)


_PROFILE_VALUES_NAMES = ("legal_name", "country", "entity_type", "us_person", "form",
                         "form_status", "form_signed_on", "address_line1", "city",
                         "postal_code")
_PROFILE_VALUES = {f"tp_{name}": F(f"partner__tax_profile__{name}")
                   for name in ("id", *_PROFILE_VALUES_NAMES)}


def tax_report(network, year: int, *, nec_only: bool = False, country: str = "",
               search: str = "") -> TaxReport:
    """Every payee paid in `year`, with net totals per currency and whether a 1099-NEC is due
    (a US person that is not a corporation, paid at least the year's threshold in USD).

    One aggregate query: payouts grouped by partner and currency, joined with the tax
    profile. `country` (the profile's) and `search` (partner or legal name) filter in SQL;
    `nec_only` keeps the payees flagged, by the same rule that flags them."""
    threshold = nec_threshold(year)
    payouts = paid_in_year(network, year)
    if country:
        payouts = payouts.filter(partner__tax_profile__country=country.upper())
    search = (search or "").strip()
    if search:
        payouts = payouts.filter(Q(partner__name__icontains=search)
                                 | Q(partner__tax_profile__legal_name__icontains=search))
    rows = (payouts.values("partner_id", "currency")
            .annotate(partner_public_id=F("partner__public_id"), partner_name=F("partner__name"),
                      **_PROFILE_VALUES,
                      net=Sum(F("amount_minor") - F("reversed_minor")), payouts=Count("pk"))
            .exclude(net=0)
            .order_by("partner_name", "partner_id", "currency"))
    report = TaxReport(year=year, threshold_minor=threshold)
    grouped: dict[int, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["partner_id"], []).append(row)
    today = timezone.now().date()
    for partner_rows in grouped.values():
        payee = _payee(partner_rows, threshold, today)
        if nec_only and not payee.nec_due:
            continue
        report.payees.append(payee)
        for currency, amount in payee.totals.items():
            report.totals[currency] = report.totals.get(currency, 0) + amount
    report.totals = dict(sorted(report.totals.items(), key=lambda i: _currency_order(i[0])))
    return report


def _profile_from(row: dict) -> TaxProfile | None:
    if row["tp_id"] is None:
        return None
    return TaxProfile(**{name: row[f"tp_{name}"] for name in _PROFILE_VALUES_NAMES})


def _payee(rows: list[dict], threshold: int, today: date) -> Payee:
    first = rows[0]
    totals = {r["currency"]: r["net"]
              for r in sorted(rows, key=lambda r: _currency_order(r["currency"]))}
    profile = _profile_from(first)
    us_person = profile.us_person if profile else None
    reportable = us_person is True and profile.entity_type not in TaxProfile.CORPORATIONS
    nec_due = reportable and totals.get(REPORT_CURRENCY, 0) >= threshold
    notes = []
    usd = totals.get(REPORT_CURRENCY, 0)
    if nec_due:
        reason = ""
    elif us_person is None:
        reason = "US person or not: unknown"
    elif not us_person:
        reason = "not a US person"
    elif not reportable:
        reason = "corporation"
    else:
        reason = "below the threshold" if usd else "not paid in USD"
    problems = profile_problems(profile, today=today)
    if profile is None:
        notes.append("No tax profile: ask the partner to complete one before filing.")
    elif problems:
        notes.append("Tax profile incomplete: " + " ".join(problems))
    foreign = [c for c in totals if c != REPORT_CURRENCY]
    if foreign:
        paid_in = ", ".join(foreign)
        if reportable and not nec_due:
            notes.append(f"Paid in {paid_in}: not converted. Convert to USD at the rate you "
                         "file with to decide whether a 1099-NEC is due.")
        else:
            notes.append(f"Paid in {paid_in}: not converted; convert at the rate you file "
                         "with if you report it in USD.")
    profile = profile or TaxProfile(us_person=None)
    status = profile.form_status
    if status == RECEIVED and form_expired(profile, today):
        status = EXPIRED
    return Payee(
        public_id=str(first["partner_public_id"]), name=first["partner_name"],
        has_profile=first["tp_id"] is not None, legal_name=profile.legal_name,
        country=profile.country, entity_type=profile.entity_type, us_person=us_person,
        form=profile.form, form_status=status, form_signed_on=profile.form_signed_on,
        totals=totals, payout_count=sum(r["payouts"] for r in rows), nec_due=nec_due,
        nec_reason=reason, notes=tuple(notes))


# --- The partner's annual statement -------------------------------------------------------------

KIND_LABELS = dict(LedgerEntry.KINDS)


@dataclass(frozen=True)
class CurrencyTotals:
    currency: str
    by_kind: dict  # kind -> sum of the year's entries (signed, as in the ledger)

    @property
    def earned_net(self) -> int:
        """Commissions earned in the year less those rejected, cancelled or clawed back."""
        return sum(self.by_kind.get(k, 0) for k in (LedgerEntry.EARNED, LedgerEntry.REJECTED,
                                                    LedgerEntry.CANCELLED, LedgerEntry.CLAWBACK))

    @property
    def paid_out(self) -> int:
        """What reached the partner: payouts sent less what transfer reversals took back."""
        return -(self.by_kind.get(LedgerEntry.PAID, 0) + self.by_kind.get(LedgerEntry.RECOVERED, 0))

    @property
    def rows(self) -> list[tuple[str, str, int]]:
        return [(kind, label, self.by_kind.get(kind, 0)) for kind, label in LedgerEntry.KINDS]


@dataclass
class Statement:
    partner: Organization
    year: int
    entries: object  # a LedgerEntry queryset, oldest first, with commission and payout joined
    totals: list  # CurrencyTotals, USD first


def annual_statement(partner: Organization, year: int) -> Statement:
    """Every ledger entry of the partner dated in `year` (UTC) — earned, rejected, cancelled,
    clawback, paid, recovered — with the deal it came from, and totals per currency and kind.
    The caller decides who may read it (the partner's own owner and finance)."""
    start, end = year_bounds(year)
    entries = LedgerEntry.objects.filter(partner=partner, created_at__gte=start,
                                         created_at__lt=end)
    sums: dict[str, dict[str, int]] = {}
    for row in entries.order_by().values("currency", "kind").annotate(total=Sum("amount_minor")):
        sums.setdefault(row["currency"], {})[row["kind"]] = row["total"]
    totals = [CurrencyTotals(currency, by_kind)
              for currency, by_kind in sorted(sums.items(), key=lambda i: _currency_order(i[0]))]
    listed = (entries.select_related("commission__vendor", "commission__referral", "payout")
              .order_by("created_at", "pk"))
    return Statement(partner=partner, year=year, entries=listed, totals=totals)


def statement_years(partner: Organization) -> list[int]:
    """Years in which the partner's ledger moved, newest first."""
    return [d.year for d in LedgerEntry.objects.filter(partner=partner)
            .datetimes("created_at", "year", order="DESC", tzinfo=UTC)]


def entry_source(entry: LedgerEntry) -> dict:
    """Where a ledger entry came from, in words a partner may read: the vendor and deal for a
    commission's entries, the payout for money sent or recovered."""
    if entry.commission_id:
        c = entry.commission
        # A deal of the built-in pipeline or closed by hand goes by our referral's id, which
        # tells a partner reading the page nothing: only a CRM's own deal id is shown there
        # (the CSV keeps every id, for reconciling).
        ours = c.external_deal_id == str(c.referral.public_id)
        return {"vendor": c.vendor.name, "deal": c.deal_name or c.external_deal_id,
                "deal_id": c.external_deal_id, "crm_deal_id": "" if ours else c.external_deal_id,
                "payout": ""}
    if entry.payout_id:
        p = entry.payout
        return {"vendor": "", "deal": f"Payout of {p.commission_count} commission"
                                      f"{'' if p.commission_count == 1 else 's'}",
                "deal_id": "", "crm_deal_id": "", "payout": str(p.public_id)}
    return {"vendor": "", "deal": "", "deal_id": "", "crm_deal_id": "", "payout": ""}
