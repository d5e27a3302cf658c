"""Dispute evidence: which files are accepted (by extension, and by first bytes that prove the
file is what its name says), and storing them under a name of ours."""

import os
import re
import uuid
import zipfile
from dataclasses import dataclass

from accounts.errors import ServiceError
from attribution.models import DisputeEvidence

MAX_EVIDENCE_BYTES = 10 * 1024 * 1024
MAX_EVIDENCE_FILES = 10

_ZIP = b"PK\x03\x04"
_BINARY_MAGIC = (b"%PDF-", b"\x89PNG", b"\xff\xd8\xff", _ZIP, b"MZ", b"\x7fELF",
                 b"\xca\xfe\xba\xbe", b"GIF8", b"\x1f\x8b", b"Rar!", b"7z\xbc\xaf")
_HEADER_LINE = re.compile(rb"^[!-9;-~]+:")  # an RFC 5322 header field name and its colon


def _is_text(head: bytes) -> bool:
    if b"\x00" in head or head.startswith(_BINARY_MAGIC):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut by the sample is fine
        if exc.start < len(head) - 3:
            return not any(b < 32 and b not in b"\t\n\r\f" for b in head)  # a legacy charset
    return True


def _is_ooxml(part: str):
    def check(head: bytes, upload) -> bool:
        if not head.startswith(_ZIP):
            return False
        try:
            upload.seek(0)
            names = set(zipfile.ZipFile(upload).namelist())
        except (zipfile.BadZipFile, OSError, EOFError):
            return False
        finally:
            upload.seek(0)
        return "[Content_Types].xml" in names and part in names

    return check


@dataclass(frozen=True)
class _FileType:
    content_type: str
    check: object  # (first bytes, upload) -> bool


def _text(head: bytes, upload) -> bool:
    return _is_text(head)


EVIDENCE_TYPES = {
    ".pdf": _FileType("application/pdf", lambda head, upload: head.startswith(b"%PDF-")),
    ".png": _FileType("image/png", lambda head, upload: head.startswith(b"\x89PNG\r\n\x1a\n")),
    ".jpg": _FileType("image/jpeg", lambda head, upload: head.startswith(b"\xff\xd8\xff")),
    ".jpeg": _FileType("image/jpeg", lambda head, upload: head.startswith(b"\xff\xd8\xff")),
    ".csv": _FileType("text/csv", _text),
    ".txt": _FileType("text/plain", _text),
    ".eml": _FileType("message/rfc822",
                      lambda head, upload: _is_text(head) and bool(_HEADER_LINE.match(head))),
    ".xlsx": _FileType("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                       _is_ooxml("xl/workbook.xml")),
    ".docx": _FileType("application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                       _is_ooxml("word/document.xml")),
}
EVIDENCE_HELP = "PDF, PNG, JPEG, CSV, text, email (.eml), Excel (.xlsx) or Word (.docx); " \
                "up to 10 MB each."


@dataclass(frozen=True)
class CheckedFile:
    upload: object
    name: str
    extension: str
    content_type: str
    size: int


def check_evidence(upload) -> CheckedFile:
    """Accept a file only when its extension is allowed, its first bytes say it really is that
    kind of file, and it is at most 10 MB. The content type stored is ours, not the client's."""
    name = os.path.basename((upload.name or "").replace("\\", "/")).strip()[:200] or "file"
    extension = os.path.splitext(name)[1].lower()
    kind = EVIDENCE_TYPES.get(extension)
    if kind is None:
        raise ServiceError(f"{name}: this type of file is not accepted. Attach {EVIDENCE_HELP}",
                           field="files")
    if upload.size > MAX_EVIDENCE_BYTES:
        raise ServiceError(f"{name} is larger than 10 MB.", field="files")
    if upload.size == 0:
        raise ServiceError(f"{name} is empty.", field="files")
    upload.seek(0)
    head = upload.read(8192)
    upload.seek(0)
    if not kind.check(head, upload):
        raise ServiceError(f"{name} is not a real {extension[1:].upper()} file (its content "
                           "does not match its name).", field="files")
    return CheckedFile(upload, name, extension, kind.content_type, upload.size)


def check_evidence_files(files) -> list[CheckedFile]:
    files = list(files or [])
    if len(files) > MAX_EVIDENCE_FILES:
        raise ServiceError(f"Attach at most {MAX_EVIDENCE_FILES} files at a time.",
                           field="files")
    return [check_evidence(f) for f in files]


def attach(dispute, actor, checked: list[CheckedFile], message=None) -> list[DisputeEvidence]:
    """Store checked files as the dispute's evidence (on a thread message, if given)."""
    saved = []
    for f in checked:
        evidence = DisputeEvidence(dispute=dispute, message=message,
                                   organization_id=actor.organization_id,
                                   uploaded_by=actor.user, name=f.name, size=f.size,
                                   content_type=f.content_type)
        # Stored under a random name: the original name is data, never a path.
        evidence.file.save(f"{uuid.uuid4().hex}{f.extension}", f.upload, save=False)
        evidence.save()
        saved.append(evidence)
    return saved
