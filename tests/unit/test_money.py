"""Unit tests of shared/money.py (design.md section 3: integer cents, cent-minutes, half-up, largest remainder)."""
from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.money import (
    CENT_MINUTES_PER_CENT,
    cent_minutes_to_cents,
    cost_cent_minutes,
    format_decimal,
    format_euro,
    format_euro_nl,
    largest_remainder,
    round_half_up,
    sum_cents,
)

FAST = settings(max_examples=150, deadline=None)


# -- cost and rounding ----------------------------------------------------------------------------

def test_worked_figure_151200_minutes_at_6500_cents_per_hour():
    exact = cost_cent_minutes(151_200, 6500)
    assert exact == 151_200 * 6500
    assert cent_minutes_to_cents(exact) == 16_380_000


def test_cost_is_exact_in_cent_minutes():
    # 7 minutes at 65.00/h = 7.5833... euro: not a whole number of cents, kept exact.
    assert cost_cent_minutes(7, 6500) == 45_500
    assert CENT_MINUTES_PER_CENT == 60
    assert cent_minutes_to_cents(45_500) == 758  # 758.33.. -> 758


def test_cost_is_int_not_float():
    assert type(cost_cent_minutes(13, 6499)) is int
    assert type(cent_minutes_to_cents(13 * 6499)) is int


@pytest.mark.parametrize("value, expected", [
    (Fraction(0), 0),
    (Fraction(1, 2), 1),
    (Fraction(3, 2), 2),
    (Fraction(5, 2), 3),  # not banker's rounding
    (Fraction(49, 100), 0),
    (Fraction(51, 100), 1),
    (Fraction(-1, 2), -1),
    (Fraction(-3, 2), -2),
    (Fraction(-5, 2), -3),
    (Fraction(-49, 100), 0),
    (Fraction(-51, 100), -1),
    (Fraction(1, 3), 0),
    (Fraction(2, 3), 1),
    (Fraction(-2, 3), -1),
    (7, 7),
    (-7, -7),
])
def test_round_half_up(value, expected):
    assert round_half_up(value) == expected
    assert type(round_half_up(value)) is int


@FAST
@given(st.integers(min_value=-10**12, max_value=10**12), st.integers(min_value=1, max_value=10**6))
def test_round_half_up_is_nearest_and_symmetric(num, den):
    value = Fraction(num, den)
    r = round_half_up(value)
    assert abs(value - r) <= Fraction(1, 2)
    assert round_half_up(-value) == -r
    if abs(value - r) == Fraction(1, 2):
        assert abs(r) > abs(value)  # exact halves go away from zero


@pytest.mark.parametrize("cent_minutes, expected", [
    (0, 0),
    (29, 0),
    (30, 1),  # exactly half a cent
    (89, 1),
    (90, 2),  # 1.5 cents
    (-30, -1),
    (-29, 0),
    (-90, -2),
    (60 * 1234, 1234),
])
def test_cent_minutes_to_cents(cent_minutes, expected):
    assert cent_minutes_to_cents(cent_minutes) == expected


def test_rounding_happens_once_not_per_item():
    # Three registrations of 7 minutes at 65.00/h: 3 x 758.33 = 2275 exactly, not 3 x 758 = 2274.
    total = sum_cents(cost_cent_minutes(7, 6500) for _ in range(3))
    assert cent_minutes_to_cents(total) == 2275


# -- formatting -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cents, expected", [
    (0, "EUR 0.00"),
    (5, "EUR 0.05"),
    (100, "EUR 1.00"),
    (1234567, "EUR 12,345.67"),
    (123456789, "EUR 1,234,567.89"),
    (-5, "-EUR 0.05"),
    (-1234567, "-EUR 12,345.67"),
])
def test_format_euro(cents, expected):
    assert format_euro(cents) == expected


@pytest.mark.parametrize("cents, expected", [
    (0, "€ 0,00"),
    (7, "€ 0,07"),
    (99999, "€ 999,99"),
    (100000, "€ 1.000,00"),
    (1234567, "€ 12.345,67"),
    (123456789, "€ 1.234.567,89"),
    (-1, "-€ 0,01"),
    (-1234567, "-€ 12.345,67"),
])
def test_format_euro_nl(cents, expected):
    assert format_euro_nl(cents) == expected


@pytest.mark.parametrize("cents, comma, expected", [
    (0, False, "0.00"),
    (0, True, "0,00"),
    (5, False, "0.05"),
    (1234567, False, "12345.67"),
    (1234567, True, "12345,67"),
    (123456789, False, "1234567.89"),
    (-5, False, "-0.05"),
    (-1234567, True, "-12345,67"),
])
def test_format_decimal(cents, comma, expected):
    assert format_decimal(cents, decimal_comma=comma) == expected


@FAST
@given(st.integers(min_value=-10**13, max_value=10**13))
def test_format_decimal_round_trips(cents):
    text = format_decimal(cents)
    assert round(Fraction(text) * 100) == cents
    assert Fraction(format_decimal(cents, decimal_comma=True).replace(",", ".")) * 100 == cents
    nl = format_euro_nl(cents).replace("€ ", "").replace(".", "").replace(",", ".")
    assert Fraction(nl) * 100 == cents
    en = format_euro(cents).replace("EUR ", "").replace(",", "")
    assert Fraction(en) * 100 == cents


# -- largest remainder ----------------------------------------------------------------------------

def test_split_exact_pro_rata():
    assert largest_remainder(100, {"GM0984": 1, "GM1507": 3}) == {"GM0984": 25, "GM1507": 75}


def test_tie_break_lowest_key_first():
    # 100 over three equal weights: 33.33 each, the one left-over cent to the lowest code.
    parts = largest_remainder(100, {"GM1507": 1, "GM0907": 1, "GM0984": 1})
    assert parts == {"GM0907": 34, "GM0984": 33, "GM1507": 33}
    # Two left-over cents: the two lowest codes.
    parts = largest_remainder(101, {"GM1507": 1, "GM0907": 1, "GM0984": 1})
    assert parts == {"GM0907": 34, "GM0984": 34, "GM1507": 33}


def test_largest_remainder_wins_before_key():
    # exact shares 1/6*10=1.67, 2/6*10=3.33, 3/6*10=5: remainder .67 beats .33 although its key is higher.
    parts = largest_remainder(10, {"GM0001": 2, "GM0002": 1, "GM0003": 3})
    assert parts == {"GM0001": 3, "GM0002": 2, "GM0003": 5}


def test_negative_total_mirrors_positive():
    positive = largest_remainder(100, {"GM1507": 1, "GM0907": 1, "GM0984": 1})
    negative = largest_remainder(-100, {"GM1507": 1, "GM0907": 1, "GM0984": 1})
    assert negative == {k: -v for k, v in positive.items()}
    assert negative["GM0907"] == -34
    assert sum(negative.values()) == -100


def test_zero_weight_gets_zero():
    parts = largest_remainder(101, {"GM0001": 0, "GM0002": 1, "GM0003": 1})
    assert parts == {"GM0001": 0, "GM0002": 51, "GM0003": 50}


def test_all_zero_weights_error():
    with pytest.raises(ValueError):
        largest_remainder(100, {"GM0001": 0, "GM0002": 0})
    with pytest.raises(ValueError):
        largest_remainder(-100, {"GM0001": 0})
    with pytest.raises(ValueError):
        largest_remainder(1, {})


def test_zero_total_over_zero_weights_is_all_zero():
    assert largest_remainder(0, {"GM0001": 0, "GM0002": 0}) == {"GM0001": 0, "GM0002": 0}


def test_negative_weight_error():
    with pytest.raises(ValueError):
        largest_remainder(100, {"GM0001": -1, "GM0002": 2})


def test_fraction_weights():
    parts = largest_remainder(100, {"GM0001": Fraction(1, 3), "GM0002": Fraction(2, 3)})
    assert parts == {"GM0001": 33, "GM0002": 67}


weights_strategy = st.dictionaries(
    st.from_regex(r"GM[0-9]{4}", fullmatch=True),
    st.integers(min_value=0, max_value=10**6),
    min_size=1, max_size=12,
).filter(lambda w: sum(w.values()) > 0)


@FAST
@given(st.integers(min_value=-10**12, max_value=10**12), weights_strategy)
def test_parts_always_sum_to_total(total, weights):
    parts = largest_remainder(total, weights)
    assert set(parts) == set(weights)
    assert sum(parts.values()) == total
    weight_sum = sum(weights.values())
    for key, part in parts.items():
        exact = Fraction(total * weights[key], weight_sum)
        assert abs(part - exact) < 1  # each part is its exact share rounded down or up
        if weights[key] == 0:
            assert part == 0
        assert type(part) is int
    assert largest_remainder(-total, weights) == {k: -v for k, v in parts.items()}


@FAST
@given(st.integers(min_value=0, max_value=10**9), weights_strategy)
def test_split_does_not_depend_on_insertion_order(total, weights):
    forward = largest_remainder(total, weights)
    backward = largest_remainder(total, dict(reversed(list(weights.items()))))
    assert forward == backward
