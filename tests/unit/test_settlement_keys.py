"""The settlement key registry (shared/settlement_keys.py) and its splits (services/settlement/keys.py), and the
typed, versioned statement (shared/statements.py): older stored statements still read."""
from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from services.settlement.domain import ArrangementContext, CareLine, close_period
from services.settlement.keys import SPLITS
from shared.schemas import Arrangement, Municipality, Norm, SettlementPolicy
from shared.settlement_keys import KEYS
from services.settlement.describe import localise
from shared.statements import read_statement

D = dt.date


def context(key: str) -> ArrangementContext:
    policy = {"key": key, **({"shares": {"GM0984": 1}} if key == "fixed_shares" else {}),
              **({"municipalities": ["GM0984"]} if key == "youth_share" else {})}
    arrangement = Arrangement.model_validate({
        "school_id": "s", "group_ids": ["g1"], "start": "2025-01-01", "end": "2025-12-31",
        "rates": [{"from": "2025-01-01", "hourly_rate_cents": 6000}], "cap_cents": 10**9, "settlement": policy,
        **({"norm_id": "n1"} if key == "per_pupil_norm" else {})})
    norm = Norm.model_validate({"versions": [{"from": "2025-01-01", "threshold_minutes_per_week": 720,
                                              "norm_minutes_per_week": 330}]})
    return ArrangementContext("arr", arrangement, "GM0984",
                              {"GM0984": Municipality(name="Venray", youth_population=100)}, norm=norm)


def test_every_key_has_exactly_one_split_of_its_kind() -> None:
    assert SPLITS.keys() == KEYS.keys()
    for name, split in SPLITS.items():
        assert split.key is KEYS[name]
        ctx = context(name)
        if split.key.by_period:
            split.period_basis(ctx, D(2025, 1, 1), D(2025, 1, 31))  # implemented
            with pytest.raises(NotImplementedError):
                split.bucket("GM0984", D(2025, 1, 1), "host_absorbs", "GM0984", ctx.municipalities)
        else:
            assert split.bucket("GM0984", D(2025, 1, 1), "host_absorbs", "GM0984", ctx.municipalities).municipality \
                == "GM0984"
            with pytest.raises(NotImplementedError):
                split.period_basis(ctx, D(2025, 1, 1), D(2025, 1, 31))


def test_the_schema_accepts_exactly_the_registered_keys_and_asks_each_for_its_inputs() -> None:
    assert set(SettlementPolicy.model_json_schema()["properties"]["key"]["enum"]) == set(KEYS)
    with pytest.raises(ValidationError, match="key fixed_shares needs shares"):
        SettlementPolicy(key="fixed_shares")
    with pytest.raises(ValidationError, match="key youth_share needs municipalities"):
        SettlementPolicy(key="youth_share")
    with pytest.raises(ValidationError):
        SettlementPolicy(key="per_head")


def _one_statement() -> dict:
    line = CareLine("r1", D(2025, 1, 6), 60 * 6000, 60, (("p", "GM0984"),), "listed")
    [statement] = close_period(context("residence_hours"), [line], [], D(2025, 1, 1), D(2025, 1, 31),
                               D(2025, 2, 1)).statements
    return statement


def test_a_version_1_statement_reads_as_the_current_version_with_its_figures_untouched() -> None:
    current = _one_statement()
    assert current["schema_version"] == 3 and current["total_cents"] == 6000  # 60 min x EUR 60.00/h
    stored_v1 = {k: v for k, v in current.items() if k not in ("funder", "funder_kind", "funder_name")}
    stored_v1["schema_version"] = 1
    assert read_statement(stored_v1) == current
    assert read_statement(current) == current


def test_a_version_2_statement_keeps_its_issued_descriptions_in_every_language() -> None:
    current = _one_statement()
    v3_fields = ("coverage_start", "absorbed_from_name", "late_void", "contribution_label", "contribution_funder_name")
    stored_v2 = {**current, "schema_version": 2,
                 "lines": [{k: v for k, v in line.items() if k not in v3_fields} for line in current["lines"]]}
    read = read_statement(stored_v2)
    assert read["schema_version"] == 3 and read["lines"] == stored_v2["lines"]
    issued = [line["description"] for line in current["lines"]]
    assert [line["description"] for line in localise(read, "nl")["lines"]] == issued  # nothing to render from
    assert [line["description"] for line in localise(current, "nl")["lines"]] != issued  # version 3: Dutch


def test_a_statement_from_a_newer_version_is_refused_not_misread() -> None:
    newer = {**_one_statement(), "schema_version": 4}
    with pytest.raises(ValueError, match="schema_version 4"):
        read_statement(newer)
