"""Issue 17, findings 2, 4 and 5 (forms, CSV and filters): bounded money, no control characters,
dates that make sense, a length on every text, invalid notes that stop the action, and formula
escaping of every exported cell."""

import csv
import io
from datetime import date, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEvent
from attribution.models import Attribution, Dispute
from partnerhub import money
from partnerhub.csvutil import safe_cell
from payouts.models import PayoutBatch, TaxProfile
from referrals import services
from referrals.models import ImportJob, Referral
from tests.attribution.test_attribution_pages import (  # noqa: F401 (fixtures)
    brightpath_deal,
    globodyne,
    pipeline,
)
from tests.attribution.test_disputes import deal, dispute  # noqa: F401 (fixtures)
from tests.payouts.conftest import PLAN
from tests.referrals.test_import import HEADER, csv_bytes, row, upload
from tests.referrals.test_submit_form import data, form

HUGE = ["1e30", "99999999999999999999999", "Infinity", "NaN", "-Infinity"]
NOT_ASCII_NUMBERS = ["١٢٣", "1_000", "1,2,3", "１２３"]
NEW = "/referrals/new/"


@pytest.fixture(autouse=True)
def _password_logins(request):
    """These tests are about input, not sign-in: a network that requires two-factor sign-in
    of some roles would send them to enrolment first."""
    if "world" not in request.fixturenames:
        return
    from accounts.models import Network

    request.getfixturevalue("world")
    if hasattr(Network, "TWO_FACTOR_OFF"):
        Network.objects.update(two_factor_policy=Network.TWO_FACTOR_OFF)


@pytest.fixture
def acme(programs):
    return programs["acme"]


@pytest.fixture
def rep(world):
    return world.member("partner", "rep")


@pytest.fixture
def client(world, rep):
    return world.client_for(rep)


def flashes(response) -> str:
    return " ".join(str(m) for m in response.context["messages"]) if response.context else ""


# --- Finding 2: bounded money ------------------------------------------------------------------

def test_money_has_one_documented_maximum():
    assert money.to_minor("1000000000000", "USD") == money.MAX_MINOR == 10**14
    with pytest.raises(ValueError):
        money.to_minor("1000000000000.01", "USD")
    with pytest.raises(ValueError):
        money.to_minor("-1000000000000.01", "USD")
    assert money.to_minor("25,000.50", "USD") == 2_500_050  # grouped thousands still read


@pytest.mark.parametrize("typed", HUGE + NOT_ASCII_NUMBERS + ["1e3", "12e", "0x10", "1 000"])
def test_only_plain_ascii_decimals_are_amounts(typed):
    with pytest.raises(ValueError):
        money.to_minor(typed, "USD")


def test_the_close_form_uses_the_shared_maximum():
    from integrations import deal_forms

    assert deal_forms.MAX_DEAL_MINOR == money.MAX_MINOR


@pytest.mark.parametrize("action", ["submit", "draft"])
@pytest.mark.parametrize("typed", HUGE + NOT_ASCII_NUMBERS)
def test_the_referral_form_refuses_huge_and_foreign_amounts(world, acme, client, typed, action):
    response = client.post(NEW, form(acme, amount=typed, action=action))
    assert response.status_code == 200
    assert response.context["form"].errors["amount"]
    assert not Referral.objects.filter(partner=world.partner).exists()


@pytest.mark.parametrize("typed", ["1e30", "99999999999999999999999", "1_000"])
def test_editing_refuses_huge_amounts(world, acme, client, rep, typed):
    referral = services.submit_referral(rep, acme, data())
    response = client.post(reverse("referrals:edit", args=[referral.public_id]),
                           form(acme, amount=typed))
    assert response.status_code == 200 and response.context["form"].errors["amount"]
    referral.refresh_from_db()
    assert referral.amount_minor == 1_000_000


@pytest.mark.parametrize("fields", [
    {"kind": "flat", "flat": "1e30"},
    {"kind": "flat", "flat": "99999999999999999999999"},
    {"kind": "flat", "flat": "-5"},
    {"kind": "flat", "flat": "1_000"},
    {"kind": "percent", "cap": "1e30"},
    {"kind": "percent", "cap": "10000000000000"},
    {"kind": "percent", "payout_minimum": "1e30"},
    {"kind": "percent", "rate": "Infinity"},
    {"kind": "percent", "rate": "NaN"},
    {"kind": "percent", "rate": "١٠"},
    {"kind": "percent", "rate": "1e1"},
    {"kind": "tiered", "tier_registered": "Infinity"},
    {"kind": "percent", "holding_days": "99999999999999999999999"},
    {"kind": "percent", "clawback_days": "١٠"},
])
def test_the_commission_plan_refuses_nonsense_money(world, programs, fields):
    from payouts.plans import save_plan

    save_plan(world.member("vendor", "admin"), programs["acme"], dict(PLAN))
    client = world.client_for(world.member("vendor", "admin"))
    post = {"kind": "percent", "currency": "USD", "rate": "10", "holding_days": "30",
            "clawback_days": "90", "payout_minimum": "50", **fields}
    response = client.post(reverse("payouts:commission_plan",
                                   args=[programs["acme"].public_id]), post)
    assert response.status_code == 400
    assert programs["acme"].commission_plans.count() == 1


@pytest.mark.parametrize("amount", ["1e30", "99999999999999999999999", "1_000", "١٢٣"])
def test_an_import_row_the_job_could_not_store_is_refused_at_the_preview(
        world, programs, client, amount):
    response = upload(client, csv_bytes([row(amount=amount, currency="USD"),
                                         row(company="Globodyne", website="globodyne.com",
                                             email="x@globodyne.com")]))
    assert response.status_code == 302
    job = ImportJob.objects.get()
    assert job.valid_rows == 1
    assert {e["field"] for e in job.errors if e["row"] == 2} == {"amount"}
    assert client.post(reverse("referrals:import_confirm", args=[job.public_id])).status_code \
        == 302
    job.refresh_from_db()
    assert job.status == ImportJob.DONE and job.imported_rows == 1


# --- Finding 4: NUL and other control characters ---------------------------------------------

@pytest.mark.parametrize("reason", ["Customer\x00 left", "x" * 20_000])
def test_an_unacceptable_withdraw_reason_stops_the_withdrawal(world, acme, client, rep, reason):
    referral = services.submit_referral(rep, acme, data())
    response = client.post(reverse("referrals:withdraw", args=[referral.public_id]),
                           {"reason": reason}, follow=True)
    assert response.status_code == 200 and "Not withdrawn" in flashes(response)
    referral.refresh_from_db()
    assert referral.status == Referral.SUBMITTED


def test_a_withdraw_reason_keeps_its_line_breaks(world, acme, client, rep):
    referral = services.submit_referral(rep, acme, data())
    client.post(reverse("referrals:withdraw", args=[referral.public_id]),
                {"reason": "Lost the budget.\r\n\tNext year."})
    referral.refresh_from_db()
    assert referral.status == Referral.WITHDRAWN


@pytest.mark.parametrize("field,value", [
    ("company_name", "Initech\x00"), ("company_name", "Init\x07ech"),
    ("contact_title", "CTO\x1b[31m"), ("company_name", "Initech\nInc"),
    ("notes", "Met\x00 at the summit"), ("notes", "Met\x0b at the summit"),
    ("contact_name", "Peter\u0085Gibbons"),
])
def test_control_characters_are_refused_in_referral_text(world, acme, client, field, value):
    response = client.post(NEW, form(acme, **{field: value}))
    assert response.status_code == 200 and response.context["form"].errors[field]
    assert not Referral.objects.exists()


def test_notes_keep_tabs_and_line_breaks(world, acme, client):
    assert client.post(NEW, form(acme, notes="Line one\r\n\tLine two")).status_code == 302
    assert Referral.objects.get().notes.splitlines() == ["Line one", "\tLine two"]


@pytest.mark.parametrize("position", [10, 5000, 100_000])
def test_a_csv_with_a_nul_anywhere_is_refused(world, programs, client, position):
    rows = [row(company=f"Customer {i}", website=f"c{i}.com", email=f"b@c{i}.com",
                notes="n" * 200) for i in range(600)]
    content = csv_bytes(rows)
    content = content[:position] + b"\x00" + content[position:]
    response = upload(client, content)
    assert response.status_code == 200  # the upload page again, with the error
    assert "NUL" in response.content.decode() or "not a CSV" in response.content.decode()
    assert not ImportJob.objects.exists()


def test_a_csv_cell_with_a_control_character_is_an_error_on_its_row(world, programs, client):
    two_lines = row(company="Globodyne", website="globodyne.com", email="x@globodyne.com",
                    notes="NOTES").replace("NOTES", '"two\nlines"')
    response = upload(client, csv_bytes([row(company="Init\x07ech"), two_lines]))
    assert response.status_code == 302
    job = ImportJob.objects.get()
    assert job.valid_rows == 1 and {e["field"] for e in job.errors} == {"company_name"}


def test_every_csv_column_has_a_length(world, programs, client):
    response = upload(client, csv_bytes([row(phone="1" * 5000), row(close="2" * 5000)]))
    job = ImportJob.objects.get()
    assert response.status_code == 302 and job.valid_rows == 0
    assert {e["field"] for e in job.errors} == {"contact_phone", "expected_close"}
    assert HEADER  # the header the helpers write names every column


# --- Finding 5: dates, lengths, notes that stop the action, formulas ---------------------------

@pytest.mark.parametrize("url,member", [
    ("/referrals/", ("partner", "rep")), ("/referrals/", ("vendor", "partnerships")),
    ("/referrals/export.csv", ("partner", "owner")),
    ("/attributions/", ("vendor", "admin")), ("/attributions/", ("operator", "admin")),
    ("/audit/", ("operator", "auditor")), ("/audit/export.csv", ("operator", "auditor")),
])
@pytest.mark.parametrize("query", [
    "until=9999-12-31", "since=9999-12-31", "since=0001-01-01", "closed_to=9999-12-31",
    "attributed_to=9999-12-31", "closed_from=0001-01-01", "min_value=1e30",
    "max_value=99999999999999999999999", "max_value=1.234", "q=%00", "actor=a%00b",
])
def test_filters_far_from_today_answer_without_an_error(world, programs, url, member, query):
    path = _resolve(url)
    response = world.client_for(world.member(*member)).get(f"{path}?{query}")
    assert response.status_code == 200
    if hasattr(response, "streaming_content"):
        b"".join(response.streaming_content)


def _resolve(url):
    from django.urls import NoReverseMatch

    names = {"/referrals/export.csv": "referrals:export", "/audit/": "accounts:audit_log",
             "/audit/export.csv": "accounts:audit_export"}
    try:
        return reverse(names[url]) if url in names else url
    except NoReverseMatch:
        return url


@pytest.mark.parametrize("month", ["9999-12", "0001-01", "2027-13", "٢٠٢٧-٠٣"])
def test_an_expected_close_month_must_make_sense(world, acme, client, month):
    response = client.post(NEW, form(acme, expected_close=month))
    assert response.status_code == 200 and response.context["form"].errors["expected_close"]


def test_notes_have_a_length(world, acme, client):
    response = client.post(NEW, form(acme, notes="x" * 300_000))
    assert response.status_code == 200 and response.context["form"].errors["notes"]
    assert not Referral.objects.exists()


@pytest.mark.parametrize("signed", ["0001-01-01", "1899-12-31", "9999-12-31"])
def test_a_tax_form_date_must_make_sense(world, signed):
    from tests.payouts.test_tax_pages import form_post

    client = world.client_for(world.member("partner", "owner"))
    response = client.post(reverse("payouts:tax_profile"), form_post(form_signed_on=signed))
    assert response.status_code in (200, 400)
    assert response.context["form"].errors["form_signed_on"]
    assert not TaxProfile.objects.filter(form_signed_on=date.fromisoformat(signed)).exists()


@pytest.mark.parametrize("period_end", ["0001-01-01", "1999-12-31", "9999-12-31"])
def test_a_payout_batch_period_must_make_sense(world, period_end):
    client = world.client_for(world.member("operator", "admin"))
    response = client.post(reverse("payouts:batch_create"), {"period_end": period_end})
    assert response.status_code == 400
    assert not PayoutBatch.objects.exists()


@pytest.mark.parametrize("note", ["x" * 2001, "Checked\x00", "Checked\x1b"])
def test_an_invalid_confirm_note_stops_the_confirmation(world, brightpath_deal, note):  # noqa: F811
    client = world.client_for(world.member("vendor", "admin"))
    status = brightpath_deal.status
    response = client.post(reverse("attribution:confirm", args=[brightpath_deal.public_id]),
                           {"note": note})
    assert response.status_code == 400 and response.context["confirm_form"].errors["note"]
    brightpath_deal.refresh_from_db()
    assert brightpath_deal.status == status != Attribution.CONFIRMED


@pytest.mark.parametrize("reason", ["x" * 300_000, "Settled\x00"])
def test_an_invalid_dispute_withdraw_reason_stops_the_withdrawal(world, dispute, reason):  # noqa: F811
    client = world.client_for(world.member("partner", "rep"))
    response = client.post(reverse("attribution:dispute_withdraw", args=[dispute.public_id]),
                           {"reason": reason}, follow=True)
    assert response.status_code == 200 and "Not withdrawn" in flashes(response)
    dispute.refresh_from_db()
    assert dispute.status != Dispute.WITHDRAWN
    assert not AuditEvent.objects.filter(action="dispute.withdrawn").exists()


@pytest.mark.parametrize("cell", [
    "=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "\nx",
    "Acme;=HYPERLINK(\"https://evil.example\")", "Acme,=1+2", "Acme\t=1+2", "Acme, =1+2",
    'Acme"=1+2', "Acme'@SUM(A1)", "Acme\n=1+2", "Acme;+1", "Acme;-1",
])
def test_every_place_a_formula_can_start_is_neutralised(cell):
    assert safe_cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["Acme", "2027-03-01", "a=b", "x+y", "jane@acme.com",
                                  "2026-12-08T02:00:00+00:00", 12, None])
def test_harmless_cells_are_left_alone(cell):
    assert safe_cell(cell) == ("" if cell is None else str(cell))


def test_the_referral_export_neutralises_a_formula_after_a_separator(world, acme, client, rep):
    services.submit_referral(rep, acme, data(company_name='Acme;=HYPERLINK("x")'))
    response = world.client_for(world.member("partner", "owner")).get(
        reverse("referrals:export"))
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[1][rows[0].index("company")] == '\'Acme;=HYPERLINK("x")'


def test_dates_near_today_still_filter(world, acme, client, rep):
    services.submit_referral(rep, acme, data())
    today = timezone.localdate()
    response = client.get("/referrals/", {"since": (today - timedelta(days=1)).isoformat(),
                                          "until": today.isoformat()})
    assert response.status_code == 200 and b"Initech" in response.content
