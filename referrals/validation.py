"""Validation of referral input shared by the browser form and the CSV import."""

import re
from datetime import date

import phonenumbers
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils import timezone
from django_countries import countries

from partnerhub.money import to_minor
from referrals.normalize import normalize_domain

ALWAYS_REQUIRED = {"company_name": "Company name", "website": "Website",
                   "country": "Country", "contact_name": "Contact name",
                   "contact_email": "Contact email"}
OPTIONAL_LABELS = {"contact_phone": "Contact phone", "contact_title": "Contact title",
                   "estimated_value": "Estimated deal value", "expected_close":
                   "Expected close month", "notes": "Notes"}


def clean_website(value: str) -> str:
    value = (value or "").strip()
    if value and not normalize_domain(value):
        raise ValidationError("Enter the company's website, e.g. acme.com.")
    return value


def clean_email(value: str) -> str:
    value = (value or "").strip().lower()
    if value:
        validate_email(value)
    return value


def clean_phone(value: str, country: str) -> str:
    """Any common notation -> E.164; numbers without a country code use the customer's."""
    value = (value or "").strip()
    if not value:
        return ""
    try:
        number = phonenumbers.parse(value, (country or "").upper() or None)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise ValidationError("Enter a valid phone number, with the country code (+44 ...) if "
                              "it is not in the customer's country.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def clean_country(value: str) -> str:
    value = (value or "").strip().upper()
    if value and value not in dict(countries):
        by_name = {name.lower(): code for code, name in countries}
        value = by_name.get(value.lower(), "")
        if not value:
            raise ValidationError("Enter a country as a two-letter code, e.g. US or DE.")
    return value


def clean_amount(value, currency: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        minor = to_minor(value, currency or "USD")
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    if minor < 0:
        raise ValidationError("The deal value cannot be negative.")
    return minor


# An expected close month is a forecast: a few years back (an old deal registered late) to a
# few years ahead. Year 9999 is a typing error, and breaks date arithmetic.
CLOSE_YEARS_BACK = 5
CLOSE_YEARS_AHEAD = 10
_MONTH = re.compile(r"([0-9]{4})[-/]([0-9]{2})(?:[-/]([0-9]{2}))?", re.ASCII)


def clean_month(value) -> date | None:
    """'2027-03', '2027-03-15' or a date -> the first of that month."""
    if value in (None, ""):
        return None
    if isinstance(value, date):
        month = value.replace(day=1)
    else:
        match = _MONTH.fullmatch(str(value).strip())
        try:
            if match is None:
                raise ValueError
            month = date(int(match[1]), int(match[2]), 1)
            if match[3]:
                date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            raise ValidationError("Enter a month as YYYY-MM.") from None
    this_year = timezone.localdate().year
    if not this_year - CLOSE_YEARS_BACK <= month.year <= this_year + CLOSE_YEARS_AHEAD:
        raise ValidationError(f"Enter a month between {this_year - CLOSE_YEARS_BACK} and "
                              f"{this_year + CLOSE_YEARS_AHEAD}.")
    return month


def validate_for_program(program, data) -> dict[str, str]:
    """Program rules on top of field syntax: required fields and accepted currencies.
    Returns {field: message}; empty when the data is acceptable."""
    errors = {}
    for field, label in ALWAYS_REQUIRED.items():
        if not str(getattr(data, field, "") or "").strip():
            errors[field] = f"{label} is required."
    for field in program.required_fields:
        attr = {"estimated_value": "amount_minor"}.get(field, field)
        if getattr(data, attr, None) in (None, ""):
            errors[field if field != "estimated_value" else "amount"] = (
                f"{OPTIONAL_LABELS.get(field, field)} is required by this program.")
    if data.amount_minor is not None or data.currency:
        if data.currency not in program.accepted_currencies:
            errors["currency"] = ("This program accepts "
                                  f"{', '.join(program.accepted_currencies)} only.")
    return errors
