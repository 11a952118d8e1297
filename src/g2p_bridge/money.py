"""Amounts and currencies: Decimal only, with the ISO 4217 minor units of each currency enforced."""

from __future__ import annotations

from decimal import Decimal

# ISO 4217 minor units for currencies a G2P program is likely to pay in; anything else has 2.
_MINOR_UNITS: dict[str, int] = {
    "BHD": 3,
    "BIF": 0,
    "CLP": 0,
    "DJF": 0,
    "GNF": 0,
    "IQD": 3,
    "ISK": 0,
    "JOD": 3,
    "JPY": 0,
    "KMF": 0,
    "KRW": 0,
    "KWD": 3,
    "LYD": 3,
    "OMR": 3,
    "PYG": 0,
    "RWF": 0,
    "TND": 3,
    "UGX": 0,
    "UYI": 0,
    "VND": 0,
    "VUV": 0,
    "XAF": 0,
    "XOF": 0,
    "XPF": 0,
}
# Currencies we know exist; an unknown code is rejected rather than guessed.
_KNOWN = set(_MINOR_UNITS) | {
    "AED",
    "AFN",
    "ALL",
    "AMD",
    "AOA",
    "ARS",
    "AUD",
    "AZN",
    "BAM",
    "BDT",
    "BGN",
    "BOB",
    "BRL",
    "BWP",
    "BYN",
    "BZD",
    "CAD",
    "CDF",
    "CHF",
    "CNY",
    "COP",
    "CRC",
    "CVE",
    "CZK",
    "DKK",
    "DOP",
    "DZD",
    "EGP",
    "ERN",
    "ETB",
    "EUR",
    "FJD",
    "GBP",
    "GEL",
    "GHS",
    "GMD",
    "GTQ",
    "HNL",
    "HTG",
    "HUF",
    "IDR",
    "ILS",
    "INR",
    "IRR",
    "JMD",
    "KES",
    "KGS",
    "KHR",
    "KZT",
    "LAK",
    "LBP",
    "LKR",
    "LRD",
    "LSL",
    "MAD",
    "MDL",
    "MGA",
    "MKD",
    "MMK",
    "MNT",
    "MRU",
    "MUR",
    "MVR",
    "MWK",
    "MXN",
    "MYR",
    "MZN",
    "NAD",
    "NGN",
    "NIO",
    "NOK",
    "NPR",
    "NZD",
    "PAB",
    "PEN",
    "PGK",
    "PHP",
    "PKR",
    "PLN",
    "QAR",
    "RON",
    "RSD",
    "RUB",
    "SAR",
    "SBD",
    "SCR",
    "SDG",
    "SEK",
    "SGD",
    "SLE",
    "SOS",
    "SRD",
    "SSP",
    "STN",
    "SYP",
    "SZL",
    "THB",
    "TJS",
    "TMT",
    "TOP",
    "TRY",
    "TTD",
    "TWD",
    "TZS",
    "UAH",
    "USD",
    "UYU",
    "UZS",
    "VES",
    "WST",
    "XCD",
    "YER",
    "ZAR",
    "ZMW",
    "ZWL",
}

# Column type for every amount: 18 integer digits and up to 4 minor-unit digits.
AMOUNT_PRECISION = 22
AMOUNT_SCALE = 4


def is_known_currency(code: str) -> bool:
    return code in _KNOWN


def minor_units(currency: str) -> int:
    return _MINOR_UNITS.get(currency, 2)


# Larger than any single G2P payment or envelope, and small enough that SQLite's 64-bit integer
# storage of 1/10,000ths (see models.base.Amount) holds it exactly.
MAX_AMOUNT = Decimal("100000000000000")


def has_valid_minor_units(amount: Decimal, currency: str) -> bool:
    """Finite, below MAX_AMOUNT, and with no more decimals than the currency has."""
    if not amount.is_finite() or abs(amount) >= MAX_AMOUNT:
        return False
    exponent = amount.as_tuple().exponent
    if not isinstance(exponent, int):  # NaN and infinities have a letter; excluded above
        return False
    return -exponent <= minor_units(currency) or amount == amount.quantize(
        Decimal(1).scaleb(-minor_units(currency))
    )


def quantize(amount: Decimal, currency: str) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)))


def format_amount(amount: Decimal, currency: str) -> str:
    return f"{quantize(amount, currency):f}"
