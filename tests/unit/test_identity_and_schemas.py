"""Unit tests of shared/identity.py, shared/schemas.py and shared/timeutil.py (design.md sections 3-4)."""
from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from shared.identity import is_municipality_code, is_valid_bsn, pupil_ref_problem
from shared.schemas import Arrangement, Municipality, Period, Pupil, Registration, Residence, School, SettlementPolicy
from shared.timeutil import covers, in_force_on, intervals_overlap, overlap_days, school_year_of, today

D = dt.date
VENRAY = "GM0984"
HORST = "GM1507"


def errors_of(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[str, str]]:
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.value.errors()]


# -- identity --------------------------------------------------------------------------------------

@pytest.mark.parametrize("bsn", ["111222333", "123456782", "999990019"])
def test_valid_bsn(bsn):
    assert is_valid_bsn(bsn)


@pytest.mark.parametrize("value", [
    "111222334",   # check digit off by one
    "123456789",   # sum 165-9 = 156, not a multiple of 11
    "000000000",   # sum 0 is not valid
    "100000009",   # 9 - 9 = 0: a multiple of 11, but 0 is not valid
    "11122233",    # 8 digits
    "1112223330",  # 10 digits
    "11122233a",
    "111 22233",
    "-11222333",
    "",
    "１１１２２２３３３",  # full-width digits are not a BSN
    "²²²²²²²²²",          # str.isdigit() is True but int() fails: must be False, not an exception
])
def test_invalid_bsn(value):
    assert not is_valid_bsn(value)


@pytest.mark.parametrize("code", ["GM0984", "GM1507", "GM0000", "GM9999"])
def test_municipality_code_ok(code):
    assert is_municipality_code(code)


@pytest.mark.parametrize("code", ["gm0984", "GM984", "GM09841", "0984", "GM098A", " GM0984", "GM0984 ", "GM0984\n",
                                  "XX0984", ""])
def test_municipality_code_bad(code):
    assert not is_municipality_code(code)


@pytest.mark.parametrize("ref", ["p1", "pupil-001", "A.b_c:d-e", "x" * 64, "12345678", "1234567890", "111222334"])
def test_pupil_ref_ok(ref):
    assert pupil_ref_problem(ref) is None


@pytest.mark.parametrize("ref", ["", "x" * 65, "has space", "jan/piet", "émile", "p1\n"])
def test_pupil_ref_bad_alphabet(ref):
    problem = pupil_ref_problem(ref)
    assert problem is not None and "1-64" in problem


@pytest.mark.parametrize("ref", ["111222333", "123456782"])
def test_pupil_ref_bsn_rejected(ref):
    problem = pupil_ref_problem(ref)
    assert problem is not None and "BSN" in problem


# -- Registration ----------------------------------------------------------------------------------

CARE_DAY = D(2025, 9, 15)


def reg_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "registration_id": "r-0001",
        "school_id": "focus",
        "group_id": "g1",
        "date": CARE_DAY.isoformat(),
        "minutes": 60,
        "care_worker": "Anja",
        "task_category": 4,
        "funding": "jeugdwet",
        "pupils": ["p1", "p2"],
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not ...}


def reject(**over: Any) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as exc:
        Registration.model_validate(reg_doc(**over))
    return errors_of(exc)


def test_registration_ok_minimal():
    reg = Registration.model_validate(reg_doc(funding=..., pupils=...))
    assert reg.pupils is None and reg.funding is None
    assert reg.date == CARE_DAY


@pytest.mark.parametrize("minutes", [1, 720])
def test_minutes_bounds_accepted(minutes):
    assert Registration.model_validate(reg_doc(minutes=minutes)).minutes == minutes


@pytest.mark.parametrize("minutes", [0, 721, -5])
def test_minutes_bounds_rejected(minutes):
    errs = reject(minutes=minutes)
    assert [f for f, _ in errs] == ["minutes"]


@pytest.mark.parametrize("category", range(1, 12))
def test_care_categories_accepted(category):
    assert Registration.model_validate(reg_doc(task_category=category)).task_category == category


def test_category_12_education_is_not_care():
    errs = reject(task_category=12)
    assert len(errs) == 1
    field, msg = errs[0]
    assert field == "task_category"
    assert "education" in msg and "not care" in msg


@pytest.mark.parametrize("category", [0, 13, -1])
def test_category_out_of_list(category):
    errs = reject(task_category=category)
    assert [f for f, _ in errs] == ["task_category"]
    assert "1..11" in errs[0][1]


def test_date_today_accepted_future_rejected():
    assert Registration.model_validate(reg_doc(date=today().isoformat())).date == today()
    errs = reject(date=(today() + dt.timedelta(days=1)).isoformat())
    assert errs[0][0] == "date" and "future" in errs[0][1]


def test_bsn_like_pupil_ref_rejected():
    errs = reject(pupils=["p1", "111222333"])
    assert errs[0][0] == "pupils"
    assert "BSN" in errs[0][1]


def test_non_bsn_nine_digits_accepted():
    assert Registration.model_validate(reg_doc(pupils=["111222334"])).pupils == ["111222334"]


def test_duplicate_pupil_refs_rejected():
    errs = reject(pupils=["p1", "p2", "p1"])
    assert errs[0][0] == "pupils" and "more than once" in errs[0][1]


def test_pupil_ref_with_trailing_newline_rejected():
    errs = reject(pupils=["p1\n"])
    assert errs[0][0] == "pupils"


@pytest.mark.parametrize("rid", ["a", "A-z.0_9:x", "x" * 64])
def test_registration_id_ok(rid):
    assert Registration.model_validate(reg_doc(registration_id=rid)).registration_id == rid


@pytest.mark.parametrize("rid", ["", "x" * 65, "has space", "a/b", "r1\n", "é"])
def test_registration_id_bad(rid):
    errs = reject(registration_id=rid)
    assert [f for f, _ in errs] == ["registration_id"]


@pytest.mark.parametrize("funding", ["jeugdwet", "wlz", "zvw", "wmo", "education"])
def test_funding_enum_ok(funding):
    assert Registration.model_validate(reg_doc(funding=funding)).funding == funding


@pytest.mark.parametrize("funding", ["JEUGDWET", "pgb", ""])
def test_funding_enum_bad(funding):
    assert [f for f, _ in reject(funding=funding)] == ["funding"]


def test_missing_fields_and_extra_fields_named():
    doc = reg_doc()
    del doc["school_id"], doc["care_worker"]
    doc["bsn"] = "111222333"
    with pytest.raises(ValidationError) as exc:
        Registration.model_validate(doc)
    fields = {f for f, _ in errors_of(exc)}
    assert fields == {"school_id", "care_worker", "bsn"}


def test_content_hash_equal_for_identical_content():
    a = Registration.model_validate(reg_doc())
    b = Registration.model_validate(dict(reversed(list(reg_doc().items()))))
    assert a.content_hash() == b.content_hash()



@pytest.mark.parametrize("value", ["60", True, 60.0])
def test_minutes_must_be_a_json_integer(value):
    # Strict: a boolean or a string is not a number of minutes (CSV cells are converted by the parser).
    with pytest.raises(ValidationError):
        Registration.model_validate(reg_doc(minutes=value))


@pytest.mark.parametrize("change", [
    {"registration_id": "r-0002"},
    {"school_id": "other"},
    {"group_id": "g2"},
    {"date": "2025-09-16"},
    {"minutes": 61},
    {"care_worker": "Anja "},
    {"task_category": 5},
    {"funding": "wlz"},
    {"funding": ...},
    {"pupils": ["p1"]},
    {"pupils": ...},
    {"pupils": ["p1", "p3"]},
])
def test_content_hash_differs_for_any_change(change):
    base = Registration.model_validate(reg_doc()).content_hash()
    assert Registration.model_validate(reg_doc(**change)).content_hash() != base


# -- Pupil, Municipality ---------------------------------------------------------------------------

def mover() -> Pupil:
    return Pupil.model_validate({
        "group_id": "g1",
        "enrolled_from": "2025-08-18",
        "residence": [
            {"municipality": VENRAY, "from": "2025-08-18", "until": "2026-01-14"},
            {"municipality": HORST, "from": "2026-01-15"},
        ],
    })


def test_residence_on_across_a_move():
    p = mover()
    assert p.residence_on(D(2025, 8, 17)) is None
    assert p.residence_on(D(2025, 8, 18)) == VENRAY
    assert p.residence_on(D(2026, 1, 14)) == VENRAY
    assert p.residence_on(D(2026, 1, 15)) == HORST
    assert p.residence_on(D(2030, 1, 1)) == HORST


def test_pupil_enrolled_on_inclusive():
    p = Pupil.model_validate({"group_id": "g1", "enrolled_from": "2025-08-18", "enrolled_until": "2025-12-31",
                              "residence": [{"municipality": VENRAY, "from": "2025-08-18"}]})
    assert not p.enrolled_on(D(2025, 8, 17))
    assert p.enrolled_on(D(2025, 8, 18))
    assert p.enrolled_on(D(2025, 12, 31))
    assert not p.enrolled_on(D(2026, 1, 1))


def test_pupil_validation():
    with pytest.raises(ValidationError):
        Pupil.model_validate({"group_id": "g1", "enrolled_from": "2025-08-18", "residence": []})
    with pytest.raises(ValidationError):
        Pupil.model_validate({"group_id": "g1", "enrolled_from": "2025-08-18", "enrolled_until": "2025-08-17",
                              "residence": [{"municipality": VENRAY, "from": "2025-08-18"}]})
    with pytest.raises(ValidationError):
        Residence.model_validate({"municipality": "GM0984\n", "from": "2025-08-18"})
    with pytest.raises(ValidationError):
        Residence.model_validate({"municipality": VENRAY, "from": "2025-08-18", "until": "2025-08-17"})


def test_municipality_participates_always_without_periods():
    m = Municipality.model_validate({"name": "Venray"})
    assert m.participates_on(D(1990, 1, 1)) and m.participates_on(D(2099, 12, 31))


def test_municipality_participates_only_in_periods():
    m = Municipality.model_validate({"name": "Horst aan de Maas", "participation": [
        {"from": "2025-01-01", "until": "2025-06-30"},
        {"from": "2026-01-01"},
    ]})
    assert not m.participates_on(D(2024, 12, 31))
    assert m.participates_on(D(2025, 1, 1))
    assert m.participates_on(D(2025, 6, 30))
    assert not m.participates_on(D(2025, 7, 1))
    assert not m.participates_on(D(2025, 12, 31))
    assert m.participates_on(D(2026, 1, 1))
    assert m.participates_on(D(2040, 1, 1))


def test_school_municipality_code_checked():
    assert School.model_validate({"name": "Focus", "municipality": VENRAY}).municipality == VENRAY
    with pytest.raises(ValidationError) as exc:
        School.model_validate({"name": "Focus", "municipality": "Venray"})
    assert "GM" in str(exc.value)


# -- Arrangement -----------------------------------------------------------------------------------

def arrangement_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "school_id": "focus",
        "group_ids": ["g1"],
        "start": "2025-08-18",
        "end": "2026-07-10",
        "rates": [
            {"from": "2026-01-01", "hourly_rate_cents": 6800},
            {"from": "2025-08-18", "hourly_rate_cents": 6500},
            {"from": "2026-04-01", "hourly_rate_cents": 7000},
        ],
        "cap_cents": 10_000_000,
        "settlement": {"key": "residence_hours"},
    }
    doc.update(over)
    return doc


def test_rate_on_uses_rate_in_force():
    a = Arrangement.model_validate(arrangement_doc())
    assert a.rate_on(D(2025, 8, 17)) is None
    assert a.rate_on(D(2025, 8, 18)) == 6500
    assert a.rate_on(D(2025, 12, 31)) == 6500
    assert a.rate_on(D(2026, 1, 1)) == 6800
    assert a.rate_on(D(2026, 3, 31)) == 6800
    assert a.rate_on(D(2026, 4, 1)) == 7000
    assert a.rate_on(D(2026, 7, 10)) == 7000


def test_arrangement_covers_inclusive():
    a = Arrangement.model_validate(arrangement_doc())
    assert not a.covers(D(2025, 8, 17))
    assert a.covers(D(2025, 8, 18)) and a.covers(D(2026, 7, 10))
    assert not a.covers(D(2026, 7, 11))


def test_first_rate_may_start_before_start():
    a = Arrangement.model_validate(arrangement_doc(rates=[{"from": "2025-01-01", "hourly_rate_cents": 6000}]))
    assert a.rate_on(D(2025, 8, 18)) == 6000


def test_first_rate_after_start_rejected():
    with pytest.raises(ValidationError) as exc:
        Arrangement.model_validate(arrangement_doc(rates=[{"from": "2025-08-19", "hourly_rate_cents": 6500}]))
    assert "first rate" in str(exc.value)


def test_end_before_start_rejected():
    with pytest.raises(ValidationError) as exc:
        Arrangement.model_validate(arrangement_doc(end="2025-08-17"))
    assert "end must not be before start" in str(exc.value)


def test_single_day_arrangement_ok():
    assert Arrangement.model_validate(arrangement_doc(end="2025-08-18")).covers(D(2025, 8, 18))


@pytest.mark.parametrize("over", [
    {"rates": []},
    {"rates": [{"from": "2025-08-18", "hourly_rate_cents": 0}]},
    {"group_ids": []},
    {"cap_cents": -1},
    {"alert_thresholds": [0.0]},
    {"alert_thresholds": [11]},
])
def test_arrangement_bad_inputs(over):
    with pytest.raises(ValidationError):
        Arrangement.model_validate(arrangement_doc(**over))


def test_settlement_fixed_shares_requires_shares():
    with pytest.raises(ValidationError) as exc:
        SettlementPolicy.model_validate({"key": "fixed_shares"})
    assert "shares" in str(exc.value)
    for shares in ({}, {VENRAY: 0, HORST: 0}, {VENRAY: 2, HORST: -1}):
        with pytest.raises(ValidationError):
            SettlementPolicy.model_validate({"key": "fixed_shares", "shares": shares})
    ok = SettlementPolicy.model_validate({"key": "fixed_shares", "shares": {VENRAY: 1, HORST: 0}})
    assert ok.shares == {VENRAY: 1, HORST: 0}


def test_settlement_youth_share_requires_municipalities():
    with pytest.raises(ValidationError) as exc:
        SettlementPolicy.model_validate({"key": "youth_share"})
    assert "municipalities" in str(exc.value)
    with pytest.raises(ValidationError):
        SettlementPolicy.model_validate({"key": "youth_share", "municipalities": []})
    ok = SettlementPolicy.model_validate({"key": "youth_share", "municipalities": [VENRAY, HORST]})
    assert ok.municipalities == [VENRAY, HORST]


def test_settlement_codes_checked_and_key_enum():
    with pytest.raises(ValidationError):
        SettlementPolicy.model_validate({"key": "fixed_shares", "shares": {"Venray": 1}})
    with pytest.raises(ValidationError):
        SettlementPolicy.model_validate({"key": "youth_share", "municipalities": ["GM984"]})
    with pytest.raises(ValidationError):
        SettlementPolicy.model_validate({"key": "by_vibes"})
    assert SettlementPolicy.model_validate({"key": "host_pays"}).non_participating == "host_absorbs"


# -- timeutil --------------------------------------------------------------------------------------

def period(start: str, until: str | None = None) -> Period:
    return Period.model_validate({"from": start, "until": until})


def test_in_force_on():
    items = [period("2025-01-01", "2025-06-30"), period("2025-07-01")]
    assert in_force_on(items, D(2024, 12, 31)) is None
    assert in_force_on(items, D(2025, 6, 30)) is items[0]
    assert in_force_on(items, D(2025, 7, 1)) is items[1]
    assert in_force_on(items, D(2099, 1, 1)) is items[1]
    assert in_force_on([], D(2025, 1, 1)) is None


def test_in_force_on_overlap_latest_start_wins_regardless_of_order():
    early, late = period("2025-01-01"), period("2025-03-01", "2025-03-31")
    for items in ([early, late], [late, early]):
        assert in_force_on(items, D(2025, 3, 15)) is late
        assert in_force_on(items, D(2025, 4, 1)) is early
        assert in_force_on(items, D(2025, 2, 1)) is early


def test_covers_inclusive():
    p = period("2025-01-01", "2025-01-31")
    assert covers(p, D(2025, 1, 1)) and covers(p, D(2025, 1, 31))
    assert not covers(p, D(2024, 12, 31)) and not covers(p, D(2025, 2, 1))


@pytest.mark.parametrize("item, expected", [
    (("2025-01-01", "2025-12-31"), 31),   # covers the whole of January
    (("2025-01-10", "2025-01-20"), 11),
    (("2024-06-01", "2025-01-01"), 1),
    (("2025-01-31", None), 1),
    (("2025-02-01", None), 0),
    (("2024-01-01", "2024-12-31"), 0),
    (("2024-12-01", None), 31),
])
def test_overlap_days(item, expected):
    assert overlap_days(D(2025, 1, 1), D(2025, 1, 31), period(*item)) == expected


@pytest.mark.parametrize("day, year", [
    (D(2025, 7, 31), "2024/2025"),
    (D(2025, 8, 1), "2025/2026"),
    (D(2025, 12, 31), "2025/2026"),
    (D(2026, 1, 1), "2025/2026"),
    (D(2026, 7, 31), "2025/2026"),
    (D(2026, 8, 1), "2026/2027"),
])
def test_school_year_of(day, year):
    assert school_year_of(day) == year


def test_intervals_overlap():
    a = (D(2025, 1, 1), D(2025, 1, 31))
    assert intervals_overlap(*a, D(2025, 1, 31), D(2025, 2, 28))  # share one day
    assert intervals_overlap(*a, D(2024, 12, 1), D(2025, 1, 1))
    assert intervals_overlap(*a, D(2025, 1, 10), D(2025, 1, 12))  # inside
    assert intervals_overlap(*a, D(2024, 1, 1), D(2026, 1, 1))  # around
    assert not intervals_overlap(*a, D(2025, 2, 1), D(2025, 2, 28))  # adjacent
    assert not intervals_overlap(*a, D(2024, 12, 1), D(2024, 12, 31))
