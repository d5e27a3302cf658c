import factory
from django.utils import timezone

from accounts import roles
from accounts.models import Membership, Network, Organization, User


class NetworkFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Network

    name = factory.Sequence(lambda n: f"Network {n}")
    slug = factory.Sequence(lambda n: f"network-{n}")
    # Tests log in with passwords alone unless they turn two-factor enforcement on.
    two_factor_policy = Network.TWO_FACTOR_OFF


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    full_name = factory.Faker("name")
    email_verified_at = factory.LazyFunction(timezone.now)
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-battery")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    network = factory.SubFactory(NetworkFactory)
    kind = roles.PARTNER
    status = Organization.ACTIVE
    name = factory.Sequence(lambda n: f"Org {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")
    website_domain = factory.Sequence(lambda n: f"org{n}.com")
    website = factory.LazyAttribute(lambda o: f"https://{o.website_domain}")
    country = "US"
    applied_at = factory.LazyFunction(timezone.now)
    verified_at = factory.LazyFunction(timezone.now)
    approved_at = factory.LazyFunction(timezone.now)


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organization = factory.SubFactory(OrganizationFactory)
    role = factory.LazyAttribute(lambda m: roles.OWNER_ROLE[m.organization.kind])
