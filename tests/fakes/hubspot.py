"""A fake HubSpot on pytest-httpserver: the CRM endpoints PartnerHub calls, over an in-memory
store, answering in HubSpot's JSON so the real hubspot-api-client can parse it.

Covered: account details, deal pipelines, batch upsert (unique-property semantics, 207 with
per-row errors when every input carries an objectWriteTraceId, 400 otherwise), batch read,
deal search (filterGroups, sorts, after paging), object GET with associations, and v4 default
associations and association reads. A Bearer token is required (401 with HubSpot's error
JSON otherwise). `fail_next` programs 429/5xx answers; `calls` counts requests per endpoint.
"""

import itertools
import json
import re
import threading
import time
import uuid
from collections import Counter, deque
from datetime import UTC, datetime

from werkzeug.wrappers import Request, Response

TOKEN = "pat-na1-7f3c1a2e-5b6d-4c8e-9f00-fake00hubspot"
REFERRAL_ID = "partnerhub_referral_id"
OBJECT_TYPES = {"companies": "COMPANY", "contacts": "CONTACT", "deals": "DEAL"}
ALIASES = {"company": "companies", "contact": "contacts", "deal": "deals", "0-1": "contacts",
           "0-2": "companies", "0-3": "deals"}
STANDARD_PROPERTIES = {
    "companies": {"name", "domain", "website", "country", "phone", "city"},
    "contacts": {"email", "firstname", "lastname", "phone", "jobtitle", "company"},
    "deals": {"dealname", "amount", "closedate", "pipeline", "dealstage", "hubspot_owner_id",
              "description", "deal_currency_code"},
}
READ_ONLY = {"hs_object_id", "createdate", "hs_lastmodifieddate", "lastmodifieddate",
             "hs_is_closed"}
DATE_PROPERTIES = {"createdate", "hs_lastmodifieddate", "lastmodifieddate", "closedate"}
# Default (unlabeled) association types, both directions.
ASSOCIATION_TYPES = {("contacts", "companies"): 279, ("companies", "contacts"): 280,
                     ("deals", "companies"): 341, ("companies", "deals"): 342,
                     ("deals", "contacts"): 3, ("contacts", "deals"): 4}
ASSOCIATION_NAMES = {3: "deal_to_contact", 4: "contact_to_deal", 279: "contact_to_company",
                     280: "company_to_contact", 341: "deal_to_company_unlabeled",
                     342: "company_to_deal_unlabeled", 5: "deal_to_company"}


def _stage(id, label, order, probability, closed=False):
    return {"id": id, "label": label, "displayOrder": order,
            "metadata": {"isClosed": "true" if closed else "false",
                         "probability": str(probability)}}


DEFAULT_PIPELINES = [
    {"id": "default", "label": "Sales Pipeline", "displayOrder": 0, "stages": [
        _stage("appointmentscheduled", "Appointment Scheduled", 0, 0.2),
        _stage("qualifiedtobuy", "Qualified To Buy", 1, 0.4),
        _stage("presentationscheduled", "Presentation Scheduled", 2, 0.6),
        _stage("decisionmakerboughtin", "Decision Maker Bought-In", 3, 0.8),
        _stage("contractsent", "Contract Sent", 4, 0.9),
        _stage("closedwon", "Closed Won", 5, 1.0, closed=True),
        _stage("closedlost", "Closed Lost", 6, 0.0, closed=True)]},
    {"id": "7654321", "label": "Partner deals", "displayOrder": 1, "stages": [
        _stage("1001", "Registered", 0, 0.1),
        _stage("1002", "Negotiation", 1, 0.5),
        _stage("1003", "Won", 2, 1.0, closed=True),
        _stage("1004", "Lost", 3, 0.0, closed=True)]},
]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{ms % 1000:03d}Z"


def to_ms(value) -> int | None:
    if value in (None, ""):
        return None
    text = str(value)
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(round(moment.timestamp() * 1000))


class FakeHubSpot:
    def __init__(self, server, *, token: str = TOKEN, portal_id: int = 4242,
                 unique_properties=(REFERRAL_ID,), currencies=("USD", "EUR"),
                 owners=("501", "502"), ui_domain: str = "app.hubspot.com"):
        self.server = server
        self.token = token
        self.portal_id = portal_id
        self.ui_domain = ui_domain
        self.currencies = list(currencies)
        self.owners = set(owners)
        self.unique = {"companies": set(unique_properties), "deals": set(unique_properties),
                       "contacts": {"email"}}
        self.objects = {name: {} for name in OBJECT_TYPES}
        # {object type: {unique property: {lowercased value: id}}}: upserts stay O(1)
        self._unique_index = {name: {prop: {} for prop in props}
                              for name, props in self.unique.items()}
        self.links: dict = {}  # (from type, from id, to type) -> {to id: {type ids}}
        self.pipelines = json.loads(json.dumps(DEFAULT_PIPELINES))
        self.calls: Counter = Counter()
        self.requests: list = []  # (label, parsed JSON body or None)
        self._failures: deque = deque()
        self._ids = itertools.count(18_000_001)
        self._last_ms = 0
        self._lock = threading.Lock()
        server.expect_request(re.compile(r"^/.*")).respond_with_handler(self.handle)

    # --- for tests ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.server.url_for("/").rstrip("/")

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def fail_next(self, count: int, status: int = 429, retry_after=None, only: str = ""):
        """The next `count` requests (to the endpoint labelled `only`, if given) answer
        `status`: 429 is HubSpot's rate-limit JSON, 5xx a gateway error page."""
        for _ in range(count):
            self._failures.append((status, retry_after, only))

    def find(self, object_type: str, prop: str, value: str) -> dict | None:
        index = self._unique_index[object_type].get(prop)
        if index is not None:
            object_id = index.get(str(value).lower())
            return self.objects[object_type][object_id] if object_id else None
        return next((o for o in self.objects[object_type].values()
                     if str(o["properties"].get(prop, "")).lower() == str(value).lower()),
                    None)

    def associated(self, from_type: str, from_id: str, to_type: str) -> set:
        return set(self.links.get((from_type, str(from_id), to_type), {}))

    def update(self, object_type: str, object_id: str, **properties) -> dict:
        """A change made in HubSpot by a person (moves hs_lastmodifieddate)."""
        with self._lock:
            record = self.objects[object_type][str(object_id)]
            self._write(object_type, record, properties)
            return record

    def create(self, object_type: str, **properties) -> dict:
        with self._lock:
            return self._create(object_type, properties)

    def last_request(self, label: str):
        return next((body for name, body in reversed(self.requests) if name == label), None)

    # --- plumbing -----------------------------------------------------------------------

    ROUTES = [
        ("GET", r"/account-info/v3/details", "account", "_account"),
        ("GET", r"/crm/v3/pipelines/(deals)", "pipelines", "_pipelines"),
        ("POST", r"/crm/v3/objects/(\w+)/batch/upsert", "{0}.upsert", "_upsert"),
        ("POST", r"/crm/v3/objects/(\w+)/batch/read", "{0}.read", "_read"),
        ("POST", r"/crm/v3/objects/(\w+)/search", "{0}.search", "_search"),
        ("GET", r"/crm/v3/objects/(\w+)/([^/]+)", "{0}.get", "_get"),
        ("POST", r"/crm/v4/associations/([\w-]+)/([\w-]+)/batch/associate/default",
         "associations.{0}.{1}.default", "_associate"),
        ("POST", r"/crm/v4/associations/([\w-]+)/([\w-]+)/batch/read",
         "associations.{0}.{1}.read", "_association_read"),
    ]

    def handle(self, request: Request) -> Response:
        label, name, args = self._route(request)
        body = request.get_json(silent=True) if request.method == "POST" else None
        with self._lock:
            self.calls[label] += 1
            self.requests.append((label, body))
            if not self._authorized(request):
                return self._error(401, "INVALID_AUTHENTICATION", self._auth_message(request))
            failure = self._take_failure(label)
            if failure:
                return self._failure(*failure)
            if name is None:
                return self._error(404, "OBJECT_NOT_FOUND", "Resource not found")
            if args and args[0] not in OBJECT_TYPES and name not in ("_pipelines",):
                return self._error(400, "VALIDATION_ERROR", f"Unknown object type {args[0]}")
            return getattr(self, name)(request, body or {}, *args)

    def _route(self, request):
        for method, pattern, label, name in self.ROUTES:
            match = re.fullmatch(pattern, request.path)
            if match and request.method == method:
                args = [ALIASES.get(a, a) for a in match.groups()]
                return label.format(*args), name, args
        return f"{request.method} {request.path}", None, []

    def _authorized(self, request) -> bool:
        return request.headers.get("Authorization", "") == f"Bearer {self.token}"

    def _auth_message(self, request) -> str:
        if not request.headers.get("Authorization", "").removeprefix("Bearer ").strip():
            return ("Authentication credentials not found. This API supports OAuth 2.0 "
                    "authentication and you can find more details at "
                    "https://developers.hubspot.com/docs/methods/auth/oauth-overview")
        return "The access token provided is invalid, expired or revoked."

    def _take_failure(self, label):
        for index, failure in enumerate(self._failures):
            if not failure[2] or failure[2] == label:
                del self._failures[index]
                return failure
        return None

    def _failure(self, status, retry_after, _only):
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        if status == 429:
            return self._json(429, {
                "status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()),
                "policyName": "TEN_SECONDLY_ROLLING"}, headers)
        return Response(f"<html><body><h1>{status} Bad Gateway</h1></body></html>",
                        status=status, headers=headers, content_type="text/html")

    def _json(self, status, data, headers=None) -> Response:
        return Response(json.dumps(data), status=status, headers=headers or {},
                        content_type="application/json;charset=utf-8")

    def _error(self, status, category, message, **extra) -> Response:
        return self._json(status, {"status": "error", "message": message,
                                   "correlationId": str(uuid.uuid4()), "category": category,
                                   **extra})

    def _now(self) -> int:
        """Milliseconds, strictly increasing: every write has its own modification time."""
        self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
        return self._last_ms

    def _batch(self, results, errors=()) -> Response:
        now = iso(self._now())
        data = {"status": "COMPLETE", "results": results, "requestedAt": now,
                "startedAt": now, "completedAt": now}
        if errors:
            data.update(numErrors=len(errors), errors=list(errors))
            return self._json(207, data)
        return self._json(200, data)

    # --- objects ------------------------------------------------------------------------

    def _create(self, object_type, properties) -> dict:
        object_id = str(next(self._ids))
        now = self._now()
        record = {"id": object_id, "createdAt": now, "updatedAt": now,
                  "properties": {"hs_object_id": object_id, "createdate": iso(now)}}
        if object_type == "deals":
            pipeline = self._pipeline(properties.get("pipeline") or "default")
            record["properties"].update(pipeline=pipeline["id"],
                                        dealstage=pipeline["stages"][0]["id"])
        self.objects[object_type][object_id] = record
        self._write(object_type, record, properties)
        return record

    def _write(self, object_type, record, properties) -> None:
        props = record["properties"]
        for name, value in properties.items():
            if name in DATE_PROPERTIES and to_ms(value) is not None:
                value = iso(to_ms(value))
            index = self._unique_index[object_type].get(name)
            if index is not None:
                index.pop(str(props.get(name, "")).lower(), None)
                if value not in (None, ""):
                    index[str(value).lower()] = record["id"]
            props[name] = "" if value is None else str(value)
        if object_type == "deals":
            stage = self._stage_of(props.get("pipeline"), props.get("dealstage"))
            props["hs_is_closed"] = stage["metadata"]["isClosed"] if stage else "false"
        now = self._now()
        record["updatedAt"] = now
        props["hs_lastmodifieddate"] = iso(now)
        if object_type == "contacts":
            props["lastmodifieddate"] = iso(now)

    def _public(self, record, properties=None) -> dict:
        props = record["properties"]
        if properties is not None:
            wanted = set(properties) | {"hs_object_id", "createdate", "hs_lastmodifieddate"}
            props = {k: v for k, v in props.items() if k in wanted}
            props.update({k: None for k in properties if k not in props})
        return {"id": record["id"], "properties": props, "createdAt": iso(record["createdAt"]),
                "updatedAt": iso(record["updatedAt"]), "archived": False}

    def _pipeline(self, pipeline_id):
        return next((p for p in self.pipelines if p["id"] == pipeline_id), None)

    def _stage_of(self, pipeline_id, stage_id):
        pipeline = self._pipeline(pipeline_id or "default")
        return next((s for s in (pipeline or {}).get("stages", []) if s["id"] == stage_id),
                    None)

    def _invalid(self, object_type, properties, existing) -> list[dict]:
        """HubSpot's property validation, as {isValid, message, error, name} entries."""
        problems = []

        def bad(name, error, message):
            problems.append({"isValid": False, "message": message, "error": error,
                             "name": name})

        known = STANDARD_PROPERTIES[object_type] | self.unique[object_type]
        for name in properties:
            if name in READ_ONLY:
                bad(name, "READ_ONLY_VALUE", f"{name} is a read only property; its value "
                                             "cannot be set.")
            elif name not in known:
                bad(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
        email = properties.get("email")
        if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
            bad("email", "INVALID_EMAIL", f"Email address {email} is invalid")
        if object_type != "deals":
            return problems
        if properties.get("amount") not in (None, ""):
            try:
                float(properties["amount"])
            except ValueError:
                bad("amount", "INVALID_FLOAT", f"{properties['amount']} was not a valid number.")
        if properties.get("closedate") not in (None, "") and to_ms(properties["closedate"]) \
                is None:
            bad("closedate", "INVALID_DATE", f"{properties['closedate']} is not a valid date")
        currency = properties.get("deal_currency_code")
        if currency and currency not in self.currencies:
            bad("deal_currency_code", "INVALID_OPTION",
                f"{currency} was not one of the allowed options: {self.currencies}")
        owner = properties.get("hubspot_owner_id")
        if owner and owner not in self.owners:
            bad("hubspot_owner_id", "INVALID_OWNER_ID", f"{owner} is not a valid owner id")
        pipeline_id = properties.get("pipeline") or (existing or {}).get(
            "properties", {}).get("pipeline") or "default"
        if self._pipeline(pipeline_id) is None:
            bad("pipeline", "INVALID_OPTION", f"{pipeline_id} is not a valid pipeline")
        elif properties.get("dealstage") and not self._stage_of(pipeline_id,
                                                               properties["dealstage"]):
            bad("dealstage", "INVALID_OPTION", f"{properties['dealstage']} is not a valid "
                                               f"deal stage in pipeline {pipeline_id}")
        return problems

    def _upsert(self, request, body, object_type):
        inputs = body.get("inputs") or []
        if len(inputs) > 100:
            return self._error(400, "VALIDATION_ERROR", "Batch size cannot exceed 100.")
        values = []
        for item in inputs:
            prop = item.get("idProperty")
            if prop not in self.unique[object_type]:
                return self._error(400, "VALIDATION_ERROR",
                                   f"{prop} is not a unique property of {object_type}.")
            values.append(str(item.get("id", "")).lower())
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            return self._error(400, "VALIDATION_ERROR", f"Duplicate IDs found in batch input: "
                                                        f"{duplicates}. IDs must be unique")
        traced = all(item.get("objectWriteTraceId") for item in inputs)
        checked = []
        for item in inputs:
            existing = self.find(object_type, item["idProperty"], item["id"])
            properties = {**(item.get("properties") or {}), item["idProperty"]: item["id"]}
            problems = self._invalid(object_type, properties, existing)
            checked.append((item, existing, problems))
        failing = [(item, problems) for item, _, problems in checked if problems]
        if failing and not traced:
            return self._error(400, "VALIDATION_ERROR", _problem_message(failing[0][1]))
        results, errors = [], []
        for item, existing, problems in checked:
            if problems:
                errors.append({"status": "error", "category": "VALIDATION_ERROR",
                               "message": _problem_message(problems), "errors": [],
                               "links": {}, "context": {
                                   "objectWriteTraceId": [item["objectWriteTraceId"]]}})
                continue
            properties = dict(item.get("properties") or {})
            properties[item["idProperty"]] = item["id"]
            if existing is None:
                record, new = self._create(object_type, properties), True
            else:
                record, new = existing, False
                self._write(object_type, record, properties)
            results.append({**self._public(record), "new": new})
        return self._batch(results, errors)

    def _read(self, request, body, object_type):
        id_property = body.get("idProperty") or "hs_object_id"
        found, missing = [], []
        for item in body.get("inputs") or []:
            record = (self.find(object_type, id_property, item.get("id"))
                      if id_property != "hs_object_id"
                      else self.objects[object_type].get(str(item.get("id"))))
            if record is None:
                missing.append(str(item.get("id")))
            else:
                found.append(self._public(record, body.get("properties") or []))
        errors = [{"status": "error", "category": "OBJECT_NOT_FOUND", "errors": [],
                   "links": {}, "context": {"ids": missing},
                   "message": f"Could not get some {OBJECT_TYPES[object_type]} objects, they "
                              "may be deleted or not exist. Check that ids are valid."}
                  ] if missing else []
        return self._batch(found, errors)

    def _get(self, request, body, object_type, object_id):
        record = self.objects[object_type].get(object_id)
        if record is None:
            return self._error(404, "OBJECT_NOT_FOUND",
                               "Object not found.  objectId are usually numeric.")
        wanted = _multi(request.args, "properties")
        data = self._public(record, wanted or None)
        associations = {}
        for to_type in _multi(request.args, "associations"):
            to_type = ALIASES.get(to_type, to_type)
            links = self.links.get((object_type, object_id, to_type), {})
            if links:
                associations[to_type] = {"results": [
                    {"id": to_id, "type": ASSOCIATION_NAMES.get(type_id, "unlabeled")}
                    for to_id, types in links.items() for type_id in sorted(types)]}
        if associations:
            data["associations"] = associations
        return self._json(200, data)

    def _search(self, request, body, object_type):
        limit = min(int(body.get("limit") or 10), 200)
        after = int(body.get("after") or 0)
        if after + limit > 10_000:
            return self._error(400, "VALIDATION_ERROR",
                               "Search results are limited to 10,000 records.")
        groups = body.get("filterGroups") or []
        records = [r for r in self.objects[object_type].values()
                   if not groups or any(all(_matches(r["properties"], f)
                                            for f in g.get("filters", [])) for g in groups)]
        records.sort(key=lambda r: int(r["id"]))
        for sort in reversed(body.get("sorts") or []):
            if isinstance(sort, str):
                sort = {"propertyName": sort.lstrip("-"),
                        "direction": "DESCENDING" if sort.startswith("-") else "ASCENDING"}
            name = sort["propertyName"]
            records.sort(key=lambda r: _sort_key(name, r["properties"].get(name)),
                         reverse=sort.get("direction") == "DESCENDING")
        page = records[after:after + limit]
        data = {"total": len(records),
                "results": [self._public(r, body.get("properties") or []) for r in page]}
        if after + limit < len(records):
            data["paging"] = {"next": {"after": str(after + limit),
                                       "link": f"?after={after + limit}"}}
        return self._json(200, data)

    # --- associations, pipelines, account -----------------------------------------------

    def _associate(self, request, body, from_type, to_type):
        type_id = ASSOCIATION_TYPES.get((from_type, to_type))
        if type_id is None or to_type not in OBJECT_TYPES:
            return self._error(400, "VALIDATION_ERROR",
                               f"No default association from {from_type} to {to_type}.")
        results = []
        for item in body.get("inputs") or []:
            a, b = str(item["from"]["id"]), str(item["to"]["id"])
            if a not in self.objects[from_type] or b not in self.objects[to_type]:
                return self._error(400, "VALIDATION_ERROR",
                                   f"Object {a} or {b} does not exist.")
            self.links.setdefault((from_type, a, to_type), {}).setdefault(b, set()).add(type_id)
            self.links.setdefault((to_type, b, from_type), {}).setdefault(a, set()).add(
                ASSOCIATION_TYPES[(to_type, from_type)])
            results.append({"from": {"id": a}, "to": {"id": b}, "associationSpec": {
                "associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}})
        return self._batch(results)

    def _association_read(self, request, body, from_type, to_type):
        results = []
        for item in body.get("inputs") or []:
            links = self.links.get((from_type, str(item["id"]), to_type), {})
            if links:
                results.append({"from": {"id": str(item["id"])}, "to": [
                    {"toObjectId": int(to_id), "associationTypes": [
                        {"category": "HUBSPOT_DEFINED", "typeId": t, "label": None}
                        for t in sorted(types)]} for to_id, types in links.items()]})
        return self._batch(results)

    def _pipelines(self, request, body, object_type):
        epoch = iso(1_600_000_000_000)
        stamp = {"createdAt": epoch, "updatedAt": epoch, "archived": False}
        return self._json(200, {"results": [
            {**p, **stamp, "stages": [{**s, **stamp, "writePermissions":
                                       "CRM_PERMISSIONS_ENFORCEMENT"} for s in p["stages"]]}
            for p in self.pipelines]})

    def _account(self, request, body):
        return self._json(200, {
            "portalId": self.portal_id, "accountType": "STANDARD", "timeZone": "US/Eastern",
            "companyCurrency": self.currencies[0], "additionalCurrencies": self.currencies[1:],
            "utcOffset": "-05:00", "utcOffsetMilliseconds": -18_000_000,
            "uiDomain": self.ui_domain, "dataHostingLocation": "na1"})


def _problem_message(problems) -> str:
    return f"Property values were not valid: {json.dumps(problems)}"


def _multi(args, name) -> list[str]:
    values = []
    for raw in args.getlist(name):
        values += [v for v in raw.split(",") if v]
    return values


def _sort_key(name, value):
    if name in DATE_PROPERTIES:
        return (0, to_ms(value) or 0, "")
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0, str(value or ""))


def _matches(properties: dict, flt: dict) -> bool:
    name, op = flt.get("propertyName"), flt.get("operator", "EQ")
    actual = properties.get(name)
    if op == "HAS_PROPERTY":
        return actual not in (None, "")
    if op == "NOT_HAS_PROPERTY":
        return actual in (None, "")
    if op in ("IN", "NOT_IN"):
        inside = str(actual).lower() in {str(v).lower() for v in flt.get("values", [])}
        return inside if op == "IN" else not inside
    if actual in (None, ""):
        return op == "NEQ"
    expected = flt.get("value")
    if name in DATE_PROPERTIES:
        left, right = to_ms(actual), to_ms(expected)
    else:
        try:
            left, right = float(actual), float(expected)
        except (TypeError, ValueError):
            left, right = str(actual).lower(), str(expected).lower()
    return {"EQ": left == right, "NEQ": left != right, "GT": left > right,
            "GTE": left >= right, "LT": left < right, "LTE": left <= right}.get(op, False)
