"""Pipedrive over its REST API with `requests`: API v2 where it exists, v1 for leads and the
current user.

Pipedrive has no batch upsert and no unique external-id field, so each push is "search before
create": the deal (or lead) is found by our referral id in a text custom field, and only when
it is missing are the organization and person found or created and the deal created. The API
token travels only in the `x-api-token` header, never in a URL, and is never logged.
"""

import logging
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from urllib.parse import urlsplit

import requests

from integrations.providers.base import (
    Connector,
    CrmError,
    DealChange,
    Pipeline,
    PushResult,
    Stage,
)
from partnerhub.money import exponent

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.pipedrive.com"
TIMEOUT = (5, 30)  # connect, read (seconds)
PAGE_SIZE = 100
MAX_POLL_PAGES = 20  # per poll; the cursor carries on from there next time
# Pipedrive closes a deal by its status, not by a stage: these pseudo-stages stand for a deal
# marked won or lost, so the vendor can map them like any stage.
WON, LOST = "won", "lost"
# Burst limits per API token (rolling 2 s window): 20 requests on the smallest plan, and 10 for
# search endpoints on every plan. A push makes at most 3 searches and 3 writes (plus, once per
# run, a stage list and the company lookup), so 3 pushes per 2 s stay within both.
RATE_LIMIT = (3, 2)


class PipedriveConnector(Connector):
    provider = "pipedrive"
    batch_size = 1  # the API has no batch create or upsert
    rate_limit = RATE_LIMIT

    def __init__(self, connection):
        super().__init__(connection)
        self.base_url = (connection.base_url or DEFAULT_BASE_URL).rstrip("/")
        self.session = requests.Session()
        self.session.headers.update({
            "x-api-token": self.credentials.get("api_token", ""),
            "Accept": "application/json",
        })
        self._company_domain = None
        self._stages = None

    # --- HTTP -----------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, params=None, body=None) -> dict:
        """One API call; returns Pipedrive's envelope {success, data, additional_data} or
        raises a classified CrmError. Redirects are refused: the token header would follow
        them to whatever host they name."""
        try:
            response = self.session.request(method, self.base_url + path, params=params,
                                            json=body, timeout=TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            log.info("pipedrive %s %s failed: %s", method, path, exc.__class__.__name__)
            raise CrmError.from_http(
                None, f"Pipedrive did not answer ({exc.__class__.__name__}).") from None
        log.debug("pipedrive %s %s -> %s", method, path, response.status_code)
        try:
            envelope = response.json()
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict):
            envelope = {}
        if response.status_code >= 300 or envelope.get("success") is False:
            raise _error(response, envelope)
        return envelope

    def _pages(self, path: str, params: dict):
        """Yield the items of a cursor-paginated v2 list."""
        params = dict(params)
        while True:
            envelope = self._call("GET", path, params=params)
            yield from envelope.get("data") or []
            cursor = (envelope.get("additional_data") or {}).get("next_cursor")
            if not cursor:
                return
            params["cursor"] = cursor

    # --- Connection -----------------------------------------------------------------------

    def test_connection(self) -> str:
        me = self._call("GET", "/api/v1/users/me")["data"] or {}
        self._company_domain = me.get("company_domain") or ""
        company = me.get("company_name") or self._company_domain
        return f"{company} ({self._company_domain}.pipedrive.com) as {me.get('name', '')}"

    def pipelines(self) -> list[Pipeline]:
        result = []
        for pipeline in self._pages("/api/v2/pipelines", {"limit": PAGE_SIZE}):
            if pipeline.get("is_deleted"):
                continue
            stages = [Stage(str(stage["id"]), stage.get("name", ""))
                      for stage in self._stages_of(pipeline["id"])]
            stages += [Stage(WON, "Won (deal marked won)", closed=True, won=True),
                       Stage(LOST, "Lost (deal marked lost)", closed=True)]
            result.append(Pipeline(str(pipeline["id"]), pipeline.get("name", ""), stages))
        return result

    def _stages_of(self, pipeline_id) -> list[dict]:
        stages = self._pages("/api/v2/stages", {"pipeline_id": pipeline_id, "limit": PAGE_SIZE})
        return sorted((s for s in stages if not s.get("is_deleted")),
                      key=lambda s: (s.get("order_nr") or 0, s["id"]))

    def _first_open_stage(self) -> int | None:
        """The entry stage for new deals: the first stage of the chosen pipeline (in pipeline
        order) that the vendor maps as open. Looked up once per connector."""
        if not self.connection.pipeline_id:
            return None
        if self._stages is None:
            self._stages = self._stages_of(_int_id(self.connection.pipeline_id, "Pipeline"))
        for stage in self._stages:
            if self.connection.outcome_for_stage(str(stage["id"])) == "open":
                return stage["id"]
        return None

    def company_domain(self) -> str:
        """`acme` for acme.pipedrive.com: from the base URL, the credentials, or (once) the
        API. Only used to link to the deal, so a failed lookup just leaves the link out."""
        host = urlsplit(self.base_url).hostname or ""
        if host.endswith(".pipedrive.com") and host != "api.pipedrive.com":
            return host.split(".")[0]
        if self._company_domain is None:
            self._company_domain = self.credentials.get("company_domain", "")
            if not self._company_domain:
                try:
                    me = self._call("GET", "/api/v1/users/me")["data"] or {}
                    self._company_domain = me.get("company_domain") or ""
                except CrmError as exc:
                    log.info("pipedrive company lookup failed: %s", exc.message)
                    self._company_domain = ""
        return self._company_domain

    # --- Push -----------------------------------------------------------------------------

    def push(self, payloads):
        results = {}
        for payload in payloads:
            try:
                if self.connection.object_mode == "lead":
                    results[payload.referral_id] = self._push_lead(payload)
                else:
                    results[payload.referral_id] = self._push_deal(payload)
            except CrmError as exc:
                results[payload.referral_id] = exc
        return results

    def _push_deal(self, p) -> PushResult:
        found = self._search("deals", p.referral_id, fields="custom_fields",
                             match=lambda item: _has_value(item.get("custom_fields"),
                                                           p.referral_id))
        if found:
            deal_id = found["id"]
            self._call("PATCH", f"/api/v2/deals/{deal_id}", body=_deal_update(p))
            ids = {"organization": _id_of(found.get("organization")),
                   "person": _id_of(found.get("person")), "deal": str(deal_id)}
        else:
            org_id = self._organization(p)
            person_id = self._person(p, org_id)
            body = {"title": p.deal_name[:255], "org_id": org_id, "person_id": person_id,
                    "custom_fields": {self.connection.referral_id_field: p.referral_id},
                    **_deal_update(p)}
            if self.connection.pipeline_id:
                body["pipeline_id"] = _int_id(self.connection.pipeline_id, "Pipeline")
                stage_id = self._first_open_stage()
                if stage_id is not None:
                    body["stage_id"] = stage_id
            if p.owner_id:
                body["owner_id"] = _int_id(p.owner_id, "Owner")
            deal = self._call("POST", "/api/v2/deals", body=_without_none(body))["data"]
            deal_id = deal["id"]
            ids = {"organization": _str(org_id), "person": _str(person_id), "deal": str(deal_id)}
        domain = self.company_domain()
        url = f"https://{domain}.pipedrive.com/deal/{deal_id}" if domain else ""
        return PushResult({k: v for k, v in ids.items() if v}, url)

    def _push_lead(self, p) -> PushResult:
        field = self.connection.referral_id_field
        found = self._search("leads", p.referral_id, fields="custom_fields",
                             match=lambda item: _has_value(item.get("custom_fields"),
                                                           p.referral_id))
        if found:
            lead_id = found["id"]
            self._call("PATCH", f"/api/v1/leads/{lead_id}", body=_lead_update(p))
            ids = {"organization": _id_of(found.get("organization")),
                   "person": _id_of(found.get("person")), "lead": str(lead_id)}
        else:
            org_id = self._organization(p)
            person_id = self._person(p, org_id)
            # Leads share the deal custom fields, set at the top level of a v1 lead.
            body = {"title": p.deal_name[:255], "organization_id": org_id,
                    "person_id": person_id, field: p.referral_id, **_lead_update(p)}
            if p.owner_id:
                body["owner_id"] = _int_id(p.owner_id, "Owner")
            lead = self._call("POST", "/api/v1/leads", body=_without_none(body))["data"]
            lead_id = lead["id"]
            ids = {"organization": _str(org_id), "person": _str(person_id), "lead": str(lead_id)}
        domain = self.company_domain()
        url = f"https://{domain}.pipedrive.com/leads/inbox/{lead_id}" if domain else ""
        return PushResult({k: v for k, v in ids.items() if v}, url)

    def _search(self, entity: str, term: str, *, fields: str, match) -> dict | None:
        """The oldest item an exact-match search returns that really matches (the search also
        looks at other fields of the same kind)."""
        envelope = self._call("GET", f"/api/v2/{entity}/search", params={
            "term": term, "fields": fields, "exact_match": "true", "limit": PAGE_SIZE})
        items = [row.get("item") or {} for row in (envelope.get("data") or {}).get("items", [])]
        hits = [item for item in items if match(item)]
        # Numeric ids in numeric order (the oldest first); lead ids are UUIDs.
        return min(hits, key=lambda item: (len(str(item["id"])), str(item["id"]))) if hits else None

    def _organization(self, p) -> int | None:
        name = p.company_name.strip()
        if not name:
            return None
        found = self._search("organizations", name, fields="name",
                             match=lambda item: _same(item.get("name"), name))
        if found:
            return found["id"]
        return self._call("POST", "/api/v2/organizations", body={"name": name[:255]})["data"]["id"]

    def _person(self, p, org_id) -> int | None:
        email = p.contact_email.strip()
        if email:
            found = self._search("persons", email, fields="email",
                                 match=lambda item: any(_same(e, email)
                                                        for e in item.get("emails") or []))
            if found:
                return found["id"]
        name = _person_name(p) or email
        if not name:
            return None
        body = {"name": name[:255], "org_id": org_id}
        if email:
            body["emails"] = [{"value": email, "primary": True, "label": "work"}]
        if p.contact_phone:
            body["phones"] = [{"value": p.contact_phone, "primary": True, "label": "work"}]
        return self._call("POST", "/api/v2/persons", body=_without_none(body))["data"]["id"]

    # --- Pull -----------------------------------------------------------------------------

    def changes_since(self, cursor: str):
        """Deals updated at or after `cursor` (Pipedrive's `updated_since` is inclusive, and an
        overlap is harmless: snapshots are stored once per version), oldest first."""
        params = {"sort_by": "update_time", "sort_direction": "asc", "limit": PAGE_SIZE}
        if cursor:
            params["updated_since"] = cursor
        changes = []
        pages = 0
        path = "/api/v2/deals"
        while True:
            envelope = self._call("GET", path, params=params)
            changes += [self.change_from(deal) for deal in envelope.get("data") or []]
            pages += 1
            next_cursor = (envelope.get("additional_data") or {}).get("next_cursor")
            if not next_cursor:
                break
            # Stop after a while and carry on next poll, unless every deal so far shares the
            # starting timestamp (a bulk edit): resuming there would read the same page again.
            if pages >= MAX_POLL_PAGES and _timestamp(changes[-1].raw) != cursor:
                break
            params["cursor"] = next_cursor
        new_cursor = _timestamp(changes[-1].raw) if changes else cursor
        return changes, new_cursor

    def deal(self, external_deal_id: str) -> DealChange:
        deal_id = _int_id(external_deal_id, "Deal")
        return self.change_from(self._call("GET", f"/api/v2/deals/{deal_id}")["data"])

    def change_from(self, deal: dict) -> DealChange:
        return deal_change(deal, self.connection.referral_id_field)


# --- Helpers ------------------------------------------------------------------------------

def deal_change(deal: dict, referral_id_field: str) -> DealChange:
    """A v2 deal (from the API or a v2 webhook's `data`) as a DealChange."""
    status = deal.get("status") or "open"
    stage = status if status in (WON, LOST) else str(deal.get("stage_id") or "")
    updated = _timestamp(deal)
    currency = deal.get("currency") or ""
    closed = (deal.get("close_time") or deal.get("won_time") or deal.get("lost_time")
              if status in (WON, LOST) else None)
    organization = deal.get("organization") if isinstance(deal.get("organization"), dict) else {}
    return DealChange(
        external_deal_id=str(deal["id"]),
        # Two edits in the same second share an update_time; the state is part of the version
        # so a stage move in that second is not taken for a replay.
        version=f"{updated}|{status}|{deal.get('stage_id') or ''}",
        stage=stage,
        referral_id=_custom_value(deal, referral_id_field),
        account_name=deal.get("org_name") or organization.get("name") or "",
        amount_minor=_minor(deal.get("value"), currency),
        currency=currency,
        deal_created_at=_parse_time(deal.get("add_time")),
        closed_at=_parse_time(closed),
        raw=deal,
    )


def _error(response, envelope: dict) -> CrmError:
    status = response.status_code
    detail = envelope.get("error") or response.reason or "error"
    info = envelope.get("error_info")
    message = f"Pipedrive answered {status}: {detail}" + (f" ({info})" if info else "")
    retry_after = response.headers.get("Retry-After")
    if status == 429 and not retry_after:
        retry_after = response.headers.get("x-ratelimit-reset")
    if status < 300:  # {"success": false} inside a 2xx: the request itself was refused
        return CrmError(message, status=status)
    return CrmError.from_http(status, message, retry_after)


def _deal_update(p) -> dict:
    body = {"title": p.deal_name[:255], "value": _number(p.amount),
            "currency": p.currency or None,
            "expected_close_date": p.expected_close.isoformat() if p.expected_close else None}
    return _without_none(body)


def _lead_update(p) -> dict:
    amount = _number(p.amount)
    body = {"title": p.deal_name[:255],
            "value": {"amount": amount, "currency": p.currency} if amount is not None else None,
            "expected_close_date": p.expected_close.isoformat() if p.expected_close else None}
    return _without_none(body)


def _number(amount: str):
    """"48000.00" -> 48000, "48000.50" -> 48000.5: v2 rejects numbers sent as strings."""
    if not amount:
        return None
    value = Decimal(amount)
    return int(value) if value == value.to_integral_value() else float(value)


def _minor(value, currency: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        amount = Decimal(str(value)) * (Decimal(10) ** exponent(currency))
    except (InvalidOperation, ValueError):
        return None
    return int(amount.to_integral_value(rounding=ROUND_HALF_UP))


def _custom_value(deal: dict, key: str) -> str:
    """A text custom field: in v2 under `custom_fields` (a string, or {"value": ...} for
    composite types); in v1-shaped payloads at the top level."""
    value = (deal.get("custom_fields") or {}).get(key, deal.get(key))
    if isinstance(value, dict):
        value = value.get("value")
    return str(value).strip() if value not in (None, "") else ""


def _timestamp(deal: dict) -> str:
    """A deal's update_time as RFC 3339 UTC, the same from webhooks and from the API."""
    raw = deal.get("update_time") or ""
    parsed = _parse_time(raw)
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ") if parsed else raw


def _parse_time(value) -> datetime | None:
    if not value:
        return None
    text = str(value).strip().replace(" ", "T")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _has_value(values, wanted: str) -> bool:
    return any(_same(v, wanted) for v in values or [])


def _same(a, b) -> bool:
    return str(a or "").strip().casefold() == str(b or "").strip().casefold()


def _person_name(p) -> str:
    first, last = p.contact_first_name.strip(), p.contact_last_name.strip()
    # The payload repeats a single name as the last name; say it once.
    return first if first == last else f"{first} {last}".strip()


def _id_of(related) -> str:
    return str(related["id"]) if isinstance(related, dict) and related.get("id") else ""


def _str(value) -> str:
    return "" if value is None else str(value)


def _int_id(value, what: str) -> int:
    """Ids from the vendor's settings; a wrong one is a permanent error they can fix."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CrmError(f"{what} id {value!r} is not a Pipedrive id: check the mapping on the "
                       "connection page.") from None


def _without_none(body: dict) -> dict:
    return {k: v for k, v in body.items() if v is not None}
