"""Which Stripe API the app speaks: one version, stated in payouts.stripe_api.API_VERSION and
sent with every request; it is the installed SDK's own, and every provider SDK is pinned to its
major in pyproject.toml, so an upgrade that would change what the app speaks fails here first."""

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import stripe
from packaging.requirements import Requirement
from packaging.version import Version

from payouts import connect, recovery, stripe_api
from payouts.models import PayoutAccount
from tests.payouts.test_transfers import (
    build_batch,
    complete_tax_profile,
    connect_partner,
    pay_then_claw_back_and_suspend,
)

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
PROVIDER_SDKS = ("stripe", "hubspot-api-client", "simple-salesforce", "segment-analytics-python")


def test_the_stated_api_version_is_the_installed_sdks_own():
    # Failing after an SDK upgrade? Read Stripe's changelog for every version between the two,
    # check what payouts/ and tests/fakes/stripe.py rely on, then change API_VERSION.
    assert stripe_api.API_VERSION == stripe.api_version


@pytest.mark.django_db
def test_every_request_to_stripe_names_the_stated_version(world, won, fake_stripe,
                                                         run_on_commit):
    complete_tax_profile(world.partner)
    connect_partner(world, fake_stripe)
    pay_then_claw_back_and_suspend(world, won, build_batch(world, [won]), run_on_commit)
    recovery.recover_by_reversal(world.member("operator", "finance"), world.partner, "USD")
    owner = world.others["partner2_owner"]
    fake_stripe.fail(503, method="POST", path="/v1/accounts")  # the retry looks accounts up
    with pytest.raises(Exception, match="could not be reached"):
        connect.start_onboarding(owner, owner.organization, "https://x.test/back",
                                 "https://x.test/again")
    connect.start_onboarding(owner, owner.organization, "https://x.test/back",
                             "https://x.test/again")
    connect.refresh_account(PayoutAccount.objects.get(partner=owner.organization))
    calls = {(r["method"], re.sub(r"/(acct|tr)_\w+", "/{id}", r["path"]))
             for r in fake_stripe.requests}
    assert calls == {("POST", "/v1/transfers"), ("GET", "/v1/transfers/{id}"),
                     ("POST", "/v1/transfers/{id}/reversals"), ("POST", "/v1/accounts"),
                     ("GET", "/v1/accounts"), ("POST", "/v1/account_links"),
                     ("GET", "/v1/accounts/{id}")}
    assert {r["headers"].get("Stripe-Version") for r in fake_stripe.requests} == {
        stripe_api.API_VERSION}


@pytest.mark.django_db
def test_the_client_sends_the_stated_version_not_the_sdks_default(fake_stripe, monkeypatch):
    monkeypatch.setattr(stripe_api, "API_VERSION", "2025-03-31.basil")
    stripe_api.client().v1.accounts.list()
    assert fake_stripe.requests[-1]["headers"]["Stripe-Version"] == "2025-03-31.basil"


@pytest.mark.parametrize("name", PROVIDER_SDKS)
def test_each_provider_sdk_is_pinned_to_its_installed_major(name):
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (requirement,) = [Requirement(d) for d in dependencies if Requirement(d).name == name]
    installed = Version(metadata.version(name))
    assert installed in requirement.specifier
    assert Version(f"{installed.major + 1}.0") not in requirement.specifier
    if installed.major:
        assert Version(f"{installed.major - 1}.999") not in requirement.specifier
