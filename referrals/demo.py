"""Demo programs, enrolments and referrals, made through the services so that timelines,
audit events and notifications look exactly like real use, each on the day its story says
(partnerhub.democlock). Idempotent."""

import random
from datetime import date, timedelta

from django.db import transaction
from django.utils import timezone

from accounts.models import Membership, Organization
from partnerhub.democlock import days_ago
from referrals import services
from referrals.models import Enrolment, Program, Referral
from referrals.normalize import normalize_company_name

PROGRAMS = {
    "acme-cloud": dict(name="Acme Cloud Partner Program", protection_days=90,
                       enrolment_requires_approval=False, accepted_currencies=["USD", "EUR"],
                       terms="Register each opportunity before first contact. Accepted "
                             "registrations are protected for 90 days; we pay 10% of "
                             "first-year revenue on closed-won deals."),
    "globex-analytics": dict(name="Globex Referral Program", protection_days=120,
                             enrolment_requires_approval=True, accepted_currencies=["EUR"],
                             required_fields=["estimated_value"],
                             terms="Referrals must be in the EU. Protection lasts 120 days."),
}
ENROLMENTS = [("acme-cloud", "brightpath-consulting", "active"),
              ("acme-cloud", "summit-integrators", "active"),
              ("acme-cloud", "keystone-agency", "active"),
              ("globex-analytics", "brightpath-consulting", "active"),
              ("globex-analytics", "keystone-agency", "pending")]
# (partner slug, submitter role, company, website, country, amount, then what happens, days
# ago it was submitted; a decision follows two days later). Wonka's deal is won later through
# Acme Cloud's pipeline (payouts.demo), the only door to "won" for a pipeline vendor.
REFERRALS = [
    ("brightpath-consulting", "rep", "Initech Inc.", "https://www.initech.com", "US", 4800000,
     "accept", 20),
    ("brightpath-consulting", "rep", "Hooli", "hooli.com", "US", 12500000, "submit", 6),
    ("summit-integrators", "rep", "Hooli Corporation", "https://hooli.com", "GB", 9000000,
     "submit", 4),  # conflicts with Brightpath's registration
    ("brightpath-consulting", "manager", "Vandelay Industries", "vandelay.com", "US", 2200000,
     "reject", 30),
    ("keystone-agency", "rep", "Wonka Industries", "wonka.com", "CA", 7600000, "accept", 60),
    ("brightpath-consulting", "rep", "Stark Logistics", "starklogistics.com", "US", None,
     "draft", 2),
]
PROGRAMS_OPENED_DAYS_AGO = 190


def _member(slug, role):
    return (Membership.objects.select_related("organization", "user", "organization__network")
            .get(organization__slug=slug, role=role))


def seed() -> None:
    with days_ago(PROGRAMS_OPENED_DAYS_AGO):
        programs = _programs()
    acme = programs["acme-cloud"]
    if Referral.objects.filter(program__in=programs.values()).exists():
        return
    vendor_admin = _member("acme-cloud", "partnerships")
    for story in REFERRALS:
        _referral_story(acme, vendor_admin, *story)


@transaction.atomic
def _programs() -> dict:
    vendors = {o.slug: o for o in Organization.objects.filter(slug__in=PROGRAMS)}
    programs = {}
    for slug, spec in PROGRAMS.items():
        programs[slug], _ = Program.objects.update_or_create(
            vendor=vendors[slug], name=spec["name"],
            defaults={**spec, "status": Program.ACTIVE})
    for program_slug, partner_slug, status in ENROLMENTS:
        owner = _member(partner_slug, "owner")
        Enrolment.objects.update_or_create(
            program=programs[program_slug], partner=owner.organization,
            defaults={"status": status, "requested_by": owner.user,
                      "decided_at": timezone.now() if status == "active" else None})
    return programs


def _referral_story(acme, vendor_admin, slug, role, company, website, country, amount, fate,
                    days) -> None:
    actor = _member(slug, role)
    data = services.ReferralData(
        company_name=company, website=website, country=country,
        contact_name="Jordan Example", contact_email=f"jordan@{website.split('//')[-1]}"
        .replace("www.", ""), contact_title="VP Operations",
        amount_minor=amount, currency="USD" if amount else "",
        expected_close=(date.today().replace(day=1) + timedelta(days=62)).replace(day=1),
        notes="Met at the spring summit; evaluating vendors this quarter.")
    with days_ago(days), transaction.atomic():
        if fate == "draft":
            services.save_draft(actor, acme, data)
            return
        referral = services.submit_referral(actor, acme, data)
    if fate == "submit":
        return
    with days_ago(days - 2), transaction.atomic():
        if fate == "accept":
            services.accept_referral(vendor_admin, referral)
            services.post_message(vendor_admin, referral,
                                  "Thanks! Our AE will reach out this week.")
        elif fate == "reject":
            services.reject_referral(vendor_admin, referral, "existing_customer",
                                     "They signed with us last year.")


STATUS_MIX = [(Referral.SUBMITTED, 30), (Referral.ACCEPTED, 30), (Referral.REJECTED, 10),
              (Referral.WON, 10), (Referral.LOST, 8), (Referral.EXPIRED, 7),
              (Referral.WITHDRAWN, 5)]
WORDS = ("north blue acme prime delta nova apex summit vertex orbit lumen pixel quantum solar "
         "river harbor cedar maple atlas zenith crest falcon beacon matrix vector").split()
SUFFIXES = ["Inc", "LLC", "GmbH", "Ltd", "Corp", "SA", "BV", ""]
# Varied names (seed_scale(names="varied")): an invented brand word (now and then two), nine in
# ten followed by one or two trade words ("Postflir Logistics", "Glazio Motors", "Lirkjes
# Imports Media"): thousands share each trade word, as "... Solutions" do in a real CRM.
ONSETS = ("b br c ch cl cr d dr f fl fr g gl gr h j k kl l m n p pl pr r s sh sk sl st t th "
          "tr v w z").split()
VOWELS = "a e i o u a e i o ai ea io ou".split()
CODAS = ["", "", "", "n", "r", "l", "s", "x", "m", "t", "nd", "rk", "st", "v"]
TRADES = ("logistics health software partners dental foods capital labs systems energy media "
          "group consulting analytics robotics pharma studio networks holdings foundry freight "
          "clinic bakery brewing insurance realty motors textiles aerospace biotech security "
          "solar marine retail travel hospitality education legal finance telecom gaming "
          "fitness apparel furniture packaging printing chemicals mining farms wines "
          "outfitters builders engineering architects design digital cloud data ventures "
          "industries works supply trading imports devices instruments").split()


def _brand(rng: random.Random) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)
                   for _ in range(rng.choice((2, 2, 3))))


def _varied_name(rng: random.Random) -> str:
    words = [_brand(rng)]
    shape = rng.random()
    if shape < 0.15:
        words.append(_brand(rng))  # "Veloxa Trimand"
    if shape >= 0.1:
        words.append(rng.choice(TRADES))
    if shape >= 0.75:
        words.append(rng.choice(TRADES))
    return " ".join(w.title() for w in words)


def seed_scale(count: int, *, batch: int = 5000, seed: int = 7, names: str = "lookalike") -> int:
    """Bulk-generate `count` referrals across the demo organizations (for benchmarks).

    names="lookalike" (the default) builds every company name from two of the 25 WORDS plus a
    number ("Acme Harbor 820127"): extreme look-alikes, the fuzzy lookups' worst case.
    names="varied" uses invented brand words and trade words (`_varied_name`), no numbers."""
    if names not in ("lookalike", "varied"):
        raise ValueError(f"unknown names {names!r}")
    rng = random.Random(seed)
    enrolments = list(Enrolment.objects.filter(status="active")
                      .select_related("program", "partner"))
    submitters = {m.organization_id: m.user_id for m in Membership.objects.filter(
        organization__in=[e.partner for e in enrolments], role="rep")}
    statuses = [s for s, w in STATUS_MIX for _ in range(w)]
    now = timezone.now()
    made = 0
    start = Referral.objects.count()
    while made < count:
        rows = []
        for i in range(min(batch, count - made)):
            n = start + made + i
            e = rng.choice(enrolments)
            name = (f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()} {n}"
                    if names == "lookalike" else _varied_name(rng))
            company = f"{name} {rng.choice(SUFFIXES)}".strip()
            domain = f"{name.lower().replace(' ', '')}.com"
            status = rng.choice(statuses)
            submitted = now - timedelta(days=rng.randint(0, 720), minutes=rng.randint(0, 1440))
            rows.append(Referral(
                network_id=e.partner.network_id, program=e.program, vendor_id=e.program.vendor_id,
                partner=e.partner, submitted_by_id=submitters.get(e.partner_id), status=status,
                company_name=company, website=f"https://{domain}", domain=domain,
                normalized_name=normalize_company_name(company), country="US",
                contact_name="Sam Example", contact_email=f"sam@{domain}",
                amount_minor=rng.randint(5, 500) * 100000, currency="USD",
                submitted_at=submitted, created_at=submitted,
                decided_at=submitted + timedelta(days=2) if status != "submitted" else None,
                protected_until=(submitted + timedelta(days=e.program.protection_days)
                                 if status == "accepted" else None)))
        Referral.objects.bulk_create(rows, batch_size=batch)
        made += len(rows)
    return made
