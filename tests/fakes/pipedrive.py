"""A fake Pipedrive for tests: pytest-httpserver in front of an in-memory store.

It speaks the parts of the documented REST API that the connector uses, with Pipedrive's
envelopes ({success, data, additional_data}; errors {success: false, error, error_info}):

    GET   /api/v1/users/me                  GET   /api/v2/pipelines, /api/v2/stages
    GET   /api/v2/{deals,organizations,persons,leads}/search
    GET   /api/v2/deals (updated_since, sort, cursor pages)    GET/PATCH /api/v2/deals/{id}
    POST  /api/v2/{organizations,persons,deals}                 POST /api/v1/leads
    PATCH /api/v1/leads/{id}                 (v1 paths also answer without the /api prefix)

Requests must carry the API token in `x-api-token` (Pipedrive also takes `?api_token=`, which
the fake accepts too, so a test can prove it never arrives that way). Search honours
`exact_match` (whole value, case-insensitive) and `fields`. Failures can be programmed per path
(`fail(429, retry_after=30)`), and every request is counted and logged.
"""

import base64
import itertools
import json
import re
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from werkzeug import Request, Response

API_TOKEN = "pd-test-token-6f1c2b9a7e"
COMPANY_DOMAIN = "acme"
REFERRAL_FIELD = "8f3c1d2e4b5a69788796a5b4c3d2e1f0a9b8c7d6"  # a deal custom field's API key


class FakePipedrive:
    def __init__(self, httpserver, *, api_token: str = API_TOKEN):
        self.server = httpserver
        self.api_token = api_token
        self.url = httpserver.url_for("/").rstrip("/")
        self.calls: Counter = Counter()  # "POST /api/v2/deals" -> count
        self.requests: list[dict] = []  # method, path, query, headers, json
        self.failures: list[dict] = []
        self.max_limit = 500  # Pipedrive's largest page; tests lower it to exercise paging
        self.clock = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
        self._ids = itertools.count(1)
        self.user = {"id": 7001, "name": "Integration User", "email": "crm-bot@acme.example",
                     "company_id": 900, "company_name": "Acme Cloud Inc",
                     "company_domain": COMPANY_DOMAIN, "company_country": "US",
                     "is_admin": True, "active_flag": True, "timezone_name": "Europe/Tallinn"}
        self.deal_fields = {REFERRAL_FIELD}  # custom field keys that exist (leads share them)
        self.pipelines = {1: {"id": 1, "name": "Sales", "order_nr": 1, "is_deleted": False},
                          2: {"id": 2, "name": "Renewals", "order_nr": 2, "is_deleted": False}}
        self.stages = {
            11: {"id": 11, "pipeline_id": 1, "order_nr": 1, "name": "Qualified"},
            12: {"id": 12, "pipeline_id": 1, "order_nr": 2, "name": "Proposal"},
            13: {"id": 13, "pipeline_id": 1, "order_nr": 3, "name": "Contract signed"},
            21: {"id": 21, "pipeline_id": 2, "order_nr": 1, "name": "Up for renewal"},
        }
        self.organizations: dict[int, dict] = {}
        self.persons: dict[int, dict] = {}
        self.deals: dict[int, dict] = {}
        self.leads: dict[str, dict] = {}
        httpserver.expect_request(re.compile(r"^/.*")).respond_with_handler(self._handle)

    # --- Test controls --------------------------------------------------------------------

    def fail(self, status: int, *, times: int | None = 1, path: str = "", method: str = "",
             retry_after: str | None = None) -> None:
        """Answer the next `times` matching requests (None: all of them) with `status`."""
        self.failures.append({"status": status, "times": times, "path": path,
                              "method": method.upper(), "retry_after": retry_after})

    def heal(self) -> None:
        self.failures.clear()

    def count(self, method: str, path: str) -> int:
        return self.calls[f"{method.upper()} {path}"]

    def tick(self) -> str:
        self.clock += timedelta(seconds=1)
        return self.clock.strftime("%Y-%m-%dT%H:%M:%SZ")

    def add_organization(self, name: str) -> dict:
        org_id = next(self._ids)
        now = self.tick()
        self.organizations[org_id] = {
            "id": org_id, "name": name, "owner_id": self.user["id"], "add_time": now,
            "update_time": now, "is_deleted": False, "visible_to": 3, "label_ids": [],
            "address": None, "custom_fields": {}}
        return self.organizations[org_id]

    def add_person(self, name: str, email: str = "", org_id: int | None = None,
                   phone: str = "") -> dict:
        person_id = next(self._ids)
        now = self.tick()
        first, _, last = name.partition(" ")
        self.persons[person_id] = {
            "id": person_id, "name": name, "first_name": first, "last_name": last,
            "owner_id": self.user["id"], "org_id": org_id, "add_time": now, "update_time": now,
            "emails": [{"value": email, "primary": True, "label": "work"}] if email else [],
            "phones": [{"value": phone, "primary": True, "label": "work"}] if phone else [],
            "is_deleted": False, "visible_to": 3, "label_ids": [], "custom_fields": {}}
        return self.persons[person_id]

    def add_deal(self, title: str, **fields) -> dict:
        deal_id = next(self._ids)
        now = self.tick()
        pipeline_id = fields.pop("pipeline_id", 1)
        first_stage = min((s for s in self.stages.values() if s["pipeline_id"] == pipeline_id),
                          key=lambda s: s["order_nr"])
        deal = {"id": deal_id, "title": title, "creator_user_id": self.user["id"],
                "owner_id": self.user["id"], "person_id": None, "org_id": None,
                "pipeline_id": pipeline_id, "stage_id": first_stage["id"], "value": 0,
                "currency": "USD", "add_time": now, "update_time": now,
                "stage_change_time": None, "is_deleted": False, "is_archived": False,
                "status": "open", "probability": None, "lost_reason": None, "visible_to": 3,
                "close_time": None, "won_time": None, "lost_time": None,
                "expected_close_date": None, "label_ids": [], "origin": "API",
                "custom_fields": {key: None for key in sorted(self.deal_fields)}}
        custom = fields.pop("custom_fields", {}) or {}
        deal.update(fields)
        deal["custom_fields"].update(custom)
        self.deals[deal_id] = deal
        return deal

    def update_deal(self, deal_id: int, **fields) -> tuple[dict, dict]:
        """A salesperson edits the deal in Pipedrive. Returns (deal, previous values)."""
        deal = self.deals[deal_id]
        previous = {k: deal.get(k) for k in fields}
        now = self.tick()
        if "stage_id" in fields:
            fields.setdefault("stage_change_time", now)
        if fields.get("status") == "won":
            fields.setdefault("won_time", now)
            fields.setdefault("close_time", now)
        if fields.get("status") == "lost":
            fields.setdefault("lost_time", now)
            fields.setdefault("close_time", now)
        deal.update(fields, update_time=now)
        return deal, previous

    def webhook(self, deal_id: int, *, action: str = "change", previous=None,
                event_id: str | None = None) -> dict:
        """The body Pipedrive webhooks v2 would POST for this deal as it is now."""
        deal = self.deals[deal_id]
        return {
            "meta": {
                "action": action, "entity": "deal", "company_id": str(self.user["company_id"]),
                "correlation_id": str(uuid.uuid4()), "entity_id": str(deal_id),
                "id": event_id or str(uuid.uuid4()), "is_bulk_edit": False,
                "timestamp": deal["update_time"].replace("Z", ".000Z"), "type": "general",
                "user_id": str(self.user["id"]), "version": "2.0", "webhook_id": "55",
                "webhook_owner_id": str(self.user["id"]), "change_source": "app",
                "attempt": 1, "host": f"{COMPANY_DOMAIN}.pipedrive.com",
                "permitted_user_ids": [str(self.user["id"])],
            },
            "data": json.loads(json.dumps(deal)),
            "previous": previous,
        }

    def urls_seen(self) -> list[str]:
        return [f"{r['path']}?{r['query']}" for r in self.requests]

    # --- HTTP -----------------------------------------------------------------------------

    ROUTES = [
        ("GET", r"/(?:api/)?v1/users/me", "_me"),
        ("GET", r"/api/v2/pipelines", "_list_pipelines"),
        ("GET", r"/api/v2/stages", "_list_stages"),
        ("GET", r"/api/v2/(deals|organizations|persons|leads)/search", "_search"),
        ("GET", r"/api/v2/deals", "_list_deals"),
        ("GET", r"/api/v2/deals/(\d+)", "_get_deal"),
        ("PATCH", r"/api/v2/deals/(\d+)", "_patch_deal"),
        ("POST", r"/api/v2/deals", "_create_deal"),
        ("POST", r"/api/v2/organizations", "_create_organization"),
        ("POST", r"/api/v2/persons", "_create_person"),
        ("POST", r"/(?:api/)?v1/leads", "_create_lead"),
        ("PATCH", r"/(?:api/)?v1/leads/([0-9a-f-]{36})", "_patch_lead"),
    ]

    def _handle(self, request: Request) -> Response:
        body = request.get_data(as_text=True)
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        self.requests.append({"method": request.method, "path": request.path,
                              "query": request.query_string.decode(),
                              "headers": dict(request.headers), "json": data})
        route = self._route(request)
        if route is None:
            return _error(404, "Unknown method .", "Please check developers.pipedrive.com")
        name, args = route
        self.calls[f"{request.method} {request.path}"] += 1
        token = request.headers.get("x-api-token") or request.args.get("api_token")
        if token != self.api_token:
            return _json({"success": False, "error": "unauthorized access", "errorCode": 401,
                          "error_info": "Please check developers.pipedrive.com"}, 401)
        failure = self._failure(request)
        if failure is not None:
            return failure
        return getattr(self, name)(request, data, *args)

    def _route(self, request):
        for method, pattern, name in self.ROUTES:
            match = re.fullmatch(pattern, request.path)
            if match and request.method == method:
                return name, match.groups()
        return None

    def _failure(self, request):
        for failure in self.failures:
            if failure["method"] and failure["method"] != request.method:
                continue
            if failure["path"] and failure["path"] != request.path:
                continue
            if failure["times"] is not None:
                failure["times"] -= 1
                if failure["times"] <= 0:
                    self.failures.remove(failure)
            status = failure["status"]
            if status == 429:
                headers = {"x-ratelimit-limit": "20", "x-ratelimit-remaining": "0",
                           "x-ratelimit-reset": "2"}
                if failure["retry_after"] is not None:
                    headers["Retry-After"] = failure["retry_after"]
                return _json({"success": False, "error": "Request over limit",
                              "errorCode": 429, "error_info": "Please slow down"}, 429, headers)
            if status >= 500:
                return _json({"success": False, "error": "Internal server error",
                              "errorCode": status, "error_info": None}, status)
            return _error(status, "Request refused", "Please check developers.pipedrive.com")
        return None

    # --- Endpoints ------------------------------------------------------------------------

    def _me(self, request, data):
        return _ok(self.user)

    def _list_pipelines(self, request, data):
        rows = sorted(self.pipelines.values(), key=lambda p: p["order_nr"])
        return self._page(request, rows)

    def _list_stages(self, request, data):
        pipeline = request.args.get("pipeline_id")
        rows = [dict(s, is_deleted=False, deal_probability=100) for s in self.stages.values()
                if pipeline is None or str(s["pipeline_id"]) == pipeline]
        return self._page(request, sorted(rows, key=lambda s: (s["pipeline_id"], s["order_nr"])))

    def _list_deals(self, request, data):
        rows = [d for d in self.deals.values() if not d["is_deleted"]]
        since = request.args.get("updated_since")
        if since:
            if not _rfc3339(since):
                return _error(400, "updated_since must be in RFC3339 format")
            rows = [d for d in rows if _rfc3339(d["update_time"]) >= _rfc3339(since)]
        sort_by = request.args.get("sort_by", "id")
        reverse = request.args.get("sort_direction", "asc") == "desc"
        rows.sort(key=lambda d: (d[sort_by], d["id"]), reverse=reverse)
        return self._page(request, rows)

    def _get_deal(self, request, data, deal_id):
        deal = self.deals.get(int(deal_id))
        if deal is None or deal["is_deleted"]:
            return _error(404, "Deal not found")
        return _ok(deal)

    def _patch_deal(self, request, data, deal_id):
        deal = self.deals.get(int(deal_id))
        if deal is None or deal["is_deleted"]:
            return _error(404, "Deal not found")
        problem = self._check_deal(data or {})
        if problem:
            return _error(400, problem)
        fields = dict(data)
        custom = fields.pop("custom_fields", {}) or {}
        deal.update(fields, update_time=self.tick())
        deal["custom_fields"].update(custom)
        return _ok(deal)

    def _create_deal(self, request, data):
        data = data or {}
        if not data.get("title"):
            return _error(400, "Validation failed: title: Parameter 'title' is required")
        problem = self._check_deal(data)
        if problem:
            return _error(400, problem)
        fields = dict(data)
        if "stage_id" in fields and "pipeline_id" not in fields:
            fields["pipeline_id"] = self.stages[fields["stage_id"]]["pipeline_id"]
        return _ok(self.add_deal(fields.pop("title"), **fields), 201)

    def _check_deal(self, data) -> str:
        for key in ("value",):
            if key in data and not isinstance(data[key], int | float):
                return f"Validation failed: {key}: Parameter '{key}' must be a number"
        for key in ("org_id", "person_id", "pipeline_id", "stage_id", "owner_id"):
            if key in data and not isinstance(data[key], int | type(None)):
                return f"Validation failed: {key}: Parameter '{key}' must be an integer"
        if data.get("org_id") and data["org_id"] not in self.organizations:
            return "Organization not found"
        if data.get("person_id") and data["person_id"] not in self.persons:
            return "Person not found"
        if data.get("pipeline_id") and data["pipeline_id"] not in self.pipelines:
            return "Pipeline not found"
        if data.get("stage_id"):
            stage = self.stages.get(data["stage_id"])
            if stage is None or (data.get("pipeline_id")
                                 and stage["pipeline_id"] != data["pipeline_id"]):
                return "Stage not found in the pipeline"
        unknown = set(data.get("custom_fields") or {}) - self.deal_fields
        if unknown:
            return f"Validation failed: custom_fields: unknown field {sorted(unknown)[0]}"
        return ""

    def _create_organization(self, request, data):
        if not (data or {}).get("name"):
            return _error(400, "Validation failed: name: Parameter 'name' is required")
        return _ok(self.add_organization(data["name"]), 201)

    def _create_person(self, request, data):
        data = data or {}
        if not data.get("name"):
            return _error(400, "Validation failed: name: Parameter 'name' is required")
        for key in ("emails", "phones"):
            values = data.get(key, [])
            if not isinstance(values, list) or not all(isinstance(v, dict) and "value" in v
                                                       for v in values):
                return _error(400, f"Validation failed: {key}: must be an array of objects")
        emails = data.get("emails") or [{}]
        phones = data.get("phones") or [{}]
        person = self.add_person(data["name"], emails[0].get("value", ""), data.get("org_id"),
                                 phones[0].get("value", ""))
        person["emails"], person["phones"] = data.get("emails", []), data.get("phones", [])
        return _ok(person, 201)

    def _create_lead(self, request, data):
        data = data or {}
        if not data.get("title"):
            return _error(400, "The title field is required")
        if not (data.get("person_id") or data.get("organization_id")):
            return _error(400, "A lead must be linked to a person or an organization")
        value = data.get("value")
        if value is not None and not (isinstance(value, dict)
                                      and isinstance(value.get("amount"), int | float)):
            return _error(400, "value must be an object with a numeric amount and a currency")
        unknown = {k for k in data if re.fullmatch(r"[0-9a-f]{40}", k)} - self.deal_fields
        if unknown:
            return _error(400, f"Unknown custom field {sorted(unknown)[0]}")
        now = self.clock.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        self.tick()
        lead_id = str(uuid.uuid4())
        lead = {"id": lead_id, "title": data["title"], "owner_id": data.get("owner_id",
                                                                             self.user["id"]),
                "creator_id": self.user["id"], "label_ids": [],
                "person_id": data.get("person_id"),
                "organization_id": data.get("organization_id"), "source_name": "API",
                "origin": "API", "channel": None, "is_archived": False, "was_seen": False,
                "value": value, "expected_close_date": data.get("expected_close_date"),
                "next_activity_id": None, "add_time": now, "update_time": now,
                "visible_to": "3", "cc_email": f"{COMPANY_DOMAIN}+lead@pipedrivemail.com"}
        lead.update({k: v for k, v in data.items() if k in self.deal_fields})
        self.leads[lead_id] = lead
        return _ok(lead, 201)

    def _patch_lead(self, request, data, lead_id):
        lead = self.leads.get(lead_id)
        if lead is None:
            return _error(404, "Lead not found")
        lead.update(data or {}, update_time=self.clock.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
        self.tick()
        return _ok(lead)

    def _search(self, request, data, entity):
        term = request.args.get("term", "")
        exact = request.args.get("exact_match") == "true"
        if len(term) < (1 if exact else 2):
            return _error(400, "Search term must be at least 2 characters long")
        fields = request.args.get("fields")
        fields = set(fields.split(",")) if fields else None
        wanted = term.casefold()

        def hit(values):
            values = [str(v).casefold() for v in values if v not in (None, "")]
            return any(v == wanted if exact else wanted in v for v in values)

        items = []
        for item, searchable in self._searchable(entity):
            if any(hit(values) for field, values in searchable.items()
                   if fields is None or field in fields):
                items.append({"result_score": 1.0, "item": item})
        return self._page(request, items, search=True)

    def _searchable(self, entity):
        """(search result item, {search field: values}) per live record, in the shapes of
        Pipedrive's v2 search results."""
        if entity == "organizations":
            for org in self.organizations.values():
                yield ({"id": org["id"], "type": "organization", "name": org["name"],
                        "address": org["address"], "visible_to": org["visible_to"],
                        "owner": {"id": org["owner_id"]}, "custom_fields": [], "notes": [],
                        "update_time": org["update_time"]},
                       {"name": [org["name"]], "address": [org["address"]],
                        "custom_fields": [], "notes": []})
        elif entity == "persons":
            for person in self.persons.values():
                emails = [e["value"] for e in person["emails"]]
                phones = [p["value"] for p in person["phones"]]
                yield ({"id": person["id"], "type": "person", "name": person["name"],
                        "phones": phones, "emails": emails, "visible_to": person["visible_to"],
                        "owner": {"id": person["owner_id"]},
                        "organization": self._org_ref(person["org_id"]), "custom_fields": [],
                        "notes": [], "update_time": person["update_time"]},
                       {"name": [person["name"]], "email": emails, "phone": phones,
                        "custom_fields": [], "notes": []})
        elif entity == "deals":
            for deal in self.deals.values():
                if deal["is_deleted"]:
                    continue
                custom = [v for v in deal["custom_fields"].values() if isinstance(v, str)]
                stage = self.stages[deal["stage_id"]]
                yield ({"id": deal["id"], "type": "deal", "title": deal["title"],
                        "value": deal["value"], "currency": deal["currency"],
                        "status": deal["status"], "visible_to": deal["visible_to"],
                        "owner": {"id": deal["owner_id"]},
                        "stage": {"id": stage["id"], "name": stage["name"]},
                        "person": self._person_ref(deal["person_id"]),
                        "organization": self._org_ref(deal["org_id"]),
                        "custom_fields": custom, "notes": []},
                       {"title": [deal["title"]], "custom_fields": custom, "notes": []})
        elif entity == "leads":
            for lead in self.leads.values():
                custom = [v for k, v in lead.items() if k in self.deal_fields
                          and isinstance(v, str)]
                value = lead["value"] or {}
                yield ({"id": lead["id"], "type": "lead", "title": lead["title"],
                        "owner": {"id": lead["owner_id"]},
                        "person": self._person_ref(lead["person_id"]),
                        "organization": self._org_ref(lead["organization_id"]),
                        "phones": [], "emails": [], "custom_fields": custom, "notes": [],
                        "value": value.get("amount"), "currency": value.get("currency"),
                        "visible_to": 3, "is_archived": lead["is_archived"]},
                       {"title": [lead["title"]], "custom_fields": custom, "notes": []})

    def _org_ref(self, org_id):
        org = self.organizations.get(org_id)
        return {"id": org["id"], "name": org["name"], "address": org["address"]} if org else None

    def _person_ref(self, person_id):
        person = self.persons.get(person_id)
        return {"id": person["id"], "name": person["name"]} if person else None

    def _page(self, request, rows, *, search=False):
        """Cursor pagination: `limit` (at most 500) and an opaque `cursor`."""
        try:
            limit = int(request.args.get("limit", 100))
            start = int(base64.b64decode(request.args["cursor"]).decode().split(":")[1]) \
                if request.args.get("cursor") else 0
        except (ValueError, IndexError, KeyError):
            return _error(400, "Invalid cursor or limit")
        if not 1 <= limit <= 500:
            return _error(400, "limit must be between 1 and 500")
        limit = min(limit, self.max_limit)
        page, more = rows[start:start + limit], len(rows) > start + limit
        next_cursor = base64.b64encode(f"offset:{start + limit}".encode()).decode() \
            if more else None
        data = {"items": page} if search else page
        return _ok(data, additional={"next_cursor": next_cursor})


def _ok(data, status: int = 200, additional=None) -> Response:
    body = {"success": True, "data": data}
    if additional is not None:
        body["additional_data"] = additional
    return _json(body, status)


def _error(status: int, message: str, info: str = "") -> Response:
    return _json({"success": False, "error": message, "error_info": info or None,
                  "data": None, "additional_data": None}, status)


def _json(body: dict, status: int, headers=None) -> Response:
    headers = {"x-ratelimit-limit": "20", "x-ratelimit-remaining": "19",
               "x-ratelimit-reset": "2", **(headers or {})}
    return Response(json.dumps(body), status=status, headers=headers,
                    content_type="application/json")


def _rfc3339(value: str):
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
