"""What every CRM connector does, and the shapes that cross the boundary.

A connector wraps one provider's SDK for one CrmConnection. It never touches our database:
the sync engine (integrations/sync.py) gives it payloads and stores what it returns.
"""

from dataclasses import dataclass, field
from datetime import date, datetime


@dataclass
class ReferralPayload:
    """A referral as the CRM sees it. Keyed by our referral id, so pushes are upserts."""

    referral_id: str
    company_name: str
    domain: str
    website: str
    country: str
    contact_first_name: str
    contact_last_name: str
    contact_email: str
    contact_phone: str
    contact_title: str
    amount: str  # decimal string in major units ("48000.00"), "" when unknown
    currency: str
    expected_close: date | None
    notes: str
    partner_name: str
    deal_name: str
    owner_id: str = ""  # the CRM owner, from the connection's owner mapping
    # Ids from an earlier successful push: lets a connector update by id instead of searching
    # (search indexes can lag behind a create whose answer was lost).
    external_ids: dict = field(default_factory=dict)


@dataclass
class PushResult:
    external_ids: dict  # e.g. {"company": "1", "contact": "2", "deal": "3"}
    url: str = ""  # a link into the CRM for the vendor


@dataclass
class Stage:
    id: str
    label: str
    closed: bool = False
    won: bool = False


@dataclass
class Pipeline:
    id: str
    label: str
    stages: list[Stage] = field(default_factory=list)


@dataclass
class DealChange:
    """One observed state of a CRM deal."""

    external_deal_id: str
    version: str  # the CRM's modification marker (timestamp or counter)
    stage: str
    referral_id: str = ""  # our id when the deal carries it
    account_domain: str = ""
    account_name: str = ""
    amount_minor: int | None = None
    currency: str = ""
    deal_created_at: datetime | None = None
    closed_at: datetime | None = None
    raw: dict = field(default_factory=dict)


class CrmError(Exception):
    """A failed provider call, classified: transient errors are retried (honouring
    `retry_after`), permanent ones are shown to the vendor; auth errors also mark the
    connection as needing attention."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False,
                 auth: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.transient = transient
        self.auth = auth
        self.retry_after = retry_after

    @classmethod
    def from_http(cls, status: int | None, message: str, retry_after=None) -> "CrmError":
        if status is None:  # network error: no answer at all
            return cls(message, transient=True)
        if status == 429 or status >= 500:
            return cls(message, status=status, transient=True,
                       retry_after=parse_retry_after(retry_after))
        return cls(message, status=status, auth=status in (401, 403))


def parse_retry_after(value) -> float | None:
    if value in (None, ""):
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(str(value))
        except (TypeError, ValueError):
            return None
        from django.utils import timezone

        return max(0.0, (when - timezone.now()).total_seconds())


class Connector:
    """Base class; providers override what they support."""

    provider = ""
    batch_size = 1  # referrals per push call
    # Default rate limit: calls per window (seconds); the connection may override.
    rate_limit = (10, 1)

    def __init__(self, connection):
        self.connection = connection
        self.credentials = connection.credentials

    def test_connection(self) -> str:
        """Return a human description of the connected account; raise CrmError if it fails."""
        raise NotImplementedError

    def pipelines(self) -> list[Pipeline]:
        raise NotImplementedError

    def push(self, payloads: list[ReferralPayload]) -> dict[str, PushResult | CrmError]:
        """Upsert each payload; return, per referral id, its result or its error."""
        raise NotImplementedError

    def changes_since(self, cursor: str) -> tuple[list[DealChange], str]:
        """Deal changes after `cursor`, oldest first, and the new cursor."""
        raise NotImplementedError

    def deal(self, external_deal_id: str) -> DealChange:
        raise NotImplementedError
