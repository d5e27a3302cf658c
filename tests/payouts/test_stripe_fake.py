"""The real stripe SDK against the fake Stripe: the protocol the payout code relies on (form
encoding, authentication, idempotency replay, error objects and statuses, retries), and what
payouts.stripe_api makes of it."""

import json
import time

import pytest
import stripe

from accounts.errors import ServiceError
from payouts import stripe_api
from tests.fakes.stripe import API_KEY, WEBHOOK_SECRET, FakeStripe, SimulatedCrash, decode_form

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(fake_stripe):
    return stripe_api.client()


@pytest.fixture
def ready_account(fake_stripe):
    account = fake_stripe.add_account(country="US")
    fake_stripe.complete_onboarding(account["id"])
    return account


def test_nested_form_keys_decode_like_stripe_reads_them():
    params = decode_form("controller[fees][payer]=application&capabilities[transfers]"
                         "[requested]=true&expand[0]=a&expand[1]=b&metadata[x]=1&amount=100")
    assert params == {"controller": {"fees": {"payer": "application"}},
                      "capabilities": {"transfers": {"requested": "true"}},
                      "expand": ["a", "b"], "metadata": {"x": "1"}, "amount": "100"}


def test_the_sdk_sends_form_encoded_nested_parameters_with_the_bearer_key(fake_stripe, client):
    account = client.v1.accounts.create({
        "controller": {"fees": {"payer": "application"}, "losses": {"payments": "application"},
                       "requirement_collection": "stripe",
                       "stripe_dashboard": {"type": "express"}},
        "capabilities": {"transfers": {"requested": True}}, "country": "US",
        "metadata": {"partner_id": "p-1"}})
    sent = fake_stripe.requests[-1]
    assert sent["headers"]["Authorization"] == f"Bearer {API_KEY}"
    assert sent["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert "controller[fees][payer]=application" in sent["body"]
    assert "capabilities[transfers][requested]=true" in sent["body"]
    assert account.id.startswith("acct_")
    assert account.controller.stripe_dashboard.type == "express"
    assert account.capabilities.transfers == "inactive"
    assert account.metadata["partner_id"] == "p-1"
    assert account.details_submitted is False
    assert "external_account" in account.requirements.currently_due


def test_a_wrong_api_key_gets_stripes_401(fake_stripe, settings):
    settings.STRIPE_API_KEY = "sk_test_wrong_key_1234"
    with pytest.raises(stripe.AuthenticationError) as caught:
        stripe_api.client().v1.accounts.retrieve("acct_x")
    assert caught.value.http_status == 401
    assert "Invalid API Key provided" in caught.value.user_message
    failure = stripe_api.classify(caught.value)
    assert not failure.transient and "API key" in failure.message


def test_without_an_api_key_the_client_explains_that_payouts_are_off(settings):
    settings.STRIPE_API_KEY = ""
    with pytest.raises(ServiceError, match="Payouts are not configured on this server"):
        stripe_api.client()


def test_the_same_idempotency_key_replays_the_first_answer(fake_stripe, client, ready_account):
    params = {"amount": 5000, "currency": "usd", "destination": ready_account["id"],
              "transfer_group": "batch_1", "metadata": {"payout_id": "p1"}}
    first = client.v1.transfers.create(params, {"idempotency_key": "payout-p1"})
    again = client.v1.transfers.create(params, {"idempotency_key": "payout-p1"})
    assert again.id == first.id
    assert len(fake_stripe.transfers) == 1
    assert fake_stripe.balance["usd"] == 100_000_000 - 5000
    assert fake_stripe.requests[-1]["status"] == 200


def test_the_same_key_with_other_parameters_is_an_idempotency_error(fake_stripe, client,
                                                                     ready_account):
    params = {"amount": 5000, "currency": "usd", "destination": ready_account["id"]}
    client.v1.transfers.create(params, {"idempotency_key": "k1"})
    with pytest.raises(stripe.IdempotencyError) as caught:
        client.v1.transfers.create({**params, "amount": 6000}, {"idempotency_key": "k1"})
    assert caught.value.http_status == 400
    assert "same parameters" in caught.value.user_message
    assert not stripe_api.classify(caught.value).transient
    assert len(fake_stripe.transfers) == 1


def test_a_transfer_beyond_the_balance_is_refused_and_the_refusal_is_replayed(fake_stripe,
                                                                              client,
                                                                              ready_account):
    fake_stripe.balance["usd"] = 1000
    params = {"amount": 5000, "currency": "usd", "destination": ready_account["id"]}
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.transfers.create(params, {"idempotency_key": "k2"})
    assert (caught.value.http_status, caught.value.code) == (400, "balance_insufficient")
    fake_stripe.balance["usd"] = 10_000
    with pytest.raises(stripe.InvalidRequestError):  # Stripe saved the refusal under the key
        client.v1.transfers.create(params, {"idempotency_key": "k2"})
    assert client.v1.transfers.create(params, {"idempotency_key": "k3"}).amount == 5000


def test_balances_are_per_currency(fake_stripe, client, ready_account):
    fake_stripe.balance["eur"] = 0
    client.v1.transfers.create({"amount": 100, "currency": "usd",
                                "destination": ready_account["id"]})
    with pytest.raises(stripe.InvalidRequestError, match="insufficient available funds"):
        client.v1.transfers.create({"amount": 100, "currency": "eur",
                                    "destination": ready_account["id"]})


def test_a_destination_without_the_transfers_capability_is_refused(fake_stripe, client):
    account = fake_stripe.add_account()
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.transfers.create({"amount": 100, "currency": "usd",
                                    "destination": account["id"]})
    assert caught.value.code == "insufficient_capabilities_for_transfer"


def test_missing_parameters_are_invalid_requests_with_the_param(fake_stripe, client):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.transfers.create({"amount": 100, "currency": "usd"})
    assert (caught.value.code, caught.value.param) == ("parameter_missing", "destination")


def test_programmed_errors_come_back_as_the_sdks_exceptions(fake_stripe, client):
    fake_stripe.fail(500, path="/v1/accounts/acct_1")
    with pytest.raises(stripe.APIError) as server:
        client.v1.accounts.retrieve("acct_1")
    assert stripe_api.classify(server.value).transient

    fake_stripe.fail(429, path="/v1/accounts/acct_1")
    with pytest.raises(stripe.RateLimitError) as limited:
        client.v1.accounts.retrieve("acct_1")
    assert limited.value.headers["Stripe-Rate-Limited-Reason"] == "global-rate"
    assert stripe_api.classify(limited.value).transient

    fake_stripe.fail(402, path="/v1/accounts/acct_1")
    with pytest.raises(stripe.CardError) as card:
        client.v1.accounts.retrieve("acct_1")
    assert not stripe_api.classify(card.value).transient

    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.accounts.retrieve("acct_1")
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")
    assert not stripe_api.classify(missing.value).transient


def test_the_sdk_retries_server_errors_and_lock_timeouts_with_the_same_key(fake_stripe,
                                                                          settings,
                                                                          ready_account):
    settings.STRIPE_MAX_NETWORK_RETRIES = 2
    client = stripe_api.client()
    fake_stripe.fail(503, path="/v1/transfers", method="POST")
    fake_stripe.lock_timeout(path="/v1/transfers", method="POST")
    transfer = client.v1.transfers.create({"amount": 700, "currency": "usd",
                                           "destination": ready_account["id"]})
    posts = [r for r in fake_stripe.requests if r["path"] == "/v1/transfers"]
    assert [r["status"] for r in posts] == [503, 429, 200]
    assert len({r["headers"]["Idempotency-Key"] for r in posts}) == 1
    assert transfer.amount == 700


def test_a_saved_server_error_says_not_to_retry_and_the_sdk_obeys(fake_stripe, settings,
                                                                  ready_account):
    settings.STRIPE_MAX_NETWORK_RETRIES = 2
    fake_stripe.fail(500, path="/v1/transfers", method="POST", saved=True, should_retry=False)
    with pytest.raises(stripe.APIError):
        stripe_api.client().v1.transfers.create(
            {"amount": 700, "currency": "usd", "destination": ready_account["id"]},
            {"idempotency_key": "k-500"})
    assert fake_stripe.count("POST", "/v1/transfers") == 1


def test_listing_transfers_by_group_pages_through_has_more(fake_stripe, client, ready_account):
    for i in range(5):
        client.v1.transfers.create({"amount": 100 + i, "currency": "usd",
                                    "destination": ready_account["id"],
                                    "transfer_group": "g1" if i % 2 == 0 else "g2",
                                    "metadata": {"n": str(i)}})
    page = client.v1.transfers.list({"transfer_group": "g1", "limit": 2})
    assert page.has_more is True
    assert [t.amount for t in page.data] == [104, 102]
    every = [t.amount for t in client.v1.transfers.list(
        {"transfer_group": "g1", "limit": 2}).auto_paging_iter()]
    assert every == [104, 102, 100]


def test_a_connected_accounts_context_cannot_see_platform_transfers(fake_stripe, client,
                                                                    ready_account):
    transfer = client.v1.transfers.create({"amount": 100, "currency": "usd",
                                           "destination": ready_account["id"]})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.transfers.retrieve(transfer.id, options={"stripe_account":
                                                           ready_account["id"]})
    with pytest.raises(stripe.PermissionError):
        client.v1.transfers.list(options={"stripe_account": "acct_unknown"})


def test_reversals_move_money_back_and_cannot_exceed_the_transfer(fake_stripe, client,
                                                                  ready_account):
    transfer = client.v1.transfers.create({"amount": 1000, "currency": "usd",
                                           "destination": ready_account["id"]})
    reversal = client.v1.transfers.reversals.create(transfer.id, {"amount": 400})
    assert (reversal.amount, reversal.transfer) == (400, transfer.id)
    assert client.v1.transfers.retrieve(transfer.id).amount_reversed == 400
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.transfers.reversals.create(transfer.id, {"amount": 700})
    client.v1.transfers.reversals.create(transfer.id)  # the rest
    assert client.v1.transfers.retrieve(transfer.id).reversed is True
    assert fake_stripe.events_of("transfer.reversed")[-1]["data"]["object"][
        "amount_reversed"] == 1000


def test_account_links_need_urls_and_a_known_account(fake_stripe, client, ready_account):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.account_links.create({"account": ready_account["id"],
                                        "type": "account_onboarding"})
    assert caught.value.code == "parameter_missing"
    link = client.v1.account_links.create({
        "account": ready_account["id"], "type": "account_onboarding",
        "return_url": "https://x.test/back", "refresh_url": "https://x.test/again"})
    assert link.url.startswith(fake_stripe.url) and ready_account["id"] in link.url


def test_complete_onboarding_activates_the_account_and_emits_account_updated(fake_stripe,
                                                                            client):
    account = fake_stripe.add_account()
    fake_stripe.complete_onboarding(account["id"])
    fetched = client.v1.accounts.retrieve(account["id"])
    assert fetched.details_submitted and fetched.payouts_enabled and fetched.charges_enabled
    assert fetched.capabilities.transfers == "active"
    assert fetched.requirements.currently_due == []
    assert fake_stripe.events_of("account.updated")[-1]["data"]["object"]["id"] == account["id"]


def test_signatures_verify_with_the_sdks_helper(fake_stripe):
    event = fake_stripe.event("account.updated", {"id": "acct_1", "object": "account"})
    body, header = fake_stripe.webhook(event)
    assert stripe.WebhookSignature.verify_header(body, header, WEBHOOK_SECRET, 300)
    assert header.startswith(f"t={int(time.time())}"[:8])
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(body, header, "whsec_other", 300)
    old = FakeStripe.sign(body, WEBHOOK_SECRET, timestamp=int(time.time()) - 3600)
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.WebhookSignature.verify_header(body, old, WEBHOOK_SECRET, 300)
    assert json.loads(body)["type"] == "account.updated"


def test_crash_after_lets_stripe_answer_then_fails_our_side(fake_stripe, client, ready_account):
    fake_stripe.crash_after("POST", "/v1/transfers")
    with pytest.raises(SimulatedCrash):
        client.v1.transfers.create({"amount": 100, "currency": "usd",
                                    "destination": ready_account["id"]})
    assert len(fake_stripe.transfers) == 1


# --- Connected accounts: listing, cross-border rules, refused fields, API versions -----------

CONTROLLER = {"fees": {"payer": "application"}, "losses": {"payments": "application"},
              "requirement_collection": "stripe", "stripe_dashboard": {"type": "express"}}


def test_accounts_are_listed_newest_first_and_filtered_by_creation_time(fake_stripe, client):
    made = [client.v1.accounts.create({"controller": CONTROLLER, "country": "US",
                                       "metadata": {"n": str(i)}}) for i in range(3)]
    listed = client.v1.accounts.list({"limit": 2})
    assert [a.id for a in listed.data] == [made[2].id, made[1].id] and listed.has_more
    since = client.v1.accounts.list({"created": {"gte": made[1].created}, "limit": 1})
    assert [a.id for a in since.auto_paging_iter()] == [made[2].id, made[1].id]
    with pytest.raises(stripe.PermissionError):
        client.v1.accounts.list(options={"stripe_account": made[0].id})


def test_an_account_abroad_needs_the_recipient_service_agreement(fake_stripe, client):
    params = {"controller": CONTROLLER, "country": "DE",
              "capabilities": {"transfers": {"requested": True}}}
    with pytest.raises(stripe.InvalidRequestError, match="without the `card_payments`"):
        client.v1.accounts.create(params)
    account = client.v1.accounts.create(
        {**params, "tos_acceptance": {"service_agreement": "recipient"}})
    assert account.tos_acceptance.service_agreement == "recipient"
    with pytest.raises(stripe.InvalidRequestError, match="card_payments"):
        client.v1.accounts.create({**params, "tos_acceptance": {
            "service_agreement": "recipient"}, "capabilities": {
            "transfers": {"requested": True}, "card_payments": {"requested": True}}})
    fake_stripe.complete_onboarding(account.id)
    assert client.v1.transfers.create({"amount": 100, "currency": "usd",
                                       "destination": account.id}).amount == 100


def test_a_transfer_abroad_to_a_full_agreement_account_is_refused(fake_stripe, client):
    account = fake_stripe.add_account(country="GB")
    fake_stripe.complete_onboarding(account["id"])
    with pytest.raises(stripe.InvalidRequestError, match="under the `full` service agreement"):
        client.v1.transfers.create({"amount": 100, "currency": "usd",
                                    "destination": account["id"]})


def test_a_website_without_a_public_host_is_refused_and_the_refusal_is_saved(fake_stripe,
                                                                           client):
    params = {"controller": CONTROLLER, "country": "US",
              "business_profile": {"url": "http://localhost:8000"}}
    for _ in range(2):  # the second answer is the saved one, replayed
        with pytest.raises(stripe.InvalidRequestError) as caught:
            client.v1.accounts.create(params, {"idempotency_key": "acct-1"})
        assert (caught.value.code, caught.value.param) == ("url_invalid",
                                                           "business_profile[url]")
    assert fake_stripe.requests[-1]["status"] == 400 and not fake_stripe.accounts
    with pytest.raises(stripe.IdempotencyError):  # corrected, but under the same key
        client.v1.accounts.create({**params, "business_profile": {
            "url": "https://brightpath.example"}}, {"idempotency_key": "acct-1"})


def test_the_answer_speaks_the_requested_api_version(fake_stripe, client):
    client.v1.accounts.list()
    assert fake_stripe.requests[-1]["headers"]["Stripe-Version"] == stripe_api.API_VERSION
    odd = stripe.StripeClient(API_KEY, base_addresses={"api": fake_stripe.url},
                              stripe_version="yesterday")
    with pytest.raises(stripe.InvalidRequestError, match="Invalid Stripe API version"):
        odd.v1.accounts.list()
