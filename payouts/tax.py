"""Tax profiles and reporting. What a payee must have told us before it can be paid, and the
yearly 1099-NEC view for operator finance."""

from payouts.models import TaxProfile


def expected_form(profile: TaxProfile) -> str | None:
    """W-9 for US persons; W-8BEN for foreign individuals; W-8BEN-E for foreign entities."""
    if profile.us_person is None:
        return None
    if profile.us_person:
        return TaxProfile.W9
    individual = profile.entity_type in ("individual", "sole_proprietor")
    return TaxProfile.W8BEN if individual else TaxProfile.W8BENE


def profile_problems(profile: TaxProfile | None) -> list[str]:
    """What is missing before this partner can be paid; empty when the profile is complete."""
    if profile is None:
        return ["No tax profile yet."]
    problems = []
    if not profile.legal_name.strip():
        problems.append("Legal name is missing.")
    if not profile.country:
        problems.append("Country is missing.")
    if not profile.entity_type:
        problems.append("Entity type is missing.")
    if profile.us_person is None:
        problems.append("Say whether the payee is a US person.")
    if not (profile.address_line1.strip() and profile.city.strip() and profile.postal_code.strip()):
        problems.append("Address for reporting is incomplete.")
    form = expected_form(profile)
    if form and profile.form != form:
        problems.append(f"The {dict(TaxProfile.FORMS)[form]} form is required.")
    elif profile.form_status != "received" or profile.form_signed_on is None:
        problems.append("The tax form has not been received (with its date).")
    return problems
