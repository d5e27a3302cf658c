"""Closing a deal by hand, the same way a CRM closes it.

Every door to "won" records a deal snapshot (attribution.services.record_snapshot), which moves
the referral, attributes the deal and earns the commission; this module is the door for people.
Which door a vendor's deals use depends on its CRM connection (`close_mode`):

- no CRM connected ("manual"): a vendor member closes the deal on the referral's page with the
  close date and the amount (a snapshot of the deal "manual:<referral id>");
- the built-in pipeline ("pipeline"): the deal closes by moving it to a won or lost stage
  (integrations.builtin.services.move_stage); there is no second button;
- HubSpot, Salesforce or Pipedrive ("crm"): the CRM decides. A vendor admin or partnerships
  member may override it with a reason; the override is a snapshot of the CRM's own deal, so
  the next change of that deal in the CRM supersedes it, and it shows on the timeline.
"""

from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone

from accounts import audit, roles
from accounts.errors import ServiceError
from accounts.permissions import can
from accounts.services.guards import require
from attribution.models import DealSnapshot
from attribution.services import record_snapshot
from integrations.models import CrmConnection
from integrations.providers.base import DealChange
from integrations.sync import live_connection
from partnerhub.money import format_money
from referrals.models import Referral
from referrals.services.lifecycle import DEAL_OUTCOMES, DEAL_TRANSITIONS

MANUAL_PROVIDER = "manual"
MANUAL, PIPELINE, CRM = "manual", "pipeline", "crm"

# What a person may record a deal as, from each referral status: whatever the deal's outcome
# moves the referral to from there (the lifecycle's DEAL_TRANSITIONS).
CLOSABLE = {status: tuple(o for o, to in DEAL_OUTCOMES.items() if to in moves)
            for status, moves in DEAL_TRANSITIONS.items()}
OUTCOME_LABELS = {DealSnapshot.WON: "Won", DealSnapshot.LOST: "Lost",
                  DealSnapshot.OPEN: "Reopened"}


@dataclass(frozen=True)
class CloseMode:
    kind: str  # MANUAL | PIPELINE | CRM
    connection: CrmConnection | None = None

    @property
    def provider_label(self) -> str:
        return self.connection.get_provider_display() if self.connection else ""


def close_mode(vendor_id: int) -> CloseMode:
    connection = live_connection(vendor_id)
    if connection is None:
        return CloseMode(MANUAL)
    if connection.provider == CrmConnection.BUILTIN:
        return CloseMode(PIPELINE, connection)
    return CloseMode(CRM, connection)


def outcomes_for(membership, referral, mode: CloseMode) -> tuple[str, ...]:
    """The outcomes this member may record by hand for the referral's deal now (none when the
    pipeline is the door or the member may not close it)."""
    if mode.kind == PIPELINE:
        return ()
    permission = roles.DEAL_OVERRIDE if mode.kind == CRM else roles.REFERRAL_UPDATE_STAGE
    if referral.status not in CLOSABLE or not can(membership, permission, referral):
        return ()
    return CLOSABLE[referral.status]


def _deal_identity(referral: Referral, mode: CloseMode) -> tuple[str, str]:
    """(provider, external deal id) of the deal being closed: the CRM's own deal when the
    vendor's CRM decides (so its next change supersedes the override), else ours."""
    if mode.kind == MANUAL:
        return MANUAL_PROVIDER, str(referral.public_id)
    provider = mode.connection.provider
    seen = (DealSnapshot.objects.filter(referral=referral, provider=provider)
            .order_by("-received_at", "-pk").values_list("external_deal_id", flat=True).first())
    record = referral.sync_records.filter(connection=mode.connection).first()
    deal_id = seen or ((record.external_ids or {}).get("deal") if record else None)
    if not deal_id:
        raise ServiceError(
            f"{mode.provider_label} has no deal for this referral yet, so there is nothing to "
            f"override: close it in {mode.provider_label} once the deal exists there (the sync "
            "log shows why it is missing).")
    return provider, str(deal_id)


def _closed_at(closed_on: date, referral: Referral, now: datetime) -> datetime:
    """When the deal closed: now for today, else noon of that day in the program's time zone
    (the same day wherever it is read)."""
    zone = ZoneInfo(referral.program.time_zone or "UTC")
    if closed_on >= now.astimezone(zone).date():
        return now
    return datetime.combine(closed_on, time(12), tzinfo=zone)


def _check(referral, outcome, closed_on, amount_minor, now) -> None:
    if outcome == DealSnapshot.OPEN:
        return
    if closed_on is None:
        raise ServiceError("Enter the day the deal closed.", field="closed_on")
    zone = ZoneInfo(referral.program.time_zone or "UTC")
    if closed_on > now.astimezone(zone).date():
        raise ServiceError("The close date cannot be in the future.", field="closed_on")
    submitted = referral.submitted_at.astimezone(zone).date() if referral.submitted_at else None
    if submitted and closed_on < submitted:
        raise ServiceError(f"The deal cannot close before it was registered "
                           f"({submitted:%-d %B %Y}).", field="closed_on")
    if (outcome == DealSnapshot.WON and not amount_minor) or (amount_minor or 0) < 0:
        raise ServiceError("Enter the amount the deal was won for.", field="amount")


@transaction.atomic
def close_deal(actor, referral: Referral, outcome: str, *, closed_on: date | None = None,
               amount_minor: int | None = None, reason: str = "") -> DealSnapshot:
    """Record by hand that the referral's deal was won, lost or reopened: a deal snapshot like
    a CRM's, so the referral, its attribution and its commission follow exactly as they do for
    a CRM's change. Raises ServiceError with the field at fault."""
    require(actor, roles.REFERRAL_UPDATE_STAGE, referral)
    mode = close_mode(referral.vendor_id)
    if mode.kind == PIPELINE:
        raise ServiceError("This deal lives in the built-in pipeline: move it to a won or "
                           "lost stage there.")
    if mode.kind == CRM:
        require(actor, roles.DEAL_OVERRIDE, referral)
    referral = (Referral.objects.select_for_update(of=("self",))
                .select_related("program", "vendor", "partner", "submitted_by")
                .get(pk=referral.pk))
    if outcome not in CLOSABLE.get(referral.status, ()):
        raise ServiceError(f"This referral is {referral.get_status_display().lower()}: its "
                           "deal cannot be closed that way now.", field="outcome")
    reason = (reason or "").strip()
    if mode.kind == CRM and not reason:
        raise ServiceError(f"{mode.provider_label} decides this deal: say why you override it.",
                           field="reason")
    now = timezone.now()
    _check(referral, outcome, closed_on, amount_minor, now)
    provider, deal_id = _deal_identity(referral, mode)
    closed_at = _closed_at(closed_on, referral, now) if outcome != DealSnapshot.OPEN else None
    amount = amount_minor if amount_minor is not None else referral.amount_minor
    who = actor.user.get_full_name() or actor.user.email
    change = DealChange(
        external_deal_id=deal_id, version=f"manual:{now.isoformat()}", stage=outcome,
        referral_id=str(referral.public_id), account_domain=referral.domain,
        account_name=referral.company_name, amount_minor=amount, currency=referral.currency,
        deal_created_at=referral.decided_at, closed_at=closed_at,
        raw={"closed_by": str(actor.user.public_id), "outcome": outcome, "reason": reason,
             "override_of": mode.connection.provider if mode.kind == CRM else None})
    audit.record("deal.closed_by_hand", referral, actor=actor, network_id=referral.network_id,
                 after={"outcome": outcome, "provider": provider, "deal": deal_id,
                        "closed_at": closed_at.isoformat() if closed_at else None,
                        "amount_minor": amount, "currency": referral.currency,
                        "reason": reason, "override": mode.kind == CRM})
    snapshot = record_snapshot(
        vendor_id=referral.vendor_id, provider=provider, change=change, referral=referral,
        outcome=outcome, actor=actor, source=_timeline_text(mode, outcome, closed_at, amount,
                                                            referral.currency, reason, who))
    return snapshot


def _timeline_text(mode, outcome, closed_at, amount, currency, reason, who) -> str:
    if outcome == DealSnapshot.OPEN:
        text = f"Deal reopened by {who}."
    else:
        text = f"Deal {outcome} on {closed_at:%-d %B %Y}"
        if outcome == DealSnapshot.WON:
            text += f" for {format_money(amount, currency)}"
        text += f", recorded by {who}."
    if mode.kind == CRM:
        text += f" Override of {mode.provider_label}: {reason}"
    elif reason:
        text += f" {reason}"
    return text
