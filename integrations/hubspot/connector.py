"""HubSpot through hubspot-api-client, authenticated by a private app's access token.

A push is a handful of batch calls for up to 100 referrals: companies and deals are upserted
by the connection's unique custom property (our referral id), contacts by email, then the
default associations are made. Upserts and default associations are idempotent, so a retried
or repeated push updates records and creates nothing. The pipeline and first stage are only
set on deals that do not exist yet: a re-push never drags a deal back to the first stage.
"""

import json
import logging
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cached_property

import hubspot
import urllib3
from django.conf import settings
from django.core.cache import cache
from hubspot.crm.associations.v4 import ApiException as AssociationsApiError
from hubspot.crm.companies import ApiException as CompaniesApiError
from hubspot.crm.contacts import ApiException as ContactsApiError
from hubspot.crm.deals import ApiException as DealsApiError
from hubspot.crm.pipelines import ApiException as PipelinesApiError
from urllib3.util.retry import Retry

from integrations.providers.base import (
    Connector,
    CrmError,
    DealChange,
    Pipeline,
    PushResult,
    Stage,
)
from partnerhub.money import exponent
from referrals.normalize import normalize_domain

log = logging.getLogger(__name__)

API_HOST = "https://api.hubapi.com"
API_ERRORS = (AssociationsApiError, CompaniesApiError, ContactsApiError, DealsApiError,
              PipelinesApiError)
TIMEOUT = (5, 30)  # connect, read (seconds)
# Private apps: 100 requests per 10 s on Free/Starter, 190 on Professional/Enterprise.
REQUESTS_PER_10S = 100
# companies, contacts, deals read (deals not pushed before), deals upsert, three associations
CALLS_PER_PUSH = 7
DEAL_PROPERTIES = ["dealname", "amount", "deal_currency_code", "dealstage", "pipeline",
                   "createdate", "closedate", "hs_lastmodifieddate", "hs_is_closed"]
MAX_SEARCH_PAGES = 20  # per poll; the cursor carries on from there next time
PRIMARY_DEAL_TO_COMPANY = 5
TRANSIENT_CATEGORIES = {"RATE_LIMITS", "RATE_LIMIT", "CONFLICT", "INTERNAL_ERROR",
                        "SERVICE_UNAVAILABLE", "TIMEOUT"}


class HubSpotConnector(Connector):
    provider = "hubspot"
    batch_size = 100
    # The engine takes one token per push; a push is CALLS_PER_PUSH requests.
    rate_limit = (REQUESTS_PER_10S // CALLS_PER_PUSH, 10)

    def __init__(self, connection):
        super().__init__(connection)
        per_10s = _positive_int(self.credentials.get("requests_per_10s")
                                or getattr(settings, "HUBSPOT_REQUESTS_PER_10S", None))
        if per_10s:
            self.rate_limit = (max(1, per_10s // CALLS_PER_PUSH), 10)
        self.id_property = connection.referral_id_field
        # Connection errors are retried (nothing was sent); anything else is the engine's call.
        self._client = hubspot.HubSpot(
            access_token=self.credentials.get("access_token", ""),
            host=(connection.base_url or API_HOST).rstrip("/"),
            retry=Retry(total=2, connect=2, read=0, redirect=0, status=0, other=0))

    # --- SDK plumbing -----------------------------------------------------------------

    @cached_property
    def _apis(self):
        crm = self._client.crm
        return {"companies": crm.companies.batch_api, "contacts": crm.contacts.batch_api,
                "deals": crm.deals.batch_api, "deal": crm.deals.basic_api,
                "company": crm.companies.basic_api, "search": crm.deals.search_api,
                "associations": crm.associations.v4.batch_api,
                "pipelines": crm.pipelines.pipelines_api}

    def _call(self, method, *args, **kwargs):
        kwargs.setdefault("_request_timeout", TIMEOUT)
        try:
            return method(*args, **kwargs)
        except API_ERRORS as exc:
            raise _error_from(exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise CrmError(f"HubSpot did not answer ({exc.__class__.__name__}).",
                           transient=True) from None

    def _account(self) -> dict:
        """GET /account-info/v3/details (not wrapped by the SDK: called through its client)."""
        key = f"hubspot:account:{self.connection.pk}"
        account = cache.get(key)
        if account is None:
            client = self._apis["deal"].api_client
            account = self._call(
                client.call_api, "/account-info/v3/details", "GET",
                header_params={"Accept": "application/json"}, auth_settings=["oauth2"],
                response_types_map={200: "object"}, _return_http_data_only=True)
            cache.set(key, account, 24 * 3600)
        return account

    @cached_property
    def _account_or_empty(self) -> dict:
        """The account details, or {} when HubSpot will not give them (asked once)."""
        try:
            return self._account()
        except CrmError:
            return {}

    # --- the Connector interface ------------------------------------------------------

    def test_connection(self) -> str:
        cache.delete(f"hubspot:account:{self.connection.pk}")
        account = self._account()
        return (f"HubSpot account {account.get('portalId')} "
                f"({account.get('uiDomain') or 'app.hubspot.com'})")

    def pipelines(self) -> list[Pipeline]:
        response = self._call(self._apis["pipelines"].get_all, "deals")
        result = []
        for pipeline in sorted(response.results, key=lambda p: p.display_order or 0):
            stages = []
            for stage in sorted(pipeline.stages, key=lambda s: s.display_order or 0):
                meta = stage.metadata or {}
                closed = str(meta.get("isClosed", "")).lower() == "true"
                stages.append(Stage(stage.id, stage.label, closed=closed,
                                    won=closed and _float(meta.get("probability")) == 1.0))
            result.append(Pipeline(pipeline.id, pipeline.label, stages))
        return result

    def push(self, payloads):
        results: dict = {}
        pending = {p.referral_id: p for p in payloads}
        try:
            self._push(pending, results)
        except CrmError as exc:
            for referral_id in pending:
                results.setdefault(referral_id, exc)
        log.debug("HubSpot push for connection %s: %d referrals, %d not pushed",
                  self.connection.pk, len(payloads),
                  sum(isinstance(r, CrmError) for r in results.values()))
        return results

    def _push(self, pending: dict, results: dict) -> None:
        companies = self._upsert("companies", self.id_property, {
            rid: (rid, _company_properties(p, self.id_property)) for rid, p in pending.items()})
        _settle(pending, results, companies)

        email_of = {rid: p.contact_email.strip() for rid, p in pending.items()
                    if (p.contact_email or "").strip()}
        contacts = self._upsert("contacts", "email", {
            email.lower(): (email, _contact_properties(pending[rid]))
            for rid, email in email_of.items()})
        contact_of = {rid: contacts[email.lower()] for rid, email in email_of.items()}
        _settle(pending, results, contact_of)
        if not pending:
            return

        # Deals we pushed before are known; the others may exist all the same (a create
        # whose answer was lost), so HubSpot is asked about those.
        existing = {rid for rid, p in pending.items() if p.external_ids.get("deal")}
        existing |= self._existing_deals([rid for rid in pending if rid not in existing])
        stage = self._first_open_stage() if len(existing) < len(pending) else ""
        deals = self._upsert("deals", self.id_property, {
            rid: (rid, self._deal_properties(p, new=rid not in existing, stage=stage))
            for rid, p in pending.items()})
        _settle(pending, results, deals)
        if not pending:
            return

        self._associate("contacts", "companies", [
            (contact_of[rid], companies[rid]) for rid in pending if contact_of.get(rid)])
        self._associate("deals", "companies", [(deals[rid], companies[rid]) for rid in pending])
        self._associate("deals", "contacts", [
            (deals[rid], contact_of[rid]) for rid in pending if contact_of.get(rid)])

        account = self._account_or_empty
        for rid in list(pending):
            ids = {"company": companies[rid], "contact": contact_of.get(rid) or "",
                   "deal": deals[rid]}
            results[rid] = PushResult(ids, _deal_url(account, deals[rid]))
            del pending[rid]

    def changes_since(self, cursor: str):
        since = int(cursor) if (cursor or "").isdigit() else 0
        # GTE, not GT: deals modified in the same millisecond as the last one seen are not
        # skipped; the ones already seen come back as known versions and are ignored.
        request = {
            "filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate",
                                           "operator": "GTE", "value": str(since)}]}],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            "properties": [*DEAL_PROPERTIES, self.id_property],
            "limit": 100,
        }
        changes = []
        for _ in range(MAX_SEARCH_PAGES):
            page = self._call(self._apis["search"].do_search, request)
            deals = page.results or []
            companies = self._companies_of([str(d.id) for d in deals])
            changes += [self._change(d.id, d.properties or {}, companies.get(str(d.id), {}),
                                     d.updated_at) for d in deals]
            after = page.paging.next.after if page.paging and page.paging.next else None
            if not after:
                break
            request["after"] = after
        versions = [int(c.version) for c in changes if c.version.isdigit()]
        return changes, str(max([since, *versions])) if versions else (cursor or "")

    def deal(self, external_deal_id: str) -> DealChange:
        deal = self._call(self._apis["deal"].get_by_id, str(external_deal_id),
                          properties=[*DEAL_PROPERTIES, self.id_property],
                          associations=["companies"])
        company = {}
        linked = (deal.associations or {}).get("companies")
        if linked and linked.results:
            chosen = next((a for a in linked.results if a.type == "deal_to_company"),
                          linked.results[0])
            company = self._call(self._apis["company"].get_by_id, str(chosen.id),
                                 properties=["domain", "name"]).properties or {}
        return self._change(deal.id, deal.properties or {}, company, deal.updated_at)

    # --- push steps -------------------------------------------------------------------

    def _upsert(self, object_type: str, id_property: str, rows: dict) -> dict:
        """Batch upsert `rows` ({key: (id value, properties)}); return {key: id or CrmError}.
        Each input carries its key as objectWriteTraceId, which lets HubSpot answer 207 with
        the failing rows named instead of failing the whole batch."""
        if not rows:
            return {}
        inputs = [{"idProperty": id_property, "id": value, "properties": properties,
                   "objectWriteTraceId": key} for key, (value, properties) in rows.items()]
        response = self._call(self._apis[object_type].upsert, {"inputs": inputs})
        by_value = {str(value).lower(): key for key, (value, _) in rows.items()}
        out: dict = {}
        for record in response.results or []:
            key = record.object_write_trace_id
            if key not in rows:
                key = by_value.get(str((record.properties or {}).get(id_property, "")).lower())
            if key is not None:
                out[key] = str(record.id)
        unmatched = []
        for error in getattr(response, "errors", None) or []:
            context = error.context or {}
            keys = [k for k in context.get("objectWriteTraceId", []) if k in rows]
            keys += [by_value[str(v).lower()] for v in context.get("ids", [])
                     if str(v).lower() in by_value]
            problem = _row_error(object_type, error)
            for key in keys:
                out[key] = problem
            if not keys:
                unmatched.append(problem)
        for key in rows:
            if key not in out:
                out[key] = unmatched[0] if unmatched else CrmError(
                    f"HubSpot did not return this {_singular(object_type)}.", transient=True)
        return out

    def _existing_deals(self, referral_ids: list[str]) -> set[str]:
        if not referral_ids:
            return set()
        response = self._call(self._apis["deals"].read, {
            "idProperty": self.id_property, "properties": [self.id_property],
            "inputs": [{"id": rid} for rid in referral_ids]})
        return {(d.properties or {}).get(self.id_property) for d in response.results or []}

    def _first_open_stage(self) -> str:
        """The connection's pipeline's first stage (in HubSpot's order) that is mapped open;
        "" leaves HubSpot's default. The mapping is a JSON object without order: the order is
        the one saved with the mapping, else the pipeline's own (cached for an hour)."""
        pipeline_id = self.connection.pipeline_id
        open_stages = {s for s, outcome in self.connection.stage_mapping.items()
                       if outcome == "open"}
        if not pipeline_id or not open_stages:
            return ""
        saved = getattr(self.connection, "stage_order", None) or []
        first = next((s for s in saved if s in open_stages), "")
        if first:
            return first
        key = f"hubspot:stages:{self.connection.pk}:{pipeline_id}"
        order = cache.get(key)
        if order is None:
            order = next(([s.id for s in p.stages] for p in self.pipelines()
                          if p.id == pipeline_id), [])
            cache.set(key, order, 3600)
        return next((s for s in order if s in open_stages), "")

    def _deal_properties(self, p, *, new: bool, stage: str) -> dict:
        description = f"Referred by {p.partner_name} through PartnerHub."
        if p.notes:
            description += f"\n\n{p.notes}"
        properties = {self.id_property: p.referral_id, "dealname": p.deal_name,
                      "amount": p.amount, "deal_currency_code": p.currency,
                      "closedate": _midnight_ms(p.expected_close), "description": description,
                      "hubspot_owner_id": p.owner_id}
        if new and self.connection.pipeline_id:
            properties["pipeline"] = self.connection.pipeline_id
            properties["dealstage"] = stage
        return _clean(properties)

    def _associate(self, from_type: str, to_type: str, pairs: list) -> None:
        pairs = sorted(set(pairs))
        if pairs:
            self._call(self._apis["associations"].create_default, from_type, to_type, {
                "inputs": [{"from": {"id": a}, "to": {"id": b}} for a, b in pairs]})

    # --- pull helpers -----------------------------------------------------------------

    def _companies_of(self, deal_ids: list[str]) -> dict:
        """{deal id: the primary (else first) company's properties}: two batch calls."""
        if not deal_ids:
            return {}
        links = self._call(self._apis["associations"].get_page, "deals", "companies",
                           {"inputs": [{"id": d} for d in deal_ids]})
        company_of = {}
        for item in links.results or []:
            targets = item.to or []
            if targets:
                chosen = next((t for t in targets if any(
                    a.type_id == PRIMARY_DEAL_TO_COMPANY for a in t.association_types or [])),
                    targets[0])
                company_of[str(item._from.id)] = str(chosen.to_object_id)
        if not company_of:
            return {}
        response = self._call(self._apis["companies"].read, {
            "inputs": [{"id": c} for c in sorted(set(company_of.values()))],
            "properties": ["domain", "name"]})
        found = {str(c.id): c.properties or {} for c in response.results or []}
        return {deal: found.get(company, {}) for deal, company in company_of.items()}

    def _change(self, deal_id, properties: dict, company: dict, updated_at=None) -> DealChange:
        stage = properties.get("dealstage") or ""
        currency = (properties.get("deal_currency_code")
                    or self._account_or_empty.get("companyCurrency") or "")
        closed = (properties.get("hs_is_closed") == "true"
                  or self.connection.outcome_for_stage(stage) in ("won", "lost"))
        version = _ms(properties.get("hs_lastmodifieddate")) or _ms(updated_at)
        return DealChange(
            external_deal_id=str(deal_id), version=str(version or ""), stage=stage,
            referral_id=properties.get(self.id_property) or "",
            account_domain=normalize_domain(company.get("domain") or ""),
            account_name=company.get("name") or "",
            amount_minor=_minor(properties.get("amount"), currency), currency=currency,
            deal_created_at=_datetime(properties.get("createdate")),
            closed_at=_datetime(properties.get("closedate")) if closed else None,
            raw={"id": str(deal_id), "properties": properties, "company": company})


# --- helpers ----------------------------------------------------------------------------

def _settle(pending: dict, results: dict, outcomes: dict) -> None:
    """Rows whose step failed leave the batch with that step's error."""
    for rid, outcome in outcomes.items():
        if isinstance(outcome, CrmError) and rid in pending:
            results[rid] = outcome
            del pending[rid]


def _error_from(exc) -> CrmError:
    """SDK ApiException -> CrmError, with HubSpot's own message and Retry-After."""
    status = exc.status or None  # 0: the SDK's own transport failure
    body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else exc.body
    try:
        data = json.loads(body or "")
    except ValueError:
        data = {}
    message = data.get("message") if isinstance(data, dict) else None
    message = message or (exc.reason or "no answer")
    headers = exc.headers or {}
    retry_after = headers.get("Retry-After")
    if retry_after is None and status == 429:
        interval = _positive_int(headers.get("X-HubSpot-RateLimit-Interval-Milliseconds"))
        retry_after = interval / 1000 if interval else 10
    prefix = f"HubSpot {status}" if status else "HubSpot"
    return CrmError.from_http(status, f"{prefix}: {message}"[:1000], retry_after=retry_after)


def _row_error(object_type: str, error) -> CrmError:
    transient = (error.category or "").upper() in TRANSIENT_CATEGORIES
    return CrmError(f"HubSpot rejected the {_singular(object_type)}: {error.message}"[:1000],
                    transient=transient)


def _singular(object_type: str) -> str:
    return {"companies": "company", "contacts": "contact", "deals": "deal"}.get(
        object_type, object_type)


def _company_properties(p, id_property: str) -> dict:
    return _clean({id_property: p.referral_id, "name": p.company_name, "domain": p.domain,
                   "website": p.website, "country": p.country})


def _contact_properties(p) -> dict:
    return _clean({"firstname": p.contact_first_name, "lastname": p.contact_last_name,
                   "phone": p.contact_phone, "jobtitle": p.contact_title,
                   "company": p.company_name})


def _clean(properties: dict) -> dict:
    # An empty string clears a HubSpot property: never wipe what the vendor's team entered.
    return {k: str(v) for k, v in properties.items() if v not in (None, "")}


def _deal_url(account: dict, deal_id: str) -> str:
    if not account.get("portalId"):
        return ""
    domain = account.get("uiDomain") or "app.hubspot.com"
    return f"https://{domain}/contacts/{account['portalId']}/record/0-3/{deal_id}"


def _midnight_ms(day: date | None) -> str:
    """HubSpot dates are milliseconds at midnight UTC."""
    if day is None:
        return ""
    return str(int(datetime.combine(day, time(0), tzinfo=UTC).timestamp() * 1000))


def _datetime(value) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value)
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _ms(value) -> int | None:
    moment = _datetime(value)
    return int(round(moment.timestamp() * 1000)) if moment else None


def _minor(amount, currency: str) -> int | None:
    try:
        value = Decimal(str(amount).replace(",", "").strip())
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite():
        return None
    return int((value * 10 ** exponent(currency)).to_integral_value(rounding=ROUND_HALF_UP))


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _positive_int(value) -> int | None:
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
