"""A fake Salesforce org on `responses` (simple-salesforce always speaks https, so a local
server cannot stand in for it).

It speaks the documented REST protocol for what PartnerHub uses: the OAuth 2.0 JWT bearer
token endpoint (the assertion is verified with the test's public key), the SOAP login for
username + password, sObject Collections upsert by External ID and the single-record upsert,
SOQL queries (a small parser for the SELECT ... FROM ... WHERE ... ORDER BY ... LIMIT shapes
we send, with nextRecordsUrl paging), describe, GET by id and limits. Errors look like
Salesforce's: `[{"message": ..., "errorCode": ...}]` for requests, `{"statusCode", "message",
"fields"}` per record. Tests can program failures (503, REQUEST_LIMIT_EXCEEDED, expired
sessions, a revoked app) and read call counters.
"""

import json
import re
import secrets
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import jwt

INSTANCE = "acme.my.salesforce.com"
ORG_ID = "00D5g000004ABCDEAZ"
PREFIXES = {"Lead": "00Q", "Account": "001", "Contact": "003", "Opportunity": "006",
            "OpportunityStage": "01J", "Organization": "00D"}
COMMON = ["Id", "OwnerId", "CreatedDate", "LastModifiedDate", "SystemModstamp"]
FIELDS = {
    "Lead": ["FirstName", "LastName", "Company", "Email", "Phone", "Title", "Website",
             "Country", "Description", "LeadSource", "Status", "IsConverted",
             "ConvertedAccountId", "ConvertedContactId", "ConvertedOpportunityId"],
    "Account": ["Name", "Website", "BillingCountry", "Description", "Industry"],
    "Contact": ["FirstName", "LastName", "Email", "Phone", "Title", "AccountId", "LeadSource",
                "Description"],
    "Opportunity": ["Name", "StageName", "Amount", "CloseDate", "AccountId", "IsClosed",
                    "IsWon", "LeadSource", "Description", "Probability"],
}
REQUIRED = {"Lead": ["LastName", "Company"], "Account": ["Name"], "Contact": ["LastName"],
            "Opportunity": ["Name", "StageName", "CloseDate"]}
READ_ONLY = {"Id", "CreatedDate", "LastModifiedDate", "SystemModstamp", "IsClosed", "IsWon",
             "IsConverted", "ConvertedAccountId", "ConvertedContactId",
             "ConvertedOpportunityId"}
STAGES = [  # ApiName, IsClosed, IsWon
    ("Prospecting", False, False), ("Qualification", False, False),
    ("Needs Analysis", False, False), ("Proposal/Price Quote", False, False),
    ("Negotiation/Review", False, False), ("Closed Won", True, True),
    ("Closed Lost", True, False)]
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
AUDIENCES = ["https://login.salesforce.com", "https://test.salesforce.com"]
DATA = re.compile(r"^/services/data/v(?P<version>\d+\.\d)/(?P<path>.*)$")


def sf_datetime(when: datetime) -> str:
    """Salesforce's dateTime format: 2024-05-01T10:00:00.000+0000."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"


class SoqlError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


class FakeSalesforce:
    """One org. `rsps` is an active responses.RequestsMock; `register()` is called for you."""

    def __init__(self, rsps, *, consumer_key, public_key, username, ext_field,
                 ext_on=("Lead", "Account", "Contact", "Opportunity"), instance=INSTANCE,
                 multi_currency=False, country_picklists=False, currency="USD",
                 password=None, security_token=""):
        self.rsps = rsps
        self.consumer_key, self.public_key, self.username = consumer_key, public_key, username
        self.password, self.security_token = password, security_token
        self.ext_field, self.ext_on, self.instance = ext_field, set(ext_on), instance
        self.multi_currency, self.country_picklists = multi_currency, country_picklists
        self.currency = currency
        self.records = {name: {} for name in PREFIXES}
        self.tokens = set()  # access tokens / session ids that are valid now
        self.issued_tokens = []  # every token ever issued
        self.calls = []  # (method, path) of every data API call
        self.logins = []  # grant type or "soap" per login
        self.failures = []  # programmed request failures, oldest first
        self.validation_rules = []  # (sobject, predicate(record) -> bool, message, code)
        self.revoked = False
        self.map_lead_field_on_conversion = True
        self.query_batch_size = 2000
        self._cursors = {}
        self._counter = 0
        self._last_stamp = None
        self.records["Organization"][ORG_ID] = {
            "Id": ORG_ID, "Name": "Acme Corp", "InstanceName": "NA224", "IsSandbox": False,
            "OrganizationType": "Enterprise Edition", "DefaultCurrencyIsoCode": currency}
        for order, (name, closed, won) in enumerate(STAGES, start=1):
            self._insert("OpportunityStage", {
                "ApiName": name, "MasterLabel": name, "IsActive": True, "IsClosed": closed,
                "IsWon": won, "SortOrder": order, "DefaultProbability": 100 if won else 10})
        self.register()

    # --- Programming the org -------------------------------------------------------------

    def register(self) -> None:
        for host in ("login.salesforce.com", "test.salesforce.com", self.instance):
            self.rsps.add_callback("POST", f"https://{host}/services/oauth2/token",
                                   callback=self._token)
            self.rsps.add_callback("POST", re.compile(
                rf"https://{re.escape(host)}/services/Soap/u/[\d.]+"), callback=self._soap)
        pattern = re.compile(rf"https://{re.escape(self.instance)}/services/data/.*")
        for method in ("GET", "POST", "PATCH", "DELETE"):
            self.rsps.add_callback(method, pattern, callback=self._data)

    def add_session(self, session_id: str) -> None:
        self.tokens.add(session_id)

    def expire_sessions(self) -> None:
        self.tokens.clear()

    def fail(self, status=503, code="SERVER_UNAVAILABLE", message="Service unavailable",
             times=None, retry_after=None, path=""):
        """Answer data calls (whose path contains `path`) with an error, `times` times or
        until `clear_failures()`."""
        self.failures.append({"status": status, "code": code, "message": message,
                              "times": times, "retry_after": retry_after, "path": path})

    def clear_failures(self) -> None:
        self.failures.clear()

    def add_validation_rule(self, sobject, predicate, message,
                            code="FIELD_CUSTOM_VALIDATION_EXCEPTION") -> None:
        """A rule of the vendor's org (or, with another code, a record-level failure such as
        UNABLE_TO_LOCK_ROW) for records where `predicate(record)` is true."""
        self.validation_rules.append((sobject, predicate, message, code))

    def all(self, sobject) -> list[dict]:
        return list(self.records[sobject].values())

    def find(self, sobject, **match) -> dict | None:
        return next((r for r in self.records[sobject].values()
                     if all(r.get(k) == v for k, v in match.items())), None)

    def count(self, method=None, path="") -> int:
        return sum(1 for m, p in self.calls if (method is None or m == method) and path in p)

    def update(self, sobject, record_id, stamp=None, **fields) -> dict:
        """A change made by the vendor's team in Salesforce."""
        record = self.records[sobject][record_id]
        record.update(fields)
        self._derive(sobject, record)
        record["SystemModstamp"] = record["LastModifiedDate"] = stamp or self._stamp()
        return record

    def create(self, sobject, **fields) -> dict:
        record = self._insert(sobject, {"OwnerId": "0055g00000USER1AAA", **fields})
        self._derive(sobject, record)
        return record

    def convert_lead(self, lead_id, stage="Prospecting", amount=None) -> dict:
        """Lead conversion: an Account, Contact and Opportunity; the vendor's field mapping
        copies our External ID field from the Lead to the Opportunity."""
        lead = self.records["Lead"][lead_id]
        account = self.create("Account", Name=lead["Company"], Website=lead.get("Website"))
        contact = self.create("Contact", LastName=lead["LastName"], AccountId=account["Id"],
                              FirstName=lead.get("FirstName"), Email=lead.get("Email"))
        extra = {}
        if self.map_lead_field_on_conversion and "Opportunity" in self.ext_on:
            extra[self.ext_field] = lead.get(self.ext_field)
        opportunity = self.create(
            "Opportunity", Name=f"{lead['Company']}-", StageName=stage, Amount=amount,
            CloseDate=(date.today() + timedelta(days=30)).isoformat(), AccountId=account["Id"],
            LeadSource=lead.get("LeadSource"), **extra)
        self.update("Lead", lead_id, IsConverted=True, Status="Closed - Converted",
                    ConvertedAccountId=account["Id"], ConvertedContactId=contact["Id"],
                    ConvertedOpportunityId=opportunity["Id"])
        return opportunity

    # --- Schema ------------------------------------------------------------------------------

    def fields_of(self, sobject) -> list[str]:
        names = COMMON + FIELDS.get(sobject, [])
        if sobject in self.ext_on:
            names = names + [self.ext_field]
        if self.multi_currency and sobject in FIELDS:
            names = names + ["CurrencyIsoCode"]
        if self.country_picklists and sobject == "Lead":
            names = names + ["CountryCode"]
        if self.country_picklists and sobject == "Account":
            names = names + ["BillingCountryCode"]
        if sobject == "OpportunityStage":
            names = ["Id", "ApiName", "MasterLabel", "IsActive", "IsClosed", "IsWon",
                     "SortOrder", "DefaultProbability"]
        if sobject == "Organization":
            names = ["Id", "Name", "InstanceName", "IsSandbox", "OrganizationType",
                     "DefaultCurrencyIsoCode"]
        return names

    def _describe(self, sobject):
        fields = [{"name": name, "label": name, "type": _type_of(name),
                   "externalId": name == self.ext_field, "unique": name == self.ext_field,
                   "nillable": name not in REQUIRED.get(sobject, []) + ["Id"],
                   "createable": name not in READ_ONLY, "updateable": name not in READ_ONLY}
                  for name in self.fields_of(sobject)]
        return {"name": sobject, "label": sobject, "custom": False, "fields": fields,
                "createable": True, "queryable": True}

    # --- Storage -------------------------------------------------------------------------------

    def _stamp(self) -> str:
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if self._last_stamp and now <= self._last_stamp:
            now = self._last_stamp + timedelta(milliseconds=1)
        self._last_stamp = now
        return sf_datetime(now)

    def _insert(self, sobject, fields) -> dict:
        self._counter += 1
        record_id = f"{PREFIXES[sobject]}5g0000{self._counter:06d}AAA"
        stamp = self._stamp()
        record = {name: None for name in self.fields_of(sobject)}
        record.update(fields, Id=record_id, CreatedDate=stamp, LastModifiedDate=stamp,
                      SystemModstamp=stamp)
        self.records[sobject][record_id] = record
        return record

    def _derive(self, sobject, record) -> None:
        if sobject == "Opportunity":
            stage = next((s for s in STAGES if s[0] == record.get("StageName")), None)
            record["IsClosed"], record["IsWon"] = (stage[1], stage[2]) if stage else (False,
                                                                                       False)
        if sobject == "Lead" and record.get("IsConverted") is None:
            record["IsConverted"] = False

    def _upsert(self, sobject, field, value, fields) -> tuple[dict, bool]:
        """Returns (result, created) like an UpsertResult; raises SoqlError for request-level
        problems (unknown field)."""
        known = set(self.fields_of(sobject))
        values = {}
        for key, val in fields.items():
            if key == "attributes":
                continue
            if isinstance(val, dict):  # a relationship by External ID: "Account": {ext: v}
                resolved, error = self._resolve(sobject, key, val)
                if error:
                    return {"success": False, "errors": [error]}, False
                values[f"{key}Id"] = resolved
                continue
            if key not in known:
                raise SoqlError("INVALID_FIELD",
                                f"No such column '{key}' on sobject of type {sobject}")
            if key in READ_ONLY:
                raise SoqlError("INVALID_FIELD_FOR_INSERT_UPDATE",
                                f"Unable to create/update fields: {key}.")
            values[key] = val
        existing = self.find(sobject, **{field: value}) if value else None
        merged = {**(existing or {}), **values, field: value}
        error = self._validate(sobject, merged)
        if error:
            return {"success": False, "errors": [error]}, False
        if existing is None:
            record = self.create(sobject, **{**values, field: value})
            return {"id": record["Id"], "success": True, "errors": [], "created": True}, True
        self.update(sobject, existing["Id"], **values)
        return {"id": existing["Id"], "success": True, "errors": [], "created": False}, False

    def _resolve(self, sobject, relationship, reference):
        target = relationship  # Account, Owner... only the standard name = type cases here
        pairs = [(k, v) for k, v in reference.items() if k != "attributes"]
        if target not in self.records or len(pairs) != 1:
            return None, {"statusCode": "INVALID_FIELD", "fields": [relationship],
                          "message": f"Invalid relationship {relationship} on {sobject}"}
        key, val = pairs[0]
        found = self.find(target, **{key: val})
        if found is None:
            return None, {"statusCode": "INVALID_FIELD", "fields": [],
                          "message": f"Foreign key external ID: {val} not found for field "
                                     f"{key} in entity {target}"}
        return found["Id"], None

    def _validate(self, sobject, record):
        missing = [f for f in REQUIRED.get(sobject, []) if record.get(f) in (None, "")]
        if missing:
            return {"statusCode": "REQUIRED_FIELD_MISSING", "fields": missing,
                    "message": f"Required fields are missing: [{', '.join(missing)}]"}
        if record.get("Email") and "@" not in record["Email"]:
            return {"statusCode": "INVALID_EMAIL_ADDRESS", "fields": ["Email"],
                    "message": f"Email: invalid email address: {record['Email']}"}
        if sobject == "Opportunity" and record["StageName"] not in {s[0] for s in STAGES}:
            return {"statusCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    "fields": ["StageName"],
                    "message": f"Stage: bad value for restricted picklist field: "
                               f"{record['StageName']}"}
        for rule_object, predicate, message, code in self.validation_rules:
            if rule_object == sobject and predicate(record):
                return {"statusCode": code, "fields": [], "message": message}
        return None

    # --- HTTP ------------------------------------------------------------------------------

    def _token(self, request):
        form = {k: v[0] for k, v in parse_qs(_text(request.body)).items()}
        if form.get("grant_type") != JWT_GRANT:
            return _json(400, {"error": "unsupported_grant_type",
                               "error_description": "grant type not supported"})
        try:
            claims = jwt.decode(form.get("assertion", ""), self.public_key,
                                algorithms=["RS256"], audience=AUDIENCES)
        except jwt.PyJWTError:
            return _json(400, {"error": "invalid_grant",
                               "error_description": "invalid assertion"})
        if claims.get("iss") != self.consumer_key:
            return _json(400, {"error": "invalid_client_id",
                               "error_description": "client identifier invalid"})
        if claims.get("sub") != self.username or self.revoked:
            return _json(400, {"error": "invalid_app_access",
                               "error_description": "user is not admin approved to access "
                                                    "this app"})
        self.logins.append(JWT_GRANT)
        return _json(200, self._issue())

    def _issue(self) -> dict:
        token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(48)}"
        self.tokens.add(token)
        self.issued_tokens.append(token)
        return {"access_token": token, "scope": "api", "token_type": "Bearer",
                "instance_url": f"https://{self.instance}",
                "id": f"https://login.salesforce.com/id/{ORG_ID}/0055g00000USER1AAA",
                "issued_at": str(int(datetime.now(UTC).timestamp() * 1000))}

    def _soap(self, request):
        body = _text(request.body)
        username = _xml_value(body, "username")
        password = _xml_value(body, "password")
        expected = f"{self.password}{self.security_token}"
        if self.password is None or username != self.username or password != expected:
            fault = ("<?xml version=\"1.0\"?><soapenv:Envelope xmlns:soapenv=\"http://"
                     "schemas.xmlsoap.org/soap/envelope/\" xmlns:sf=\"urn:fault.partner.soap."
                     "sforce.com\"><soapenv:Body><soapenv:Fault><faultcode>INVALID_LOGIN"
                     "</faultcode><detail><sf:LoginFault><sf:exceptionCode>INVALID_LOGIN"
                     "</sf:exceptionCode><sf:exceptionMessage>Invalid username, password, "
                     "security token; or user locked out.</sf:exceptionMessage>"
                     "</sf:LoginFault></detail></soapenv:Fault></soapenv:Body>"
                     "</soapenv:Envelope>")
            return 500, {"Content-Type": "text/xml"}, fault
        self.logins.append("soap")
        token = self._issue()["access_token"]
        server = f"https://{self.instance}/services/Soap/u/59.0/{ORG_ID}"
        ok = ("<?xml version=\"1.0\"?><soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap"
              ".org/soap/envelope/\"><soapenv:Body><loginResponse><result><serverUrl>"
              f"{server}</serverUrl><sessionId>{token}</sessionId></result></loginResponse>"
              "</soapenv:Body></soapenv:Envelope>")
        return 200, {"Content-Type": "text/xml"}, ok

    def _data(self, request):
        url = urlparse(request.url)
        match = DATA.match(url.path)
        if not match:
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        version, path = match["version"], match["path"].rstrip("/")
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") not in self.tokens:
            return _error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        self.calls.append((request.method, path))
        for failure in list(self.failures):
            if failure["path"] in path:
                if failure["times"] is not None:
                    failure["times"] -= 1
                    if failure["times"] <= 0:
                        self.failures.remove(failure)
                headers = ({"Retry-After": str(failure["retry_after"])}
                           if failure["retry_after"] is not None else {})
                return _error(failure["status"], failure["code"], failure["message"], headers)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = json.loads(_text(request.body), parse_float=Decimal) if request.body else None
        try:
            return self._route(request.method, version, path, query, body)
        except SoqlError as exc:
            return _error(400, exc.code, exc.message)

    def _route(self, method, version, path, query, body):
        parts = path.split("/")
        if method == "PATCH" and parts[:2] == ["composite", "sobjects"] and len(parts) == 4:
            return self._collection_upsert(parts[2], parts[3], body)
        if method == "PATCH" and parts[0] == "sobjects" and len(parts) == 4:
            result, created = self._single_upsert(parts[1], parts[2], parts[3], body)
            return result
        if method == "GET" and parts == ["query"]:
            return self._query(version, query.get("q", ""))
        if method == "GET" and parts[0] == "query" and len(parts) == 2:
            return self._query_more(version, parts[1])
        if method == "GET" and parts[0] == "sobjects" and len(parts) == 3 \
                and parts[2] == "describe" and parts[1] in PREFIXES:
            return _json(200, self._describe(parts[1]))
        if method == "GET" and parts[0] == "sobjects" and len(parts) == 3 \
                and parts[1] in PREFIXES:
            return self._get(version, parts[1], parts[2], query.get("fields"))
        if method == "GET" and parts == ["limits"]:
            return _json(200, {"DailyApiRequests": {"Max": 100000,
                                                    "Remaining": 100000 - len(self.calls)}})
        return _error(404, "NOT_FOUND", "The requested resource does not exist")

    def _collection_upsert(self, sobject, field, body):
        if sobject not in FIELDS:
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        if field not in self.fields_of(sobject) or field != self.ext_field:
            return _error(400, "INVALID_FIELD", f"Provided external ID field does not exist "
                                                f"or is not accessible: {field}")
        records = (body or {}).get("records")
        if not isinstance(records, list):
            return _error(400, "JSON_PARSER_ERROR", "records is required")
        if len(records) > 200:
            return _error(400, "EXCEEDED_ID_LIMIT",
                          "Maximum number of records allowed in a single call is 200")
        if any((r.get("attributes") or {}).get("type") != sobject for r in records):
            return _error(400, "INVALID_TYPE", "Each record needs attributes.type " + sobject)
        results = []
        for record in records:
            value = record.get(field)
            if not value:
                results.append({"success": False, "errors": [{
                    "statusCode": "MISSING_ARGUMENT", "fields": [field],
                    "message": f"{field} not specified"}]})
                continue
            result, _ = self._upsert(sobject, field, value, record)
            results.append(result)
        return _json(200, results)

    def _single_upsert(self, sobject, field, value, body):
        if field != self.ext_field or sobject not in FIELDS:
            return _error(404, "NOT_FOUND", f"Provided external ID field does not exist or "
                                            f"is not accessible: {field}"), False
        result, created = self._upsert(sobject, field, value, body or {})
        if not result["success"]:
            return _json(400, [{"errorCode": e["statusCode"], "message": e["message"],
                                "fields": e["fields"]} for e in result["errors"]]), False
        if created:
            return _json(201, result), True
        return (204, {}, ""), False

    def _get(self, version, sobject, record_id, fields):
        record = self.records[sobject].get(record_id)
        if record is None:
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        names = fields.split(",") if fields else self.fields_of(sobject)
        return _json(200, {"attributes": self._attributes(version, sobject, record_id),
                           **{n: record.get(n) for n in names}})

    def _attributes(self, version, sobject, record_id):
        return {"type": sobject,
                "url": f"/services/data/v{version}/sobjects/{sobject}/{record_id}"}

    # --- SOQL ------------------------------------------------------------------------------

    def _query(self, version, soql):
        select, sobject, where, order, limit = parse_soql(soql)
        if sobject not in self.records:
            raise SoqlError("INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
        for name in select:
            self._check_field(sobject, name)
        rows = [r for r in self.records[sobject].values()
                if where is None or self._matches(sobject, r, where)]
        for name, descending in reversed(order):
            self._check_field(sobject, name)
            rows.sort(key=lambda r, n=name: _sort_key(self._value(sobject, r, n)),
                      reverse=descending)
        if limit is not None:
            rows = rows[:limit]
        shaped = [self._shape(version, sobject, r, select) for r in rows]
        locator = f"01g5g00000{secrets.token_hex(4).upper()}"
        self._cursors[locator] = shaped
        return self._page(version, locator, 0)

    def _query_more(self, version, token):
        locator, _, offset = token.partition("-")
        if locator not in self._cursors or not offset.isdigit():
            return _error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(version, locator, int(offset))

    def _page(self, version, locator, offset):
        rows = self._cursors[locator]
        page = rows[offset:offset + self.query_batch_size]
        done = offset + len(page) >= len(rows)
        answer = {"totalSize": len(rows), "done": done, "records": page}
        if not done:
            answer["nextRecordsUrl"] = (f"/services/data/v{version}/query/"
                                        f"{locator}-{offset + len(page)}")
        return _json(200, answer)

    def _check_field(self, sobject, name):
        base, _, rest = name.partition(".")
        if rest:
            if f"{base}Id" not in self.fields_of(sobject) or rest not in self.fields_of(base):
                raise SoqlError("INVALID_FIELD", f"No such column '{name}' on entity "
                                                 f"'{sobject}'.")
        elif name not in self.fields_of(sobject):
            raise SoqlError("INVALID_FIELD", f"No such column '{name}' on entity '{sobject}'.")

    def _value(self, sobject, record, name):
        base, _, rest = name.partition(".")
        if rest:
            parent = self.records.get(base, {}).get(record.get(f"{base}Id") or "")
            return parent.get(rest) if parent else None
        return record.get(name)

    def _shape(self, version, sobject, record, select):
        row = {"attributes": self._attributes(version, sobject, record["Id"])}
        for name in select:
            base, _, rest = name.partition(".")
            if not rest:
                row[name] = record.get(name)
                continue
            parent = self.records[base].get(record.get(f"{base}Id") or "")
            if parent is None:
                row[base] = None
                continue
            nested = row.get(base) or {"attributes": self._attributes(version, base,
                                                                      parent["Id"])}
            nested[rest] = parent.get(rest)
            row[base] = nested
        return row

    def _matches(self, sobject, record, node):
        kind = node[0]
        if kind == "and":
            return all(self._matches(sobject, record, n) for n in node[1])
        if kind == "or":
            return any(self._matches(sobject, record, n) for n in node[1])
        _, name, op, literal = node
        self._check_field(sobject, name)
        value = _comparable(self._value(sobject, record, name), literal)
        if op == "IN":
            return value in literal
        if op == "NOT IN":
            return value not in literal
        if op in ("=", "!=", "<>"):
            return (value == literal) == (op == "=")
        if value is None or literal is None:
            return False
        return {"<": value < literal, ">": value > literal, "<=": value <= literal,
                ">=": value >= literal}[op]


# --- A small SOQL parser -------------------------------------------------------------------

TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:[^'\\]|\\.)*') |
    (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})) |
    (?P<date>\d{4}-\d{2}-\d{2}) |
    (?P<num>-?\d+(?:\.\d+)?) |
    (?P<op><=|>=|!=|<>|=|<|>|\(|\)|,) |
    (?P<word>[A-Za-z_][\w.]*)
)""", re.VERBOSE)


def tokenize(soql: str) -> list[tuple[str, str]]:
    tokens, pos, soql = [], 0, soql.strip()
    while pos < len(soql):
        match = TOKEN.match(soql, pos)
        if not match or match.end() == pos:
            raise SoqlError("MALFORMED_QUERY", f"unexpected character at {pos}: {soql[pos:]}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def parse_soql(soql: str):
    """SELECT a, b.c FROM X [WHERE expr] [ORDER BY f [ASC|DESC], ...] [LIMIT n]."""
    tokens = tokenize(soql)
    pos = 0

    def peek(word=None):
        if pos >= len(tokens):
            return None
        kind, text = tokens[pos]
        if word is None:
            return tokens[pos]
        return text.upper() == word if kind == "word" else text == word

    def take(word=None):
        nonlocal pos
        if word is not None and not peek(word):
            got = tokens[pos][1] if pos < len(tokens) else "end of query"
            raise SoqlError("MALFORMED_QUERY", f"expecting '{word}', found '{got}'")
        if pos >= len(tokens):
            raise SoqlError("MALFORMED_QUERY", "unexpected end of query")
        pos += 1
        return tokens[pos - 1]

    take("SELECT")
    select = [take()[1]]
    while peek(","):
        take(",")
        select.append(take()[1])
    take("FROM")
    sobject = take()[1]

    def literal():
        kind, text = take()
        if kind == "str":
            return text[1:-1].replace("\\'", "'")
        if kind == "datetime":
            return datetime.fromisoformat(text)
        if kind == "date":
            return date.fromisoformat(text)
        if kind == "num":
            return Decimal(text)
        if kind == "word" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if kind == "word" and text.lower() == "null":
            return None
        raise SoqlError("MALFORMED_QUERY", f"unexpected token '{text}'")

    def condition():
        if peek("("):
            take("(")
            node = expression()
            take(")")
            return node
        name = take()[1]
        if peek("NOT"):
            take("NOT")
            take("IN")
            op = "NOT IN"
        elif peek("IN"):
            take("IN")
            op = "IN"
        else:
            op = take()[1]
        if op in ("IN", "NOT IN"):
            take("(")
            values = [literal()]
            while peek(","):
                take(",")
                values.append(literal())
            take(")")
            return ("cmp", name, op, values)
        if op not in ("=", "!=", "<>", "<", ">", "<=", ">="):
            raise SoqlError("MALFORMED_QUERY", f"unknown operator {op}")
        return ("cmp", name, op, literal())

    def conjunction():
        nodes = [condition()]
        while peek("AND"):
            take("AND")
            nodes.append(condition())
        return nodes[0] if len(nodes) == 1 else ("and", nodes)

    def expression():
        nodes = [conjunction()]
        while peek("OR"):
            take("OR")
            nodes.append(conjunction())
        return nodes[0] if len(nodes) == 1 else ("or", nodes)

    where = None
    if peek("WHERE"):
        take("WHERE")
        where = expression()
    order = []
    if peek("ORDER"):
        take("ORDER")
        take("BY")
        while True:
            name = take()[1]
            descending = False
            if peek("ASC") or peek("DESC"):
                descending = take()[1].upper() == "DESC"
            order.append((name, descending))
            if not peek(","):
                break
            take(",")
    limit = None
    if peek("LIMIT"):
        take("LIMIT")
        limit = int(take()[1])
    if pos != len(tokens):
        raise SoqlError("MALFORMED_QUERY", f"unexpected token '{tokens[pos][1]}'")
    return select, sobject, where, order, limit


def _comparable(value, literal):
    """Stored values are JSON-ish: turn them into the literal's type for comparison."""
    sample = literal[0] if isinstance(literal, list) and literal else literal
    if isinstance(sample, datetime) and isinstance(value, str):
        return datetime.fromisoformat(value)
    if isinstance(sample, date) and not isinstance(sample, datetime) and isinstance(value,
                                                                                   str):
        return date.fromisoformat(value)
    if isinstance(sample, Decimal) and value is not None:
        return Decimal(str(value))
    return value


def _sort_key(value):
    return (value is not None, value if value is not None else "")


def _type_of(name):
    if name == "Id" or name.endswith("Id"):
        return "id" if name == "Id" else "reference"
    if name in ("CreatedDate", "LastModifiedDate", "SystemModstamp"):
        return "datetime"
    if name.startswith("Is"):
        return "boolean"
    return {"Amount": "currency", "CloseDate": "date", "Email": "email", "Phone": "phone",
            "Website": "url", "SortOrder": "int"}.get(name, "string")


def _xml_value(body, tag):
    match = re.search(rf"<(?:\w+:)?{tag}>(.*?)</(?:\w+:)?{tag}>", body, re.S)
    if not match:
        return None
    from html import unescape

    return unescape(match.group(1))


def _text(body) -> str:
    if body is None:
        return ""
    return body.decode() if isinstance(body, bytes) else str(body)


def _json(status, payload, headers=None):
    return status, {"Content-Type": "application/json;charset=UTF-8", **(headers or {})}, \
        json.dumps(payload, default=_default)


def _default(value):
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(type(value))


def _error(status, code, message, headers=None):
    return _json(status, [{"message": message, "errorCode": code}], headers)
