"""Registering a deal in the browser (POST /referrals/new/), editing it, and the vendor's bulk
accept/reject on the inbound list."""

import re
from datetime import date

import pytest
from django.urls import reverse

from accounts.models import AuditEvent
from referrals import services
from referrals.models import Program, Referral
from referrals.services import ReferralData
from tests.referrals.factories import EnrolmentFactory, ProgramFactory, ReferralFactory

PA, VE = "partner", "vendor"
NEW = "/referrals/new/"


def form(program, **overrides) -> dict:
    values = {"program": str(program.public_id), "company_name": "Initech, Inc.",
              "website": "https://www.eu.initech.co.uk/about", "country": "GB",
              "contact_name": "Peter Gibbons", "contact_email": "Peter.Gibbons@Initech.co.uk",
              "contact_phone": "020 7946 0018", "contact_title": "CTO",
              "amount": "25,000.50", "currency": "USD", "expected_close": "2027-03",
              "notes": "Met at the London summit.", "action": "submit"}
    values.update(overrides)
    return values


def data(**overrides) -> ReferralData:
    values = dict(company_name="Initech Inc", website="initech.com", country="US",
                  contact_name="Peter Gibbons", contact_email="peter@initech.com",
                  amount_minor=1_000_000, currency="USD")
    values.update(overrides)
    return ReferralData(**values)


@pytest.fixture
def acme(programs):
    return programs["acme"]


@pytest.fixture
def rep(world):
    return world.member(PA, "rep")


@pytest.fixture
def client(world, rep):
    return world.client_for(rep)


def field_errors(response, name) -> list[str]:
    return list(response.context["form"].errors.get(name, []))


def flashes(response, level) -> list[str]:
    return re.findall(rf'class="flash {level}"[^>]*>([^<]*)<', response.content.decode())


def assert_form_error(response, name, text):
    assert response.status_code == 200
    errors = field_errors(response, name)
    assert any(text in e for e in errors), (name, response.context["form"].errors)
    html = response.content.decode()
    assert f'id="id_{name}-error"' in html  # shown inline, next to the field
    assert text.replace("'", "&#x27;") in html


# --- Submitting --------------------------------------------------------------------------------


def test_valid_submission_is_stored_normalized(world, acme, client, rep):
    response = client.post(NEW, form(acme), follow=True)
    referral = Referral.objects.get(partner=world.partner)
    assert response.redirect_chain == [(reverse("referrals:detail",
                                                args=[referral.public_id]), 302)]
    [flash] = flashes(response, "success")
    assert "Initech, Inc." in flash and "Acme Cloud" in flash
    assert referral.status == Referral.SUBMITTED
    assert referral.program == acme and referral.vendor == world.vendor
    assert referral.submitted_by == rep.user and referral.submitted_at is not None
    assert referral.company_name == "Initech, Inc."
    assert referral.normalized_name == "initech"
    assert referral.website == "https://www.eu.initech.co.uk/about"
    assert referral.domain == "initech.co.uk"
    assert referral.country.code == "GB"
    assert referral.contact_email == "peter.gibbons@initech.co.uk"
    assert referral.contact_phone == "+442079460018"
    assert referral.amount_minor == 2_500_050 and referral.currency == "USD"
    assert referral.expected_close == date(2027, 3, 1)
    assert referral.notes == "Met at the London summit."
    assert referral.conflict is False
    assert AuditEvent.objects.filter(action="referral.submitted",
                                     target_id=str(referral.public_id)).count() == 1


@pytest.mark.parametrize("phone,country,e164", [
    ("(415) 555-0123", "US", "+14155550123"),
    ("415.555.0123", "US", "+14155550123"),
    ("030 901820", "DE", "+4930901820"),
    ("+49 30 901820", "US", "+4930901820"),  # an explicit country code wins
])
def test_phone_numbers_are_stored_in_e164(world, acme, client, phone, country, e164):
    response = client.post(NEW, form(acme, contact_phone=phone, country=country))
    assert response.status_code == 302, response.context and response.context["form"].errors
    assert Referral.objects.get(partner=world.partner).contact_phone == e164


@pytest.mark.parametrize("typed,minor", [("25000", 2_500_000), ("25,000.50", 2_500_050),
                                         (" 1,234,567.8 ", 123_456_780), ("0", 0)])
def test_amounts_are_stored_in_minor_units(world, acme, client, typed, minor):
    assert client.post(NEW, form(acme, amount=typed)).status_code == 302
    assert Referral.objects.get(partner=world.partner).amount_minor == minor


def test_no_amount_stores_no_currency(world, acme, client):
    assert client.post(NEW, form(acme, amount="", currency="EUR")).status_code == 302
    referral = Referral.objects.get(partner=world.partner)
    assert referral.amount_minor is None and referral.currency == ""


@pytest.mark.parametrize("typed,month", [("2027-03", date(2027, 3, 1)),
                                         ("2027-03-15", date(2027, 3, 1)),
                                         ("2026-12", date(2026, 12, 1))])
def test_expected_close_is_the_first_of_the_month(world, acme, client, typed, month):
    assert client.post(NEW, form(acme, expected_close=typed)).status_code == 302
    assert Referral.objects.get(partner=world.partner).expected_close == month


# --- Drafts ------------------------------------------------------------------------------------


def test_save_as_draft_with_only_a_company_name(world, acme, client):
    response = client.post(NEW, {"program": str(acme.public_id), "company_name": "Initech",
                                 "action": "draft"}, follow=True)
    referral = Referral.objects.get(partner=world.partner)
    assert response.redirect_chain[-1][0] == reverse("referrals:detail",
                                                     args=[referral.public_id])
    assert "Draft saved" in response.content.decode()
    assert referral.status == Referral.DRAFT and referral.submitted_at is None
    assert referral.company_name == "Initech" and referral.website == ""
    assert referral.amount_minor is None
    assert not AuditEvent.objects.filter(target_id=str(referral.public_id)).exists()
    # Not seen by the vendor.
    vendor = world.client_for(world.member(VE, "partnerships"))
    assert b"Initech" not in vendor.get(reverse("referrals:list")).content


def test_a_draft_is_completed_and_submitted_from_the_edit_page(world, acme, client):
    client.post(NEW, {"program": str(acme.public_id), "company_name": "Initech",
                      "action": "draft"})
    draft = Referral.objects.get(partner=world.partner)
    edit = reverse("referrals:edit", args=[draft.public_id])
    page = client.get(edit)
    assert page.status_code == 200 and b"Submit referral" in page.content
    response = client.post(edit, form(acme))
    assert response.status_code == 302
    draft.refresh_from_db()
    assert draft.status == Referral.SUBMITTED and draft.domain == "initech.co.uk"
    assert Referral.objects.filter(partner=world.partner).count() == 1


def test_a_submit_without_required_fields_is_not_a_draft(world, acme, client):
    response = client.post(NEW, {"program": str(acme.public_id), "company_name": "Initech",
                                 "action": "submit"})
    assert response.status_code == 200
    for name, label in [("website", "Website"), ("country", "Country"),
                        ("contact_name", "Contact name"), ("contact_email", "Contact email")]:
        assert_form_error(response, name, f"{label} is required.")
    assert not Referral.objects.exists()


# --- Inline errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("field,value,message", [
    ("contact_email", "peter@", "Enter a valid email address"),
    ("contact_email", "not an email", "Enter a valid email address"),
    ("contact_phone", "12345", "Enter a valid phone number"),
    ("contact_phone", "call me maybe", "Enter a valid phone number"),
    ("website", "not a website", "Enter the company's website"),
    ("website", "localhost", "Enter the company's website"),
    ("amount", "lots", "Enter an amount"),
    ("amount", "-100", "cannot be negative"),
    ("amount", "100.505", "at most 2 decimal places"),
    ("expected_close", "soon", "Enter a month as YYYY-MM"),
])
def test_bad_input_is_reported_next_to_the_field(world, acme, client, field, value, message):
    response = client.post(NEW, form(acme, **{field: value}))
    assert_form_error(response, field, message)
    assert not Referral.objects.exists()
    # What the partner typed is kept so they can fix it.
    assert value.replace("'", "&#x27;") in response.content.decode()


def test_a_currency_the_program_does_not_accept(world, acme, programs, client):
    """The partner is also enrolled in a GBP program, so GBP is on the menu, but Acme's program
    takes USD and EUR only."""
    pounds = ProgramFactory(vendor=world.vendor2, name="Globex UK",
                            accepted_currencies=["GBP"])
    EnrolmentFactory(program=pounds, partner=world.partner,
                     requested_by=world.member(PA, "owner").user)
    response = client.post(NEW, form(acme, currency="GBP"))
    assert_form_error(response, "currency", "This program accepts USD, EUR only.")
    assert not Referral.objects.exists()
    # The same currency is fine for the program that takes it.
    assert client.post(NEW, form(pounds, currency="GBP")).status_code == 302


def test_a_currency_no_program_accepts_is_refused(world, acme, client):
    response = client.post(NEW, form(acme, currency="JPY"))
    assert response.status_code == 200 and field_errors(response, "currency")
    assert not Referral.objects.exists()


def test_fields_the_program_requires(world, acme, client):
    Program.objects.filter(pk=acme.pk).update(
        required_fields=["contact_phone", "expected_close", "estimated_value", "notes"])
    response = client.post(NEW, form(acme, contact_phone="", expected_close="", amount="",
                                      notes=""))
    assert_form_error(response, "contact_phone", "Contact phone is required by this program.")
    assert_form_error(response, "expected_close",
                      "Expected close month is required by this program.")
    assert_form_error(response, "amount", "Estimated deal value is required by this program.")
    assert_form_error(response, "notes", "Notes is required by this program.")
    assert not Referral.objects.exists()
    # A draft may leave them out for now.
    draft = client.post(NEW, form(acme, contact_phone="", expected_close="", amount="",
                                  notes="", action="draft"))
    assert draft.status_code == 302
    assert Referral.objects.get().status == Referral.DRAFT


def test_a_program_the_partner_is_not_enrolled_in_is_not_offered(world, programs, client):
    response = client.post(NEW, form(programs["globex"]))
    assert_form_error(response, "program", "Choose one of the programs you are enrolled in.")
    assert not Referral.objects.exists()


def test_roles_without_submit_cannot_open_the_form(world, programs):
    for role in [(PA, "finance"), (VE, "admin"), (VE, "partnerships"), ("operator", "admin")]:
        client = world.client_for(world.member(*role))
        assert client.get(NEW).status_code == 404, role
        assert client.post(NEW, form(programs["acme"])).status_code == 404, role
    assert not Referral.objects.exists()


def test_a_partner_with_no_open_program_is_told_to_enrol(world, acme, client):
    Program.objects.filter(pk=acme.pk).update(status=Program.PAUSED)
    response = client.get(NEW)
    assert response.status_code == 200
    assert "referrals/no_programs.html" in [t.name for t in response.templates]
    client.post(NEW, form(acme))
    assert not Referral.objects.exists()


# --- Editing -----------------------------------------------------------------------------------


def test_edit_while_submitted(world, acme, client, rep):
    referral = services.submit_referral(rep, acme, data())
    edit = reverse("referrals:edit", args=[referral.public_id])
    page = client.get(edit)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Save changes" in html and 'name="amount" value="10000"' in html
    response = client.post(edit, form(acme, company_name="Initech Inc", website="initech.com",
                                      country="US", contact_phone="(415) 555-0123",
                                      amount="12,500", action="save"), follow=True)
    assert "Changes saved." in response.content.decode()
    referral.refresh_from_db()
    assert referral.status == Referral.SUBMITTED
    assert referral.amount_minor == 1_250_000
    assert referral.contact_phone == "+14155550123"
    assert referral.contact_title == "CTO"
    assert AuditEvent.objects.filter(action="referral.edited",
                                     target_id=str(referral.public_id)).count() == 1


def test_edit_of_a_submitted_referral_still_validates(world, acme, client, rep):
    referral = services.submit_referral(rep, acme, data())
    response = client.post(reverse("referrals:edit", args=[referral.public_id]),
                           form(acme, contact_email="nope", action="save"))
    assert_form_error(response, "contact_email", "Enter a valid email address")
    referral.refresh_from_db()
    assert referral.contact_email == "peter@initech.com"


@pytest.mark.parametrize("status", [Referral.ACCEPTED, Referral.REJECTED, Referral.WITHDRAWN])
def test_cannot_edit_once_decided(world, acme, client, rep, status):
    referral = services.submit_referral(rep, acme, data())
    vendor = world.member(VE, "partnerships")
    if status == Referral.ACCEPTED:
        services.accept_referral(vendor, referral)
    elif status == Referral.REJECTED:
        services.reject_referral(vendor, referral, "duplicate", "")
    else:
        services.withdraw_referral(rep, referral)
    edit = reverse("referrals:edit", args=[referral.public_id])
    response = client.get(edit, follow=True)
    assert response.redirect_chain[-1][0] == reverse("referrals:detail",
                                                     args=[referral.public_id])
    assert "Only drafts and submitted referrals can be edited." in response.content.decode()
    response = client.post(edit, form(acme, company_name="Changed Co", action="save"),
                           follow=True)
    assert "Only drafts and submitted referrals can be edited." in response.content.decode()
    referral.refresh_from_db()
    assert referral.company_name == "Initech Inc" and referral.status == status
    # No edit button on the detail page either.
    assert edit not in client.get(reverse("referrals:detail",
                                          args=[referral.public_id])).content.decode()


def test_others_cannot_edit(world, acme, rep):
    referral = services.submit_referral(rep, acme, data())
    edit = reverse("referrals:edit", args=[referral.public_id])
    for member in [world.others["partner2_rep"], world.member(VE, "partnerships"),
                   world.member(PA, "finance")]:
        client = world.client_for(member)
        assert client.get(edit).status_code == 404
        assert client.post(edit, form(acme, company_name="Hijacked",
                                      action="save")).status_code == 404
    # A colleague rep cannot edit what another rep registered; the manager can.
    assert world.client_for(world.member(PA, "manager")).get(edit).status_code == 200
    referral.refresh_from_db()
    assert referral.company_name == "Initech Inc"


# --- Bulk accept / reject ----------------------------------------------------------------------


@pytest.fixture
def inbox(world, programs, rep):
    """Three submitted referrals to Acme Cloud, and some the partnerships member may not touch:
    a draft, another vendor's, another network's."""
    acme = programs["acme"]
    mine = [services.submit_referral(rep, acme, data(company_name=name, website=f"{site}.com"))
            for name, site in [("Initech", "initech"), ("Globochem", "globochem"),
                               ("Umbrella Corp", "umbrella")]]
    draft = services.save_draft(rep, acme, ReferralData(company_name="Draft Co"))
    globex = ReferralFactory(program=programs["globex"], partner=world.partner2,
                             submitted_by=world.others["partner2_rep"].user)
    foreign = ReferralFactory(program=programs["foreign"], partner=world.foreign_partner,
                              submitted_by=world.others["foreign_owner"].user)
    return {"mine": mine, "outside": [draft, globex, foreign]}


def _bulk(client, referrals, action, code=""):
    return client.post(reverse("referrals:bulk"), {
        "ids": [str(r.public_id) for r in referrals], "action": action, "code": code},
        follow=True)


def _statuses(referrals):
    return [Referral.objects.get(pk=r.pk).status for r in referrals]


def test_bulk_accept(world, inbox):
    client = world.client_for(world.member(VE, "partnerships"))
    response = _bulk(client, inbox["mine"][:2] + inbox["outside"], "accept")
    assert response.redirect_chain[-1][0] == reverse("referrals:list")
    assert "Accepted 2 referrals." in response.content.decode()
    assert _statuses(inbox["mine"]) == [Referral.ACCEPTED, Referral.ACCEPTED,
                                        Referral.SUBMITTED]
    assert _statuses(inbox["outside"]) == [Referral.DRAFT, Referral.SUBMITTED,
                                           Referral.SUBMITTED]
    assert AuditEvent.objects.filter(action="referral.accepted").count() == 2
    assert all(Referral.objects.get(pk=r.pk).protected_until for r in inbox["mine"][:2])


def test_bulk_reject_with_a_reason(world, inbox, rep):
    client = world.client_for(world.member(VE, "partnerships"))
    response = _bulk(client, inbox["mine"] + inbox["outside"], "reject", "existing_customer")
    assert "Rejected 3 referrals." in response.content.decode()
    assert _statuses(inbox["mine"]) == [Referral.REJECTED] * 3
    assert {Referral.objects.get(pk=r.pk).rejection_code for r in inbox["mine"]} == {
        "existing_customer"}
    assert _statuses(inbox["outside"]) == [Referral.DRAFT, Referral.SUBMITTED,
                                           Referral.SUBMITTED]
    assert rep.user.notifications.filter(kind="referral_rejected").count() == 3


def test_bulk_reject_needs_a_reason(world, inbox):
    client = world.client_for(world.member(VE, "partnerships"))
    response = _bulk(client, inbox["mine"], "reject", "")
    assert "Choose a reason to reject the selected referrals." in response.content.decode()
    assert _statuses(inbox["mine"]) == [Referral.SUBMITTED] * 3


def test_bulk_reports_referrals_that_could_not_be_changed(world, inbox):
    partnerships = world.member(VE, "partnerships")
    services.accept_referral(partnerships, inbox["mine"][0])
    client = world.client_for(partnerships)
    response = _bulk(client, inbox["mine"], "reject", "duplicate")
    html = response.content.decode()
    assert "Rejected 2 referrals." in html
    assert "Initech: This referral is accepted; it cannot be rejected now." in html
    assert _statuses(inbox["mine"]) == [Referral.ACCEPTED, Referral.REJECTED,
                                        Referral.REJECTED]


def test_bulk_with_nothing_selected_or_an_unknown_action(world, inbox):
    client = world.client_for(world.member(VE, "partnerships"))
    assert "Select referrals and an action." in _bulk(client, [], "accept").content.decode()
    assert "Select referrals and an action." in _bulk(
        client, inbox["mine"], "withdraw").content.decode()
    assert _statuses(inbox["mine"]) == [Referral.SUBMITTED] * 3


def test_bulk_ignores_ids_that_are_not_ids(world, inbox):
    """A tampered form must not crash the page; the real ids are still processed."""
    client = world.client_for(world.member(VE, "partnerships"))
    response = client.post(reverse("referrals:bulk"), {
        "ids": ["not-a-uuid", str(inbox["mine"][0].public_id)], "action": "accept"})
    assert response.status_code == 302
    assert _statuses(inbox["mine"][:1]) == [Referral.ACCEPTED]


@pytest.mark.parametrize("role", [(PA, "owner"), (PA, "rep"), (VE, "sales"), (VE, "finance"),
                                  ("operator", "admin")])
def test_bulk_is_404_for_roles_that_cannot_accept(world, inbox, role):
    client = world.client_for(world.member(*role))
    response = client.post(reverse("referrals:bulk"), {
        "ids": [str(r.public_id) for r in inbox["mine"]], "action": "accept"})
    assert response.status_code == 404
    assert _statuses(inbox["mine"]) == [Referral.SUBMITTED] * 3


def test_another_vendor_bulk_accepting_our_ids_changes_nothing(world, inbox):
    client = world.client_for(world.others["vendor2_admin"])
    response = _bulk(client, inbox["mine"], "accept")
    assert flashes(response, "success") == []
    assert _statuses(inbox["mine"]) == [Referral.SUBMITTED] * 3
