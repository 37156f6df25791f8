"""The fault-injection suite of `make faults` (ops/faults.py), shorter: ~3,000 registrations with 10 %
duplicates and 1 % voids while each service is SIGKILLed once and the broker restarted once; then every
registration is counted exactly once in the pot and in the statements, the reconciliation reads 0, and a
webhook receiver that was down gets every statement exactly once."""
from __future__ import annotations

from pathlib import Path

import pytest

from ops import faults

pytestmark = pytest.mark.stack


def test_faults_lose_nothing_and_count_nothing_twice(tmp_path: Path) -> None:
    stack = faults.start_stack(tmp_path / "stack")
    try:
        report = faults.run(stack, registrations=3000)
    finally:
        stack.stop_all()
    assert sorted(f.split("@")[0] for f in report["faults"]) == sorted(faults.FAULTS)
    assert report["reconciliation_discrepancy_cents"] == 0
    assert report["webhook"]["delivered"] == len(report["statements"])
