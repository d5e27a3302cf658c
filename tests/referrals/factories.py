import factory
from django.utils import timezone

from referrals.models import Enrolment, Program, Referral
from referrals.normalize import normalize_company_name, normalize_domain
from tests.accounts.factories import OrganizationFactory, UserFactory


class ProgramFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Program

    vendor = factory.SubFactory(OrganizationFactory, kind="vendor")
    name = factory.Sequence(lambda n: f"Program {n}")
    terms = "Register before first contact."
    status = Program.ACTIVE
    enrolment_requires_approval = False
    accepted_currencies = factory.LazyFunction(lambda: ["USD", "EUR"])
    required_fields = factory.LazyFunction(list)


class EnrolmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Enrolment

    program = factory.SubFactory(ProgramFactory)
    partner = factory.SubFactory(OrganizationFactory, kind="partner")
    status = Enrolment.ACTIVE
    requested_by = factory.SubFactory(UserFactory)


class ReferralFactory(factory.django.DjangoModelFactory):
    """A submitted referral; pass status=... (and protected_until for accepted ones)."""

    class Meta:
        model = Referral

    program = factory.SubFactory(ProgramFactory)
    vendor = factory.SelfAttribute("program.vendor")
    partner = factory.SubFactory(OrganizationFactory, kind="partner",
                                 network=factory.SelfAttribute("..vendor.network"))
    network = factory.SelfAttribute("vendor.network")
    submitted_by = factory.SubFactory(UserFactory)
    status = Referral.SUBMITTED
    company_name = factory.Sequence(lambda n: f"Customer {n} Inc")
    website = factory.Sequence(lambda n: f"https://www.customer{n}.com")
    domain = factory.LazyAttribute(lambda r: normalize_domain(r.website))
    normalized_name = factory.LazyAttribute(lambda r: normalize_company_name(r.company_name))
    country = "US"
    contact_name = "Jane Buyer"
    contact_email = factory.LazyAttribute(lambda r: f"jane@{r.domain}")
    contact_phone = "+14155550100"
    amount_minor = 2500000
    currency = "USD"
    submitted_at = factory.LazyFunction(timezone.now)
