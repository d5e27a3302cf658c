"""Issue 17: hostile input never reaches the database or a 500.

Every view comes from the URLconf (django-admin, Django's own, aside). As each persona of the
test world (and an anonymous visitor) the test opens every page it can; each form on a page
(its fields read from the HTML: inputs, textareas, selects, submit buttons) is then posted with
hostile values: all fields at once, and each field alone with the others sensible, so that the
value reaches the deeper checks. GET forms (filters) get the same in their query string. A
POST-only view that no page offers a form for is posted blind. The webhooks get hostile bodies
and headers, signed where the test can sign.

Nothing may answer 500, and afterwards no row may hold a NUL or a control character, an amount
beyond money.MAX_MINOR, a date outside 1900..2100 or a 300,000-character text."""

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from datetime import date, timedelta
from html.parser import HTMLParser
from urllib.parse import urlencode, urlsplit

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection, models
from django.db.models.functions import Length
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from accounts.models import Network
from attribution import disputes
from attribution.models import Dispute
from integrations.models import CrmConnection
from referrals import imports
from referrals.models import Enrolment, Referral
from tests.accounts.factories import MembershipFactory
from tests.attribution.test_disputes import make_deal
from tests.conftest import ALL_ROLES
from tests.referrals.factories import ReferralFactory
from tests.referrals.test_import import csv_bytes, row

MAX_MINOR = 10**14  # the documented maximum amount (README, partnerhub.money.MAX_MINOR)
LONG = "x" * 120_000  # past any limit a text may have (100k is checked below)
NUL = "Acme\x00Corp"
HOSTILE = ["1e30", "99999999999999999999999", "Infinity", "NaN", "-1e30", "١٢٣", "1_000",
           "1,2,3", NUL, "\x1b[31mred\x07", "line\x0bfeed\x7f", LONG, "9999-12-31",
           "0001-01-01", "9999-12", "-1"]
# Each field alone gets these (the others sensible): the values that got past shallow checks.
PER_FIELD = ["1e30", "99999999999999999999999", NUL, "9999-12-31"]
SKIP_ROUTES = ("django-admin/", "accounts/logout/", "healthz", ".well-known/")
SKIP_FIELDS = {"csrfmiddlewaretoken"}
PERSONAS = [None] + ALL_ROLES  # None: an anonymous visitor


def routes():
    """(route, name) of every view, django-admin aside."""
    found = []

    def walk(patterns, prefix="", namespace=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                ns = f"{namespace}{p.namespace}:" if p.namespace else namespace
                walk(p.url_patterns, prefix + str(p.pattern), ns)
            elif isinstance(p, URLPattern):
                found.append((prefix + str(p.pattern), f"{namespace}{p.name}"))
    walk(get_resolver().url_patterns)
    return [(r, n) for r, n in found if not r.startswith(SKIP_ROUTES)]


WEBHOOK_ROUTES = [r for r, n in routes() if "webhook" in r]


# --- The objects the views are about -----------------------------------------------------------

class Objects:
    """One of each thing a URL can name, in the test world."""

    def __init__(self, world, programs):
        acme = programs["acme"]
        rep = world.member("partner", "rep")
        self.program = acme
        self.enrolment = Enrolment.objects.get(program=acme, partner=world.partner)
        self.referral = ReferralFactory(program=acme, partner=world.partner,
                                        submitted_by=rep.user, status=Referral.SUBMITTED,
                                        submitted_at=timezone.now() - timedelta(days=1))
        self.attribution, self.loser, _ = make_deal(world, acme)
        self.dispute = disputes.open_partner_dispute(
            rep, self.loser, Dispute.TO_ANOTHER_PARTNER,
            "We met their CFO in March; our registration predates the deal.")
        self.job = imports.create_import(rep, "referrals.csv", csv_bytes([row()]))
        self.teammate = MembershipFactory(organization=world.partner, role="rep")
        self.connection = CrmConnection.objects.create(
            vendor=world.vendor, provider="builtin", webhook_token="builtin-token")
        self.world = world

    def for_route(self, route: str, name: str) -> dict:
        """Path arguments for a route; an unknown object gets a random id (a 404)."""
        o = self
        by_route = [
            ("referrals/<uuid:public_id>/dispute", o.loser), ("referrals/import/", o.job),
            ("referrals/", o.referral), ("programs/", o.program), ("enrolments/", o.enrolment),
            ("attributions/", o.attribution), ("disputes/", o.dispute),
            ("team/", o.teammate), ("network/organizations/", o.world.partner2),
            ("network/applications/", o.world.pending), ("integrations/crm/", o.connection),
            ("clawbacks/", o.world.partner),
        ]
        obj = next((o for prefix, o in by_route if route.startswith(prefix)), None)
        kwargs = {}
        for kind, key in re.findall(r"<(?:(\w+):)?(\w+)>", route):
            if kind == "uuid":
                kwargs[key] = str(obj.public_id) if obj is not None and key == "public_id" \
                    else str(uuid.uuid4())
            elif kind == "int":
                kwargs[key] = timezone.now().year - 1
            elif key == "kind":
                kwargs[key] = "partner"
            elif key == "currency":
                kwargs[key] = "USD"
            elif key == "provider":
                kwargs[key] = "hubspot"
            else:
                kwargs[key] = "not-a-token"
        return kwargs


def build_path(route: str, kwargs: dict) -> str:
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(kwargs[m.group(1)]), route)
    return "/" + path.lstrip("^").rstrip("$")


# --- Reading forms from a page -----------------------------------------------------------------

class FormReader(HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms, self._form, self._select, self._textarea = [], None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._form = {"method": (a.get("method") or "get").lower(),
                          "action": a.get("action") or "", "fields": {}, "buttons": []}
            self.forms.append(self._form)
        elif self._form is None:
            return
        elif tag == "input" and a.get("name") and a["name"] not in SKIP_FIELDS:
            kind = (a.get("type") or "text").lower()
            if kind in ("submit", "button"):
                self._form["buttons"].append((a["name"], a.get("value", "")))
            elif kind in ("checkbox", "radio"):
                self._form["fields"].setdefault(a["name"], ("choice", a.get("value", "on")))
            elif kind != "file":
                self._form["fields"][a["name"]] = (kind, a.get("value", ""))
        elif tag == "textarea" and a.get("name"):
            self._form["fields"][a["name"]] = ("textarea", "")
        elif tag == "select" and a.get("name"):
            self._select = a["name"]
            self._form["fields"][a["name"]] = ("choice", "")
        elif tag == "option" and self._select:
            kind, value = self._form["fields"][self._select]
            if not value and a.get("value"):
                self._form["fields"][self._select] = ("choice", a["value"])
        elif tag == "button" and a.get("name"):
            self._form["buttons"].append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None


SENSIBLE = {"email": "jane@initech.com", "date": date.today().isoformat(), "month": "2027-03",
            "number": "10", "url": "https://initech.com", "tel": "+14155550100"}
BY_NAME = {"website": "initech.com", "contact_email": "jane@initech.com", "country": "US",
           "amount": "1000", "currency": "USD", "expected_close": "2027-03",
           "contact_phone": "+14155550100", "rate": "10", "payout_minimum": "50",
           "holding_days": "30", "clawback_days": "90", "days": "30", "period_end":
           (date.today() - timedelta(days=1)).isoformat(), "form_signed_on":
           (date.today() - timedelta(days=3)).isoformat(), "email": "jane@initech.com"}


def sensible(fields: dict) -> dict:
    values = {}
    for name, (kind, value) in fields.items():
        values[name] = value or BY_NAME.get(name) or SENSIBLE.get(kind) or "Initech"
    return values


def forms_on(html: str, page_path: str) -> list[dict]:
    reader = FormReader()
    reader.feed(html)
    for form in reader.forms:
        action = form["action"] or page_path
        form["action"] = urlsplit(action).path or page_path
    return reader.forms


# --- What must never be stored -----------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def stored_hostile_values() -> list[str]:
    """Rows holding what hostile input leaves behind."""
    found = []
    for model in apps.get_models():
        if model._meta.app_label not in ("accounts", "referrals", "attribution", "payouts",
                                         "integrations", "reports"):
            continue
        for f in model._meta.concrete_fields:
            qs = model._default_manager.all()
            if isinstance(f, models.CharField | models.TextField) and not f.choices:
                # PostgreSQL refuses a NUL itself (the request would have failed instead).
                if connection.vendor != "postgresql" and qs.filter(
                        **{f"{f.name}__contains": "\x00"}).exists():
                    found.append(f"{model.__name__}.{f.name} holds a NUL")
                for value in qs.filter(**{f"{f.name}__regex": r"[\x01-\x08\x0b\x0c\x0e-\x1f]"}) \
                        .values_list(f.name, flat=True)[:3]:
                    if f.name not in ("credentials_encrypted",) and _CONTROL.search(value):
                        found.append(f"{model.__name__}.{f.name} holds a control character")
                if qs.annotate(_n=Length(f.name)).filter(_n__gte=100_000).exists():
                    found.append(f"{model.__name__}.{f.name} holds a 100k+ text")
            elif isinstance(f, models.BigIntegerField | models.IntegerField) \
                    and f.name.endswith("_minor"):
                if qs.filter(models.Q(**{f"{f.name}__gt": MAX_MINOR})
                             | models.Q(**{f"{f.name}__lt": -MAX_MINOR})).exists():
                    found.append(f"{model.__name__}.{f.name} beyond MAX_MINOR")
            elif isinstance(f, models.DateField) and not isinstance(f, models.DateTimeField):
                if qs.filter(models.Q(**{f"{f.name}__gt": date(2100, 12, 31)})
                             | models.Q(**{f"{f.name}__lt": date(1900, 1, 1)})).exists():
                    found.append(f"{model.__name__}.{f.name} holds a nonsense date")
    return found


# --- The test ----------------------------------------------------------------------------------

@pytest.fixture
def objects(world, programs, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    if hasattr(Network, "TWO_FACTOR_OFF"):  # input is the subject here, not sign-in
        Network.objects.update(two_factor_policy=Network.TWO_FACTOR_OFF)
    return Objects(world, programs)


def client_as(world, persona) -> Client:
    client = Client() if persona is None else world.client_for(world.member(*persona))
    client.raise_request_exception = False
    return client


def _send(client, method, path, data, errors, label):
    if method == "get":
        response = client.get(path + "?" + urlencode(data))
    else:
        response = client.post(path, data)
    if response.status_code >= 500:
        errors.append(f"{response.status_code} {method.upper()} {path} {label}")
    return response


@pytest.mark.parametrize("persona", PERSONAS, ids=lambda p: "anonymous" if p is None
                         else ".".join(p))
def test_no_hostile_form_input_reaches_a_500_or_the_database(world, objects, persona):
    client = client_as(world, persona)
    errors, posted = [], set()
    pages, post_only = [], []
    for route, name in routes():
        if route in WEBHOOK_ROUTES:
            continue
        path = build_path(route, objects.for_route(route, name))
        response = client.get(path)
        if response.status_code >= 500:
            errors.append(f"{response.status_code} GET {path}")
        elif response.status_code == 405:
            post_only.append(path)
        elif response.status_code == 200 and "html" in response.get("Content-Type", ""):
            pages.append((path, response.content.decode()))
    for page_path, html in pages:
        for form in forms_on(html, page_path):
            key = (form["method"], form["action"])
            if key in posted or not form["fields"] and not form["buttons"]:
                continue
            posted.add(key)
            _attack(client, form, errors)
    for path in post_only:
        if ("post", path) not in posted:  # no page offers its form: post it blind
            for value in HOSTILE:
                _send(client, "post", path, {n: value for n in BY_NAME} | {
                    "reason": value, "note": value, "text": value, "body": value}, errors,
                    f"blind {value[:20]!r}")
    assert not errors, "\n".join(errors)
    assert not stored_hostile_values(), stored_hostile_values()


def _attack(client, form, errors):
    method, action, fields = form["method"], form["action"], form["fields"]
    buttons = form["buttons"] or [(None, None)]
    base = sensible(fields)
    texts = [n for n, (kind, _) in fields.items() if kind not in ("choice", "hidden")]
    for i, (button, value) in enumerate(buttons):
        extra = {button: value} if button else {}
        for hostile in HOSTILE:
            data = {**base, **{n: hostile for n in texts}, **extra}
            _send(client, method, action, data, errors, f"all fields {hostile[:20]!r}")
        if method == "get":
            break  # a filter: every field at once is enough (its fields are independent)
        for field in texts if i == 0 else ():  # the other buttons share the fields' checks
            for hostile in PER_FIELD:
                _send(client, method, action, {**base, field: hostile, **extra}, errors,
                      f"{field}={hostile[:20]!r}")


# --- Webhooks ----------------------------------------------------------------------------------

HOOK_SECRET = "hubspot-client-secret"
HOOK_USER, HOOK_PASSWORD = "hook-user", "hook-password"


def _nested(depth):
    value = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def hostile_bodies() -> list[bytes]:
    now_ms = int(time.time() * 1000)
    event = {"eventId": 1, "subscriptionType": "deal.propertyChange", "objectId": 1,
             "occurredAt": now_ms, "propertyName": "dealstage", "propertyValue": "closedwon"}
    return [
        b"\xff\xfe not utf-8 \x80",
        json.dumps([{**event, "propertyValue": "won\u0000"}]).encode(),
        json.dumps([{**event, "objectId": 10**30}]).encode(),
        json.dumps([{**event, "occurredAt": "9" * 400}]).encode(),
        ("[" * 5000 + "]" * 5000).encode(),
        json.dumps(_nested(900)).encode(),
        json.dumps({"meta": {"action": "change", "object": "deal", "id": 1},
                    "current": {"id": 1, "value": float("nan"), "currency": {"x": 1},
                                "custom_fields": "oops", "update_time": "9999-12-31 23:59:59",
                                "status": "won"}}).encode(),
        json.dumps({"meta": {"action": "updated", "entity": "deal", "entity_id": "1"},
                    "data": {"id": 1, "value": 1e30, "currency": "USD", "status": "won"},
                    "previous": {}}).encode(),
        json.dumps({"id": "evt_1", "type": "transfer.reversed", "created": 10**30,
                    "data": {"object": {"id": "tr_\u0000", "amount": 10**30}}}).encode(),
        b"{}", b"", b"null", b"[]", b'"' + b"x" * 300_000 + b'"',
    ]


@pytest.fixture
def hooks(world, programs):
    for provider, credentials in (
            ("hubspot", {"access_token": "pat-na1-x", "client_secret": HOOK_SECRET}),
            ("pipedrive", {"api_token": "x", "webhook_user": HOOK_USER,
                           "webhook_password": HOOK_PASSWORD})):
        vendor = world.vendor if provider == "hubspot" else world.vendor2
        connection = CrmConnection(vendor=vendor, provider=provider,
                                   webhook_token=f"{provider}-token",
                                   base_url="https://api.example.com")
        connection.credentials = credentials
        connection.save()
    return world


def _signed_headers(provider, path, body) -> list[dict]:
    if provider == "stripe":
        secret = settings.STRIPE_WEBHOOK_SECRET
        now = int(time.time())
        sign = lambda t: hmac.new(secret.encode(), f"{t}.".encode() + body,  # noqa: E731
                                  hashlib.sha256).hexdigest()
        return [{}, {"HTTP_STRIPE_SIGNATURE": f"t={now},v1={sign(now)}"},
                {"HTTP_STRIPE_SIGNATURE": f"t={'9' * 400},v1=00"},
                {"HTTP_STRIPE_SIGNATURE": f"t={now + 600},v1={sign(now + 600)}"}]
    if provider == "hubspot":
        ts = str(int(time.time() * 1000))
        source = b"POST" + f"http://testserver{path}".encode() + body + ts.encode()
        signature = base64.b64encode(hmac.new(HOOK_SECRET.encode(), source,
                                              hashlib.sha256).digest()).decode()
        return [{}, {"HTTP_X_HUBSPOT_SIGNATURE_V3": signature,
                     "HTTP_X_HUBSPOT_REQUEST_TIMESTAMP": ts},
                {"HTTP_X_HUBSPOT_SIGNATURE_V3": "x", "HTTP_X_HUBSPOT_REQUEST_TIMESTAMP":
                 "9" * 400},
                {"HTTP_X_HUBSPOT_SIGNATURE_V3": "x\x00", "HTTP_X_HUBSPOT_REQUEST_TIMESTAMP":
                 "١٢٣"}]
    token = base64.b64encode(f"{HOOK_USER}:{HOOK_PASSWORD}".encode()).decode()
    return [{}, {"HTTP_AUTHORIZATION": f"Basic {token}"},
            {"HTTP_AUTHORIZATION": "Basic not-base64!\x00"}]


def webhook_targets():
    targets = []
    for route in WEBHOOK_ROUTES:
        if "<str:provider>" in route:
            for provider in ("hubspot", "pipedrive"):
                targets.append((provider, build_path(route, {
                    "provider": provider, "token": f"{provider}-token"})))
        else:
            targets.append(("stripe", build_path(route, {})))
    return targets


@pytest.mark.parametrize("provider,path", webhook_targets(),
                         ids=[p for p, _ in webhook_targets()])
def test_no_hostile_webhook_reaches_a_500_or_the_database(hooks, provider, path):
    client = Client(raise_request_exception=False)
    errors = []
    for body in hostile_bodies():
        for headers in _signed_headers(provider, path, body):
            response = client.post(path, body, content_type="application/json", **headers)
            if response.status_code >= 500:
                shown = {k: v[:24] for k, v in headers.items()} or "unsigned"
                errors.append(f"{response.status_code} {path} {body[:40]!r} {shown}")
    assert not errors, "\n".join(errors)
    assert not stored_hostile_values(), stored_hostile_values()


def test_discovery_finds_every_form_view_and_webhook():
    names = {n for _, n in routes()}
    for expected in ("referrals:new", "referrals:withdraw", "payouts:commission_plan",
                     "payouts:tax_profile", "payouts:batch_create", "attribution:confirm",
                     "attribution:dispute_withdraw", "accounts:audit_log" if any(
                         n.endswith("audit_log") for n in names) else "audit_log"):
        assert any(n.endswith(expected.split(":")[-1]) for n in names), expected
    assert {p for p, _ in webhook_targets()} == {"hubspot", "pipedrive", "stripe"}
