"""Bulk CSV import of referrals: read the file, check every row into a preview, then submit the
valid rows one by one through `submit_referral` (each row its own transaction).

A job moves validated -> queued -> running -> done (or failed). Small files are imported in the
request; larger ones by the `referrals.tasks.run_import` task. Whoever runs the import first
claims the job with a conditional UPDATE (queued -> running), so a retried or duplicated task
finds nothing to do.
"""

import csv
import io
import logging
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from accounts import audit, roles
from accounts.errors import ServiceError
from accounts.models import Membership
from accounts.notifications import notify
from accounts.permissions import can
from accounts.services.guards import require
from partnerhub.forms import has_control_characters
from referrals import validation
from referrals.models import ImportJob, Program, Referral
from referrals.normalize import normalize_company_name, normalize_domain
from referrals.services.events import members_with
from referrals.services.lifecycle import (
    ConflictBlocked,
    ReferralData,
    conflict_notice,
    submit_referral,
)

logger = logging.getLogger(__name__)

MAX_BYTES = 2 * 1024 * 1024
MAX_ROWS = 5000
SYNC_LIMIT = 200  # valid rows imported inside the request; more go to the worker
PROGRESS_EVERY = 25
COLUMNS = ["program", "company_name", "website", "country", "contact_name", "contact_email",
           "contact_phone", "contact_title", "amount", "currency", "expected_close", "notes"]
REQUIRED_COLUMNS = ["company_name", "website", "country", "contact_name", "contact_email"]
MAX_LENGTHS = {"program": 200, "company_name": 160, "website": 200, "country": 60,
               "contact_name": 150, "contact_email": 254, "contact_phone": 40,
               "contact_title": 120, "amount": 40, "currency": 3, "expected_close": 20,
               "notes": 5000}
MULTI_LINE = {"notes"}  # the only column whose text may hold line breaks
HEADER_ROW = 1  # rows are numbered as a spreadsheet shows them: the header is row 1


@dataclass
class ParsedFile:
    text: str
    rows: list[tuple[int, dict]]  # (row number, {column: cell})
    unknown_columns: list[str]
    ragged_rows: set[int] = field(default_factory=set)  # more cells than header columns


@dataclass
class CheckedRow:
    number: int
    values: dict
    program: object = None
    data: ReferralData | None = None
    errors: list[dict] = field(default_factory=list)

    def error(self, field_name: str, message: str, **extra) -> None:
        self.errors.append({"row": self.number, "field": field_name, "message": message,
                            **extra})


# --- Reading the file -------------------------------------------------------------------------

def _decode(content: bytes) -> str:
    if b"\x00" in content[:4096] or content[:4] == b"PK\x03\x04":
        raise ServiceError("This is not a CSV file. Save the spreadsheet as “CSV UTF-8” and "
                           "upload that.", field="file")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ServiceError("The file is not UTF-8 text. In Excel, save it as “CSV UTF-8 "
                           "(comma delimited)”.", field="file") from None
    return _refuse_nul(text)


def _refuse_nul(text: str) -> str:
    """A NUL anywhere in the file (not only in its first bytes) refuses the file: PostgreSQL
    cannot store it, and no spreadsheet writes one into a CSV."""
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ServiceError(f"The file contains a NUL character (line {line}). Save the "
                           "spreadsheet as “CSV UTF-8” again and upload that.", field="file")
    return text


def _column_key(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def parse_csv(content: bytes | str) -> ParsedFile:
    """Bytes (or already decoded text) -> header-keyed rows. Raises ServiceError for a file
    that cannot be imported at all."""
    if isinstance(content, bytes):
        if len(content) > MAX_BYTES:
            raise ServiceError("The file is larger than 2 MB. Split it into smaller files.",
                               field="file")
        text = _decode(content)
    else:
        text = _refuse_nul(content)
    first_line = text.split("\n", 1)[0]
    delimiter = ","
    if "," not in first_line:  # European Excel saves with semicolons
        delimiter = ";" if ";" in first_line else "\t" if "\t" in first_line else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [_column_key(c) for c in next(reader, [])]
        known = set(COLUMNS)
        seen = [c for c in header if c]
        duplicated = sorted({c for c in seen if seen.count(c) > 1})
        if duplicated:
            raise ServiceError(f"The header names {', '.join(duplicated)} more than once.",
                               field="file")
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ServiceError(
                "The first row must name the columns. Missing: " + ", ".join(missing)
                + ". Start from the template.", field="file")
        parsed = ParsedFile(text=text, rows=[],
                            unknown_columns=[c for c in seen if c not in known])
        for number, cells in enumerate(reader, start=HEADER_ROW + 1):
            if not any(c.strip() for c in cells):
                continue
            if len(parsed.rows) == MAX_ROWS:
                raise ServiceError(f"The file has more than {MAX_ROWS:,} rows. Split it into "
                                   "smaller files.", field="file")
            if any(c.strip() for c in cells[len(header):]):
                parsed.ragged_rows.add(number)
            parsed.rows.append((number, {name: cells[i].strip() if i < len(cells) else ""
                                         for i, name in enumerate(header) if name in known}))
    except csv.Error as exc:
        raise ServiceError(f"The file could not be read as CSV ({exc}).", field="file") from None
    if not parsed.rows:
        raise ServiceError("The file has a header but no rows to import.", field="file")
    return parsed


# --- Checking the rows ------------------------------------------------------------------------

def _program_lookup(programs):
    by_key = {}
    for program in programs:
        by_key[str(program.public_id)] = [program]
        by_key.setdefault(program.name.casefold(), []).append(program)
    return by_key


def _check_program(row: CheckedRow, cell: str, programs, by_key) -> None:
    if not cell:
        if len(programs) == 1:
            row.program = programs[0]
        else:
            row.error("program", "Name the program: you are enrolled in "
                                 f"{len(programs)} programs.")
        return
    found = by_key.get(cell.casefold(), [])
    if len(found) == 1:
        row.program = found[0]
    elif found:
        row.error("program", f"Several of your programs are called “{cell}”; use the "
                             "program id.")
    else:
        row.error("program", f"“{cell}” is not a program your organization is enrolled in.")


def _cleaned(row: CheckedRow, name: str, clean, *args):
    try:
        return clean(row.values.get(name, ""), *args)
    except ValidationError as exc:
        message = exc.messages[0]
        if name == "contact_email":
            message = "Enter a valid email address, e.g. jane@customer.com."
        row.error(name, message)
        return None


def check_row(number: int, values: dict, programs, by_key) -> CheckedRow:
    """One row's fields, the same rules as the browser form, plus the program's rules."""
    row = CheckedRow(number=number, values=values)
    _check_program(row, values.get("program", ""), programs, by_key)
    too_long = [name for name, limit in MAX_LENGTHS.items() if len(values.get(name, "")) > limit]
    for name in too_long:
        row.error(name, f"At most {MAX_LENGTHS[name]} characters.")
    unreadable = [name for name in COLUMNS
                  if has_control_characters(values.get(name, ""), name in MULTI_LINE)]
    for name in unreadable:
        row.error(name, "Remove the control characters (invisible characters) from this cell.")
    if too_long or unreadable:
        return row
    website = _cleaned(row, "website", validation.clean_website)
    country = _cleaned(row, "country", validation.clean_country)
    email = _cleaned(row, "contact_email", validation.clean_email)
    phone = _cleaned(row, "contact_phone", validation.clean_phone, country or "")
    month = _cleaned(row, "expected_close", validation.clean_month)
    currency = values.get("currency", "").upper()
    amount_cell = values.get("amount", "")
    if amount_cell and not currency and row.program and \
            len(row.program.accepted_currencies) == 1:
        currency = row.program.accepted_currencies[0]
    if amount_cell and not currency:
        row.error("currency", "Give the currency of the amount, e.g. USD.")
    amount = _cleaned(row, "amount", validation.clean_amount, currency or "USD")
    if row.errors:
        return row
    row.data = ReferralData(
        company_name=values.get("company_name", ""), website=website, country=country,
        contact_name=values.get("contact_name", ""), contact_email=email,
        contact_phone=phone, contact_title=values.get("contact_title", ""),
        amount_minor=amount, currency=currency if amount is not None else "",
        expected_close=month, notes=values.get("notes", ""))
    for name, message in validation.validate_for_program(row.program, row.data).items():
        row.error(name, message)
    if row.errors:
        row.data = None
    return row


def _account_keys(row: CheckedRow):
    vendor_id = row.program.vendor_id
    domain = normalize_domain(row.data.website)
    name = normalize_company_name(row.data.company_name)
    return [k for k in [("domain", vendor_id, domain), ("name", vendor_id, name)] if k[2]]


def _flag_duplicates_and_conflicts(actor, rows: list[CheckedRow]) -> None:
    """The same account twice in the file (the later rows are flagged), or already registered
    by this partner (exact domain or name; fuzzy matches surface when the row is submitted)."""
    first_seen = {}
    for row in rows:
        if row.data is None:
            continue
        keys = _account_keys(row)
        earlier = next((first_seen[k] for k in keys if k in first_seen), None)
        if earlier is not None:
            row.error("company_name", f"Same account as row {earlier}.")
            row.data = None
            continue
        for key in keys:
            first_seen[key] = row.number
    domains = {k[2] for k in first_seen if k[0] == "domain"}
    names = {k[2] for k in first_seen if k[0] == "name"}
    if not first_seen:
        return
    registered = (Referral.objects.active_registrations()
                  .filter(partner_id=actor.organization_id,
                          vendor_id__in={k[1] for k in first_seen})
                  .filter(Q(domain__in=domains) | Q(normalized_name__in=names))
                  .values_list("vendor_id", "domain", "normalized_name"))
    taken = set()
    for vendor_id, domain, name in registered:
        taken.update({("domain", vendor_id, domain), ("name", vendor_id, name)})
    for row in rows:
        if row.data is not None and any(k in taken for k in _account_keys(row)):
            row.error("conflict", "Your organization already registered this account with "
                                  f"{row.program.vendor.name}.", conflict=True)
            row.data = None


def check_rows(actor: Membership, parsed: ParsedFile) -> list[CheckedRow]:
    programs = Program.objects.enrolled_for(actor)
    by_key = _program_lookup(programs)
    rows = []
    for number, values in parsed.rows:
        row = check_row(number, values, programs, by_key)
        if number in parsed.ragged_rows:
            row.error("", "This row has more cells than the header has columns.")
            row.data = None
        rows.append(row)
    _flag_duplicates_and_conflicts(actor, rows)
    return rows


# --- The job ------------------------------------------------------------------------------------

@transaction.atomic
def create_import(actor: Membership, file_name: str, content: bytes) -> ImportJob:
    """Read and check an uploaded file; the job holds the preview. Raises ServiceError (and
    creates nothing) when the file itself cannot be imported."""
    require(actor, roles.REFERRAL_SUBMIT)
    if actor.organization.kind != roles.PARTNER:
        raise ServiceError("Only partners import referrals.")
    parsed = parse_csv(content)
    rows = check_rows(actor, parsed)
    errors = [{"row": HEADER_ROW, "field": name, "message": "Unknown column, ignored.",
               "warning": True} for name in parsed.unknown_columns]
    for row in rows:
        errors += [{**e, "stage": "preview"} for e in row.errors]
    return ImportJob.objects.create(
        partner_id=actor.organization_id, created_by=actor.user, file_name=file_name[:255],
        csv_text=parsed.text, total_rows=len(rows),
        valid_rows=sum(1 for r in rows if r.data is not None), errors=errors)


def preview_rows(job: ImportJob) -> list[dict]:
    """The file's rows with their problems, for display. Reads the stored text only."""
    by_row = {}
    for error in job.errors:
        by_row.setdefault(error["row"], []).append(error)
    rows = []
    for number, values in parse_csv(job.csv_text).rows:
        errors = by_row.get(number, [])
        skipped = any(e.get("stage") == "preview" for e in errors)
        failed = any(e.get("stage") == "import" and not e.get("imported") for e in errors)
        rows.append({"number": number, "values": values, "errors": errors,
                     "ok": not skipped, "skipped": skipped, "failed": failed,
                     "conflict": any(e.get("conflict") for e in errors)})
    return rows


def confirm_import(actor: Membership, job: ImportJob) -> ImportJob:
    """Start importing the valid rows: in this request for small files, otherwise queued for
    the worker after commit. Confirming twice imports once."""
    from referrals import tasks

    require(actor, roles.REFERRAL_SUBMIT, job)
    if job.valid_rows == 0:
        raise ServiceError("There are no valid rows to import.")
    with transaction.atomic():
        claimed = ImportJob.objects.filter(pk=job.pk, status=ImportJob.VALIDATED) \
            .update(status=ImportJob.QUEUED)
        if not claimed:
            raise ServiceError("This file is already being imported.")
        if job.valid_rows > SYNC_LIMIT:
            transaction.on_commit(lambda: tasks.run_import.delay(job.pk))
    if job.valid_rows <= SYNC_LIMIT:
        process_import(job.pk)
    job.refresh_from_db()
    return job


def _actor_for(job: ImportJob) -> Membership | None:
    actor = (Membership.objects.select_related("organization", "user")
             .filter(user_id=job.created_by_id, organization_id=job.partner_id).first())
    return actor if can(actor, roles.REFERRAL_SUBMIT) else None


def _save_progress(job: ImportJob, **fields) -> None:
    ImportJob.objects.filter(pk=job.pk).update(**fields)


def _notify_vendors(job: ImportJob, per_vendor: dict[int, int]) -> None:
    """One summary per vendor instead of a notification per imported row."""
    for vendor_id, count in per_vendor.items():
        users = members_with(vendor_id, roles.VENDOR, roles.REFERRAL_ACCEPT)
        notify(users, "referral_submitted", network_id=job.partner.network_id,
               title=f"{job.partner.name} submitted {count} referral"
                     f"{'s' if count != 1 else ''} by import",
               url=reverse("referrals:list") + f"?status=submitted&counterpart="
                   f"{job.partner.public_id}")


def process_import(job_id: int) -> bool:
    """Import a queued job's valid rows. Returns False when the job was not queued (already
    claimed by another run, or done), which makes retries harmless."""
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.QUEUED) \
        .update(status=ImportJob.RUNNING)
    if not claimed:
        return False
    job = ImportJob.objects.select_related("partner").get(pk=job_id)
    errors = list(job.errors)
    counts = {"processed_rows": 0, "imported_rows": 0, "failed_rows": 0}
    per_vendor: dict[int, int] = {}
    actor = _actor_for(job)
    try:
        if actor is None:
            raise ServiceError("The member who uploaded this file may no longer submit "
                               "referrals.")
        skip = {e["row"] for e in errors if e.get("stage") == "preview"}
        rows = [r for r in check_rows(actor, parse_csv(job.csv_text)) if r.number not in skip]
        for row in rows:
            counts["processed_rows"] += 1
            if row.data is None:  # something changed since the preview
                errors += [{**e, "stage": "import"} for e in row.errors]
                counts["failed_rows"] += 1
            else:
                try:
                    referral = submit_referral(actor, row.program, row.data,
                                               notify_vendor=False)
                except ConflictBlocked as exc:
                    row.error("conflict", exc.message, conflict=True)
                except ServiceError as exc:
                    row.error(exc.field or "", exc.message)
                else:
                    counts["imported_rows"] += 1
                    per_vendor[referral.vendor_id] = per_vendor.get(referral.vendor_id, 0) + 1
                    if referral.conflict:
                        row.error("conflict", conflict_notice(referral), conflict=True,
                                  imported=True)
                if any(not e.get("imported") for e in row.errors):
                    counts["failed_rows"] += 1
                errors += [{**e, "stage": "import"} for e in row.errors]
            if counts["processed_rows"] % PROGRESS_EVERY == 0:
                _save_progress(job, errors=errors, **counts)
    except Exception as exc:
        message = exc.message if isinstance(exc, ServiceError) else \
            "The import stopped unexpectedly. The rows counted as imported are saved."
        if not isinstance(exc, ServiceError):
            logger.exception("import job %s failed", job_id)
        errors.append({"row": HEADER_ROW, "field": "", "message": message, "stage": "import"})
        status = ImportJob.FAILED
    else:
        status = ImportJob.DONE
    _save_progress(job, status=status, finished_at=timezone.now(), errors=errors, **counts)
    _notify_vendors(job, per_vendor)
    audit.record("referral.import_completed", job, actor=actor, after={
        "status": status, "file_name": job.file_name, "total_rows": job.total_rows,
        "valid_rows": job.valid_rows, **counts}, network_id=job.partner.network_id)
    return True
