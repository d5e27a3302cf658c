"""Deal-registration conflicts: the same partner is blocked and shown its registration; another
partner is flagged for the vendor to decide and learns only that the account is taken, and until
when; inactive registrations, other vendors and other networks never conflict."""

import re
import threading

import pytest
from django.db import connection
from django.urls import reverse

from accounts.errors import ServiceError
from accounts.models import Notification
from referrals import services
from referrals.models import Program, Referral
from referrals.services import ReferralData
from referrals.services.lifecycle import ConflictBlocked
from tests.accounts.factories import MembershipFactory, OrganizationFactory
from tests.referrals.factories import EnrolmentFactory, ReferralFactory

PA, VE = "partner", "vendor"


def data(**overrides) -> ReferralData:
    values = dict(company_name="Initech Inc", website="https://www.initech.com",
                  country="US", contact_name="Peter Gibbons", contact_email="peter@initech.com",
                  amount_minor=2_500_000, currency="USD")
    values.update(overrides)
    return ReferralData(**values)


def form(program, **overrides) -> dict:
    values = {"program": str(program.public_id), "company_name": "Initech Inc",
              "website": "https://www.initech.com", "country": "US",
              "contact_name": "Peter Gibbons", "contact_email": "peter@initech.com",
              "contact_phone": "", "contact_title": "", "amount": "25000", "currency": "USD",
              "expected_close": "", "notes": "", "action": "submit"}
    values.update(overrides)
    return values


@pytest.fixture
def acme(programs):
    return programs["acme"]


@pytest.fixture
def rep(world):
    """Brightpath's rep: registers first in most tests."""
    return world.member(PA, "rep")


@pytest.fixture
def rival(world):
    """Summit's rep: the other partner."""
    return world.others["partner2_rep"]


@pytest.fixture
def third(world, acme):
    """A rep of a third partner organization, enrolled in the Acme program."""
    org = OrganizationFactory(network=world.network, kind=PA, name="Third Way")
    member = MembershipFactory(organization=org, role="rep")
    EnrolmentFactory(program=acme, partner=org, requested_by=member.user)
    return member


def set_threshold(program, threshold):
    Program.objects.filter(pk=program.pk).update(fuzzy_threshold=threshold)
    program.refresh_from_db()


# --- Same partner: blocked ---------------------------------------------------------------------


def test_same_partner_is_blocked_and_shown_its_registration(rep, acme):
    first = services.submit_referral(rep, acme, data())
    count = Referral.objects.count()
    with pytest.raises(ConflictBlocked) as exc:
        services.submit_referral(rep, acme, data(company_name="INITECH, Inc.",
                                                 website="initech.com/contact"))
    assert exc.value.existing.pk == first.pk
    assert "already registered" in exc.value.message
    assert Referral.objects.count() == count


def test_a_colleague_is_blocked_too(world, rep, acme):
    """Registrations belong to the partner organization, not to the person."""
    first = services.submit_referral(rep, acme, data())
    with pytest.raises(ConflictBlocked) as exc:
        services.submit_referral(world.member(PA, "manager"), acme, data())
    assert exc.value.existing.pk == first.pk


def test_the_form_links_to_the_existing_registration(world, rep, acme):
    first = services.submit_referral(rep, acme, data())
    client = world.client_for(rep)
    response = client.post(reverse("referrals:new"),
                           form(acme, company_name="Initech Corporation"))
    assert response.status_code == 200  # the form again, not a redirect
    html = response.content.decode()
    assert "already registered this account" in html
    assert f'href="{reverse("referrals:detail", args=[first.public_id])}"' in html
    assert Referral.objects.filter(partner=world.partner).count() == 1


def test_a_rep_blocked_by_a_colleagues_registration_gets_no_dead_link(world, acme):
    """Reps see only their own referrals: the form must not send them to a page that 404s."""
    manager, rep = world.member(PA, "manager"), world.member(PA, "rep")
    services.submit_referral(manager, acme, data())
    client = world.client_for(rep)
    response = client.post(reverse("referrals:new"), form(acme))
    assert response.status_code == 200
    html = response.content.decode()
    assert "already registered" in html
    links = re.findall(r'href="(/referrals/[0-9a-f-]{36}/)"', html)
    for link in links:
        assert client.get(link).status_code == 200, f"the form links to {link}, a 404 for reps"
    assert Referral.objects.filter(partner=world.partner).count() == 1


def test_editing_into_ones_own_registration_is_blocked(rep, acme):
    first = services.submit_referral(rep, acme, data())
    second = services.submit_referral(rep, acme, data(company_name="Globochem",
                                                      website="globochem.com"))
    with pytest.raises(ConflictBlocked) as exc:
        services.update_referral(rep, second, data())
    assert exc.value.existing.pk == first.pk
    second.refresh_from_db()
    assert second.company_name == "Globochem" and second.domain == "globochem.com"


# --- Another partner: flagged, told only "registered, until when" -----------------------------


def test_another_partner_is_flagged_against_the_earlier_registration(world, rep, rival, acme):
    first = services.submit_referral(rep, acme, data())
    second = services.submit_referral(rival, acme, data(company_name="Initech"))
    assert second.status == Referral.SUBMITTED
    assert second.conflict is True and second.conflict_with_id == first.pk
    first.refresh_from_db()
    assert first.conflict is False and first.conflict_with_id is None
    # The vendor's deciders are told to choose.
    admin = world.member(VE, "admin").user
    note = Notification.objects.get(user=admin, kind="referral_submitted",
                                    url=reverse("referrals:detail", args=[second.public_id]))
    assert "conflict" in note.body.lower()


def test_the_earliest_other_registration_is_the_one_named(rep, rival, third, acme):
    first = services.submit_referral(rep, acme, data())
    services.submit_referral(rival, acme, data())
    latest = services.submit_referral(third, acme, data(company_name="Initech Corp"))
    assert latest.conflict is True and latest.conflict_with_id == first.pk


def _submit_as_rival_through_the_form(world, rival, acme, **overrides):
    client = world.client_for(rival)
    response = client.post(reverse("referrals:new"), form(acme, **overrides), follow=True)
    assert response.status_code == 200
    referral = Referral.objects.filter(partner=world.partner2).latest("pk")
    return client, response, referral


def test_rival_learns_the_account_is_awaiting_review_never_by_whom(world, rep, rival, acme):
    first = services.submit_referral(rep, acme, data())
    client, response, referral = _submit_as_rival_through_the_form(world, rival, acme)
    assert referral.conflict and referral.conflict_with_id == first.pk
    assert response.redirect_chain[-1][0] == reverse("referrals:detail",
                                                     args=[referral.public_id])
    html = response.content.decode()
    assert "already registered with Acme Cloud" in html
    assert "awaiting the vendor" in html
    for secret in ("Brightpath", rep.user.get_full_name(), rep.user.email,
                   str(first.public_id)):
        assert secret not in html

    detail = client.get(reverse("referrals:detail", args=[referral.public_id])).content.decode()
    assert "already registered with Acme Cloud" in detail
    for secret in ("Brightpath", rep.user.get_full_name(), str(first.public_id)):
        assert secret not in detail
    listing = client.get(reverse("referrals:list")).content.decode()
    assert "conflict" in listing and "Brightpath" not in listing


def test_rival_learns_until_when_an_accepted_registration_is_protected(world, rep, rival, acme):
    first = services.submit_referral(rep, acme, data())
    services.accept_referral(world.member(VE, "partnerships"), first)
    first.refresh_from_db()
    until = f"{first.protected_until:%-d %B %Y}"

    client, response, referral = _submit_as_rival_through_the_form(
        world, rival, acme, company_name="Initech Corporation", website="eu.initech.com")
    assert referral.conflict_with_id == first.pk
    html = response.content.decode()
    assert f"protected until {until}" in html
    assert "Brightpath" not in html
    detail = client.get(reverse("referrals:detail", args=[referral.public_id])).content.decode()
    assert f"protected until {until}" in detail
    assert "Brightpath" not in detail


def test_the_vendor_sees_both_registrations_side_by_side(world, rep, rival, acme):
    first = services.submit_referral(rep, acme, data())
    second = services.submit_referral(rival, acme, data())
    client = world.client_for(world.member(VE, "partnerships"))
    html = client.get(reverse("referrals:detail", args=[second.public_id])).content.decode()
    assert "Conflicting registrations" in html
    assert "Brightpath" in html and "Summit" in html
    assert reverse("referrals:detail", args=[first.public_id]) in html
    # ...and from the earlier one, the later claim.
    html = client.get(reverse("referrals:detail", args=[first.public_id])).content.decode()
    assert "Registered later" in html
    assert reverse("referrals:detail", args=[second.public_id]) in html


def test_the_first_partner_is_not_told_about_the_rival(world, rep, rival, acme):
    first = services.submit_referral(rep, acme, data())
    services.submit_referral(rival, acme, data())
    html = world.client_for(rep).get(
        reverse("referrals:detail", args=[first.public_id])).content.decode()
    assert "Summit" not in html and "Conflicting registrations" not in html


# --- What does not conflict --------------------------------------------------------------------


@pytest.mark.parametrize("status", [Referral.EXPIRED, Referral.WITHDRAWN, Referral.REJECTED,
                                    Referral.WON, Referral.LOST, Referral.DRAFT])
def test_inactive_registrations_do_not_conflict(world, rep, rival, acme, status):
    ReferralFactory(program=acme, partner=world.partner, submitted_by=rep.user,
                    company_name="Initech Inc", website="https://www.initech.com",
                    status=status)
    other = services.submit_referral(rival, acme, data())
    assert other.conflict is False and other.conflict_with is None
    # Nor does it block the same partner registering the account again.
    again = services.submit_referral(world.member(PA, "manager"), acme,
                                     data(website="initech.com"))
    assert again.status == Referral.SUBMITTED


@pytest.mark.parametrize("status", [Referral.SUBMITTED, Referral.ACCEPTED])
def test_active_registrations_conflict(world, rep, rival, acme, status):
    earlier = ReferralFactory(program=acme, partner=world.partner, submitted_by=rep.user,
                              company_name="Initech Inc", website="https://www.initech.com",
                              status=status)
    other = services.submit_referral(rival, acme, data())
    assert other.conflict is True and other.conflict_with_id == earlier.pk


def test_another_vendor_does_not_conflict(world, programs, rep, rival):
    ReferralFactory(program=programs["globex"], partner=world.partner2,
                    submitted_by=rival.user, company_name="Initech Inc",
                    website="https://www.initech.com")
    referral = services.submit_referral(rep, programs["acme"], data())
    assert referral.conflict is False


def test_another_network_does_not_conflict(world, programs, rep):
    ReferralFactory(program=programs["foreign"], partner=world.foreign_partner,
                    submitted_by=world.others["foreign_owner"].user,
                    company_name="Initech Inc", website="https://www.initech.com")
    referral = services.submit_referral(rep, programs["acme"], data())
    assert referral.conflict is False


def test_a_different_account_does_not_conflict(world, rep, rival, acme):
    services.submit_referral(rep, acme, data())
    other = services.submit_referral(rival, acme, data(company_name="Initrode",
                                                       website="initrode.com"))
    assert other.conflict is False


def test_same_name_on_a_different_public_suffix_domain_conflicts_by_name(rep, rival, acme):
    """`initech.com` and `initech.co.uk` are different domains but the same company name."""
    first = services.submit_referral(rep, acme, data())
    other = services.submit_referral(rival, acme, data(website="initech.co.uk"))
    assert other.conflict_with_id == first.pk


# --- Variants that are the same account -------------------------------------------------------


@pytest.mark.parametrize("first_site,second_site", [
    ("https://www.initech.com", "initech.com"),
    ("http://initech.com/about", "HTTPS://SHOP.INITECH.COM/cart"),
    ("www.eu.initech.co.uk", "https://initech.co.uk"),
    ("initech.com.au", "https://www.initech.com.au/contact-us"),
])
def test_domain_variants_conflict(rep, rival, acme, first_site, second_site):
    first = services.submit_referral(rep, acme, data(company_name="Initech Holdings",
                                                     website=first_site))
    # A name nothing like the first, so only the domain can match.
    other = services.submit_referral(rival, acme, data(company_name="Penguin Labs",
                                                       website=second_site))
    assert other.conflict is True and other.conflict_with_id == first.pk


@pytest.mark.parametrize("first_name,second_name", [
    ("Acme Inc", "ACME, Inc."),
    ("Acme Inc", "Acme Corporation"),
    ("ACME, Inc.", "Acme Corporation"),
    ("Acmé GmbH", "acme ag"),
    ("Brightside Pty Ltd", "BRIGHTSIDE PTY. LTD."),
    ("Müller & Söhne GmbH & Co. KG", "Muller Sohne"),
])
def test_name_variants_conflict(rep, rival, acme, first_name, second_name):
    first = services.submit_referral(rep, acme, data(company_name=first_name,
                                                     website="one-site.com"))
    other = services.submit_referral(rival, acme, data(company_name=second_name,
                                                       website="another-site.com"))
    assert other.conflict is True and other.conflict_with_id == first.pk


# --- Fuzzy names -------------------------------------------------------------------------------

# "globochem industries" vs "globochem industry" scores 89; "massive dynamic(s)" scores 97.


def test_a_similar_name_at_the_threshold_conflicts(rep, rival, acme):
    set_threshold(acme, 89)
    first = services.submit_referral(rep, acme, data(company_name="Globochem Industries",
                                                     website="globochem.com"))
    other = services.submit_referral(rival, acme, data(company_name="Globochem Industry Ltd",
                                                       website="globochem-ind.net"))
    assert other.conflict is True and other.conflict_with_id == first.pk


def test_a_name_just_below_the_threshold_does_not(rep, rival, acme):
    set_threshold(acme, 90)
    services.submit_referral(rep, acme, data(company_name="Globochem Industries",
                                             website="globochem.com"))
    other = services.submit_referral(rival, acme, data(company_name="Globochem Industry Ltd",
                                                       website="globochem-ind.net"))
    assert other.conflict is False


def test_default_threshold_catches_a_typo(rep, rival, acme):
    assert acme.fuzzy_threshold == 90
    first = services.submit_referral(rep, acme, data(company_name="Massive Dynamic",
                                                     website="massivedynamic.com"))
    other = services.submit_referral(rival, acme, data(company_name="Massive Dynamics Inc",
                                                       website="massive-dynamics.io"))
    assert other.conflict_with_id == first.pk


def test_a_similar_name_blocks_the_same_partner(rep, acme):
    first = services.submit_referral(rep, acme, data(company_name="Massive Dynamic",
                                                     website="massivedynamic.com"))
    with pytest.raises(ConflictBlocked) as exc:
        services.submit_referral(rep, acme, data(company_name="Massive Dynamics",
                                                 website="massive-dynamics.io"))
    assert exc.value.existing.pk == first.pk


def test_threshold_100_turns_fuzzy_matching_off(rep, rival, third, acme):
    set_threshold(acme, 100)
    services.submit_referral(rep, acme, data(company_name="Massive Dynamic",
                                             website="massivedynamic.com"))
    other = services.submit_referral(rival, acme, data(company_name="Massive Dynamics",
                                                       website="massive-dynamics.io"))
    assert other.conflict is False
    # Exact matches still count.
    same = services.submit_referral(third, acme, data(company_name="MASSIVE DYNAMIC, INC.",
                                                      website="md-holdings.org"))
    assert same.conflict is True


# --- Editing a submitted referral re-checks -----------------------------------------------------


def test_editing_into_another_partners_account_flags_it(rep, rival, acme):
    first = services.submit_referral(rep, acme, data())
    mine = services.submit_referral(rival, acme, data(company_name="Initrode",
                                                      website="initrode.com"))
    assert mine.conflict is False
    services.update_referral(rival, mine, data())
    mine.refresh_from_db()
    assert mine.conflict is True and mine.conflict_with_id == first.pk
    # ...and editing away clears the flag.
    services.update_referral(rival, mine, data(company_name="Initrode",
                                               website="initrode.com"))
    mine.refresh_from_db()
    assert mine.conflict is False and mine.conflict_with_id is None


# --- Two submissions at once -------------------------------------------------------------------


def _race(*actions):
    barrier = threading.Barrier(len(actions))
    outcomes = [None] * len(actions)

    def run(i, action):
        try:
            barrier.wait(timeout=10)
            outcomes[i] = action()
        except Exception as exc:  # noqa: BLE001 - asserted on by the caller
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a racing thread hung"
    return outcomes


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(3))
def test_two_partners_submitting_at_once_are_never_both_unflagged(world, programs, attempt):
    acme = programs["acme"]
    rep, rival = world.member(PA, "rep"), world.others["partner2_rep"]
    outcomes = _race(lambda: services.submit_referral(rep, acme, data()),
                     lambda: services.submit_referral(rival, acme, data(website="initech.com")))
    assert not any(isinstance(o, Exception) for o in outcomes), outcomes
    referrals = list(Referral.objects.filter(vendor=world.vendor))
    assert len(referrals) == 2
    clean = [r for r in referrals if not r.conflict]
    flagged = [r for r in referrals if r.conflict]
    assert len(clean) == 1 and len(flagged) == 1
    assert flagged[0].conflict_with_id == clean[0].pk
    assert flagged[0].submitted_at >= clean[0].submitted_at


@pytest.mark.django_db(transaction=True)
def test_two_colleagues_submitting_at_once_register_once(world, programs):
    acme = programs["acme"]
    rep, manager = world.member(PA, "rep"), world.member(PA, "manager")
    outcomes = _race(lambda: services.submit_referral(rep, acme, data()),
                     lambda: services.submit_referral(manager, acme, data()))
    blocked = [o for o in outcomes if isinstance(o, ConflictBlocked)]
    assert len(blocked) == 1, outcomes
    registered = [o for o in outcomes if isinstance(o, Referral)]
    assert len(registered) == 1 and blocked[0].existing.pk == registered[0].pk
    assert Referral.objects.filter(partner=world.partner).count() == 1
    assert not any(isinstance(o, Exception) and not isinstance(o, ServiceError)
                   for o in outcomes)


# --- One account, one protected partner ---------------------------------------------------------


def test_the_vendor_cannot_accept_both_conflicting_registrations(world, rep, rival, acme):
    first = services.submit_referral(rep, acme, data())
    second = services.submit_referral(rival, acme, data())
    partnerships = world.member(VE, "partnerships")
    services.accept_referral(partnerships, first)
    with pytest.raises(ServiceError) as exc:
        services.accept_referral(partnerships, second)
    assert "already accepted" in exc.value.message
    assert "Brightpath" not in exc.value.message  # the vendor sees who, but the message is generic
    assert Referral.objects.get(pk=second.pk).status == Referral.SUBMITTED
    # Once the first is withdrawn, the second may be accepted.
    services.withdraw_referral(rep, first)
    services.accept_referral(partnerships, second)
    assert Referral.objects.get(pk=second.pk).status == Referral.ACCEPTED


@pytest.mark.django_db(transaction=True)
def test_accepting_two_conflicting_registrations_at_once_accepts_one(world, programs):
    acme = programs["acme"]
    first = services.submit_referral(world.member(PA, "rep"), acme, data())
    second = services.submit_referral(world.others["partner2_rep"], acme, data())
    assert second.conflict_with_id == first.pk
    partnerships, admin = world.member(VE, "partnerships"), world.member(VE, "admin")
    outcomes = _race(lambda: services.accept_referral(partnerships, first),
                     lambda: services.accept_referral(admin, second))
    assert sum(isinstance(o, ServiceError) for o in outcomes) == 1, outcomes
    statuses = sorted(Referral.objects.filter(pk__in=[first.pk, second.pk])
                      .values_list("status", flat=True))
    assert statuses == [Referral.ACCEPTED, Referral.SUBMITTED]


@pytest.mark.parametrize("how", ["rejected", "withdrawn"])
def test_the_notice_goes_once_the_earlier_registration_stops_holding_the_account(
        world, rep, rival, acme, how):
    first = services.submit_referral(rep, acme, data())
    second = services.submit_referral(rival, acme, data())
    partnerships = world.member(VE, "partnerships")
    client = world.client_for(rival)
    url = reverse("referrals:detail", args=[second.public_id])
    assert "already registered" in client.get(url).content.decode()

    if how == "rejected":
        services.reject_referral(partnerships, first, "not_qualified", "")
    else:
        services.withdraw_referral(rep, first)
    html = client.get(url).content.decode()
    assert "already registered" not in html, (
        f"Summit is still told the account is registered after Brightpath's was {how}")

    services.accept_referral(partnerships, second)
    html = client.get(url).content.decode()
    assert "already registered" not in html
    assert "will decide which registration holds it" not in html


def test_the_notice_goes_once_the_vendor_decided_for_the_later_partner(world, rep, rival, acme):
    """The vendor rejects the earlier claim and accepts the later one: the later partner holds
    the account and must not be told that the vendor is still deciding."""
    first = services.submit_referral(rep, acme, data())
    second = services.submit_referral(rival, acme, data())
    partnerships = world.member(VE, "partnerships")
    # (Not "Summit brought them": what partners read never names the other partner, issue 17.)
    services.reject_referral(partnerships, first, "other",
                             "Another partner brought them to us first")
    services.accept_referral(partnerships, second)
    html = world.client_for(rival).get(
        reverse("referrals:detail", args=[second.public_id])).content.decode()
    assert "Accepted" in html
    assert "will decide which registration holds it" not in html


def test_a_typo_is_found_even_among_many_similar_registrations(world, programs):
    """Candidates are ranked by similarity, so fifty look-alikes cannot hide the real match."""
    from referrals.conflicts import check_conflicts
    from tests.referrals.factories import ReferralFactory

    acme = programs["acme"]
    for i in range(60):
        ReferralFactory(program=acme, partner=world.partner2,
                        company_name=f"Northwind Widget Works {i}", website=f"nww{i}.com")
    typo = ReferralFactory(program=acme, partner=world.partner2,
                           company_name="Northwind Widgte Works", website="nwwx.com")
    check = check_conflicts(vendor_id=acme.vendor_id, domain="",
                            normalized_name="northwind widget works", threshold=95)
    assert typo.pk in {m.referral.pk for m in check.matches}
