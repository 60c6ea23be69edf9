"""How the command line shows watts, bytes and carbon: one set of formatters for the demo and `plan`.

Decimal (SI) prefixes throughout, as the API's fields, the GPU data sheets and the samples state them
(a B200 has 192 GB of HBM, a GB200 NVL72 rack draws about 132 kW). A figure that is missing or not a
number (a status not written yet) shows as ``-``.
"""

from __future__ import annotations

MISSING = "-"
_WATT_PREFIXES = (("GW", 10**9), ("MW", 10**6), ("kW", 10**3))
_BYTE_PREFIXES = (("EB", 10**18), ("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3))


def _number(n: object) -> float | None:
    # bool is an int to Python, never a figure to us.
    if isinstance(n, bool) or not isinstance(n, int | float):
        return None
    return float(n)


def _scaled(value: float, unit: str, prefixes: tuple[tuple[str, int], ...], digits: int) -> str:
    for prefix, size in prefixes:
        if abs(value) >= size:
            return f"{value / size:,.{digits}f} {prefix}"
    return f"{value:,.0f} {unit}"


def watts(n: object, digits: int = 1) -> str:
    """``118800`` -> ``118.8 kW``; ``digits`` decimals in the largest prefix that fits."""
    value = _number(n)
    return MISSING if value is None else _scaled(value, "W", _WATT_PREFIXES, digits)


def bytes_(n: object, digits: int = 1) -> str:
    """``13_824_000_000_000`` -> ``13.8 TB``; whole bytes below a kilobyte."""
    value = _number(n)
    return MISSING if value is None else _scaled(value, "B", _BYTE_PREFIXES, digits)


def carbon(grams_per_hour: object, digits: int = 1) -> str:
    """``status.carbonGramsPerHour`` in kilograms of CO2 equivalent per hour: ``12.3 kg CO2e/h``."""
    value = _number(grams_per_hour)
    return MISSING if value is None else f"{value / 1000:,.{digits}f} kg CO2e/h"
