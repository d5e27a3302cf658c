"""Tax profiles (which form for which payee, dates, W-8 expiry, what blocks a payout), the
1099-NEC thresholds by year, the yearly tax report and the partner's annual statement.

Payouts and ledger entries are written directly here (the batch builder is tested on its
own): a payout in status paid (or reversed) with its paid_at is what the report reads."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from accounts import roles
from accounts.errors import PermissionDenied, ServiceError
from accounts.models import AuditEvent
from payouts import ledger, tax
from payouts.models import LedgerEntry, Payout, PayoutBatch, TaxProfile
from tests.accounts.factories import OrganizationFactory
from tests.conftest import ALL_ROLES

USD, EUR = "USD", "EUR"
US_ADDRESS = {"address_line1": "1 Main St", "city": "Springfield", "region": "IL",
              "postal_code": "62701"}


def complete_profile(partner, **fields) -> TaxProfile:
    """A complete profile written directly: a US individual with a W-9 unless told otherwise."""
    values = {"legal_name": f"{partner.name} LLC", "country": "US",
              "entity_type": "individual", "us_person": True, "form": TaxProfile.W9,
              "form_status": "received", "form_signed_on": date(2024, 3, 1), **US_ADDRESS}
    values.update(fields)
    return TaxProfile.objects.create(partner=partner, network_id=partner.network_id, **values)


def pay(world, partner, amount_minor, *, currency=USD, paid_at, status=Payout.PAID,
        reversed_minor=0, network=None) -> Payout:
    """A payout as the batch sender leaves it (one batch each: one payout per partner, currency
    and batch)."""
    network = network or world.network
    batch = PayoutBatch.objects.create(network=network, period_end=paid_at.date(),
                                       status=PayoutBatch.SENT,
                                       created_by=world.member("operator", "finance").user)
    return Payout.objects.create(
        batch=batch, network=network, partner=partner, currency=currency,
        gross_minor=amount_minor, amount_minor=amount_minor, commission_count=1, status=status,
        paid_at=paid_at if status in (Payout.PAID, Payout.REVERSED) else None,
        reversed_minor=reversed_minor)


def at(year, month=6, day=15, hour=12, minute=0, second=0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def payee(report, partner):
    found = [p for p in report.payees if p.public_id == str(partner.public_id)]
    return found[0] if found else None


def partner_org(world, name, **profile):
    """Another partner of the network, with a complete profile (adjusted by `profile`)."""
    org = OrganizationFactory(network=world.network, kind=roles.PARTNER, name=name)
    complete_profile(org, **profile)
    return org


# --- Which form goes with which payee ---------------------------------------------------------

@pytest.mark.parametrize(("us_person", "entity_type", "form"), [
    (True, "individual", TaxProfile.W9),
    (True, "c_corporation", TaxProfile.W9),
    (True, "llc", TaxProfile.W9),
    (False, "individual", TaxProfile.W8BEN),
    (False, "sole_proprietor", TaxProfile.W8BEN),
    (False, "partnership", TaxProfile.W8BENE),
    (False, "c_corporation", TaxProfile.W8BENE),
    (None, "individual", None),
])
def test_the_expected_form_follows_us_person_and_entity_type(us_person, entity_type, form):
    assert tax.expected_form(TaxProfile(us_person=us_person, entity_type=entity_type)) == form


def profile_data(**overrides) -> dict:
    data = {"legal_name": "Jane Roe", "country": "US", "entity_type": "individual",
            "us_person": True, "form": TaxProfile.W9,
            "form_signed_on": timezone.now().date() - timedelta(days=30), **US_ADDRESS}
    data.update(overrides)
    return data


FOREIGN = {"country": "DE", "address_line1": "Hauptstr. 1", "city": "Berlin", "region": "",
           "postal_code": "10115"}


@pytest.mark.parametrize("data", [
    profile_data(),
    profile_data(entity_type="c_corporation", legal_name="Roe Inc."),
    profile_data(**FOREIGN, us_person=False, form=TaxProfile.W8BEN),
    profile_data(**FOREIGN, us_person=False, entity_type="sole_proprietor",
                 form=TaxProfile.W8BEN),
    profile_data(**FOREIGN, us_person=False, entity_type="llc", form=TaxProfile.W8BENE),
], ids=["us-individual-w9", "us-corporation-w9", "foreign-individual-w8ben",
        "foreign-sole-proprietor-w8ben", "foreign-entity-w8bene"])
def test_a_matching_form_completes_the_profile(world, data):
    profile = tax.save_tax_profile(world.member("partner", "owner"), world.partner, data)
    profile.refresh_from_db()
    assert profile.form == data["form"] and profile.form_status == "received"
    assert tax.profile_problems(profile) == []


@pytest.mark.parametrize(("overrides", "message"), [
    ({"form": TaxProfile.W8BEN}, "A US person signs the W-9"),
    ({"us_person": False, "form": TaxProfile.W9, **FOREIGN}, "A foreign individual signs the "
                                                              "W-8BEN"),
    ({"us_person": False, "form": TaxProfile.W8BENE, **FOREIGN}, "A foreign individual signs"),
    ({"us_person": False, "entity_type": "partnership", "form": TaxProfile.W8BEN, **FOREIGN},
     "A foreign entity signs the W-8BEN-E"),
    ({"us_person": False, "entity_type": "c_corporation", "form": TaxProfile.W9, **FOREIGN},
     "A foreign entity signs"),
])
def test_a_form_that_does_not_match_the_payee_is_refused(world, overrides, message):
    with pytest.raises(ServiceError) as exc:
        tax.save_tax_profile(world.member("partner", "owner"), world.partner,
                             profile_data(**overrides))
    assert exc.value.field == "form" and message in exc.value.message
    assert not TaxProfile.objects.filter(partner=world.partner).exists()


@pytest.mark.parametrize(("overrides", "field"), [
    ({"form_signed_on": "tomorrow"}, "form_signed_on"),  # resolved when the test runs
    ({"form_signed_on": None}, "form_signed_on"),
    ({"form": ""}, "form"),  # a date without a form
    ({"us_person": None}, "us_person"),
    ({"entity_type": ""}, "entity_type"),
    ({"entity_type": "empire"}, "entity_type"),
    ({"country": "XX"}, "country"),
    ({"form": "1099"}, "form"),
    ({"legal_name": "x" * 201}, "legal_name"),
])
def test_inconsistent_or_junk_values_are_refused_naming_the_field(world, overrides, field):
    # Parameters are built at collection: a date computed then is no longer the future once
    # the run crosses midnight.
    if overrides.get("form_signed_on") == "tomorrow":
        overrides = {**overrides, "form_signed_on": timezone.now().date() + timedelta(days=1)}
    with pytest.raises(ServiceError) as exc:
        tax.save_tax_profile(world.member("partner", "owner"), world.partner,
                             profile_data(**overrides))
    assert exc.value.field == field


def test_an_incomplete_profile_can_be_saved_and_says_what_is_missing(world):
    owner = world.member("partner", "owner")
    profile = tax.save_tax_profile(owner, world.partner, {"legal_name": "Brightpath LLC"})
    assert profile.form_status == "missing"
    assert tax.profile_problems(profile) == [
        "Country is missing.", "Entity type is missing.",
        "Say whether the payee is a US person.", "Address for reporting is incomplete.",
        "The tax form has not been received (with its date)."]
    # Fields left out keep their value.
    profile = tax.save_tax_profile(owner, world.partner, {"country": "US"})
    assert (profile.legal_name, profile.country) == ("Brightpath LLC", "US")


def test_problems_name_each_missing_piece():
    assert tax.profile_problems(None) == ["No tax profile yet."]
    profile = TaxProfile(legal_name=" ", us_person=True, entity_type="individual", country="US",
                         form=TaxProfile.W8BEN, form_status="received",
                         form_signed_on=date(2025, 1, 1), address_line1="1 Main St",
                         city="Springfield", postal_code="")
    assert tax.profile_problems(profile, today=date(2025, 6, 1)) == [
        "Legal name is missing.", "Address for reporting is incomplete.",
        "The W-9 (US person) form is required."]


def test_a_tax_identification_number_is_never_accepted(world):
    owner = world.member("partner", "owner")
    for text in ("Jane Roe 123-45-6789", "Roe Inc 12-3456789"):
        with pytest.raises(ServiceError) as exc:
            tax.save_tax_profile(owner, world.partner, profile_data(legal_name=text))
        assert exc.value.field == "legal_name" and "Stripe" in exc.value.message
    with pytest.raises(ServiceError):
        tax.save_tax_profile(owner, world.partner, {"tin": "123-45-6789"})
    assert not TaxProfile.objects.filter(partner=world.partner).exists()
    # A ZIP+4 code is not a TIN.
    profile = tax.save_tax_profile(owner, world.partner, profile_data(postal_code="62701-1234"))
    assert profile.postal_code == "62701-1234"


# --- W-8 expiry ---------------------------------------------------------------------------------

def test_a_w8_is_valid_until_the_end_of_the_third_year_after_signing(world):
    profile = complete_profile(world.partner, us_person=False, country="DE",
                               form=TaxProfile.W8BEN, form_signed_on=date(2021, 2, 10))
    assert tax.form_expires_on(profile) == date(2024, 12, 31)
    assert tax.profile_problems(profile, today=date(2024, 12, 31)) == []
    assert tax.profile_problems(profile, today=date(2025, 1, 1)) == [
        "The W-8BEN form expired on 31 December 2024: sign a new one."]


def test_a_w9_does_not_expire(world):
    profile = complete_profile(world.partner, form_signed_on=date(2001, 1, 1))
    assert tax.form_expires_on(profile) is None
    assert tax.profile_problems(profile, today=date(2030, 1, 1)) == []


def test_saving_an_expired_w8_marks_it_expired_and_blocks_payouts(world):
    old = date(timezone.now().year - 4, 12, 31)
    profile = tax.save_tax_profile(
        world.member("partner", "finance"), world.partner,
        profile_data(**FOREIGN, us_person=False, form=TaxProfile.W8BEN, form_signed_on=old))
    assert profile.form_status == "expired"
    assert tax.profile_problems(profile) == [
        f"The W-8BEN form expired on 31 December {old.year + 3}: sign a new one."]
    # Signing a new one clears it.
    profile = tax.save_tax_profile(world.member("partner", "finance"), world.partner,
                                   {"form_signed_on": timezone.now().date()})
    assert profile.form_status == "received" and tax.profile_problems(profile) == []


def test_the_yearly_job_expires_old_w8_forms_once(world):
    stale = complete_profile(world.partner, us_person=False, country="DE",
                             form=TaxProfile.W8BENE, entity_type="llc",
                             form_signed_on=date(2021, 12, 31))
    fresh = complete_profile(world.partner2, us_person=False, country="DE",
                             form=TaxProfile.W8BEN, form_signed_on=date(2022, 1, 1))
    w9 = partner_org(world, "Old W-9", form_signed_on=date(2000, 1, 1)).tax_profile
    assert tax.expire_w8_forms(today=date(2025, 1, 1)) == 1
    assert tax.expire_w8_forms(today=date(2025, 1, 1)) == 0
    for profile in (stale, fresh, w9):
        profile.refresh_from_db()
    assert (stale.form_status, fresh.form_status, w9.form_status) == (
        "expired", "received", "received")
    assert tax.profile_problems(stale, today=date(2025, 1, 1))[0].startswith(
        "The W-8BEN-E form expired")
    event = AuditEvent.objects.get(action="tax_profile.form_expired")
    assert event.target_id == str(stale.pk) and event.after["form_status"] == "expired"


# --- Who may save, and what is recorded -------------------------------------------------------

@pytest.mark.parametrize("role", ALL_ROLES, ids=[f"{k}.{r}" for k, r in ALL_ROLES])
def test_only_the_partners_owner_and_finance_may_save_its_tax_profile(world, role):
    membership = world.member(*role)
    allowed = role in {("partner", "owner"), ("partner", "finance")}
    if allowed:
        assert tax.save_tax_profile(membership, world.partner, profile_data()).pk
    else:
        with pytest.raises(PermissionDenied):
            tax.save_tax_profile(membership, world.partner, profile_data())
        assert not TaxProfile.objects.filter(partner=world.partner).exists()


def test_another_partners_owner_cannot_save_this_partners_profile(world):
    for name in ("partner2_owner", "foreign_owner", "pending_owner"):
        with pytest.raises(PermissionDenied):
            tax.save_tax_profile(world.others[name], world.partner, profile_data())
    assert not TaxProfile.objects.filter(partner=world.partner).exists()


def test_the_audit_event_records_what_changed_and_nothing_else(world):
    owner = world.member("partner", "owner")
    tax.save_tax_profile(owner, world.partner, profile_data())
    created = AuditEvent.objects.get(action="tax_profile.created")
    assert created.before is None and created.after["legal_name"] == "Jane Roe"
    assert set(created.after) <= set(tax.PROFILE_FIELDS) | {"form_status"}
    tax.save_tax_profile(owner, world.partner, profile_data(city="Chicago"))
    updated = AuditEvent.objects.get(action="tax_profile.updated")
    assert (updated.before, updated.after) == ({"city": "Springfield"}, {"city": "Chicago"})
    assert updated.membership == owner
    # Saving the same values again records nothing.
    tax.save_tax_profile(owner, world.partner, profile_data(city="Chicago"))
    assert AuditEvent.objects.filter(action__startswith="tax_profile.").count() == 2


# --- Thresholds ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("year", "threshold"), [
    (2019, 60_000), (2024, 60_000), (2025, 60_000), (2026, 200_000), (2027, 200_000),
    (2040, 200_000)])
def test_the_1099_nec_threshold_depends_on_the_year_of_payment(year, threshold):
    assert tax.nec_threshold(year) == threshold


def test_a_new_row_in_the_threshold_table_applies_from_its_year(monkeypatch):
    monkeypatch.setattr(tax, "NEC_THRESHOLDS_MINOR", [*tax.NEC_THRESHOLDS_MINOR, (2027, 205_000)])
    assert [tax.nec_threshold(y) for y in (2025, 2026, 2027, 2028)] == [
        60_000, 200_000, 205_000, 205_000]


# --- The report ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("year", "amount", "due"), [
    (2024, 60_000, True), (2024, 59_999, False),
    (2025, 60_000, True), (2025, 59_999, False),
    (2026, 200_000, True), (2026, 199_999, False), (2026, 60_000, False),
    (2027, 200_000, True), (2027, 199_999, False),
])
def test_a_1099_nec_is_due_at_the_years_threshold(world, year, amount, due):
    complete_profile(world.partner)
    # Two payouts adding up to the amount: the total counts, not each payout.
    pay(world, world.partner, amount - 10_000, paid_at=at(year, 1, 1, 0, 0, 0))
    pay(world, world.partner, 10_000, paid_at=at(year, 12, 31, 23, 59, 59))
    report = tax.tax_report(world.network, year)
    row = payee(report, world.partner)
    assert row.totals == {USD: amount} and row.payout_count == 2
    assert row.nec_due is due
    assert row.nec_reason == ("" if due else "below the threshold")
    assert report.threshold_minor == tax.nec_threshold(year)


@pytest.mark.parametrize(("entity_type", "due"), [
    ("individual", True), ("sole_proprietor", True), ("partnership", True), ("llc", True),
    ("trust", True), ("other", True), ("c_corporation", False), ("s_corporation", False)])
def test_corporations_get_no_1099_nec(world, entity_type, due):
    complete_profile(world.partner, entity_type=entity_type)
    pay(world, world.partner, 1_000_000, paid_at=at(2025))
    assert payee(tax.tax_report(world.network, 2025), world.partner).nec_due is due


def test_foreign_payees_are_listed_but_get_no_1099_nec(world):
    complete_profile(world.partner, us_person=False, country="DE", form=TaxProfile.W8BEN)
    pay(world, world.partner, 1_000_000, paid_at=at(2025))
    row = payee(tax.tax_report(world.network, 2025), world.partner)
    assert row.totals == {USD: 1_000_000} and row.nec_due is False
    assert (row.country, row.us_person, row.form) == ("DE", False, TaxProfile.W8BEN)


def test_payees_paid_in_other_currencies_are_listed_unconverted_and_not_flagged(world):
    complete_profile(world.partner)
    complete_profile(world.partner2)
    pay(world, world.partner, 5_000_000, currency=EUR, paid_at=at(2025))
    pay(world, world.partner2, 70_000, paid_at=at(2025, 3))
    pay(world, world.partner2, 20_000, currency=EUR, paid_at=at(2025, 4))
    report = tax.tax_report(world.network, 2025)
    euros_only = payee(report, world.partner)
    assert euros_only.totals == {EUR: 5_000_000} and euros_only.nec_due is False
    assert euros_only.nec_reason == "not paid in USD"
    assert any("not converted" in note and "Convert to USD" in note
               for note in euros_only.notes)
    mixed = payee(report, world.partner2)
    assert list(mixed.totals.items()) == [(USD, 70_000), (EUR, 20_000)]  # USD first
    assert mixed.nec_due is True and any("EUR" in note for note in mixed.notes)
    assert report.totals == {USD: 70_000, EUR: 5_020_000}


def test_reversed_payouts_count_net_of_the_reversal(world):
    complete_profile(world.partner)
    complete_profile(world.partner2)
    pay(world, world.partner, 50_000, paid_at=at(2025, 2))
    pay(world, world.partner, 30_000, paid_at=at(2025, 3), status=Payout.REVERSED,
        reversed_minor=20_000)
    pay(world, world.partner, 5_000, paid_at=at(2025, 4), reversed_minor=1_000)  # partial
    pay(world, world.partner2, 90_000, paid_at=at(2025, 2), status=Payout.REVERSED,
        reversed_minor=90_000)
    report = tax.tax_report(world.network, 2025)
    row = payee(report, world.partner)
    assert row.totals == {USD: 64_000} and row.nec_due is True
    # Paid and entirely taken back: nothing was paid.
    assert payee(report, world.partner2) is None


def test_payouts_outside_the_year_or_not_paid_are_left_out(world):
    complete_profile(world.partner)
    pay(world, world.partner, 100_000, paid_at=at(2024, 12, 31, 23, 59, 59))
    pay(world, world.partner, 100_000, paid_at=at(2026, 1, 1, 0, 0, 0))
    for status in (Payout.READY, Payout.SENDING, Payout.FAILED, Payout.CANCELLED,
                   Payout.CARRIED_OVER):
        pay(world, world.partner, 100_000, paid_at=at(2025), status=status)
    pay(world, world.partner, 59_999, paid_at=at(2025, 1, 1, 0, 0, 0))
    row = payee(tax.tax_report(world.network, 2025), world.partner)
    assert row.totals == {USD: 59_999} and row.payout_count == 1 and row.nec_due is False
    assert payee(tax.tax_report(world.network, 2024), world.partner).totals == {USD: 100_000}
    assert payee(tax.tax_report(world.network, 2026), world.partner).totals == {USD: 100_000}


def test_the_report_covers_one_network(world):
    complete_profile(world.foreign_partner)
    pay(world, world.foreign_partner, 900_000, paid_at=at(2025), network=world.other_network)
    assert tax.tax_report(world.network, 2025).payees == []
    assert payee(tax.tax_report(world.other_network, 2025), world.foreign_partner).nec_due


def test_a_payee_without_a_complete_profile_is_listed_with_a_note(world):
    pay(world, world.partner, 900_000, paid_at=at(2025))
    complete_profile(world.partner2, legal_name="", form_status="missing")
    pay(world, world.partner2, 900_000, paid_at=at(2025))
    report = tax.tax_report(world.network, 2025)
    bare = payee(report, world.partner)
    assert bare.has_profile is False and bare.nec_due is False
    assert bare.us_person_label == "unknown"
    assert bare.notes[0].startswith("No tax profile")
    incomplete = payee(report, world.partner2)
    assert incomplete.nec_due is True  # a US individual: the form is due whatever is missing
    assert "Legal name is missing." in incomplete.notes[0]


def test_the_report_filters_by_nec_due_country_and_name(world):
    due = partner_org(world, "Alpha Consulting", legal_name="Alpha Holdings")
    corp = partner_org(world, "Beta Partners", entity_type="c_corporation")
    foreign = partner_org(world, "Gamma GmbH", us_person=False, country="DE",
                          form=TaxProfile.W8BEN)
    for org in (due, corp, foreign):
        pay(world, org, 100_000, paid_at=at(2025))

    def names(**filters):
        return [p.name for p in tax.tax_report(world.network, 2025, **filters).payees]

    assert names() == ["Alpha Consulting", "Beta Partners", "Gamma GmbH"]
    assert names(nec_only=True) == ["Alpha Consulting"]
    assert names(country="de") == ["Gamma GmbH"]
    assert names(search="holdings") == ["Alpha Consulting"]  # the legal name counts too
    assert names(search="beta") == ["Beta Partners"]
    reasons = {p.name: p.nec_reason for p in tax.tax_report(world.network, 2025).payees}
    assert reasons == {"Alpha Consulting": "", "Beta Partners": "corporation",
                       "Gamma GmbH": "not a US person"}
    report = tax.tax_report(world.network, 2025, nec_only=True)
    assert report.totals == {USD: 100_000} and report.nec_due_count == 1


def test_the_report_is_one_query_however_many_payees(world, django_assert_num_queries):
    for i in range(40):
        org = partner_org(world, f"Payee {i:02}", **({} if i % 3 else
                                                    {"entity_type": "c_corporation"}))
        pay(world, org, 100_000 + i, paid_at=at(2025))
        if i % 4 == 0:
            pay(world, org, 5_000, currency=EUR, paid_at=at(2025, 7))
    with django_assert_num_queries(1):
        report = tax.tax_report(world.network, 2025)
    assert len(report.payees) == 40 and report.nec_due_count == 26


# --- The annual statement -----------------------------------------------------------------------

def test_the_statement_lists_the_years_entries_with_their_deal_and_totals(world, won):
    year = won.created_at.year
    operator = world.member("operator", "finance")
    with transaction.atomic():
        payout = pay(world, world.partner, 100_000, paid_at=timezone.now())
        ledger.post([
            LedgerEntry(network=world.network, partner=world.partner, currency=USD,
                        kind=LedgerEntry.PAID, amount_minor=-100_000, payout=payout,
                        actor=operator.user),
            LedgerEntry(network=world.network, partner=world.partner, currency=USD,
                        kind=LedgerEntry.RECOVERED, amount_minor=30_000, payout=payout,
                        memo="Transfer reversed"),
            ledger.commission_entry(won, LedgerEntry.CLAWBACK, -won.amount_minor,
                                    "Clawed back: deal lost"),
            LedgerEntry(network=world.network, partner=world.partner, currency=EUR,
                        kind=LedgerEntry.EARNED, amount_minor=7_000),
            # Last year, and another partner's: not on this statement.
            LedgerEntry(network=world.network, partner=world.partner, currency=USD,
                        kind=LedgerEntry.EARNED, amount_minor=999,
                        created_at=at(year - 1, 12, 31, 23, 59, 59)),
            LedgerEntry(network=world.network, partner=world.partner2, currency=USD,
                        kind=LedgerEntry.EARNED, amount_minor=555),
        ])
    statement = tax.annual_statement(world.partner, year)
    entries = list(statement.entries)
    assert [(e.kind, e.amount_minor) for e in entries] == [
        ("earned", 100_000), ("paid", -100_000), ("recovered", 30_000),
        ("clawback", -100_000), ("earned", 7_000)]
    earned = tax.entry_source(entries[0])
    assert earned["vendor"] == "Acme Cloud" and earned["deal_id"] == won.external_deal_id
    assert earned["deal"] == (won.deal_name or won.external_deal_id)
    assert tax.entry_source(entries[1])["payout"] == str(payout.public_id)
    usd, eur = statement.totals
    assert usd.currency == USD and eur.currency == EUR
    assert usd.by_kind == {"earned": 100_000, "paid": -100_000, "recovered": 30_000,
                           "clawback": -100_000}
    assert (usd.earned_net, usd.paid_out) == (0, 70_000)
    assert (eur.earned_net, eur.paid_out) == (7_000, 0)
    assert tax.statement_years(world.partner) == [year, year - 1]
    last_year = tax.annual_statement(world.partner, year - 1)
    assert [e.amount_minor for e in last_year.entries] == [999]
