"""The base of every form: what no input may carry, whatever the field.

`HardenedForm` (or `HardenedMixin` in front of another form class) checks, before any field is
cleaned:

- text (every CharField, so also email, URL, UUID and password fields): no NUL or other
  control character; tab everywhere, newlines only in multi-line fields (a Textarea);
  a length limit even where the field names none;
- dates: within DATE_MIN..DATE_MAX (a year 9999 overflows date arithmetic, a year 1 is nonsense);
- integers and decimals: within what the database stores (PostgreSQL's bigint), finite.

Fields that know better set their own (tighter) bounds; these are only the outer walls.
"""

import re
from datetime import date
from decimal import Decimal

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator, MaxValueValidator, MinValueValidator
from django.utils.deconstruct import deconstructible

from partnerhub.money import MAX_MINOR

SINGLE_LINE_MAX = 1_000
MULTI_LINE_MAX = 10_000
DATE_MIN = date(1900, 1, 1)
DATE_MAX = date(2100, 12, 31)
INT_MAX = 2**63 - 1
DECIMAL_MAX = Decimal(MAX_MINOR)

# C0 controls, DEL and C1 controls. Tab, LF and CR are let through where text may have them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CONTROL_SINGLE_LINE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


@deconstructible
class NoControlCharacters:
    """Refuses NUL and other control characters; `multiline` allows line breaks."""

    def __init__(self, multiline: bool = False):
        self.multiline = multiline

    def __call__(self, value):
        pattern = _CONTROL if self.multiline else _CONTROL_SINGLE_LINE
        if value is not None and pattern.search(str(value)):
            raise ValidationError("Remove the control characters (invisible characters such "
                                  "as NUL) from this text.", code="control_characters")

    def __eq__(self, other):
        return isinstance(other, NoControlCharacters) and other.multiline == self.multiline


def has_control_characters(text: str, multiline: bool = True) -> bool:
    return bool((_CONTROL if multiline else _CONTROL_SINGLE_LINE).search(text or ""))


def harden_field(field: forms.Field) -> None:
    """Adds the outer walls to one field (once)."""
    if getattr(field, "_hardened", False):
        return
    field._hardened = True
    if isinstance(field, forms.CharField):
        multiline = isinstance(field.widget, forms.Textarea)
        field.validators.append(NoControlCharacters(multiline=multiline))
        if field.max_length is None:
            field.max_length = MULTI_LINE_MAX if multiline else SINGLE_LINE_MAX
            field.validators.append(MaxLengthValidator(field.max_length))
    elif isinstance(field, forms.DateTimeField | forms.DateField):
        if not any(isinstance(v, DateBetween) for v in field.validators):  # its own is tighter
            field.validators.append(DateBetween(DATE_MIN, DATE_MAX))
    elif isinstance(field, forms.IntegerField | forms.FloatField):
        _harden_number(field)


def _harden_number(field) -> None:
    # int() and Decimal() read "1_000" and "١٢٣" as numbers, and Django's fields use them.
    field.to_python = _plain_numbers_only(field.to_python, field.error_messages["invalid"])
    if isinstance(field, forms.DecimalField):
        if field.max_value is None:
            field.validators.append(MaxValueValidator(DECIMAL_MAX))
        if field.min_value is None:
            field.validators.append(MinValueValidator(-DECIMAL_MAX))
    elif isinstance(field, forms.IntegerField):
        if field.max_value is None:
            field.validators.append(MaxValueValidator(INT_MAX))
        if field.min_value is None:
            field.validators.append(MinValueValidator(-INT_MAX))


_PLAIN_NUMBER = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*", re.ASCII)


def _plain_numbers_only(to_python, message):
    def wrapped(value):
        if isinstance(value, str) and value.strip() and not _PLAIN_NUMBER.fullmatch(value):
            raise ValidationError(message, code="invalid")
        return to_python(value)
    return wrapped


@deconstructible
class DateBetween:
    """A date (or datetime) from `first` to `last`, both included."""

    def __init__(self, first: date, last: date, message: str = ""):
        self.first, self.last, self.message = first, last, message

    def __call__(self, value):
        if value is None:
            return
        day = value.date() if hasattr(value, "date") and callable(value.date) else value
        if not self.first <= day <= self.last:
            raise ValidationError(
                self.message or f"Enter a date between {self.first:%Y-%m-%d} and "
                                f"{self.last:%Y-%m-%d}.", code="date_range")

    def __eq__(self, other):
        return isinstance(other, DateBetween) and (other.first, other.last) == (
            self.first, self.last)


class HardenedMixin:
    """Put in front of a Form class: hardens every field, also those a subclass adds in its
    __init__ (the walls go up when the form is cleaned)."""

    def full_clean(self):
        for field in self.fields.values():
            harden_field(field)
        super().full_clean()


class HardenedForm(HardenedMixin, forms.Form):
    pass
