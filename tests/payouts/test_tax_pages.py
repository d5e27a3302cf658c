"""Tax pages per role: the partner's tax profile form, operator finance's yearly report and its
CSV, the partner's annual statement and its CSV. Every role that may not see a page gets a
404, anonymous visitors the login page, and nothing crosses organizations or networks."""

import csv
import io
from datetime import date, timedelta

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from accounts import roles
from payouts import ledger
from payouts.models import LedgerEntry, TaxProfile
from tests.accounts.factories import MembershipFactory, OrganizationFactory
from tests.conftest import ALL_ROLES, ROLE_IDS
from tests.payouts.test_tax import at, complete_profile, partner_org, pay

PROFILE_EDITORS = {("partner", "owner"), ("partner", "finance")}
REPORTERS = {("operator", "admin"), ("operator", "finance")}
THIS_YEAR = timezone.now().year
LAST_YEAR = THIS_YEAR - 1


def url(name, *args):
    return reverse(f"payouts:{name}", args=args)


def csv_rows(response) -> list[list[str]]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def form_post(**overrides) -> dict:
    data = {"legal_name": "Brightpath Consulting LLC", "entity_type": "llc", "us_person": "yes",
            "form": "w9", "form_signed_on": (timezone.now().date() - timedelta(days=3)).isoformat(),
            "country": "US", "address_line1": "1 Main St", "address_line2": "",
            "city": "Springfield", "region": "IL", "postal_code": "62701"}
    data.update(overrides)
    return data


# --- Tax profile --------------------------------------------------------------------------------

def test_anonymous_visitors_are_sent_to_log_in(client, world):
    for target in (url("tax_profile"), url("tax_report"), url("tax_report_csv", LAST_YEAR),
                   url("annual_statement", LAST_YEAR), url("annual_statement_csv", LAST_YEAR)):
        response = client.get(target)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("role", ALL_ROLES, ids=ROLE_IDS)
def test_the_tax_profile_page_is_for_the_partners_owner_and_finance(world, role):
    complete_profile(world.partner, legal_name="Brightpath Holdings")
    client = world.client_for(world.member(*role))
    response = client.get(url("tax_profile"))
    if role in PROFILE_EDITORS:
        html = response.content.decode()
        assert response.status_code == 200
        assert "Brightpath Holdings" in html
        assert "Stripe collects it securely" in html
        assert "Your tax profile is complete" in html
    else:
        assert response.status_code == 404
        assert client.post(url("tax_profile"), form_post()).status_code == 404
        profile = TaxProfile.objects.get(partner=world.partner)
        assert profile.legal_name == "Brightpath Holdings"


def test_other_partners_and_networks_see_only_their_own_profile(world):
    complete_profile(world.partner, legal_name="Brightpath Holdings")
    for name, host in (("partner2_owner", "testserver"),
                       ("foreign_owner", "partners.elsewhere.test")):
        client = world.client_for(world.others[name], host=host)
        response = client.get(url("tax_profile"))
        assert response.status_code == 200
        assert "Brightpath Holdings" not in response.content.decode()
        assert "No tax profile yet." in response.content.decode()
    # A pending applicant has no tax profile page yet; another network's login has no
    # membership here.
    assert world.client_for(world.others["pending_owner"]).get(
        url("tax_profile")).status_code == 404
    response = world.client_for(world.others["foreign_owner"]).get(url("tax_profile"))
    assert response.status_code == 302 and response["Location"] == reverse(
        "accounts:no_membership")


def test_the_owner_completes_the_profile_and_sees_what_was_missing(world):
    client = world.client_for(world.member("partner", "owner"))
    html = client.get(url("tax_profile")).content.decode()
    assert "No tax profile yet." in html and "Incomplete" in html
    response = client.post(url("tax_profile"), form_post(form="", form_signed_on=""))
    assert response.status_code == 302
    html = client.get(url("tax_profile")).content.decode()
    assert "Tax profile saved." in html
    assert "The W-9 (US person) form is required." in html
    response = client.post(url("tax_profile"), form_post())
    assert response.status_code == 302
    profile = TaxProfile.objects.get(partner=world.partner)
    assert (profile.legal_name, profile.us_person, profile.form, profile.form_status) == (
        "Brightpath Consulting LLC", True, "w9", "received")
    assert profile.updated_by == world.member("partner", "owner").user
    assert "Your tax profile is complete" in client.get(url("tax_profile")).content.decode()


def test_finance_can_edit_the_profile_too(world):
    client = world.client_for(world.member("partner", "finance"))
    assert client.post(url("tax_profile"), form_post(city="Chicago")).status_code == 302
    assert TaxProfile.objects.get(partner=world.partner).city == "Chicago"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"us_person": "no", "country": "DE"}, "A foreign entity signs the W-8BEN-E"),
    ({"form_signed_on": (date.today() + timedelta(days=2)).isoformat()},
     "A form cannot be signed in the future"),
    ({"form_signed_on": "31/31/2020"}, "Enter a valid date"),
    ({"country": "ZZ"}, "Select a valid choice"),
    ({"legal_name": "Jane 123-45-6789"}, "Do not enter a tax identification number"),
])
def test_bad_input_is_a_form_error_and_changes_nothing(world, overrides, message):
    client = world.client_for(world.member("partner", "owner"))
    response = client.post(url("tax_profile"), form_post(**overrides))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not TaxProfile.objects.filter(partner=world.partner).exists()


def test_an_expired_w8_shows_as_a_problem_with_its_end_date(world):
    signed = date(THIS_YEAR - 4, 5, 1)
    complete_profile(world.partner, us_person=False, country="DE", form=TaxProfile.W8BEN,
                     form_signed_on=signed)
    html = world.client_for(world.member("partner", "owner")).get(url("tax_profile")) \
        .content.decode()
    assert f"The W-8BEN form expired on 31 December {THIS_YEAR - 1}: sign a new one." in html


# --- Tax report ---------------------------------------------------------------------------------

@pytest.fixture
def paid_last_year(world):
    """Three payees paid last year: a US individual over the threshold, a US corporation, and a
    German GmbH paid in EUR; Summit paid this year (not in last year's report)."""
    alpha = partner_org(world, "Alpha Consulting", legal_name="Alpha Holdings LLC",
                        entity_type="llc")
    beta = partner_org(world, "Beta Partners", entity_type="c_corporation")
    gamma = partner_org(world, "Gamma GmbH", us_person=False, country="DE",
                        entity_type="c_corporation", form=TaxProfile.W8BENE)
    pay(world, alpha, 250_000, paid_at=at(LAST_YEAR, 3))
    pay(world, beta, 900_000, paid_at=at(LAST_YEAR, 4))
    pay(world, gamma, 400_000, currency="EUR", paid_at=at(LAST_YEAR, 5))
    complete_profile(world.partner2)
    pay(world, world.partner2, 700_000, paid_at=timezone.now())
    return {"alpha": alpha, "beta": beta, "gamma": gamma}


@pytest.mark.parametrize("role", ALL_ROLES, ids=ROLE_IDS)
def test_the_tax_report_is_for_operator_admin_and_finance(world, paid_last_year, role):
    client = world.client_for(world.member(*role))
    response = client.get(url("tax_report"))
    csv_response = client.get(url("tax_report_csv", LAST_YEAR))
    if role in REPORTERS:
        assert response.status_code == 200 and csv_response.status_code == 200
        html = response.content.decode()
        assert f"Tax report {LAST_YEAR}" in html  # last calendar year by default
        for name in ("Alpha Consulting", "Beta Partners", "Gamma GmbH"):
            assert name in html
        assert "Summit" not in html
    else:
        assert response.status_code == 404 and csv_response.status_code == 404


def test_another_networks_finance_sees_its_own_network_only(world, paid_last_year):
    ops = OrganizationFactory(network=world.other_network, kind=roles.OPERATOR)
    finance = MembershipFactory(organization=ops, role="finance")
    complete_profile(world.foreign_partner, legal_name="Faraway Legal")
    pay(world, world.foreign_partner, 300_000, paid_at=at(LAST_YEAR),
        network=world.other_network)
    client = world.client_for(finance, host="partners.elsewhere.test")
    html = client.get(url("tax_report")).content.decode()
    assert "Faraway" in html and "Alpha Consulting" not in html
    body = "".join(",".join(r) for r in csv_rows(client.get(url("tax_report_csv", LAST_YEAR))))
    assert "Faraway" in body and "Alpha" not in body
    # On network A's host that login has no membership at all.
    other = world.client_for(finance).get(url("tax_report"))
    assert other.status_code == 302


def test_the_report_shows_who_needs_a_1099_nec_and_the_totals(world, paid_last_year):
    client = world.client_for(world.member("operator", "finance"))
    html = client.get(url("tax_report")).content.decode()
    threshold = "$600.00" if LAST_YEAR <= 2025 else "$2,000.00"
    assert f"paid at least {threshold} in {LAST_YEAR}" in html
    assert "$11,500.00" in html and "€4,000.00" in html  # totals per currency
    assert html.count('<span class="badge bad">due</span>') == 1
    assert "not converted" in html
    # The filters.
    due_only = client.get(url("tax_report"), {"year": LAST_YEAR, "nec_due": "on"}).content \
        .decode()
    assert "Alpha Consulting" in due_only and "Beta Partners" not in due_only
    german = client.get(url("tax_report"), {"year": LAST_YEAR, "country": "DE"}).content \
        .decode()
    assert "Gamma GmbH" in german and "Alpha Consulting" not in german
    by_name = client.get(url("tax_report"), {"year": LAST_YEAR, "q": "alpha holdings"}) \
        .content.decode()
    assert "Alpha Consulting" in by_name and "Gamma GmbH" not in by_name
    this_year = client.get(url("tax_report"), {"year": THIS_YEAR}).content.decode()
    assert "Summit" in this_year and "Alpha Consulting" not in this_year


@pytest.mark.parametrize("params", [{"year": "abc"}, {"year": "1999"},
                                    {"year": str(THIS_YEAR + 1)}, {"country": "<script>"},
                                    {"q": "x" * 500}])
def test_unreadable_report_filters_are_form_errors_never_the_whole_list(world, paid_last_year,
                                                                       params):
    client = world.client_for(world.member("operator", "admin"))
    response = client.get(url("tax_report"), params)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="error"' in html and "Alpha Consulting" not in html
    # The export takes its year from its URL; any other unreadable filter is a 400.
    export = client.get(url("tax_report_csv", LAST_YEAR), params)
    if "year" in params:
        assert export.status_code == 200 and "Alpha Consulting" in "".join(
            ",".join(r) for r in csv_rows(export))
    else:
        assert export.status_code == 400 and b"Alpha" not in export.content


def test_the_year_shown_is_the_year_reported(world, paid_last_year):
    client = world.client_for(world.member("operator", "finance"))
    html = client.get(url("tax_report"), {"page": "1"}).content.decode()
    assert f'<option value="{LAST_YEAR}" selected>' in html
    html = client.get(url("tax_report"), {"year": str(THIS_YEAR)}).content.decode()
    assert f'<option value="{THIS_YEAR}" selected>' in html and "Summit" in html


def test_report_and_statement_years_out_of_range_are_404(world):
    finance = world.client_for(world.member("operator", "finance"))
    owner = world.client_for(world.member("partner", "owner"))
    for year in (1999, THIS_YEAR + 1, 99999999):
        assert finance.get(url("tax_report_csv", year)).status_code == 404
        assert owner.get(url("annual_statement", year)).status_code == 404
        assert owner.get(url("annual_statement_csv", year)).status_code == 404


def test_the_report_is_paginated_with_a_constant_number_of_queries(
        world, django_assert_max_num_queries):
    def add_payees(start, count):
        for i in range(start, start + count):
            org = partner_org(world, f"Payee {i:03}",
                              **({"entity_type": "s_corporation"} if i % 5 == 0 else {}))
            pay(world, org, 70_000, paid_at=at(LAST_YEAR))
            if i % 3 == 0:
                pay(world, org, 1_000, currency="GBP", paid_at=at(LAST_YEAR, 8))

    client = world.client_for(world.member("operator", "finance"))
    add_payees(0, 3)
    with django_assert_max_num_queries(12) as few:
        client.get(url("tax_report"))
    add_payees(3, 57)
    with django_assert_max_num_queries(len(few.captured_queries)):
        html = client.get(url("tax_report")).content.decode()
    assert "Payee 000" in html and "Payee 049" in html and "Payee 050" not in html
    assert "Page 1 of 2" in html
    page2 = client.get(url("tax_report"), {"page": 2}).content.decode()
    assert "Payee 050" in page2 and "Payee 059" in page2 and "Payee 049" not in page2
    assert ">60<" in html  # payees counted over every page


def test_the_csv_lists_each_payee_and_currency_without_contact_details(world, paid_last_year):
    alpha = paid_last_year["alpha"]
    pay(world, alpha, 10_000, currency="EUR", paid_at=at(LAST_YEAR, 9))
    client = world.client_for(world.member("operator", "finance"))
    response = client.get(url("tax_report_csv", LAST_YEAR))
    assert response["Content-Type"] == "text/csv"
    assert f'tax-report-{LAST_YEAR}.csv' in response["Content-Disposition"]
    rows = csv_rows(response)
    header, lines = rows[0], rows[1:]
    assert header[:4] == ["year", "partner_id", "partner", "legal_name"]
    by_key = {(r[2], r[10]): dict(zip(header, r, strict=True)) for r in lines}
    assert set(by_key) == {("Alpha Consulting", "USD"), ("Alpha Consulting", "EUR"),
                           ("Beta Partners", "USD"), ("Gamma GmbH", "EUR")}
    usd = by_key[("Alpha Consulting", "USD")]
    assert (usd["legal_name"], usd["country"], usd["us_person"], usd["tax_form"]) == (
        "Alpha Holdings LLC", "US", "yes", "W-9")
    assert (usd["net_paid"], usd["nec_1099_due"], usd["payouts"]) == ("2500.00", "yes", "2")
    assert by_key[("Alpha Consulting", "EUR")]["nec_1099_due"] == ""
    assert by_key[("Beta Partners", "USD")]["nec_1099_due"] == "no"
    assert by_key[("Beta Partners", "USD")]["nec_1099_reason"] == "corporation"
    assert by_key[("Gamma GmbH", "EUR")]["net_paid"] == "4000.00"
    assert "not converted" in by_key[("Gamma GmbH", "EUR")]["notes"]
    body = response_text = ",".join(",".join(r) for r in rows)
    for contact in ("1 Main St", "Springfield", "62701", "@"):
        assert contact not in response_text, body
    # Filters apply to the export as on the page.
    due = csv_rows(client.get(url("tax_report_csv", LAST_YEAR), {"nec_due": "on"}))
    assert [r[2] for r in due[1:]] == ["Alpha Consulting", "Alpha Consulting"]


def test_the_csv_is_safe_to_open_in_a_spreadsheet(world):
    org = partner_org(world, "=HYPERLINK(\"http://evil.test\")", legal_name="+SUM(A1:A9)")
    pay(world, org, 100_000, paid_at=at(LAST_YEAR))
    rows = csv_rows(world.client_for(world.member("operator", "admin"))
                    .get(url("tax_report_csv", LAST_YEAR)))
    assert rows[1][2] == "'=HYPERLINK(\"http://evil.test\")"
    assert rows[1][3] == "'+SUM(A1:A9)"


# --- Annual statement ---------------------------------------------------------------------------

@pytest.fixture
def statement_entries(world, won):
    """Brightpath's year: the won deal's commission earned, paid out; a EUR commission; an entry
    of last year; and Summit's entry (never on Brightpath's statement)."""
    with transaction.atomic():
        payout = pay(world, world.partner, 100_000, paid_at=timezone.now())
        ledger.post([
            LedgerEntry(network=world.network, partner=world.partner, currency="USD",
                        kind=LedgerEntry.PAID, amount_minor=-100_000, payout=payout,
                        memo="Payout sent"),
            LedgerEntry(network=world.network, partner=world.partner, currency="EUR",
                        kind=LedgerEntry.EARNED, amount_minor=4_200, memo="=cmd|calc"),
            LedgerEntry(network=world.network, partner=world.partner, currency="USD",
                        kind=LedgerEntry.EARNED, amount_minor=31_337,
                        created_at=at(won.created_at.year - 1, 12, 31, 23)),
            LedgerEntry(network=world.network, partner=world.partner2, currency="USD",
                        kind=LedgerEntry.EARNED, amount_minor=77_777, memo="Summit's"),
        ])
    return {"year": won.created_at.year, "commission": won, "payout": payout}


@pytest.mark.parametrize("role", ALL_ROLES, ids=ROLE_IDS)
def test_the_statement_is_for_the_partners_owner_and_finance(world, statement_entries, role):
    year = statement_entries["year"]
    client = world.client_for(world.member(*role))
    page = client.get(url("annual_statement", year))
    export = client.get(url("annual_statement_csv", year))
    if role in PROFILE_EDITORS:
        assert page.status_code == 200 and export.status_code == 200
        html = page.content.decode()
        assert f"Annual statement {year}" in html and "Acme Cloud" in html
        assert "$1,000.00" in html and "€42.00" in html
        assert "77,777" not in html and "$777.77" not in html and "$313.37" not in html
    else:
        assert page.status_code == 404 and export.status_code == 404


def test_another_partners_statement_shows_only_its_own_entries(world, statement_entries):
    year = statement_entries["year"]
    html = world.client_for(world.others["partner2_owner"]).get(
        url("annual_statement", year)).content.decode()
    assert "$777.77" in html and "Acme Cloud" not in html and "€42.00" not in html
    foreign = world.client_for(world.others["foreign_owner"], host="partners.elsewhere.test")
    html = foreign.get(url("annual_statement", year)).content.decode()
    assert "Nothing moved in your commission account" in html
    assert world.client_for(world.others["pending_owner"]).get(
        url("annual_statement", year)).status_code == 404


def test_the_statement_shows_totals_per_currency_and_kind(world, statement_entries):
    year = statement_entries["year"]
    client = world.client_for(world.member("partner", "finance"))
    html = client.get(url("annual_statement", year)).content.decode()
    commission = statement_entries["commission"]
    assert commission.external_deal_id in html or commission.deal_name in html
    assert "Payout of 1 commission" in html
    assert "Paid to you" in html and "Earned, net" in html
    last_year = client.get(url("annual_statement", year - 1)).content.decode()
    assert "$313.37" in last_year and "$1,000.00" not in last_year
    # The profile page links to both years.
    profile_page = client.get(url("tax_profile")).content.decode()
    assert url("annual_statement", year) in profile_page
    assert url("annual_statement", year - 1) in profile_page


def test_the_statement_csv_lists_every_entry_formula_safe(world, statement_entries):
    year = statement_entries["year"]
    client = world.client_for(world.member("partner", "owner"))
    response = client.get(url("annual_statement_csv", year))
    assert f'statement-{year}.csv' in response["Content-Disposition"]
    rows = csv_rows(response)
    assert rows[0] == ["date", "kind", "description", "vendor", "deal", "deal_id", "payout_id",
                       "currency", "amount"]
    lines = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert [(r["kind"], r["currency"], r["amount"]) for r in lines] == [
        ("Commission earned", "USD", "1000.00"), ("Payout sent", "USD", "'-1000.00"),
        ("Commission earned", "EUR", "42.00")]
    assert lines[0]["vendor"] == "Acme Cloud"
    assert lines[0]["deal_id"] == statement_entries["commission"].external_deal_id
    assert lines[1]["payout_id"] == str(statement_entries["payout"].public_id)
    assert lines[2]["description"] == "'=cmd|calc"


def test_the_statement_page_is_paginated_in_constant_queries(world, won,
                                                             django_assert_max_num_queries):
    year = won.created_at.year
    client = world.client_for(world.member("partner", "owner"))
    with django_assert_max_num_queries(14) as few:
        client.get(url("annual_statement", year))
    with transaction.atomic():
        for i in range(60):
            payout = pay(world, world.partner, 1_000 + i, paid_at=timezone.now())
            ledger.post([LedgerEntry(network=world.network, partner=world.partner,
                                     currency="USD", kind=LedgerEntry.PAID,
                                     amount_minor=-(1_000 + i), payout=payout)])
    with django_assert_max_num_queries(len(few.captured_queries)):
        html = client.get(url("annual_statement", year)).content.decode()
    assert "Page 1 of 2" in html
