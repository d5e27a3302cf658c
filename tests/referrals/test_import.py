"""Bulk CSV import: upload, per-row preview, import of the valid rows (in the request or in the
worker), progress partial, access."""

import csv
import hashlib
import html
import io
from datetime import date

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts import roles
from accounts.models import AuditEvent
from referrals import imports, services, tasks
from referrals.models import ImportJob, Referral
from referrals.services import ReferralData
from tests.accounts.factories import MembershipFactory
from tests.conftest import ALL_ROLES
from tests.referrals.factories import EnrolmentFactory, ReferralFactory

PA = roles.PARTNER
HEADER = ",".join(imports.COLUMNS)
NO_SUBMIT = [r for r in ALL_ROLES if roles.REFERRAL_SUBMIT not in roles.ROLES[r].permissions]


def row(company="Initech", website="initech.com", country="US", contact_name="Bill Lumbergh",
        email="bill@initech.com", phone="+1 415 555 0100", title="", amount="", currency="",
        close="", notes="", program=""):
    return line([program, company, website, country, contact_name, email, phone, title,
                 amount, currency, close, notes])


def line(cells) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(cells)
    return out.getvalue()


def many_rows(n, start=0):
    """Distinct accounts whose names are not even fuzzily alike ("Customer 0001" and
    "Customer 0002" would count as one account)."""
    keys = [hashlib.sha1(str(i).encode()).hexdigest()[:10] for i in range(start, start + n)]
    return [row(company=f"Customer {k}", website=f"c{k}.com", email=f"buyer@c{k}.com")
            for k in keys]


def csv_bytes(rows, header=HEADER, bom=False):
    text = "\r\n".join([header, *rows]) + "\r\n"
    return (("\ufeff" if bom else "") + text).encode("utf-8")


def text(response) -> str:
    return html.unescape(response.content.decode())


@pytest.fixture
def rep(world, programs):
    return world.member(PA, "rep")


@pytest.fixture
def client(world, rep):
    return world.client_for(rep)


def upload(client, content, name="referrals.csv"):
    return client.post(reverse("referrals:import_upload"),
                       {"file": SimpleUploadedFile(name, content, "text/csv")})


def uploaded_job(client, content) -> ImportJob:
    response = upload(client, content)
    assert response.status_code == 302, text(response)
    return ImportJob.objects.get(public_id=response.url.rstrip("/").rsplit("/", 1)[-1])


def confirm(client, job):
    return client.post(reverse("referrals:import_confirm", args=[job.public_id]))


def progress(client, job, **headers):
    return client.get(reverse("referrals:import_progress", args=[job.public_id]),
                      HTTP_HX_REQUEST="true", **headers)


def errors_by_row(job) -> dict:
    found = {}
    for e in job.errors:
        found.setdefault(e["row"], set()).add(e["field"])
    return found


# --- A good file --------------------------------------------------------------------------------

def test_a_good_file_imports_every_row_submitted_and_normalized(world, programs, rep, client):
    content = csv_bytes([
        row(program="Acme Partner Program", company="Initech, Inc.",
            website="https://www.Initech.com/about", country="us", email="Bill@Initech.COM",
            phone="(415) 555-0100", title="VP IT", amount="25,000.50", currency="usd",
            close="2027-03", notes="Met at a conference"),
        row(company="Müller GmbH", website="mueller.de", country="Germany",
            contact_name="Anna Müller", email="anna@mueller.de", phone="030 1234567",
            amount="9000", currency="EUR"),
        row(program=str(programs["acme"].public_id), company="Hooli", website="hooli.com"),
    ])
    job = uploaded_job(client, content)
    assert (job.status, job.total_rows, job.valid_rows, job.partner) == \
        ("validated", 3, 3, world.partner)
    preview = text(client.get(reverse("referrals:import_detail", args=[job.public_id])))
    assert "Import 3 valid rows" in preview and "Müller GmbH" in preview

    response = confirm(client, job)
    assert response.status_code == 302
    job.refresh_from_db()
    assert (job.status, job.processed_rows, job.imported_rows, job.failed_rows) == \
        ("done", 3, 3, 0)
    assert job.finished_at is not None

    referrals = {r.company_name: r for r in Referral.objects.filter(partner=world.partner)}
    assert set(referrals) == {"Initech, Inc.", "Müller GmbH", "Hooli"}
    assert all(r.status == Referral.SUBMITTED and r.submitted_by == rep.user
               and r.program == programs["acme"] for r in referrals.values())
    initech = referrals["Initech, Inc."]
    assert (initech.domain, initech.normalized_name, initech.country.code) == \
        ("initech.com", "initech", "US")
    assert (initech.contact_email, initech.contact_phone) == \
        ("bill@initech.com", "+14155550100")
    assert (initech.amount_minor, initech.currency, initech.expected_close) == \
        (2500050, "USD", date(2027, 3, 1))
    assert (initech.contact_title, initech.notes) == ("VP IT", "Met at a conference")
    muller = referrals["Müller GmbH"]
    assert (muller.country.code, muller.contact_phone, muller.amount_minor) == \
        ("DE", "+49301234567", 900000)

    event = AuditEvent.objects.get(action="referral.import_completed")
    assert event.target_id == str(job.public_id) and event.actor == rep.user
    assert (event.after["imported_rows"], event.after["failed_rows"],
            event.after["total_rows"]) == (3, 0, 3)


@pytest.mark.parametrize("bom", [True, False], ids=["with-bom", "plain"])
def test_utf8_with_or_without_bom_is_read(client, bom):
    job = uploaded_job(client, csv_bytes([row(company="Ærø Fisk ApS", website="aeroe.dk",
                                              country="DK", phone="+45 32 12 34 56")], bom=bom))
    assert (job.total_rows, job.valid_rows, job.errors) == (1, 1, [])
    assert not job.csv_text.startswith("\ufeff")


def test_column_names_are_matched_loosely_and_unknown_columns_reported(client):
    header = HEADER.replace("company_name", "Company Name").replace("contact_email",
                                                                    "Contact-Email")
    job = uploaded_job(client, csv_bytes([row() + ",blue"], header=header + ",Favourite Colour"))
    assert job.valid_rows == 1
    assert job.errors == [{"row": 1, "field": "favourite_colour",
                           "message": "Unknown column, ignored.", "warning": True}]
    page = text(client.get(reverse("referrals:import_detail", args=[job.public_id])))
    assert "favourite_colour" in page and "Unknown column, ignored." in page


# --- Bad rows -----------------------------------------------------------------------------------

def test_bad_rows_show_their_errors_and_only_valid_rows_import(world, programs, rep, client):
    ReferralFactory(program=programs["acme"], partner=world.partner, company_name="Hooli",
                    website="https://hooli.com", submitted_by=rep.user)
    content = csv_bytes([
        row(company="Initech", website="initech.com"),  # 2: fine
        row(company="Bad Email", website="bademail.com", email="not-an-email"),  # 3
        row(company="Bad Phone", website="badphone.com", phone="12345"),  # 4
        row(company="Narnia Ltd", website="narnia.com", country="Narnia"),  # 5
        row(company="Pounds", website="pounds.com", amount="100", currency="GBP"),  # 6
        row(company="", website="nocompany.com"),  # 7
        row(company="Globex Lead", website="globexlead.com", program="Globex Program"),  # 8
        row(company="Initech Again", website="https://www.initech.com"),  # 9: same as row 2
        row(company="Hooli Inc", website="hooli.com"),  # 10: we registered it already
        row(company="Vandelay", website="vandelay.com", close="March"),  # 11
        row(company="Wonka", website="wonka.com"),  # 12: fine
    ])
    job = uploaded_job(client, content)
    assert (job.total_rows, job.valid_rows) == (11, 2)
    assert errors_by_row(job) == {
        3: {"contact_email"}, 4: {"contact_phone"}, 5: {"country"}, 6: {"currency"},
        7: {"company_name"}, 8: {"program"}, 9: {"company_name"}, 10: {"conflict"},
        11: {"expected_close"},
    }
    conflict = next(e for e in job.errors if e["row"] == 10)
    assert conflict["conflict"] is True

    page = text(client.get(reverse("referrals:import_detail", args=[job.public_id])))
    for message in ["Enter a valid email address, e.g. jane@customer.com.",
                    "Enter a valid phone number",
                    "Enter a country as a two-letter code",
                    "This program accepts USD, EUR only.",
                    "Company name is required.",
                    "“Globex Program” is not a program your organization is enrolled in.",
                    "Same account as row 2.",
                    "Your organization already registered this account with Acme Cloud.",
                    "Enter a month as YYYY-MM."]:
        assert message in page, message
    assert "Import 2 valid rows" in page

    confirm(client, job)
    job.refresh_from_db()
    assert (job.status, job.processed_rows, job.imported_rows, job.failed_rows) == \
        ("done", 2, 2, 0)
    assert set(Referral.objects.filter(partner=world.partner)
               .values_list("company_name", flat=True)) == {"Hooli", "Initech", "Wonka"}
    result = text(client.get(reverse("referrals:import_detail", args=[job.public_id])))
    assert "9" in result and "skipped" in result and "Same account as row 2." in result


def test_a_program_must_be_named_when_the_partner_is_in_several(world, programs, rep, client):
    EnrolmentFactory(program=programs["globex"], partner=world.partner,
                     requested_by=world.member(PA, "owner").user)
    job = uploaded_job(client, csv_bytes([row(), row(company="Hooli", website="hooli.com",
                                                     program="globex program")]))
    assert errors_by_row(job) == {2: {"program"}}
    assert job.valid_rows == 1


def test_conflicts_found_at_import_time_are_flagged_on_their_row(world, programs, rep, client):
    """Another partner holds one account (imported, flagged); this partner registered another
    between preview and confirmation (refused)."""
    ReferralFactory(program=programs["acme"], partner=world.partner2, company_name="Hooli",
                    website="hooli.com")
    job = uploaded_job(client, csv_bytes([row(), row(company="Hooli", website="hooli.com")]))
    assert job.valid_rows == 2
    services.submit_referral(rep, programs["acme"], ReferralData(
        company_name="Initech", website="initech.com", country="US",
        contact_name="Bill", contact_email="bill@initech.com"))

    confirm(client, job)
    job.refresh_from_db()
    assert (job.imported_rows, job.failed_rows) == (1, 1)
    flagged = {e["row"]: e for e in job.errors}
    assert flagged[2]["conflict"] and not flagged[2].get("imported")
    assert flagged[3]["conflict"] and flagged[3]["imported"]
    hooli = Referral.objects.get(partner=world.partner, company_name="Hooli")
    assert hooli.conflict and hooli.status == Referral.SUBMITTED
    assert Referral.objects.filter(partner=world.partner, company_name="Initech").count() == 1
    page = text(client.get(reverse("referrals:import_detail", args=[job.public_id])))
    assert "conflict" in page and "failed" in page
    assert "Your organization already registered this account" in page
    assert world.partner2.name not in page  # who holds the account is never told


# --- Files that cannot be imported ---------------------------------------------------------------

@pytest.mark.parametrize("content,name,message", [
    (csv_bytes(many_rows(imports.MAX_ROWS + 1)), "big.csv", "more than 5,000 rows"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "logo.png", "This is not a CSV file"),
    (b"PK\x03\x04\x14\x00\x06\x00", "referrals.xlsx", "This is not a CSV file"),
    (csv_bytes([row(company="Café")]).decode().encode("latin-1"), "latin.csv",
     "not UTF-8"),
    (b"name,email\nInitech,bill@initech.com\n", "other.csv", "Missing: company_name"),
    (csv_bytes([]), "empty.csv", "no rows to import"),
    (HEADER.encode() + b"\n" + b"x" * imports.MAX_BYTES, "huge.csv", "larger than 2 MB"),
], ids=["too-many-rows", "png", "xlsx", "latin-1", "wrong-header", "header-only", "over-2mb"])
def test_a_file_that_cannot_be_imported_gets_a_clear_error_and_no_job(client, content, name,
                                                                      message):
    response = upload(client, content, name)
    assert response.status_code == 200
    assert message in text(response)
    assert not ImportJob.objects.exists()


# --- Large files go through the worker ----------------------------------------------------------

def test_a_large_file_is_imported_by_the_task_after_commit(
        world, rep, client, django_capture_on_commit_callbacks, monkeypatch):
    saved, dispatched = [], []
    real_save, real_delay = imports._save_progress, tasks.run_import.delay
    monkeypatch.setattr(imports, "_save_progress",
                        lambda job, **fields: (saved.append(fields), real_save(job, **fields)))
    monkeypatch.setattr(tasks.run_import, "delay",
                        lambda job_id: dispatched.append(job_id) or real_delay(job_id))
    job = uploaded_job(client, csv_bytes(many_rows(imports.SYNC_LIMIT + 10)))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        confirm(client, job)
        # Until the request's transaction commits, the job only waits in the queue.
        job.refresh_from_db()
        assert job.status == ImportJob.QUEUED and not Referral.objects.exists()
        assert not dispatched
        page = text(client.get(reverse("referrals:import_detail", args=[job.public_id])))
        assert 'hx-trigger="every 1s"' in page and "<progress" in page
    assert "confirm_import" in callbacks[0].__qualname__  # then each row's notifications
    assert dispatched == [job.pk]
    job.refresh_from_db()
    assert (job.status, job.processed_rows, job.imported_rows) == ("done", 210, 210)
    assert Referral.objects.filter(partner=world.partner, status="submitted").count() == 210
    assert [s["processed_rows"] for s in saved] == [25 * i for i in range(1, 9)] + [210]

    response = progress(client, job)
    body = text(response)
    assert response.status_code == 200 and "Import finished" in body
    assert "hx-trigger" not in body
    assert "210" in body and "See today’s submissions" in body
    today = timezone.localdate().isoformat()
    assert f"?since={today}&until={today}" in body


def test_running_the_task_twice_imports_nothing_twice(world, client):
    job = uploaded_job(client, csv_bytes(many_rows(3)))
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.QUEUED)
    assert tasks.run_import.apply(args=[job.pk]).get() is True
    assert tasks.run_import.apply(args=[job.pk]).get() is False
    job.refresh_from_db()
    assert (job.status, job.imported_rows) == ("done", 3)
    assert Referral.objects.filter(partner=world.partner).count() == 3
    assert AuditEvent.objects.filter(action="referral.import_completed").count() == 1


def test_confirming_twice_imports_once(world, client):
    job = uploaded_job(client, csv_bytes(many_rows(2)))
    confirm(client, job)
    response = confirm(client, job)
    assert "already being imported" in text(client.get(response.url))
    assert Referral.objects.filter(partner=world.partner).count() == 2


def test_the_progress_partial_polls_while_running(client):
    job = uploaded_job(client, csv_bytes(many_rows(2)))
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.RUNNING, processed_rows=1)
    body = text(progress(client, job))
    assert 'hx-trigger="every 1s"' in body and 'hx-get="' in body
    assert '<progress max="2" value="1"' in body
    plain = client.get(reverse("referrals:import_progress", args=[job.public_id]))
    assert plain.status_code == 302


def test_the_import_fails_cleanly_when_the_uploader_lost_the_permission(world, rep, client):
    job = uploaded_job(client, csv_bytes(many_rows(2)))
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.QUEUED)
    rep.status = "deactivated"
    rep.save()
    imports.process_import(job.pk)
    job.refresh_from_db()
    assert (job.status, job.imported_rows) == ("failed", 0)
    assert "may no longer submit" in job.errors[-1]["message"]
    assert not Referral.objects.exists()


# --- Access -------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", [(PA, "owner"), (PA, "manager"), (PA, "rep")],
                         ids=lambda r: ".".join(r))
def test_partner_roles_that_submit_can_upload(world, programs, role):
    client = world.client_for(world.member(*role))
    assert client.get(reverse("referrals:import_upload")).status_code == 200
    template = client.get(reverse("referrals:import_template"))
    assert template.content.decode("utf-8-sig").startswith(HEADER)
    assert "Import CSV" in text(client.get(reverse("referrals:list")))


@pytest.mark.parametrize("role", NO_SUBMIT, ids=lambda r: ".".join(r))
def test_roles_without_referral_submit_get_404(world, client, role):
    job = uploaded_job(client, csv_bytes(many_rows(1)))
    other = world.client_for(world.member(*role))
    for name in ["import_upload", "import_template"]:
        assert other.get(reverse(f"referrals:{name}")).status_code == 404
    for name in ["import_detail", "import_progress"]:
        url = reverse(f"referrals:{name}", args=[job.public_id])
        assert other.get(url, HTTP_HX_REQUEST="true").status_code == 404
    assert confirm(other, job).status_code == 404
    job.refresh_from_db()
    assert job.status == ImportJob.VALIDATED


def test_anonymous_visitors_are_sent_to_log_in(world, programs):
    response = Client().get(reverse("referrals:import_upload"))
    assert response.status_code == 302 and "login" in response.url


def test_another_partners_job_is_404(world, programs, client):
    other_rep = world.others["partner2_rep"]
    job = uploaded_job(world.client_for(other_rep), csv_bytes(many_rows(1)))
    for name in ["import_detail", "import_progress"]:
        url = reverse(f"referrals:{name}", args=[job.public_id])
        assert client.get(url, HTTP_HX_REQUEST="true").status_code == 404
    assert confirm(client, job).status_code == 404
    assert ImportJob.objects.get(pk=job.pk).status == ImportJob.VALIDATED


def test_reps_see_only_their_own_imports_and_owners_see_the_teams(world, programs, client):
    job = uploaded_job(client, csv_bytes(many_rows(1)))
    url = reverse("referrals:import_detail", args=[job.public_id])
    another_rep = world.client_for(MembershipFactory(organization=world.partner, role="rep"))
    assert another_rep.get(url).status_code == 404
    for role in ["owner", "manager"]:
        assert world.client_for(world.member(PA, role)).get(url).status_code == 200


# --- Cost -----------------------------------------------------------------------------------------

def _preview_queries(client, job) -> int:
    url = reverse("referrals:import_detail", args=[job.public_id])
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries)


def test_the_preview_costs_the_same_queries_for_3_rows_as_for_300(client):
    few = _preview_queries(client, uploaded_job(client, csv_bytes(many_rows(3))))
    many = _preview_queries(client, uploaded_job(
        client, csv_bytes(many_rows(300, start=10) + [row(email="nope")])))
    assert many == few
    assert many <= 12


def test_vendors_get_one_summary_notification_per_import_not_one_per_row(world, programs,
                                                                          client):
    from accounts.models import Notification

    job = uploaded_job(client, csv_bytes(many_rows(12)))
    confirm(client, job)
    job.refresh_from_db()
    assert job.imported_rows == 12
    deciders = [world.member("vendor", "admin").user, world.member("vendor", "partnerships").user]
    for user in deciders:
        notes = Notification.objects.filter(user=user, kind="referral_submitted")
        assert [n.title for n in notes] == [f"{world.partner.name} submitted 12 referrals by "
                                            "import"]
