"""Money is integers in minor units plus an ISO currency; decimals only at the edges."""

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# ISO 4217 minor-unit exponents that differ from 2.
_EXPONENTS = {"JPY": 0, "KRW": 0, "CLP": 0, "ISK": 0, "VND": 0, "BHD": 3, "KWD": 3, "OMR": 3,
              "JOD": 3, "TND": 3}
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹"}


def exponent(currency: str) -> int:
    return _EXPONENTS.get((currency or "").upper(), 2)


def to_minor(amount, currency: str) -> int:
    """Decimal('1234.5'), 'USD' -> 123450. Raises ValueError on junk or too many decimals."""
    try:
        value = Decimal(str(amount).replace(",", "").strip())
    except (InvalidOperation, ValueError):
        raise ValueError("Enter an amount such as 25000 or 25000.50.") from None
    if not value.is_finite():
        raise ValueError("Enter an amount such as 25000 or 25000.50.")
    exp = exponent(currency)
    scaled = value * (Decimal(10) ** exp)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{currency} amounts have at most {exp} decimal places.")
    return int(scaled.to_integral_value(rounding=ROUND_HALF_UP))


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
