"""Stripe Connect onboarding: the connected account is created once with the platform as
controller, the owner goes through Stripe's hosted onboarding and comes back, status changes
land on the PayoutAccount; and the payout account page for each role."""

import pytest
from django.urls import reverse

from accounts.errors import PermissionDenied, ServiceError
from accounts.models import AuditEvent, Notification
from payouts import connect
from payouts.models import PayoutAccount
from tests.conftest import ALL_ROLES
from tests.fakes.stripe import SimulatedCrash
from tests.payouts.test_transfers import complete_tax_profile, connect_partner

pytestmark = pytest.mark.django_db

RETURN, REFRESH = "https://partners.example/back", "https://partners.example/again"
PAGE = reverse("payouts:payout_account")


@pytest.fixture
def owner(world):
    return world.member("partner", "owner")


def onboard(owner):
    return connect.start_onboarding(owner, owner.organization, RETURN, REFRESH)


def account_posts(fake_stripe):
    return [r for r in fake_stripe.requests if (r["method"], r["path"]) ==
            ("POST", "/v1/accounts")]


def test_onboarding_creates_a_platform_controlled_account_and_an_onboarding_link(
        world, owner, fake_stripe):
    complete_tax_profile(world.partner)
    url = onboard(owner)
    account = PayoutAccount.objects.get(partner=world.partner)
    (post,) = account_posts(fake_stripe)
    params = post["params"]
    assert params["controller"] == {"fees": {"payer": "application"},
                                    "losses": {"payments": "application"},
                                    "requirement_collection": "stripe",
                                    "stripe_dashboard": {"type": "express"}}
    assert params["capabilities"] == {"transfers": {"requested": "true"}}
    assert params["country"] == "US"  # from the tax profile
    assert params["metadata"] == {"partner_id": str(world.partner.public_id),
                                  "network": world.network.slug}
    # The key names the partner and the request's content (see the retry tests below).
    assert post["headers"]["Idempotency-Key"].startswith(
        f"connect-account-{world.partner.public_id}-")
    assert account.stripe_account_id in fake_stripe.accounts
    assert (account.details_submitted, account.can_receive_transfers) == (False, False)
    assert "external_account" in account.requirements_due
    assert account.created_by == owner.user
    link = fake_stripe.account_links[-1]
    assert url == link["url"]
    assert (link["_account"], link["_type"], link["_return_url"], link["_refresh_url"]) == (
        account.stripe_account_id, "account_onboarding", RETURN, REFRESH)
    assert AuditEvent.objects.filter(action="payout_account.created").exists()


def test_continuing_onboarding_reuses_the_account_with_a_new_link(world, owner, fake_stripe):
    first = onboard(owner)
    second = onboard(owner)
    assert first != second
    assert len(account_posts(fake_stripe)) == 1 and len(fake_stripe.accounts) == 1
    assert PayoutAccount.objects.filter(partner=world.partner).count() == 1


def test_a_lost_answer_finds_the_same_account_again(world, owner, fake_stripe):
    fake_stripe.crash_after("POST", "/v1/accounts")
    with pytest.raises(Exception, match="crashed"):
        onboard(owner)
    assert not PayoutAccount.objects.exists()
    onboard(owner)
    assert len(fake_stripe.accounts) == 1  # the idempotency key replayed the account
    assert PayoutAccount.objects.get().stripe_account_id in fake_stripe.accounts


def account_lookups(fake_stripe):
    return [r for r in fake_stripe.requests if (r["method"], r["path"]) ==
            ("GET", "/v1/accounts")]


def keys(posts):
    return [post["headers"]["Idempotency-Key"] for post in posts]


def test_a_retry_of_the_same_request_sends_the_same_key(world, owner, fake_stripe):
    fake_stripe.fail(503, path="/v1/accounts", method="POST")  # not saved: nothing was made
    with pytest.raises(ServiceError, match="could not be reached"):
        onboard(owner)
    onboard(owner)
    first, second = keys(account_posts(fake_stripe))
    assert first == second and first.startswith(f"connect-account-{world.partner.public_id}-")
    assert len(fake_stripe.accounts) == 1


def test_a_website_stripe_refused_can_be_corrected_and_sent_at_once(world, owner, fake_stripe):
    world.partner.website = "http://localhost:8000"
    world.partner.save(update_fields=["website"])
    with pytest.raises(ServiceError, match="Stripe refused: Not a valid URL"):
        onboard(owner)
    assert not PayoutAccount.objects.exists() and not fake_stripe.accounts
    world.partner.website = "https://brightpath.example"
    world.partner.save(update_fields=["website"])
    onboard(owner)  # the refusal Stripe saved under the first key is not replayed
    account = PayoutAccount.objects.get()
    assert list(fake_stripe.accounts) == [account.stripe_account_id]
    assert fake_stripe.accounts[account.stripe_account_id]["business_profile"]["url"] == \
        "https://brightpath.example"
    first, second = keys(account_posts(fake_stripe))
    assert first != second
    assert not account_lookups(fake_stripe)  # a refusal made nothing: nothing to look for


def test_a_refusal_stripe_saved_does_not_block_the_same_request_once_the_cause_is_fixed(
        world, owner, fake_stripe):
    fake_stripe.fail(400, path="/v1/accounts", method="POST", saved=True,
                     message="Connect is not enabled on this account.")
    with pytest.raises(ServiceError, match="Connect is not enabled"):
        onboard(owner)
    onboard(owner)  # the operators enabled Connect; the owner clicks again, nothing changed
    assert PayoutAccount.objects.get().stripe_account_id in fake_stripe.accounts
    first, second = keys(account_posts(fake_stripe))
    assert first != second


def test_an_account_stripe_made_before_the_request_changed_is_adopted_not_duplicated(
        world, owner, fake_stripe):
    fake_stripe.crash_after("POST", "/v1/accounts")
    with pytest.raises(SimulatedCrash):
        onboard(owner)
    (made,) = fake_stripe.accounts
    world.partner.name = "Brightpath Consulting Group"
    world.partner.save(update_fields=["name"])
    onboard(owner)
    assert list(fake_stripe.accounts) == [made]
    assert len(account_posts(fake_stripe)) == 1
    account = PayoutAccount.objects.get()
    assert account.stripe_account_id == made and account.created_by == owner.user
    created = AuditEvent.objects.get(action="payout_account.created")
    assert created.after["adopted"] is True
    lookup = account_lookups(fake_stripe)[0]["params"]
    assert int(lookup["created"]["gte"]) <= fake_stripe.accounts[made]["created"]


def test_an_account_is_found_after_stripe_forgot_the_key(world, owner, fake_stripe):
    fake_stripe.crash_after("POST", "/v1/accounts")
    with pytest.raises(SimulatedCrash):
        onboard(owner)
    fake_stripe._idempotency.clear()  # 24 hours later Stripe has forgotten the key
    onboard(owner)
    assert len(fake_stripe.accounts) == 1 and len(account_posts(fake_stripe)) == 1
    assert PayoutAccount.objects.get().stripe_account_id in fake_stripe.accounts


def test_a_lookup_ignores_other_partners_accounts(world, owner, fake_stripe):
    fake_stripe.fail(503, path="/v1/accounts", method="POST")
    with pytest.raises(ServiceError):
        onboard(owner)
    other = fake_stripe.add_account(metadata={"partner_id": str(
        world.others["partner2_owner"].organization.public_id)})
    onboard(owner)
    account = PayoutAccount.objects.get()
    assert account.stripe_account_id != other["id"] and len(fake_stripe.accounts) == 2
    assert len(account_lookups(fake_stripe)) == 1


# --- Which country, which service agreement -------------------------------------------------

def test_a_partner_in_the_platforms_country_gets_the_full_agreement(world, owner, fake_stripe):
    onboard(owner)
    params = account_posts(fake_stripe)[0]["params"]
    assert params["country"] == "US" and "tos_acceptance" not in params


def test_a_partner_abroad_gets_a_recipient_account_for_cross_border_payouts(
        world, owner, fake_stripe):
    complete_tax_profile(world.partner)
    world.partner.tax_profile.country = "DE"  # the tax profile wins over the organization
    world.partner.tax_profile.save(update_fields=["country"])
    onboard(owner)
    params = account_posts(fake_stripe)[0]["params"]
    assert params["country"] == "DE"
    assert params["tos_acceptance"] == {"service_agreement": "recipient"}
    assert params["capabilities"] == {"transfers": {"requested": "true"}}
    account = PayoutAccount.objects.get()
    assert fake_stripe.accounts[account.stripe_account_id]["tos_acceptance"][
        "service_agreement"] == "recipient"
    fake_stripe.complete_onboarding(account.stripe_account_id)
    account = connect.refresh_account(account)  # no card payments, and still ready
    assert account.can_receive_transfers and not connect.is_restricted(account)


def test_the_platforms_country_is_a_setting(world, owner, fake_stripe, settings):
    settings.STRIPE_PLATFORM_COUNTRY = "GB"
    fake_stripe.platform_country = "GB"
    onboard(owner)  # Brightpath is in the US: abroad, seen from a UK platform
    params = account_posts(fake_stripe)[0]["params"]
    assert (params["country"], params["tos_acceptance"]) == (
        "US", {"service_agreement": "recipient"})


def test_without_a_country_onboarding_says_where_to_set_it_and_creates_nothing(
        world, owner, fake_stripe):
    world.partner.country = ""
    world.partner.save(update_fields=["country"])
    with pytest.raises(ServiceError, match="country") as refused:
        onboard(owner)
    assert "/tax-profile/" in refused.value.message
    assert not fake_stripe.requests and not PayoutAccount.objects.exists()


def test_the_country_falls_back_to_the_organization(world, owner, fake_stripe):
    world.partner.country = "GB"
    world.partner.save(update_fields=["country"])
    onboard(owner)
    assert account_posts(fake_stripe)[0]["params"]["country"] == "GB"
    assert PayoutAccount.objects.get().default_currency == "GBP"


@pytest.mark.parametrize("who", ["partner.finance", "partner.manager", "vendor.admin",
                                 "operator.admin", "partner2_owner"])
def test_only_the_partners_owner_starts_onboarding(world, fake_stripe, who):
    membership = (world.others[who] if who in world.others
                  else world.member(*who.split(".")))
    with pytest.raises(PermissionDenied):
        connect.start_onboarding(membership, world.partner, RETURN, REFRESH)
    assert not fake_stripe.requests


def test_without_stripe_configured_onboarding_says_so(owner, settings):
    settings.STRIPE_API_KEY = ""
    with pytest.raises(ServiceError, match="Payouts are not configured on this server"):
        onboard(owner)


def test_a_stripe_refusal_is_a_clear_error(owner, fake_stripe):
    fake_stripe.fail(400, path="/v1/accounts", message="Connect is not enabled on this account.")
    with pytest.raises(ServiceError, match="Stripe refused: Connect is not enabled"):
        onboard(owner)
    fake_stripe.fail(503, path="/v1/accounts")
    with pytest.raises(ServiceError, match="could not be reached"):
        onboard(owner)


def test_refreshing_after_onboarding_makes_the_account_ready(world, owner, fake_stripe):
    onboard(owner)
    account = PayoutAccount.objects.get()
    fake_stripe.complete_onboarding(account.stripe_account_id)
    account = connect.refresh_account(account)
    assert (account.details_submitted, account.payouts_enabled, account.transfers_active) == (
        True, True, True)
    assert account.requirements_due == [] and account.disabled_reason == ""
    assert account.can_receive_transfers and account.synced_at is not None


def test_the_owners_hear_when_stripe_restricts_the_account_once(world, owner, fake_stripe,
                                                               run_on_commit):
    account = connect_partner(world, fake_stripe)
    fake_stripe.restrict(account.stripe_account_id)
    obj = fake_stripe.accounts[account.stripe_account_id]
    with run_on_commit():
        connect.apply_account_update(obj)
    with run_on_commit():
        connect.apply_account_update(obj)
    account.refresh_from_db()
    assert account.disabled_reason == "requirements.past_due"
    assert account.requirements_due == ["individual.verification.document"]
    assert not account.can_receive_transfers
    notes = Notification.objects.filter(kind="payout_account")
    assert [n.user for n in notes] == [owner.user]
    assert "restricted" in notes[0].title


def test_an_unknown_account_is_ignored(fake_stripe):
    assert connect.apply_account_update({"id": "acct_elsewhere", "object": "account"}) is None


# --- The page -----------------------------------------------------------------------------

def test_anonymous_visitors_are_sent_to_log_in(client):
    for url in (PAGE, reverse("payouts:payout_account_return"),
                reverse("payouts:payout_account_refresh")):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login"))


PAGE_ROLES = {("partner", "owner"), ("partner", "finance")}


@pytest.mark.parametrize("kind,role", [r for r in ALL_ROLES if r not in PAGE_ROLES])
def test_other_roles_get_404(world, fake_stripe, kind, role):
    client = world.client_for(world.member(kind, role))
    assert client.get(PAGE).status_code == 404
    assert client.post(reverse("payouts:payout_account_connect")).status_code == 404
    assert client.get(reverse("payouts:payout_account_refresh")).status_code == 404
    assert client.get(reverse("payouts:payout_account_return")).status_code == 404


def test_another_partner_sees_only_its_own_account(world, fake_stripe):
    account = connect_partner(world, fake_stripe)
    for client in (world.client_for(world.others["partner2_owner"]),
                   world.client_for(world.others["foreign_owner"],
                                    host="partners.elsewhere.test")):
        page = client.get(PAGE).content.decode()
        assert "Not connected" in page and account.stripe_account_id not in page
    # Another network's login has no membership here.
    response = world.client_for(world.others["foreign_owner"]).get(PAGE)
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:no_membership")
    pending = world.client_for(world.others["pending_owner"])
    assert pending.get(PAGE).status_code == 404


def test_the_owner_connects_with_stripe_and_comes_back_ready(world, owner, fake_stripe):
    client = world.client_for(owner)
    page = client.get(PAGE).content.decode()
    assert "Not connected" in page and "Connect with Stripe" in page
    response = client.post(reverse("payouts:payout_account_connect"))
    assert response.status_code == 302
    link = fake_stripe.account_links[-1]
    assert response.url == link["url"]
    assert link["_return_url"] == "http://testserver/payout-account/return/"
    assert link["_refresh_url"] == "http://testserver/payout-account/refresh/"
    page = client.get(PAGE).content.decode()
    assert "Onboarding incomplete" in page and "Continue onboarding" in page
    assert "Bank account for payouts" in page
    fake_stripe.complete_onboarding(link["_account"])
    back = client.get(reverse("payouts:payout_account_return"), follow=True)
    page = back.content.decode()
    assert "Ready to receive transfers" in page
    assert "Your payout account is ready to receive transfers." in page


def test_an_expired_link_gets_a_new_one(world, owner, fake_stripe):
    client = world.client_for(owner)
    client.post(reverse("payouts:payout_account_connect"))
    response = client.get(reverse("payouts:payout_account_refresh"))
    assert response.status_code == 302 and response.url == fake_stripe.account_links[-1]["url"]
    assert len(fake_stripe.account_links) == 2 and len(fake_stripe.accounts) == 1


def test_the_page_tells_the_owner_to_set_the_country_first(world, owner, fake_stripe):
    world.partner.country = ""
    world.partner.save(update_fields=["country"])
    response = world.client_for(owner).post(reverse("payouts:payout_account_connect"),
                                            follow=True)
    page = response.content.decode()
    assert "Not connected" in page and "/tax-profile/" in page and "country" in page
    assert not fake_stripe.requests


def test_finance_sees_the_status_read_only(world, fake_stripe):
    account = connect_partner(world, fake_stripe, ready=False)
    client = world.client_for(world.member("partner", "finance"))
    page = client.get(PAGE).content.decode()
    assert "Onboarding incomplete" in page and account.stripe_account_id in page
    assert "Continue onboarding" not in page and "Connect with Stripe" not in page
    assert "Only your organization's owner" in page
    assert client.post(reverse("payouts:payout_account_connect")).status_code == 404
    assert client.get(reverse("payouts:payout_account_refresh")).status_code == 404


def test_a_restricted_account_shows_the_reason(world, owner, fake_stripe):
    account = connect_partner(world, fake_stripe)
    fake_stripe.restrict(account.stripe_account_id)
    connect.apply_account_update(fake_stripe.accounts[account.stripe_account_id])
    page = world.client_for(owner).get(PAGE).content.decode()
    assert "Restricted by Stripe" in page and "requirements.past_due" in page
    assert "Identity document" in page and "Continue onboarding" in page


def test_the_tax_profile_state_is_shown_with_a_link(world, owner, fake_stripe):
    page = world.client_for(owner).get(PAGE).content.decode()
    assert "No tax profile yet." in page and 'href="/tax-profile/"' in page
    complete_tax_profile(world.partner)
    page = world.client_for(owner).get(PAGE).content.decode()
    assert "Your tax profile is complete." in page


def test_without_stripe_the_page_explains_instead_of_failing(world, owner, settings):
    settings.STRIPE_API_KEY = ""
    client = world.client_for(owner)
    page = client.get(PAGE).content.decode()
    assert "Payouts are not configured on this server" in page
    assert "Connect with Stripe" not in page
    response = client.post(reverse("payouts:payout_account_connect"), follow=True)
    assert "Payouts are not configured on this server" in response.content.decode()


def test_the_page_makes_a_fixed_number_of_queries(world, owner, fake_stripe,
                                                  django_assert_max_num_queries):
    connect_partner(world, fake_stripe)
    complete_tax_profile(world.partner)
    client = world.client_for(owner)
    client.get(PAGE)
    with django_assert_max_num_queries(12):
        assert client.get(PAGE).status_code == 200
