"""Salesforce through simple-salesforce.

Auth, from connection.credentials:
- JWT bearer flow (the normal case): consumer_key, username, private_key (PEM text) and domain
  ("login", "test" or a My Domain host such as acme.my.salesforce.com). connection.base_url,
  when set, is the login host instead of domain.
- A ready session (sandboxes, support): session_id plus instance_url (or base_url); or
  username + password (+ security_token) through the SOAP login.
We log in once per connector instance, i.e. once per task; nothing is cached beyond it.

Limits: Salesforce counts API calls per org over a rolling 24 hours (Enterprise Edition:
100,000 plus 1,000 per user licence) and caps concurrent long-running requests; it has no
per-second quota. `rate_limit` is a courtesy cap. Batching is what saves the daily budget: one
sObject Collections call upserts up to 200 records, so a batch costs two calls in lead mode
(describe, upsert) and six in account mode (stage list, two describes, three upserts). A poll
costs about three calls, every five minutes. Token requests are not API calls.

Polling: Salesforce sends no webhooks here, so Opportunities are read by SystemModstamp with a
keyset cursor "<SystemModstamp>|<Id>": records saved in one transaction share a stamp, and
the Id tie-breaker keeps a page boundary from skipping or repeating them. A new connection
starts one day before it was created.
"""

import json
import logging
import re
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from urllib.parse import urlparse

import jwt
import requests
from django.utils import timezone
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceError

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

API_VERSION = "59.0"
TIMEOUT = 30  # seconds per HTTP call; simple-salesforce sets none
ACCOUNT_MODE = "account_contact_opportunity"
LEAD_SOURCE = "Partner Referral"  # a standard LeadSource picklist value
DEFAULT_STAGE = "Prospecting"  # Salesforce's stock first stage, if the org lists none open
NOT_PROVIDED = "[not provided]"  # what Web-to-Lead puts in a required field left empty
CLOSE_IN_DAYS = 90
LIMIT_RETRY_AFTER = 15 * 60  # the daily budget is a rolling window: come back later
# Per-record status codes worth retrying; every other code needs a person.
TRANSIENT_CODES = {"UNABLE_TO_LOCK_ROW", "REQUEST_LIMIT_EXCEEDED", "SERVER_UNAVAILABLE",
                   "REQUEST_RUNNING_TOO_LONG", "UNKNOWN_EXCEPTION"}
RECORD_ID = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
OPPORTUNITY_FIELDS = ["Id", "Name", "StageName", "Amount", "CloseDate", "CreatedDate",
                      "SystemModstamp", "IsClosed", "IsWon", "AccountId", "Account.Name",
                      "Account.Website"]


class _Session(requests.Session):
    """Every call gets a timeout, and the last Retry-After is kept: simple-salesforce's
    exceptions drop the response headers."""

    retry_after = None

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", TIMEOUT)
        response = super().request(method, url, **kwargs)
        self.retry_after = response.headers.get("Retry-After")
        return response


class SalesforceConnector(Connector):
    provider = "salesforce"
    batch_size = 200  # sObject Collections take at most 200 records per call
    rate_limit = (25, 1)  # a courtesy cap: Salesforce's real budget is per 24 hours
    page_size = 200  # opportunities per polling query
    max_pages = 10  # per poll; the next poll resumes from the cursor

    def __init__(self, connection):
        super().__init__(connection)
        self._sf = None
        self._session = None
        self._describes = {}
        self._stages = None
        self._org = None

    # --- Talking to Salesforce ---------------------------------------------------------

    def _client(self) -> Salesforce:
        if self._sf is None:
            self._session = _Session()
            try:
                with self._translated():
                    self._sf = self._login(self._session)
            except (ValueError, TypeError, jwt.PyJWTError):
                if not self.credentials.get("private_key"):
                    raise
                # The message only names the problem; the key itself never leaves here.
                raise CrmError("Salesforce could not use the private key: paste the whole PEM "
                               "text, BEGIN and END lines included.", auth=True) from None
        return self._sf

    def _login(self, session) -> Salesforce:
        creds = self.credentials
        common = {"version": API_VERSION, "session": session, "parse_float": Decimal,
                  "object_pairs_hook": dict}
        if creds.get("session_id"):
            instance = creds.get("instance_url") or self.connection.base_url
            if not instance:
                raise CrmError("Enter the instance URL that belongs to this session.",
                               auth=True)
            host = _host(instance)
            return Salesforce(session_id=creds["session_id"], instance_url=f"https://{host}",
                              **common)
        host = _host(self.connection.base_url) or _host(creds.get("domain", "")) or "login"
        domain = _login_domain(host)
        if creds.get("private_key"):
            missing = [key for key in ("consumer_key", "username") if not creds.get(key)]
            if missing:
                raise CrmError(f"Enter the {' and '.join(missing)} for the JWT login.",
                               auth=True)
            sandbox = creds.get("domain") == "test" or domain == "test" or ".sandbox." in host
            # The assertion's audience is login or test; a My Domain host only changes
            # where the token is requested.
            token_host = {} if domain in ("login", "test") else {"instance_url": domain}
            return Salesforce(username=creds["username"], consumer_key=creds["consumer_key"],
                              privatekey=creds["private_key"],
                              domain="test" if sandbox else "login", **token_host, **common)
        if creds.get("username") and creds.get("password"):
            return Salesforce(username=creds["username"], password=creds["password"],
                              security_token=creds.get("security_token", ""), domain=domain,
                              client_id="PartnerHub", **common)
        raise CrmError("Salesforce needs a consumer key, username and private key (or a "
                       "session).", auth=True)

    @contextmanager
    def _translated(self):
        """simple-salesforce and requests errors become classified CrmErrors."""
        try:
            yield
        except SalesforceAuthenticationFailed as exc:
            raise _login_error(exc) from None
        except SalesforceError as exc:
            raise self._http_error(exc) from None
        except requests.RequestException as exc:
            raise CrmError(f"Salesforce did not answer ({exc.__class__.__name__}).",
                           transient=True) from None

    def _http_error(self, exc: SalesforceError) -> CrmError:
        code, detail = _error_detail(exc.content)
        message = f"Salesforce answered {exc.status}: {detail}"
        if code == "REQUEST_LIMIT_EXCEEDED":  # a 403 that only needs patience
            return CrmError(message, status=exc.status, transient=True,
                            retry_after=LIMIT_RETRY_AFTER)
        retry_after = self._session.retry_after if self._session else None
        return CrmError.from_http(exc.status, message, retry_after)

    def _call(self, path: str, method: str = "GET", **kwargs):
        sf = self._client()
        with self._translated():
            return sf.restful(path, method=method, **kwargs)

    def _query(self, soql: str) -> list[dict]:
        """All rows of a SOQL query, following nextRecordsUrl."""
        sf = self._client()
        with self._translated():
            return list(sf.query_all_iter(soql))

    def _fields(self, sobject: str) -> dict[str, dict]:
        """The object's fields by lower-cased name (Salesforce names are case-insensitive)."""
        if sobject not in self._describes:
            described = self._call(f"sobjects/{sobject}/describe") or {}
            self._describes[sobject] = {f["name"].lower(): f for f in described.get("fields", [])}
        return self._describes[sobject]

    def _fields_with_key(self, sobject: str, ext: str) -> dict[str, dict]:
        fields = self._fields(sobject)
        if not (fields.get(ext.lower()) or {}).get("externalId"):
            raise CrmError(f"{sobject} has no External ID field {ext}. Create it as a Text "
                           "field marked Unique and External ID (see the setup guide).")
        return fields

    def _organization(self) -> dict:
        if self._org is None:
            rows = self._query("SELECT Id, Name, InstanceName, IsSandbox, OrganizationType, "
                               "DefaultCurrencyIsoCode FROM Organization LIMIT 1")
            self._org = rows[0] if rows else {}
        return self._org

    def _stage_rows(self) -> list[dict]:
        if self._stages is None:
            self._stages = self._query(
                "SELECT ApiName, MasterLabel, IsClosed, IsWon, SortOrder FROM OpportunityStage "
                "WHERE IsActive = true ORDER BY SortOrder ASC")
        return self._stages

    def _ext_field(self) -> str:
        field = self.connection.referral_id_field or ""
        if not FIELD_NAME.match(field):
            raise CrmError(f"{field!r} is not a Salesforce field name.")
        return field

    def _url(self, sobject: str, record_id: str) -> str:
        return f"https://{self._client().sf_instance}/lightning/r/{sobject}/{record_id}/view"

    # --- The connector interface ---------------------------------------------------------

    def test_connection(self) -> str:
        ext = self._ext_field()
        org = self._organization()
        objects = (["Account", "Contact", "Opportunity"]
                   if self.connection.object_mode == ACCOUNT_MODE else ["Lead"])
        for sobject in objects:
            self._fields_with_key(sobject, ext)
        kind = "sandbox" if org.get("IsSandbox") else org.get("OrganizationType") or "org"
        return (f"{org.get('Name') or 'Salesforce'} ({kind}, {org.get('InstanceName') or '?'}) "
                f"at https://{self._client().sf_instance}")

    def pipelines(self) -> list[Pipeline]:
        return [Pipeline("opportunity", "Opportunity stages", [
            Stage(row["ApiName"], row.get("MasterLabel") or row["ApiName"],
                  closed=bool(row.get("IsClosed")), won=bool(row.get("IsWon")))
            for row in self._stage_rows()])]

    def push(self, payloads) -> dict:
        if self.connection.object_mode == ACCOUNT_MODE:
            return self._push_account_contact_opportunity(payloads)
        return self._push_leads(payloads)

    def changes_since(self, cursor: str):
        ext = self._ext_field()
        fields = self._fields("Opportunity")
        select = list(OPPORTUNITY_FIELDS)
        select += [name for name in ("CurrencyIsoCode", ext) if name.lower() in fields]
        stamp, last_id = self._parse_cursor(cursor)
        changes = []
        for _ in range(self.max_pages):
            after = (f"(SystemModstamp > {stamp} OR (SystemModstamp = {stamp} "
                     f"AND Id > '{last_id}'))" if last_id else f"SystemModstamp > {stamp}")
            rows = self._query(f"SELECT {', '.join(select)} FROM Opportunity WHERE {after} "
                               f"ORDER BY SystemModstamp ASC, Id ASC LIMIT {self.page_size}")
            for row in rows:
                changes.append(self._change(row, ext))
                stamp, last_id = _soql_datetime(_parse_datetime(row["SystemModstamp"])), row["Id"]
            if len(rows) < self.page_size:
                break
        if self.connection.object_mode != ACCOUNT_MODE:
            self._add_converted_lead_ids(changes, ext)
        cursor = f"{stamp}|{last_id}" if last_id else stamp
        log.info("salesforce poll: %d opportunity changes, cursor %s", len(changes), cursor)
        return changes, cursor

    def deal(self, external_deal_id: str) -> DealChange:
        if not RECORD_ID.match(str(external_deal_id)):
            raise CrmError(f"{external_deal_id!r} is not a Salesforce record id.")
        ext = self._ext_field()
        row = self._call(f"sobjects/Opportunity/{external_deal_id}") or {}
        if row.get("AccountId"):
            row["Account"] = self._call(f"sobjects/Account/{row['AccountId']}",
                                        params={"fields": "Name,Website"})
        change = self._change(row, ext)
        if self.connection.object_mode != ACCOUNT_MODE:
            self._add_converted_lead_ids([change], ext)
        return change

    # --- Push ------------------------------------------------------------------------------

    def _push_leads(self, payloads) -> dict:
        ext = self._ext_field()
        fields = self._fields_with_key("Lead", ext)
        leads = self._upsert("Lead", ext, [(p.referral_id, _lead(p, ext, fields))
                                           for p in payloads])
        return {rid: outcome if isinstance(outcome, CrmError)
                else PushResult({"lead": outcome}, self._url("Lead", outcome))
                for rid, outcome in leads.items()}

    def _push_account_contact_opportunity(self, payloads) -> dict:
        """Accounts, then Contacts and Opportunities that point at them by our id. A referral
        whose Account failed goes no further; its error is the one reported."""
        ext = self._ext_field()
        account_fields = self._fields_with_key("Account", ext)
        opportunity_fields = self._fields_with_key("Opportunity", ext)
        stage = self._first_open_stage()
        steps = [("Account", lambda p: _account(p, ext, account_fields)),
                 ("Contact", lambda p: _contact(p, ext)),
                 ("Opportunity", lambda p: _opportunity(p, ext, opportunity_fields, stage))]
        done, failed, remaining = {}, {}, list(payloads)
        for sobject, build in steps:
            if not remaining:
                break
            outcome = self._upsert(sobject, ext, [(p.referral_id, build(p)) for p in remaining])
            for rid, result in outcome.items():
                if isinstance(result, CrmError):
                    failed[rid] = result
                else:
                    done.setdefault(rid, {})[sobject] = result
            remaining = [p for p in remaining if p.referral_id not in failed]
        results = dict(failed)
        for p in remaining:
            ids = done[p.referral_id]
            results[p.referral_id] = PushResult(
                {"account": ids["Account"], "contact": ids["Contact"],
                 "deal": ids["Opportunity"]}, self._url("Opportunity", ids["Opportunity"]))
        return results

    def _first_open_stage(self) -> str:
        """The first open stage in the org's order, preferring those the vendor mapped as
        open (the mapping itself is unordered)."""
        stages = [row["ApiName"] for row in self._stage_rows() if not row.get("IsClosed")]
        mapped = [s for s in stages if self.connection.stage_mapping.get(s) == "open"]
        return (mapped or stages or [DEFAULT_STAGE])[0]

    def _upsert(self, sobject: str, ext: str, rows) -> dict:
        """Upsert (referral id, fields) rows by the External ID; returns, per referral id,
        the record id or the record's CrmError."""
        results = {}
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            body = {"allOrNone": False,
                    "records": [{"attributes": {"type": sobject}, **fields}
                                for _, fields in chunk]}
            answer = self._call(f"composite/sobjects/{sobject}/{ext}", method="PATCH",
                                data=json.dumps(body)) or []
            if len(answer) != len(chunk):
                raise CrmError(f"Salesforce answered for {len(answer)} of {len(chunk)} "
                               f"{sobject} records.", transient=True)
            for (rid, _), item in zip(chunk, answer, strict=True):
                results[rid] = (item["id"] if item.get("success")
                                else _record_error(sobject, item.get("errors") or []))
            created = sum(1 for item in answer if item.get("created"))
            log.info("salesforce %s upsert: %d records, %d created", sobject, len(chunk),
                     created)
        return results

    # --- Pull ------------------------------------------------------------------------------

    def _parse_cursor(self, cursor: str) -> tuple[str, str]:
        stamp, _, last_id = (cursor or "").partition("|")
        when = _parse_datetime(stamp)
        if when is None:
            when = (self.connection.created_at or timezone.now()) - timedelta(days=1)
            last_id = ""
        return _soql_datetime(when), last_id if RECORD_ID.match(last_id) else ""

    def _change(self, row: dict, ext: str) -> DealChange:
        account = row.get("Account") or {}
        currency = row.get("CurrencyIsoCode") or self._organization().get(
            "DefaultCurrencyIsoCode") or ""
        closed_at = None
        if row.get("IsClosed") and row.get("CloseDate"):
            closed_at = datetime.combine(date.fromisoformat(row["CloseDate"]), time(),
                                         tzinfo=UTC)
        return DealChange(
            external_deal_id=row["Id"], version=row["SystemModstamp"],
            stage=row.get("StageName") or "", referral_id=str(_get(row, ext) or ""),
            account_domain=normalize_domain(account.get("Website") or ""),
            account_name=account.get("Name") or "",
            amount_minor=_minor(row.get("Amount"), currency), currency=currency,
            deal_created_at=_parse_datetime(row.get("CreatedDate")), closed_at=closed_at,
            raw=_plain(row))

    def _add_converted_lead_ids(self, changes, ext: str) -> None:
        """An Opportunity converted from our Lead carries our id when the vendor mapped the
        Lead field to the Opportunity field; otherwise we ask the converted Lead."""
        orphans = {c.external_deal_id: c for c in changes
                   if not c.referral_id and RECORD_ID.match(c.external_deal_id)}
        ids = list(orphans)
        for start in range(0, len(ids), 200):
            quoted = ", ".join(f"'{i}'" for i in ids[start:start + 200])
            for row in self._query(f"SELECT ConvertedOpportunityId, {ext} FROM Lead WHERE "
                                   f"IsConverted = true AND ConvertedOpportunityId IN ({quoted})"):
                change = orphans.get(row.get("ConvertedOpportunityId"))
                if change is not None and _get(row, ext):
                    change.referral_id = str(_get(row, ext))


# --- Records we send ---------------------------------------------------------------------

def _lead(p, ext: str, fields: dict) -> dict:
    first, last = _names(p)
    return _compact({
        ext: p.referral_id, "Company": p.company_name[:255] or NOT_PROVIDED,
        "FirstName": first[:40], "LastName": last[:80], "Email": p.contact_email[:80],
        "Phone": p.contact_phone[:40], "Title": p.contact_title[:128],
        "Website": p.website[:255], "Description": _description(p), "LeadSource": LEAD_SOURCE,
        "OwnerId": p.owner_id, **_country("", p.country, fields)})


def _account(p, ext: str, fields: dict) -> dict:
    return _compact({
        ext: p.referral_id, "Name": p.company_name[:255] or NOT_PROVIDED,
        "Website": p.website[:255], "Description": _description(p), "OwnerId": p.owner_id,
        **_country("Billing", p.country, fields)})


def _contact(p, ext: str) -> dict:
    first, last = _names(p)
    return _compact({
        ext: p.referral_id, "Account": {ext: p.referral_id}, "FirstName": first[:40],
        "LastName": last[:80], "Email": p.contact_email[:80], "Phone": p.contact_phone[:40],
        "Title": p.contact_title[:128], "LeadSource": LEAD_SOURCE, "OwnerId": p.owner_id})


def _opportunity(p, ext: str, fields: dict, stage: str) -> dict:
    close = p.expected_close or timezone.localdate() + timedelta(days=CLOSE_IN_DAYS)
    record = {ext: p.referral_id, "Account": {ext: p.referral_id},
              "Name": (p.deal_name or p.company_name)[:120], "StageName": stage,
              "CloseDate": close.isoformat(), "LeadSource": LEAD_SOURCE,
              "Description": _description(p), "OwnerId": p.owner_id}
    if p.amount:
        record["Amount"] = float(Decimal(p.amount))  # JSON number; repr keeps the decimals
        if "currencyisocode" in fields:
            record["CurrencyIsoCode"] = p.currency
    return _compact(record)


def _names(p) -> tuple[str, str]:
    first, last = p.contact_first_name.strip(), p.contact_last_name.strip()
    if first == last:  # the payload repeats a single name in both
        first = ""
    return first, last or NOT_PROVIDED


def _country(prefix: str, code: str, fields: dict) -> dict:
    """With State and Country Picklists on, the ISO code goes in <prefix>CountryCode; the
    plain text field would want Salesforce's country name."""
    if not code:
        return {}
    if f"{prefix}countrycode".lower() in fields:
        return {f"{prefix}CountryCode": code}
    return {f"{prefix}Country": code}


def _description(p) -> str:
    lines = [f"Referred by {p.partner_name} through PartnerHub (referral {p.referral_id})."]
    if p.amount:
        lines.append(f"Estimated amount: {p.amount} {p.currency}")
    if p.expected_close:
        lines.append(f"Expected close: {p.expected_close:%B %Y}")
    if p.notes:
        lines += ["", p.notes]
    return "\n".join(lines)[:32000]


def _compact(record: dict) -> dict:
    """Leave out empty values, so a re-push never blanks what the vendor's team filled in."""
    return {key: value for key, value in record.items() if value not in ("", None)}


# --- Reading answers ---------------------------------------------------------------------

def _record_error(sobject: str, errors: list) -> CrmError:
    codes = [e.get("statusCode") or "" for e in errors]
    detail = "; ".join(e.get("message") or "" for e in errors) or "no details"
    fields = sorted({f for e in errors for f in e.get("fields") or []})
    where = f" on {', '.join(fields)}" if fields else ""
    return CrmError(f"Salesforce refused the {sobject}: {detail} ({', '.join(codes)}{where})",
                    transient=bool(codes) and all(c in TRANSIENT_CODES for c in codes))


def _error_detail(content) -> tuple[str, str]:
    """(errorCode, message) from Salesforce's error body: [{"message", "errorCode"}]."""
    for item in content if isinstance(content, list) else [content]:
        if isinstance(item, dict):
            code = str(item.get("errorCode") or item.get("error") or "")
            message = str(item.get("message") or item.get("error_description") or code)
            return code, f"{message} ({code})" if code and code not in message else message
    text = content.decode(errors="replace") if isinstance(content, bytes) else str(content)
    return "", text[:300] or "no details"


def _login_error(exc: SalesforceAuthenticationFailed) -> CrmError:
    code = exc.code
    if isinstance(code, int) and (code == 429 or code >= 500):
        return CrmError(f"Salesforce's login service answered {code}.", status=code,
                        transient=True)
    detail = (exc.auth_message or "")[:300]
    return CrmError(f"Salesforce refused the login: {detail} ({code})", status=401, auth=True)


def _get(row: dict, field: str):
    """A field by case-insensitive name."""
    if field in row:
        return row[field]
    lower = field.lower()
    return next((value for key, value in row.items() if key.lower() == lower), None)


def _minor(amount, currency: str) -> int | None:
    if amount is None:
        return None
    try:
        value = Decimal(str(amount)) * (Decimal(10) ** exponent(currency))
    except InvalidOperation:
        return None
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def _plain(row: dict) -> dict:
    """The record as JSON-safe data (Decimals as strings), without `attributes`."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "attributes"}
        return value
    return json.loads(json.dumps(strip(row), default=str))


def _parse_datetime(value) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _soql_datetime(when: datetime) -> str:
    """A SOQL dateTime literal in UTC, to the millisecond (SystemModstamp's precision)."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _host(value: str) -> str:
    value = (value or "").strip()
    if "://" in value:
        return (urlparse(value).netloc or "").lower()
    return value.split("/")[0].lower()


def _login_domain(host: str) -> str:
    """simple-salesforce wants "login", "test" or a My Domain prefix ("acme.my"): it appends
    .salesforce.com itself."""
    domain = host.removesuffix(".salesforce.com")
    if "." in domain and not domain.endswith(".my"):
        raise CrmError(f"{host} is not a Salesforce login host: use login, test or your My "
                       "Domain (yourcompany.my.salesforce.com).", auth=True)
    return domain
