"""A fake Stripe for tests: pytest-httpserver in front of an in-memory store, spoken to by the
real `stripe` SDK (the `fake_stripe` fixture points settings at it).

It speaks the parts of Stripe's v1 API that payouts use, the way Stripe speaks them:

    POST /v1/accounts                    GET  /v1/accounts             GET  /v1/accounts/{id}
    POST /v1/account_links
    POST /v1/transfers                   GET  /v1/transfers            GET  /v1/transfers/{id}
    POST /v1/transfers/{id}/reversals

- Request bodies are form-encoded with nested keys (`controller[fees][payer]=application`,
  `metadata[payout_id]=...`, `expand[0]=...`); query strings too.
- `Authorization: Bearer <secret key>` is required (401 with a Stripe error object otherwise).
  `Stripe-Account: acct_...` makes the request act as that connected account: an unknown one
  gets 403, and the platform's transfers are not visible from inside a connected account.
- `Idempotency-Key` on a POST replays the first saved answer (with `Idempotent-Replayed: true`);
  the same key with other parameters gets 400 `idempotency_error`. As at Stripe, an answer is
  saved once the endpoint started executing (successes, refusals such as `balance_insufficient`,
  500s), not when parameters failed validation or the request was refused before it ran (rate
  limits, lock timeouts, a programmed failure with `saved=False`).
- Errors are `{"error": {"type", "code", "message", "param", "doc_url"}}` with Stripe's statuses:
  400 invalid_request_error, 401, 402 card_error, 403 permission_error, 404 resource_missing,
  429 rate_limit (with `Stripe-Rate-Limited-Reason`) or lock_timeout (with
  `Stripe-Should-Retry: true`, which the SDK obeys), 500 api_error.
- The platform balance is checked per currency: a transfer larger than the available balance is
  refused with `balance_insufficient`; reversals need the connected account's balance.
- `Stripe-Version` on a request picks the API version it is answered in (echoed back; a
  malformed one is a 400); without it the account's default version (API_VERSION) applies.
- Connected accounts: the platform is in `platform_country` (US). An account in another
  country must be created under the `recipient` service agreement
  (`tos_acceptance[service_agreement]=recipient`, no `card_payments`): otherwise Stripe refuses
  to create a transfers-only account there, and refuses transfers to a `full` account abroad.
  A `business_profile[url]` without a public host name is refused (`url_invalid`) while the
  account is being created, so like other refusals that answer is saved under the key.
  `GET /v1/accounts` lists the platform's accounts newest first (`created` filter, paging).

Account Links open a stand-in for Stripe's hosted onboarding at their url (one button that
completes the account and returns to the platform's return_url), so browser tests can go
through it. Test controls: `fail(...)`, `lock_timeout()`, `complete_onboarding(id)`, `restrict(id)`,
`event(type, obj, account=None)`, `sign(payload, secret)`, `webhook(event, secret)`, and
`crash_after(method, path)` which lets Stripe answer and then makes the SDK call raise in our
process: the "Stripe did it, our commit was lost" case.
"""

import hashlib
import hmac
import itertools
import json
import re
import secrets
import time
from collections import Counter
from urllib.parse import parse_qsl

import pytest
from werkzeug import Request, Response

API_KEY = "sk_test_51PartnerHubFakeKey0000000000000000"
WEBHOOK_SECRET = "whsec_platform_5f1c0a9e7b2d4c6e8a0b1c2d3e4f5a6b"
CONNECT_WEBHOOK_SECRET = "whsec_connect_9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
API_VERSION = "2025-03-31.basil"
DOC = "https://stripe.com/docs/error-codes/"


class SimulatedCrash(Exception):
    """Raised in our process after the fake answered (see `crash_after`)."""


class FakeStripe:
    def __init__(self, httpserver, *, api_key: str = API_KEY, platform_country: str = "US"):
        self.server = httpserver
        self.api_key = api_key
        self.platform_country = platform_country
        self.url = httpserver.url_for("/").rstrip("/")
        self.calls: Counter = Counter()  # "POST /v1/transfers" -> count (after auth)
        self.requests: list[dict] = []  # method, path, headers, params (decoded), status
        self.failures: list[dict] = []
        self.crashes: list[dict] = []
        self.clock = int(time.time())  # `created` filters compare it with our own clock
        self.accounts: dict[str, dict] = {}
        self.transfers: dict[str, dict] = {}  # insertion order = creation order
        self.account_links: list[dict] = []
        self.events: list[dict] = []  # what Stripe would send to webhooks, oldest first
        # Available platform balance per currency, in minor units.
        self.balance: Counter = Counter({"usd": 100_000_000, "eur": 100_000_000,
                                         "gbp": 100_000_000})
        self.account_balances: dict[str, Counter] = {}
        self._idempotency: dict[tuple, dict] = {}
        self._seq = itertools.count(1)
        httpserver.expect_request(re.compile(r"^/.*")).respond_with_handler(self._handle)

    # --- Test controls --------------------------------------------------------------------

    def fail(self, status: int, *, code: str | None = None, message: str | None = None,
             type: str | None = None, param: str | None = None, times: int | None = 1,
             method: str = "", path: str = "", saved: bool = False,
             should_retry: bool | None = None) -> None:
        """Answer the next `times` matching requests (None: all) with a Stripe error.
        `saved=True` stores the answer under the request's idempotency key, as Stripe does
        for errors raised while the endpoint runs (a retry with that key replays it)."""
        defaults = {
            400: ("invalid_request_error", None, "Invalid request."),
            401: ("invalid_request_error", None, "Invalid API Key provided."),
            402: ("card_error", "card_declined", "Your card was declined."),
            403: ("invalid_request_error", "account_invalid", "You do not have access."),
            404: ("invalid_request_error", "resource_missing", "No such object."),
            409: ("invalid_request_error", "idempotency_key_in_use",
                  "There is currently another in-progress request using this Stripe token."),
            429: ("invalid_request_error", "rate_limit",
                  "Too many requests hit the API too quickly. We recommend an exponential "
                  "backoff of your requests."),
        }
        d_type, d_code, d_message = defaults.get(
            status, ("api_error", None, "An unknown error occurred"))
        self.failures.append({
            "status": status, "type": type or d_type, "code": code or d_code,
            "message": message or d_message, "param": param, "times": times,
            "method": method.upper(), "path": path, "saved": saved,
            "should_retry": should_retry})

    def lock_timeout(self, *, times: int = 1, path: str = "", method: str = "") -> None:
        """Another request holds the object's lock: 429 lock_timeout that Stripe asks the
        client to retry (`Stripe-Should-Retry: true`)."""
        self.fail(429, code="lock_timeout", times=times, path=path, method=method,
                  should_retry=True,
                  message="This object cannot be accessed right now because another API "
                          "request or Stripe process is currently accessing it.")

    def heal(self) -> None:
        self.failures.clear()
        self.crashes.clear()

    def crash_after(self, method: str, path: str, *, times: int = 1,
                    exc: Exception | None = None) -> None:
        """Let Stripe handle the next matching request, then raise `exc` (a SimulatedCrash by
        default; a `stripe.APIConnectionError` plays a timeout) in the calling process as the
        SDK returns: the answer is lost to our code."""
        self.crashes.append({"method": method.upper(), "path": path, "times": times,
                             "exc": exc or SimulatedCrash(f"crashed after {method} {path}")})

    def _crash_for(self, method: str, url: str):
        path = re.sub(r"^https?://[^/]+", "", url).split("?")[0]
        for crash in self.crashes:
            if crash["method"] == method.upper() and re.fullmatch(crash["path"], path):
                crash["times"] -= 1
                if crash["times"] <= 0:
                    self.crashes.remove(crash)
                return crash["exc"]
        return None

    def count(self, method: str, path: str) -> int:
        return self.calls[f"{method.upper()} {path}"]

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def add_account(self, **fields) -> dict:
        """A connected account created outside the API (for tests that need one ready)."""
        account = self._new_account({"controller": _EXPRESS_CONTROLLER,
                                     "capabilities": {"transfers": {"requested": "true"}},
                                     **fields})
        self.accounts[account["id"]] = account
        return account

    def complete_onboarding(self, account_id: str) -> dict:
        """The partner finished Stripe's hosted onboarding: details submitted, charges and
        payouts enabled, the transfers capability active, nothing due."""
        account = self.accounts[account_id]
        previous = {"details_submitted": account["details_submitted"],
                    "capabilities": dict(account["capabilities"])}
        recipient = account["tos_acceptance"]["service_agreement"] == "recipient"
        account.update(details_submitted=True, charges_enabled=not recipient,
                       payouts_enabled=True,
                       tos_acceptance={**account["tos_acceptance"], "date": self.tick(),
                                       "ip": "203.0.113.9", "user_agent": "Mozilla/5.0"})
        account["capabilities"] = {k: "active" for k in account["capabilities"]}
        account["requirements"] = _requirements([], disabled_reason=None)
        account["external_accounts"]["data"] = [{
            "id": f"ba_{_token(24)}", "object": "bank_account", "account": account_id,
            "bank_name": "STRIPE TEST BANK", "country": account["country"],
            "currency": account["default_currency"], "last4": "6789", "status": "new",
            "default_for_currency": True}]
        account["external_accounts"]["total_count"] = 1
        self._emit("account.updated", account, account=account_id, previous=previous)
        return account

    def restrict(self, account_id: str, *, reason: str = "requirements.past_due",
                 past_due: tuple = ("individual.verification.document",)) -> dict:
        """Stripe needs more information: transfers and payouts stop until it is provided."""
        account = self.accounts[account_id]
        account.update(payouts_enabled=False, charges_enabled=False)
        account["capabilities"] = {k: "inactive" for k in account["capabilities"]}
        account["requirements"] = _requirements(list(past_due), disabled_reason=reason,
                                                past_due=list(past_due))
        self._emit("account.updated", account, account=account_id)
        return account

    def event(self, type: str, obj: dict, account: str | None = None,
              previous_attributes: dict | None = None) -> dict:
        """An Event object as Stripe sends it to a webhook endpoint. Events about a connected
        account (its bank payouts, `account.updated` to Connect endpoints) carry `account`."""
        data = {"object": json.loads(json.dumps(obj))}
        if previous_attributes is not None:
            data["previous_attributes"] = previous_attributes
        event = {"id": f"evt_{_token(24)}", "object": "event", "api_version": API_VERSION,
                 "created": self.tick(), "data": data, "livemode": False,
                 "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
                 "type": type}
        if account:
            event["account"] = account
        return event

    def bank_payout(self, account_id: str, *, amount: int, currency: str = "usd",
                    status: str = "paid", failure_code: str | None = None,
                    failure_message: str | None = None) -> dict:
        """A payout from the connected account to its bank (what `payout.*` events carry)."""
        created = self.tick()
        return {"id": f"po_{_token(24)}", "object": "payout", "amount": amount,
                "application_fee": None, "application_fee_amount": None,
                "arrival_date": created + 86400 * 2, "automatic": True,
                "balance_transaction": f"txn_{_token(24)}", "created": created,
                "currency": currency, "description": "STRIPE PAYOUT",
                "destination": f"ba_{_token(24)}", "failure_balance_transaction": None,
                "failure_code": failure_code, "failure_message": failure_message,
                "livemode": False, "metadata": {}, "method": "standard",
                "original_payout": None, "reconciliation_status": "completed",
                "reversed_by": None, "source_type": "card", "statement_descriptor": None,
                "status": status, "type": "bank_account", "trace_id": {
                    "status": "supported" if status == "paid" else "pending", "value": None},
                "payout_method": None}

    @staticmethod
    def sign(payload: str | bytes, secret: str, timestamp: int | None = None) -> str:
        """The `Stripe-Signature` header: t=<unix time>,v1=<HMAC-SHA256 of "t.payload">."""
        if isinstance(payload, bytes):
            payload = payload.decode()
        timestamp = int(time.time()) if timestamp is None else timestamp
        digest = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(),
                          hashlib.sha256).hexdigest()
        return f"t={timestamp},v1={digest}"

    def webhook(self, event: dict, secret: str = WEBHOOK_SECRET,
                timestamp: int | None = None) -> tuple[str, str]:
        """(body, Stripe-Signature header) for delivering `event`."""
        body = json.dumps(event, indent=2)  # Stripe's deliveries are pretty-printed
        return body, self.sign(body, secret, timestamp)

    def events_of(self, type: str) -> list[dict]:
        return [e for e in self.events if e["type"] == type]

    def transfers_to(self, account_id: str) -> list[dict]:
        return [t for t in self.transfers.values() if t["destination"] == account_id]

    # --- HTTP -----------------------------------------------------------------------------

    ROUTES = [
        ("POST", r"/v1/accounts", "_create_account"),
        ("GET", r"/v1/accounts", "_list_accounts"),
        ("GET", r"/v1/accounts/(acct_\w+)", "_get_account"),
        ("POST", r"/v1/account_links", "_create_account_link"),
        ("POST", r"/v1/transfers", "_create_transfer"),
        ("GET", r"/v1/transfers", "_list_transfers"),
        ("GET", r"/v1/transfers/([\w]+)", "_get_transfer"),
        ("POST", r"/v1/transfers/([\w]+)/reversals", "_create_reversal"),
    ]

    def _handle(self, request: Request) -> Response:
        if request.path.startswith("/setup/s/"):
            return self._hosted_onboarding(request)
        body = request.get_data(as_text=True)
        log = {"method": request.method, "path": request.path, "headers": dict(request.headers),
               "params": None, "body": body}
        self.requests.append(log)
        try:
            log["params"] = decode_form(body if request.method == "POST"
                                        else request.query_string.decode())
        except _Invalid as invalid:
            log["status"] = invalid.response.status_code
            return invalid.response
        version = request.headers.get("Stripe-Version")
        if version is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}(\.[a-z]+)?", version):
            response = _error(400, "invalid_request_error",
                              f"Invalid Stripe API version: {version}")
        else:
            response = self._dispatch(request, log["params"])
        response.headers["Stripe-Version"] = version or API_VERSION
        log["status"] = response.status_code
        return response

    def _hosted_onboarding(self, request: Request) -> Response:
        """Stripe's hosted onboarding as a browser sees it, behind an Account Link's url: a
        page with one button; finishing it completes the account and goes back to the
        platform's return_url (an unknown or used link goes to its refresh_url)."""
        parts = request.path.strip("/").split("/")  # setup, s, acct_id, token[, finish]
        link = next((link for link in self.account_links
                     if link["url"].endswith("/".join(parts[:4]))), None)
        if link is None:
            return Response("This link is not valid.", status=404, mimetype="text/plain")
        if link.get("_used"):
            return Response(status=302, headers={"Location": link["_refresh_url"]})
        if request.method == "POST" and parts[-1] == "finish":
            link["_used"] = True
            self.complete_onboarding(link["_account"])
            return Response(status=302, headers={"Location": link["_return_url"]})
        page = (f"<!doctype html><title>Stripe onboarding (test)</title>"
                f"<h1>Set up payouts for {link['_account']}</h1>"
                f"<form method='post' action='{request.path.rstrip('/')}/finish'>"
                f"<button>Agree and submit</button></form>")
        return Response(page, mimetype="text/html")

    def _dispatch(self, request: Request, params: dict) -> Response:
        auth = request.headers.get("Authorization", "")
        if not auth:
            return _error(401, "invalid_request_error",
                          "You did not provide an API key. You need to provide your API key in "
                          "the Authorization header, using Bearer auth (e.g. 'Authorization: "
                          "Bearer YOUR_SECRET_KEY').",
                          headers={"WWW-Authenticate": 'Bearer realm="Stripe"'})
        key = auth.removeprefix("Bearer ").strip()
        if not auth.startswith("Bearer ") or key != self.api_key:
            return _error(401, "invalid_request_error",
                          f"Invalid API Key provided: {key[:8]}{'*' * 8}{key[-4:]}",
                          headers={"WWW-Authenticate": 'Bearer realm="Stripe"'})
        route = self._route(request)
        if route is None:
            return _error(404, "invalid_request_error",
                          f"Unrecognized request URL ({request.method}: {request.path}).")
        name, args = route
        self.calls[f"{request.method} {request.path}"] += 1
        context = request.headers.get("Stripe-Account") or None
        if context is not None and context not in self.accounts:
            return _error(403, "invalid_request_error",
                          f"The provided key '{key[:8]}{'*' * 8}{key[-4:]}' does not have access "
                          f"to account '{context}' (or that account does not exist). "
                          "Application access may have been revoked.", code="account_invalid")
        idem_key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
        fingerprint = (request.method, request.path, json.dumps(params, sort_keys=True))
        slot = (context, idem_key)
        if idem_key:
            saved = self._idempotency.get(slot)
            if saved is not None:
                if saved["fingerprint"] != fingerprint:
                    return _error(400, "idempotency_error",
                                  "Keys for idempotent requests can only be used with the same "
                                  "parameters they were first used with. Try using a key other "
                                  f"than '{idem_key}' if you meant to execute a different "
                                  "request.", headers={"Idempotency-Key": idem_key})
                return _json(saved["body"], saved["status"],
                             {**saved["headers"], "Idempotent-Replayed": "true"})
        failure = self._failure(request)
        if failure is not None:
            response, save = failure
        else:
            try:
                response = getattr(self, name)(request, params, context, *args)
                save = True
            except _Refused as refused:  # the endpoint ran and said no: saved like success
                response, save = refused.response, True
            except _Invalid as invalid:  # parameters failed validation: nothing is saved
                response, save = invalid.response, False
        if idem_key:
            response.headers["Idempotency-Key"] = idem_key
            if save:
                self._idempotency[slot] = {"fingerprint": fingerprint,
                                           "status": response.status_code,
                                           "body": json.loads(response.get_data(as_text=True)),
                                           "headers": {k: v for k, v in response.headers.items()
                                                       if k.lower() not in ("content-length",
                                                                            "content-type")}}
        return response

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
            if failure["path"] and not re.fullmatch(failure["path"], request.path):
                continue
            if failure["times"] is not None:
                failure["times"] -= 1
                if failure["times"] <= 0:
                    self.failures.remove(failure)
            headers = {}
            if failure["should_retry"] is not None:
                headers["Stripe-Should-Retry"] = "true" if failure["should_retry"] else "false"
            if failure["status"] == 429 and failure["code"] == "rate_limit":
                headers["Stripe-Rate-Limited-Reason"] = "global-rate"
            response = _error(failure["status"], failure["type"], failure["message"],
                              code=failure["code"], param=failure["param"], headers=headers)
            return response, failure["saved"]
        return None

    # --- Endpoints ------------------------------------------------------------------------

    def _new_account(self, params: dict) -> dict:
        account_id = f"acct_{_token(16)}"
        country = params.get("country") or self.platform_country  # Stripe's default
        currency = {"US": "usd", "GB": "gbp", "CA": "cad", "AU": "aud"}.get(country, "eur")
        capabilities = {name: "inactive" for name, wanted in
                        (params.get("capabilities") or {}).items()
                        if (wanted or {}).get("requested") == "true"}
        controller = params.get("controller") or {}
        dashboard = (controller.get("stripe_dashboard") or {}).get("type", "full")
        due = ["business_profile.mcc", "business_profile.url", "business_type",
               "external_account", "representative.first_name", "representative.last_name",
               "tos_acceptance.date", "tos_acceptance.ip"]
        return {
            "id": account_id, "object": "account",
            "business_profile": {"annual_revenue": None, "estimated_worker_count": None,
                                 "mcc": None, "name": (params.get("business_profile") or {})
                                 .get("name"), "product_description": None,
                                 "support_address": None, "support_email": None,
                                 "support_phone": None, "support_url": None,
                                 "url": (params.get("business_profile") or {}).get("url"),
                                 "minority_owned_business_designation": None},
            "business_type": params.get("business_type"),
            "capabilities": capabilities, "charges_enabled": False,
            "controller": {
                "fees": {"payer": (controller.get("fees") or {}).get("payer", "account")},
                "is_controller": True,
                "losses": {"payments": (controller.get("losses") or {})
                           .get("payments", "stripe")},
                "requirement_collection": controller.get("requirement_collection", "stripe"),
                "stripe_dashboard": {"type": dashboard},
                "type": "application"},
            "country": country, "created": self.tick(), "default_currency": currency,
            "details_submitted": False, "email": params.get("email"),
            "external_accounts": {"object": "list", "data": [], "has_more": False,
                                  "total_count": 0,
                                  "url": f"/v1/accounts/{account_id}/external_accounts"},
            "future_requirements": _requirements([], disabled_reason=None),
            "metadata": dict(params.get("metadata") or {}),
            "payouts_enabled": False,
            "requirements": _requirements(due, disabled_reason="requirements.past_due"),
            "settings": {"dashboard": {"display_name": None, "timezone": "Etc/UTC"},
                         "payouts": {"debit_negative_balances": True,
                                     "schedule": {"delay_days": 2, "interval": "daily"},
                                     "statement_descriptor": None}},
            "tos_acceptance": {"date": None, "ip": None,
                               "service_agreement": _agreement(params) or "full",
                               "user_agent": None},
            "type": "express" if dashboard == "express" else "none",
        }

    def _create_account(self, request, params, context):
        if context is not None:
            raise _Refused(_error(400, "invalid_request_error",
                                  "Connected accounts cannot create other accounts."))
        controller = params.get("controller")
        if controller is not None:
            _check_enum(controller.get("requirement_collection"), ("stripe", "application"),
                        "controller[requirement_collection]")
            _check_enum((controller.get("fees") or {}).get("payer"),
                        ("account", "application"), "controller[fees][payer]")
            _check_enum((controller.get("losses") or {}).get("payments"),
                        ("application", "stripe"), "controller[losses][payments]")
            _check_enum((controller.get("stripe_dashboard") or {}).get("type"),
                        ("express", "full", "none"), "controller[stripe_dashboard][type]")
            if params.get("type"):
                raise _Invalid(_error(400, "invalid_request_error",
                                      "You cannot specify `type` together with `controller`.",
                                      param="type"))
        elif params.get("type") not in ("standard", "express", "custom"):
            raise _Invalid(_error(400, "invalid_request_error",
                                  "Missing required param: type.", code="parameter_missing",
                                  param="type"))
        country = params.get("country")
        if country is not None and not re.fullmatch(r"[A-Z]{2}", country):
            raise _Invalid(_error(400, "invalid_request_error",
                                  f"Country '{country}' is unknown. Try using a 2-character "
                                  "alphanumeric country code instead, such as 'US', 'EG', or "
                                  "'GB'.", code="country_unsupported", param="country"))
        _check_metadata(params)
        self._check_service_agreement(params, country or self.platform_country)
        url = (params.get("business_profile") or {}).get("url")
        if url is not None and not _public_url(url):
            raise _Refused(_error(400, "invalid_request_error",
                                  f"Not a valid URL: {url}. Use your business's public website "
                                  "(a host name reachable on the internet).",
                                  code="url_invalid", param="business_profile[url]"))
        account = self._new_account(params)
        self.accounts[account["id"]] = account
        self.account_balances[account["id"]] = Counter()
        return _json(account)

    def _check_service_agreement(self, params, country):
        """Stripe's cross-border rule: abroad, a transfers-only account needs the `recipient`
        service agreement, and a `recipient` account cannot take card payments."""
        agreement = _agreement(params)
        _check_enum(agreement, ("full", "recipient"), "tos_acceptance[service_agreement]")
        wanted = {name for name, value in (params.get("capabilities") or {}).items()
                  if (value or {}).get("requested") == "true"}
        if agreement == "recipient" and "card_payments" in wanted:
            raise _Invalid(_error(400, "invalid_request_error",
                                  "Accounts under the `recipient` service agreement cannot "
                                  "request the `card_payments` capability.",
                                  param="capabilities[card_payments]"))
        if (country != self.platform_country and agreement != "recipient"
                and "transfers" in wanted and "card_payments" not in wanted):
            raise _Invalid(_error(400, "invalid_request_error",
                                  "You cannot request the `transfers` capability without the "
                                  "`card_payments` capability for accounts in "
                                  f"{country}.", param="capabilities"))

    def _list_accounts(self, request, params, context):
        if context is not None:
            return _error(403, "invalid_request_error",
                          "Only a platform can list its connected accounts.",
                          code="account_invalid")
        rows = sorted(self.accounts.values(), key=lambda a: a["created"], reverse=True)
        rows = [a for a in rows if _created_matches(a["created"], params.get("created"))]
        return self._page(rows, params, self.accounts, "account", "/v1/accounts")

    def _page(self, rows, params, known, noun, url):
        """One page of a list, newest first: `limit`, `starting_after`, `ending_before`."""
        limit = _integer(params, "limit", default=10)
        if not 1 <= limit <= 100:
            raise _Invalid(_error(400, "invalid_request_error",
                                  "This value must be less than or equal to 100.",
                                  code="parameter_invalid_integer", param="limit"))
        ids = [row["id"] for row in rows]
        if params.get("starting_after"):
            if params["starting_after"] not in known:
                raise _Invalid(_error(400, "invalid_request_error",
                                      f"No such {noun}: '{params['starting_after']}'",
                                      code="resource_missing", param="starting_after"))
            start = ids.index(params["starting_after"]) + 1 \
                if params["starting_after"] in ids else len(ids)
            rows = rows[start:]
        elif params.get("ending_before"):
            end = ids.index(params["ending_before"]) if params["ending_before"] in ids else 0
            rows = rows[max(0, end - limit):end]
        return _json({"object": "list", "data": [_public(row) for row in rows[:limit]],
                      "has_more": len(rows) > limit, "url": url})

    def _get_account(self, request, params, context, account_id):
        account = self.accounts.get(account_id)
        if account is None or (context is not None and context != account_id):
            return _error(404, "invalid_request_error", f"No such account: '{account_id}'",
                          code="resource_missing", param="account")
        return _json(account)

    def _create_account_link(self, request, params, context):
        for name in ("account", "type", "refresh_url", "return_url"):
            if not params.get(name):
                raise _Invalid(_error(400, "invalid_request_error",
                                      f"Missing required param: {name}.",
                                      code="parameter_missing", param=name))
        _check_enum(params["type"], ("account_onboarding", "account_update"), "type")
        for name in ("refresh_url", "return_url"):
            if not re.match(r"^https?://", params[name]):
                raise _Invalid(_error(400, "invalid_request_error", "Not a valid URL",
                                      code="url_invalid", param=name))
        account = self.accounts.get(params["account"])
        if account is None:
            raise _Invalid(_error(400, "invalid_request_error",
                                  f"No such account: '{params['account']}'",
                                  code="resource_missing", param="account"))
        created = self.tick()
        link = {"object": "account_link", "created": created, "expires_at": created + 300,
                "url": f"{self.url}/setup/s/{account['id']}/{_token(12)}",
                "_account": account["id"], "_type": params["type"],
                "_return_url": params["return_url"], "_refresh_url": params["refresh_url"]}
        self.account_links.append(link)
        return _json({k: v for k, v in link.items() if not k.startswith("_")})

    def _create_transfer(self, request, params, context):
        amount = _integer(params, "amount", required=True)
        currency = params.get("currency")
        if not currency:
            raise _Invalid(_error(400, "invalid_request_error",
                                  "Missing required param: currency.",
                                  code="parameter_missing", param="currency"))
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise _Invalid(_error(400, "invalid_request_error",
                                  f"Invalid currency: {currency}. Stripe currently supports "
                                  "these currencies: usd, eur, gbp, ...",
                                  code="parameter_invalid_string", param="currency"))
        if amount <= 0:
            raise _Invalid(_error(400, "invalid_request_error",
                                  "This value must be greater than or equal to 1.",
                                  code="parameter_invalid_integer", param="amount"))
        destination = params.get("destination")
        if not destination:
            raise _Invalid(_error(400, "invalid_request_error",
                                  "Missing required param: destination.",
                                  code="parameter_missing", param="destination"))
        _check_metadata(params)
        account = self.accounts.get(destination)
        if account is None or destination == context:
            raise _Refused(_error(400, "invalid_request_error",
                                  f"No such destination: '{destination}'",
                                  code="resource_missing", param="destination"))
        if (account["country"] != self.platform_country
                and account["tos_acceptance"]["service_agreement"] != "recipient"):
            raise _Refused(_error(
                400, "invalid_request_error",
                f"Funds can't be sent to accounts located in {account['country']} when the "
                "account is under the `full` service agreement.", param="destination"))
        if account["capabilities"].get("transfers") != "active":
            raise _Refused(_error(
                400, "invalid_request_error",
                "Your destination account needs to have at least one of the following "
                "capabilities enabled: transfers, crypto_transfers, legacy_payments",
                code="insufficient_capabilities_for_transfer", param="destination"))
        source = self.account_balances.setdefault(context, Counter()) if context \
            else self.balance
        if source[currency] < amount:
            raise _Refused(_error(
                400, "invalid_request_error",
                "You have insufficient available funds in your Stripe account. Try adding "
                "funds directly to your available balance by creating Charges using the "
                "4000000000000077 test card. See: https://stripe.com/docs/testing"
                "#available-balance", code="balance_insufficient"))
        source[currency] -= amount
        self.account_balances.setdefault(destination, Counter())[currency] += amount
        transfer_id = f"tr_{_token(24)}"
        transfer = {
            "id": transfer_id, "object": "transfer", "amount": amount, "amount_reversed": 0,
            "balance_transaction": f"txn_{_token(24)}", "created": self.tick(),
            "currency": currency, "description": params.get("description"),
            "destination": destination, "destination_payment": f"py_{_token(14)}",
            "livemode": False, "metadata": dict(params.get("metadata") or {}),
            "reversals": {"object": "list", "data": [], "has_more": False, "total_count": 0,
                          "url": f"/v1/transfers/{transfer_id}/reversals"},
            "reversed": False, "source_transaction": params.get("source_transaction"),
            "source_type": params.get("source_type", "card"),
            "transfer_group": params.get("transfer_group"),
            "_context": context,
        }
        self.transfers[transfer_id] = transfer
        self._emit("transfer.created", _public(transfer))
        return _json(_public(transfer))

    def _list_transfers(self, request, params, context):
        rows = [t for t in reversed(self.transfers.values()) if t["_context"] == context]
        if params.get("transfer_group"):
            rows = [t for t in rows if t["transfer_group"] == params["transfer_group"]]
        if params.get("destination"):
            rows = [t for t in rows if t["destination"] == params["destination"]]
        return self._page(rows, params, self.transfers, "transfer", "/v1/transfers")

    def _get_transfer(self, request, params, context, transfer_id):
        transfer = self.transfers.get(transfer_id)
        if transfer is None or transfer["_context"] != context:
            return _error(404, "invalid_request_error", f"No such transfer: '{transfer_id}'",
                          code="resource_missing", param="id")
        return _json(_public(transfer))

    def _create_reversal(self, request, params, context, transfer_id):
        transfer = self.transfers.get(transfer_id)
        if transfer is None or transfer["_context"] != context:
            raise _Invalid(_error(404, "invalid_request_error",
                                  f"No such transfer: '{transfer_id}'",
                                  code="resource_missing", param="id"))
        _check_metadata(params)
        left = transfer["amount"] - transfer["amount_reversed"]
        if left <= 0:
            raise _Refused(_error(400, "invalid_request_error",
                                  f"Transfer {transfer_id} has already been fully reversed.",
                                  code="transfer_already_reversed"))
        amount = _integer(params, "amount", default=left)
        if amount <= 0 or amount > left:
            raise _Invalid(_error(400, "invalid_request_error",
                                  f"Amount must be no more than {left} (the amount of the "
                                  "transfer not yet reversed).", param="amount",
                                  code="parameter_invalid_integer"))
        held = self.account_balances.setdefault(transfer["destination"], Counter())
        if held[transfer["currency"]] < amount:
            raise _Refused(_error(
                400, "invalid_request_error",
                "Insufficient funds in the destination account to reverse this transfer.",
                code="balance_insufficient"))
        held[transfer["currency"]] -= amount
        (self.account_balances.setdefault(context, Counter()) if context
         else self.balance)[transfer["currency"]] += amount
        reversal = {"id": f"trr_{_token(24)}", "object": "transfer_reversal", "amount": amount,
                    "balance_transaction": f"txn_{_token(24)}", "created": self.tick(),
                    "currency": transfer["currency"], "destination_payment_refund":
                    f"pyr_{_token(24)}", "metadata": dict(params.get("metadata") or {}),
                    "source_refund": None, "transfer": transfer_id}
        transfer["amount_reversed"] += amount
        transfer["reversed"] = transfer["amount_reversed"] >= transfer["amount"]
        transfer["reversals"]["data"].insert(0, reversal)
        transfer["reversals"]["total_count"] += 1
        self._emit("transfer.reversed", _public(transfer))
        return _json(reversal)

    def _emit(self, type: str, obj: dict, account: str | None = None, previous=None) -> None:
        self.events.append(self.event(type, obj, account=account,
                                      previous_attributes=previous))


_EXPRESS_CONTROLLER = {"fees": {"payer": "application"},
                       "losses": {"payments": "application"},
                       "requirement_collection": "stripe",
                       "stripe_dashboard": {"type": "express"}}


class _Invalid(Exception):
    def __init__(self, response):
        self.response = response


class _Refused(_Invalid):
    pass


def decode_form(body: str) -> dict:
    """Stripe's form encoding: `a[b][c]=v` nests, `a[0]=v` / `a[]=v` make lists. Values stay
    strings (the SDK sends booleans as "true"/"false" and numbers as digits)."""
    root: dict = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        match = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", key)
        if match is None:
            raise _Invalid(_error(400, "invalid_request_error",
                                  f"Invalid parameter name: {key}"))
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":
                part = str(len(node))
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _listify(root)


def _listify(node):
    if isinstance(node, dict):
        node = {k: _listify(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


def _requirements(due: list, *, disabled_reason, past_due=None) -> dict:
    return {"alternatives": [], "current_deadline": None, "currently_due": list(due),
            "disabled_reason": disabled_reason, "errors": [], "eventually_due": list(due),
            "past_due": list(past_due or []), "pending_verification": []}


def _check_enum(value, allowed, param):
    if value is not None and value not in allowed:
        raise _Invalid(_error(400, "invalid_request_error",
                              f"Invalid {param}: must be one of {', '.join(allowed)}",
                              code="parameter_invalid_string", param=param))


def _agreement(params) -> str | None:
    return (params.get("tos_acceptance") or {}).get("service_agreement")


def _public_url(url: str) -> bool:
    """A website Stripe accepts: http(s) and a public host name (not localhost, not an IP)."""
    match = re.fullmatch(r"https?://([^/:?#\s]+)(:\d+)?([/?#]\S*)?", url, re.IGNORECASE)
    host = match.group(1).lower() if match else ""
    return bool(re.fullmatch(r"([a-z0-9-]+\.)+[a-z]{2,}", host))


def _created_matches(created: int, condition) -> bool:
    """Stripe's `created` filter: an exact timestamp or a dict of gt/gte/lt/lte."""
    if condition is None:
        return True
    if not isinstance(condition, dict):
        condition = {"gte": condition, "lte": condition}
    tests = {"gt": created.__gt__, "gte": created.__ge__, "lt": created.__lt__,
             "lte": created.__le__}
    unknown = set(condition) - set(tests)
    if unknown:
        raise _Invalid(_error(400, "invalid_request_error",
                              f"Received unknown parameter: created[{sorted(unknown)[0]}]",
                              param="created"))
    for op, value in condition.items():
        if not re.fullmatch(r"\d+", str(value)):
            raise _Invalid(_error(400, "invalid_request_error", f"Invalid integer: {value}",
                                  code="parameter_invalid_integer", param=f"created[{op}]"))
    return all(tests[op](int(value)) for op, value in condition.items())


def _check_metadata(params):
    metadata = params.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise _Invalid(_error(400, "invalid_request_error", "Invalid hash",
                              param="metadata"))
    for key, value in metadata.items():
        if len(key) > 40 or len(value) > 500:
            raise _Invalid(_error(400, "invalid_request_error",
                                  "Metadata keys are limited to 40 characters and values to "
                                  "500.", param=f"metadata[{key}]"))


def _integer(params, name, *, required=False, default=None):
    value = params.get(name)
    if value is None:
        if required:
            raise _Invalid(_error(400, "invalid_request_error",
                                  f"Missing required param: {name}.",
                                  code="parameter_missing", param=name))
        return default
    if not re.fullmatch(r"-?\d+", str(value)):
        raise _Invalid(_error(400, "invalid_request_error", "Invalid integer: " + str(value),
                              code="parameter_invalid_integer", param=name))
    return int(value)


def _public(obj: dict) -> dict:
    return json.loads(json.dumps({k: v for k, v in obj.items() if not k.startswith("_")}))


def _token(n: int) -> str:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return "1Pg" + "".join(secrets.choice(alphabet) for _ in range(n - 3))


def _error(status: int, type: str, message: str, *, code: str | None = None,
           param: str | None = None, headers=None) -> Response:
    error = {"type": type, "message": message}
    if code:
        error["code"] = code
        error["doc_url"] = DOC + code
    if param:
        error["param"] = param
    error["request_log_url"] = "https://dashboard.stripe.com/test/logs/req_fake"
    return _json({"error": error}, status, headers)


def _json(body: dict, status: int = 200, headers=None) -> Response:
    headers = {"Request-Id": f"req_{_token(14)}", "Stripe-Version": API_VERSION,
               "Cache-Control": "no-cache, no-store", **(headers or {})}
    return Response(json.dumps(body), status=status, headers=headers,
                    content_type="application/json")


@pytest.fixture
def fake_stripe(httpserver, settings, monkeypatch):
    """The fake Stripe, with settings pointing the real SDK at it. Network retries inside the
    SDK are off by default (a test that wants them sets STRIPE_MAX_NETWORK_RETRIES)."""
    import stripe

    fake = FakeStripe(httpserver)
    settings.STRIPE_API_KEY = API_KEY
    settings.STRIPE_API_BASE = fake.url
    settings.STRIPE_CONNECT_BASE = fake.url
    settings.STRIPE_WEBHOOK_SECRET = f"{WEBHOOK_SECRET},{CONNECT_WEBHOOK_SECRET}"
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    original = stripe.HTTPClient.request_with_retries

    def request_with_retries(client, method, url, *args, **kwargs):
        response = original(client, method, url, *args, **kwargs)
        crash = fake._crash_for(method, url)
        if crash is not None:
            raise crash
        return response

    monkeypatch.setattr(stripe.HTTPClient, "request_with_retries", request_with_retries)
    # Keep the SDK's own backoff short when a test turns network retries on.
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.01)
    monkeypatch.setattr(stripe.HTTPClient, "MAX_DELAY", 0.02)
    return fake
