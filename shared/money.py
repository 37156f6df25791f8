"""Money rules (design.md section 3).

Money is integer euro cents. The cost of a registration is minutes x hourly rate / 60, which is rarely a
whole number of cents, so costs are carried exactly in *cent-minutes* (cents x 60) and rounded only when a
figure is shown: once, half-up, to the cent. Splits use the largest-remainder method with a deterministic
tie-break (key ascending) so the parts always sum to the whole.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Iterable, Mapping, TypeVar

K = TypeVar("K")

CENT_MINUTES_PER_CENT = 60


def cost_cent_minutes(minutes: int, hourly_rate_cents: int) -> int:
    """Exact cost of `minutes` of care at `hourly_rate_cents` per hour, in cent-minutes (cents x 60)."""
    return minutes * hourly_rate_cents


def round_half_up(value: Fraction | int) -> int:
    """Round a non-negative or negative exact amount of cents half away from zero ("half-up" on amounts)."""
    value = Fraction(value)
    sign = -1 if value < 0 else 1
    magnitude = abs(value)
    whole, rest = divmod(magnitude.numerator, magnitude.denominator)
    if 2 * rest >= magnitude.denominator:
        whole += 1
    return sign * whole


def cent_minutes_to_cents(cent_minutes: int) -> int:
    """Show an exact cent-minute amount as cents: rounded once, half-up (away from zero).

    Integer arithmetic: this runs once per registration on the hot path."""
    if cent_minutes >= 0:
        return (cent_minutes + CENT_MINUTES_PER_CENT // 2) // CENT_MINUTES_PER_CENT
    return -((-cent_minutes + CENT_MINUTES_PER_CENT // 2) // CENT_MINUTES_PER_CENT)


def format_euro(cents: int) -> str:
    """`1234567` -> `"EUR 12,345.67"` (international display); see `format_euro_nl` for Dutch notation."""
    sign = "-" if cents < 0 else ""
    euros, rest = divmod(abs(cents), 100)
    return f"{sign}EUR {euros:,}.{rest:02d}"


def format_euro_nl(cents: int) -> str:
    """`1234567` -> `"€ 12.345,67"` (Dutch notation: '.' thousands, ',' decimals)."""
    sign = "-" if cents < 0 else ""
    euros, rest = divmod(abs(cents), 100)
    return f"{sign}€ {euros:,}".replace(",", ".") + f",{rest:02d}"


def format_decimal(cents: int, decimal_comma: bool = False) -> str:
    """Plain decimal amount for CSV: `12345.67` or `12345,67`; no thousands separator."""
    sign = "-" if cents < 0 else ""
    euros, rest = divmod(abs(cents), 100)
    return f"{sign}{euros}{',' if decimal_comma else '.'}{rest:02d}"


def largest_remainder(total: int, weights: Mapping[K, int | Fraction]) -> dict[K, int]:
    """Split the integer `total` over `weights` pro rata so the parts sum exactly to `total`.

    Each part first gets the floor of its exact share; the units left over go one each to the largest
    remainders, ties broken by key ascending (municipality code ascending). Negative totals are split as
    the mirror image of the positive split, so a credit is divided exactly like the charge it reverses.
    Zero-weight keys get 0. All-zero weights are an error: there is no basis to split on.
    """
    if total < 0:
        return {k: -v for k, v in largest_remainder(-total, weights).items()}
    fractions = {k: Fraction(w) for k, w in weights.items()}
    if any(w < 0 for w in fractions.values()):
        raise ValueError("weights must not be negative")
    weight_sum = sum(fractions.values(), Fraction(0))
    if weight_sum == 0:
        if total == 0:
            return {k: 0 for k in fractions}
        raise ValueError("cannot split a non-zero amount over zero weights")
    parts: dict[K, int] = {}
    remainders: list[tuple[Fraction, K]] = []
    for key, weight in fractions.items():
        exact = total * weight / weight_sum
        floor = exact.numerator // exact.denominator
        parts[key] = floor
        remainders.append((exact - floor, key))
    left = total - sum(parts.values())
    # Largest remainder first; among equal remainders the lowest key first.
    remainders.sort(key=lambda item: (-item[0], item[1]))
    for _, key in remainders[:left]:
        parts[key] += 1
    return parts


def sum_cents(values: Iterable[int]) -> int:
    return sum(values, 0)
