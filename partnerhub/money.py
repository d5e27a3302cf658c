"""Money is integers in minor units plus an ISO currency; decimals only at the edges."""

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# The largest amount anything in PartnerHub accepts, in minor units (a trillion in a
# two-decimal currency). Far below PostgreSQL's bigint, so that sums of many of them still fit;
# anything bigger is a typing error or an attack. README ("Security") documents it.
MAX_MINOR = 10**14

# What people type: ASCII digits, an optional sign, thousands grouped by commas ("25,000") and
# a decimal point. No exponents, no "Infinity"/"NaN", no underscores, no non-ASCII digits
# (Python's Decimal accepts "1_000" and "١٢٣"; a person did not mean them as amounts).
_AMOUNT = re.compile(r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|[+-]?\.[0-9]+",
                     re.ASCII)

# ISO 4217 minor-unit exponents that differ from 2.
_EXPONENTS = {"JPY": 0, "KRW": 0, "CLP": 0, "ISK": 0, "VND": 0, "BHD": 3, "KWD": 3, "OMR": 3,
              "JOD": 3, "TND": 3}
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹"}


def exponent(currency: str) -> int:
    return _EXPONENTS.get((currency or "").upper(), 2)


def to_minor(amount, currency: str) -> int:
    """Decimal('1234.5'), 'USD' -> 123450. Raises ValueError on junk, too many decimals, or
    an amount beyond MAX_MINOR either way."""
    value = parse_decimal(amount)
    if value is None:
        raise ValueError("Enter an amount such as 25000 or 25000.50.")
    exp = exponent(currency)
    if value.adjusted() > 20:  # decide "too large" before int() builds a huge number
        raise ValueError(f"Enter an amount up to {format_money(MAX_MINOR, currency)}.")
    scaled = value * (Decimal(10) ** exp)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{currency} amounts have at most {exp} decimal places.")
    minor = int(scaled.to_integral_value(rounding=ROUND_HALF_UP))
    if abs(minor) > MAX_MINOR:
        raise ValueError(f"Enter an amount up to {format_money(MAX_MINOR, currency)}.")
    return minor


def parse_decimal(value) -> Decimal | None:
    """A finite Decimal from what a person typed (see _AMOUNT), or None when it is not a plain
    number. A Decimal or int passes when finite; floats never (they are not exact)."""
    if isinstance(value, bool) or isinstance(value, float):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    text = str(value if value is not None else "").strip()
    if len(text) > 40 or not _AMOUNT.fullmatch(text):
        return None
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the pattern only lets numbers through
        return None


def from_minor(minor: int, currency: str) -> Decimal:
    return Decimal(minor) / (Decimal(10) ** exponent(currency))


def format_money(minor, currency: str) -> str:
    if minor is None or not currency:
        return "–"
    exp = exponent(currency)
    value = from_minor(minor, currency)
    sign = "-" if value < 0 else ""  # "-$3,200.00", not "$-3,200.00"
    text = f"{abs(value):,.{exp}f}"
    symbol = _SYMBOLS.get(currency.upper())
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {currency.upper()}"
