"""Drawing rights of a school board (design.md section 11, domain.md M4): the pure checks and effective caps
(shared/drawing_rights.py), and the budget service consuming cap.transferred on its migrated SQLite database
through the stream kernel (effective cap in every figure and alert, the transfer history on the pot)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from services.budget import books
from services.budget.service import BudgetService
from shared import topics
from shared.drawing_rights import (CapTransfer, board_pots, cap_problem, effective_arrangement, effective_cap_cents,
                                   reference_problem, transfer_history)
from shared.events import Attribution, CapTransferred, CareLogged, parse_event
from shared.registry import RegistryCopy
from shared.schemas import Arrangement, Board, Transfer
from tests.unit.service_books import migrated_books, offline_kernel

D = dt.date
TODAY = D(2026, 11, 29)
EUR = 100  # cents


def arrangement(school: str, cap: int, start: dt.date = D(2026, 8, 1), end: dt.date = D(2027, 7, 31)) -> Arrangement:
    return Arrangement.model_validate({
        "school_id": school, "group_ids": ["g1"], "start": start.isoformat(), "end": end.isoformat(),
        "rates": [{"from": start.isoformat(), "hourly_rate_cents": 8000}], "cap_cents": cap,
        "settlement": {"key": "residence_hours"}})


BOARD = Board(name="Stichting Amsterdam SO", school_ids=["west", "oost"], cap_cents=200_000 * EUR)
POTS = {"pot-west": arrangement("west", 100_000 * EUR), "pot-oost": arrangement("oost", 100_000 * EUR),
        "pot-west-old": arrangement("west", 90_000 * EUR, D(2025, 8, 1), D(2026, 7, 31)),
        "pot-elsewhere": arrangement("noord", 50_000 * EUR)}


def transfer(amount_eur: int, tid: str = "t-1", source: str = "pot-west", target: str = "pot-oost",
             day: dt.date = TODAY) -> Transfer:
    return Transfer(transfer_id=tid, from_arrangement=source, to_arrangement=target, amount_cents=amount_eur * EUR,
                    date=day)


# -- the worked case (issue 12) -------------------------------------------------------------------------

def test_worked_case_thirty_thousand_refused_twenty_thousand_moves() -> None:
    # Board cap EUR 200,000.00 over two pots of EUR 100,000.00 (the old school year's pot does not run today).
    # pot-west spent EUR 80,000.00: moving EUR 30,000.00 leaves 70,000.00 < 80,000.00 -> refused (409);
    # EUR 20,000.00 leaves exactly 80,000.00 = spent -> allowed; caps 80,000.00 / 120,000.00.
    spent = 80_000 * EUR
    refused = cap_problem("amsterdam", BOARD, transfer(30_000), POTS, [], spent)
    assert refused is not None and refused.kind == "conflict"
    assert refused.figures == {"source_cap_cents": 10_000_000, "source_spent_cents": 8_000_000,
                               "amount_cents": 3_000_000, "most_cents": 2_000_000}
    assert "EUR 70,000.00" in refused.message and "EUR 80,000.00" in refused.message
    assert "at most EUR 20,000.00" in refused.message
    assert cap_problem("amsterdam", BOARD, transfer(20_000), POTS, [], spent) is None
    done = [CapTransfer("t-1", "amsterdam", "pot-west", "pot-oost", 20_000 * EUR, TODAY)]
    assert effective_cap_cents("pot-west", POTS["pot-west"].cap_cents, done) == 80_000 * EUR
    assert effective_cap_cents("pot-oost", POTS["pot-oost"].cap_cents, done) == 120_000 * EUR
    # pot-oost (now EUR 120,000.00) spent nothing: all of its cap may move back, not a cent more.
    assert cap_problem("amsterdam", BOARD, transfer(120_000, "t-2", "pot-oost", "pot-west"), POTS, done, 0) is None
    assert cap_problem("amsterdam", BOARD, transfer(120_001, "t-2", "pot-oost", "pot-west"), POTS, done, 0) is not None


def test_board_pots_are_its_schools_pots_running_on_the_date() -> None:
    assert board_pots(BOARD, POTS, TODAY) == ["pot-oost", "pot-west"]
    assert board_pots(BOARD, POTS, D(2026, 3, 1)) == ["pot-west-old"]


def test_the_board_cap_holds_for_its_pots_together() -> None:
    # Lowered to EUR 150,000.00 while the pots still add up to EUR 200,000.00: every transfer is refused.
    tight = BOARD.model_copy(update={"cap_cents": 150_000 * EUR})
    refused = cap_problem("amsterdam", tight, transfer(1), POTS, [], 0)
    assert refused is not None and refused.kind == "conflict"
    assert refused.figures == {"pots_cap_cents": 20_000_000, "board_cap_cents": 15_000_000}
    assert "pot-oost, pot-west" in refused.message and "EUR 150,000.00" in refused.message


@pytest.mark.parametrize("body, field, words", [
    (transfer(1, source="pot-elsewhere"), "from_arrangement", "school 'noord', which is not one of board"),
    (transfer(1, target="pot-elsewhere"), "to_arrangement", "not one of board 'amsterdam''s schools (west, oost)"),
    (transfer(1, target="no-such-pot"), "to_arrangement", "'no-such-pot' is not registered"),
    (transfer(1, target="pot-west-old"), "date", "outside arrangement 'pot-west-old'"),
    (transfer(1, day=TODAY + dt.timedelta(days=1)), "date", "in the future"),
])
def test_references_and_dates_are_checked_naming_the_field(body: Transfer, field: str, words: str) -> None:
    refused = reference_problem("amsterdam", BOARD, body, POTS, TODAY)
    assert refused is not None and refused.kind == "invalid" and refused.field == field
    assert words in refused.message


def test_a_transfer_between_one_pot_is_not_a_transfer() -> None:
    with pytest.raises(ValueError, match="must differ"):
        transfer(1, target="pot-west")


def test_history_and_effective_arrangement_from_the_pots_side() -> None:
    moved = [CapTransfer("t-2", "amsterdam", "pot-oost", "pot-west", 5_000 * EUR, D(2026, 11, 20)),
             CapTransfer("t-1", "amsterdam", "pot-west", "pot-oost", 20_000 * EUR, D(2026, 11, 1)),
             CapTransfer("t-x", "other", "pot-a", "pot-b", 1, D(2026, 11, 1))]
    history = transfer_history("pot-west", 100_000 * EUR, moved)
    assert (history["arrangement_cap_cents"], history["transfers_in_cents"], history["transfers_out_cents"]) == \
        (10_000_000, 500_000, 2_000_000)
    assert [(t["transfer_id"], t["direction"], t["counterpart"], t["amount_cents"]) for t in history["transfers"]] == \
        [("t-1", "out", "pot-oost", 2_000_000), ("t-2", "in", "pot-oost", 500_000)]
    assert history["transfers_out_display"] == "EUR 20,000.00"
    effective = effective_arrangement("pot-west", POTS["pot-west"], moved)
    assert effective.cap_cents == 85_000 * EUR and POTS["pot-west"].cap_cents == 100_000 * EUR
    assert effective_arrangement("pot-elsewhere", POTS["pot-elsewhere"], moved) is POTS["pot-elsewhere"]


# -- the budget service consuming cap.transferred -------------------------------------------------------

NOW = dt.datetime(2026, 11, 29, 10, tzinfo=dt.timezone.utc)


def registry() -> RegistryCopy:
    copy = RegistryCopy()
    docs: list[tuple[str, str, Any]] = [("municipality", "GM0363", {"name": "Amsterdam"})]
    for school in ("west", "oost"):
        docs += [("school", school, {"name": school.title(), "municipality": "GM0363"}),
                 ("group", f"{school}/g1", {"name": "g1"}),
                 ("arrangement", f"pot-{school}", arrangement(school, 100_000).model_dump(mode="json", by_alias=True))]
    for version, (kind, key, doc) in enumerate(docs, start=1):
        copy.apply(kind, key, doc, version)
    return copy


def logged(rid: str, arrangement_id: str, minutes: int) -> CareLogged:
    school = arrangement_id.removeprefix("pot-")
    return CareLogged(event_id=f"logged:{rid}", registration_id=rid, school_id=school, group_id="g1",
                      arrangement_id=arrangement_id, host_municipality="GM0363", date=D(2026, 11, 2), minutes=minutes,
                      task_category=2, funding=None, care_worker="cw", hourly_rate_cents=8000,
                      cost_cent_minutes=minutes * 8000, cost_cents=0, attributed_to="listed",
                      attributions=[Attribution(pupil_ref="p1", municipality="GM0363")], accepted_at=NOW)


def moved(tid: str, source: str, target: str, cents: int) -> CapTransferred:
    return CapTransferred(event_id=f"transfer:{tid}", transfer_id=tid, board_id="amsterdam", from_arrangement=source,
                          to_arrangement=target, amount_cents=cents, date=D(2026, 11, 20), recorded_at=NOW)


@pytest.fixture()
async def service(tmp_path: Path):
    engine = await migrated_books(tmp_path, "budget")
    svc = BudgetService(engine, registry(), None, lambda: None, clock=lambda: TODAY)
    kernel = offline_kernel(svc, engine, books.metadata)
    svc.outbox = kernel.outbox
    yield svc, kernel
    await engine.dispose()


async def test_budget_service_counts_the_effective_cap_everywhere(service) -> None:  # noqa: ANN001
    svc, kernel = service
    # pot-west: cap 100,000 cents; 60 min at EUR 80.00 = 8,000 cents each; 11 of them = 88,000: warning (0.8).
    await kernel.apply_events(topics.CARE_LOGGED, [logged(f"r{i}", "pot-west", 60) for i in range(11)])
    # 20,000 cents in from pot-oost (no care booked there, no pot row yet): pot-west's cap 120,000, 88,000 is
    # below 0.8 x 120,000 = 96,000: status ok, the warning re-armed.
    await kernel.apply_events(topics.BOARD_TRANSFERS, [moved("t-1", "pot-oost", "pot-west", 20_000)])
    west, oost = await svc.pot("pot-west"), await svc.pot("pot-oost")
    assert (west["cap_cents"], west["arrangement_cap_cents"], west["remaining_cents"], west["status"]) == \
        (120_000, 100_000, 32_000, "ok")
    assert [(t["transfer_id"], t["direction"], t["counterpart"]) for t in west["transfers"]] == \
        [("t-1", "in", "pot-oost")]
    assert (oost["cap_cents"], oost["transfers_out_cents"], oost["remaining_cents"]) == (80_000, 20_000, 80_000)
    # Care on pot-oost now makes its pot row, which starts from the effective cap 80,000 (8,000 spent: ok).
    await kernel.apply_events(topics.CARE_LOGGED, [logged("o1", "pot-oost", 60)])
    oost = await svc.pot("pot-oost")
    assert (oost["spent_cents"], oost["cap_cents"], oost["status"]) == (8_000, 80_000, "ok")
    # 30,000 back out of pot-west: cap 90,000, 88,000 >= 0.8 x 90,000 -> one warning with the effective cap.
    await kernel.apply_events(topics.BOARD_TRANSFERS, [moved("t-2", "pot-west", "pot-oost", 30_000)])
    # The same event again (a republication): the kernel drops it, nothing moves twice.
    await kernel.apply_events(topics.BOARD_TRANSFERS, [moved("t-2", "pot-west", "pot-oost", 30_000)])
    west = await svc.pot("pot-west")
    assert (west["cap_cents"], west["transfers_in_cents"], west["transfers_out_cents"]) == (90_000, 20_000, 30_000)
    async with svc.engine.connect() as conn:
        from sqlalchemy import select
        rows = (await conn.execute(select(kernel.outbox.c.value).order_by(kernel.outbox.c.seq))).all()
    alerts = [parse_event(r.value) for r in rows]
    assert [(a.arrangement_id, a.level, a.threshold, a.cap_cents) for a in alerts] == [
        ("pot-west", "warning", 0.8, 100_000), ("pot-west", "warning", 0.8, 90_000)]
    assert (await svc.pot("pot-oost"))["cap_cents"] == 110_000
