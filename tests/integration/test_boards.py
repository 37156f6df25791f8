"""School boards and drawing rights through the real stack (design.md section 11, domain.md M4, issue 12 item 3):
a board's cap over its schools' pots, cap transfers between them checked against the source's spent and the board's
cap, published as cap.transferred and counted by the budget service in every pot figure; the board token's view."""
from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.budget_helpers import wait_pot
from tests.integration.client import Api
from tests.integration.topic_reader import read_topic

pytestmark = pytest.mark.stack

AMSTERDAM = "GM0363"
START, END = dt.date(2026, 8, 1), dt.date(2027, 7, 31)  # the school year under way (today is 2026-11-29)
RATE = 8000  # EUR 80.00 an hour: 600 minutes cost EUR 800.00, 100 of them EUR 80,000.00 exactly


@dataclass
class Amsterdam:
    tag: str
    schools: dict[str, str]  # "west", "oost" (the board's), "noord" (not the board's) -> school id

    @property
    def board(self) -> str:
        return f"board-{self.tag}"

    def pot(self, name: str) -> str:
        return f"pot-{name}-{self.tag}"


def build(api: Api, cap_cents: int = 10_000_000) -> Amsterdam:
    tag = secrets.token_hex(4)
    region = Amsterdam(tag, {name: f"so-{name}-{tag}" for name in ("west", "oost", "noord")})
    api.ok_put(f"/municipalities/{AMSTERDAM}", {"name": "Amsterdam", "youth_population": 150_000})
    for name, school in region.schools.items():
        api.ok_put(f"/schools/{school}", {"name": f"SO {name}", "municipality": AMSTERDAM})
        api.ok_put(f"/schools/{school}/groups/g1", {"name": "g1"})
        api.ok_put(f"/schools/{school}/pupils/p1", {"group_id": "g1", "enrolled_from": START.isoformat(),
                                                    "residence": [{"municipality": AMSTERDAM, "from": START.isoformat()}]})
        api.ok_put(f"/arrangements/{region.pot(name)}", {
            "school_id": school, "group_ids": ["g1"], "start": START.isoformat(), "end": END.isoformat(),
            "rates": [{"from": START.isoformat(), "hourly_rate_cents": RATE}], "cap_cents": cap_cents,
            "settlement": {"key": "host_pays"}})
    return region


def transfer(tid: str, source: str, target: str, cents: int, day: str = "2026-11-27") -> dict[str, Any]:
    return {"transfer_id": tid, "from_arrangement": source, "to_arrangement": target, "amount_cents": cents,
            "date": day}


def school_days(n: int) -> list[dt.date]:
    days, day = [], dt.date(2026, 8, 3)
    while len(days) < n:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def test_worked_case_moves_cap_within_the_board_and_never_below_spent(api: Api) -> None:
    region = build(api)
    west, oost, noord = region.pot("west"), region.pot("oost"), region.pot("noord")
    board = region.board
    reply = api.put(f"/boards/{board}", {"name": "Stichting SO Amsterdam",
                                         "school_ids": [region.schools["west"], region.schools["oost"]],
                                         "cap_cents": 20_000_000})  # EUR 200,000.00 over two pots of 100,000.00
    assert reply.status_code == 200, reply.text

    # West spends EUR 80,000.00: 100 registrations of 600 minutes at EUR 80.00/h = 100 x EUR 800.00 (two care
    # workers on each of the 50 school days from 3 August 2026, all before today).
    items = [{"registration_id": f"w-{region.tag}-{i}-{worker}", "school_id": region.schools["west"],
              "group_id": "g1", "date": day.isoformat(), "minutes": 600, "care_worker": f"cw-{worker}",
              "task_category": 2}
             for i, day in enumerate(school_days(50)) for worker in (1, 2)]
    assert api.post("/hours/batch", json=items).json()["accepted"] == 100
    wait_pot(api, west, lambda p: p["spent_cents"] == 8_000_000)

    # EUR 30,000.00 out of west would leave a cap of 70,000.00 below its 80,000.00 spent: 409.
    refused = api.post(f"/boards/{board}/transfers", json=transfer(f"t-{region.tag}-1", west, oost, 3_000_000))
    assert refused.status_code == 409, refused.text
    assert "below the EUR 80,000.00 it has spent" in refused.json()["detail"]
    assert "at most EUR 20,000.00" in refused.json()["detail"]
    # EUR 20,000.00 leaves exactly the 80,000.00 spent: 201; caps EUR 80,000.00 / EUR 120,000.00.
    body = transfer(f"t-{region.tag}-2", west, oost, 2_000_000)
    moved = api.post(f"/boards/{board}/transfers", json=body)
    assert moved.status_code == 201, moved.text
    assert {k: moved.json()[k] for k in body} == body and moved.json()["board_id"] == board
    again = api.post(f"/boards/{board}/transfers", json=body)
    assert again.status_code == 200 and again.json() == moved.json()
    other = api.post(f"/boards/{board}/transfers", json={**body, "amount_cents": 1_000})
    assert other.status_code == 409 and "other content" in other.json()["detail"]

    pot_west = wait_pot(api, west, lambda p: p["cap_cents"] == 8_000_000)
    pot_oost = wait_pot(api, oost, lambda p: p["cap_cents"] == 12_000_000)
    assert (pot_west["cap_display"], pot_oost["cap_display"]) == ("EUR 80,000.00", "EUR 120,000.00")
    assert (pot_west["arrangement_cap_cents"], pot_west["transfers_out_cents"], pot_west["remaining_cents"]) == \
        (10_000_000, 2_000_000, 0)
    assert pot_west["status"] == "exceeded"  # spent reached the (effective) cap: the cap reached counts as reached
    assert (pot_oost["transfers_in_cents"], pot_oost["remaining_cents"], pot_oost["status"]) == \
        (2_000_000, 12_000_000, "ok")
    assert [(t["transfer_id"], t["direction"], t["counterpart"], t["amount_cents"]) for t in pot_west["transfers"]] \
        == [(body["transfer_id"], "out", oost, 2_000_000)]
    assert [t["direction"] for t in pot_oost["transfers"]] == ["in"]

    # Published once through the outbox, with a deterministic event id.
    events = read_topic(api.stack.broker_port, "board.transfers",
                        until=lambda evs: any(e["transfer_id"] == body["transfer_id"] for e in evs))
    ours = [e for e in events if e["board_id"] == board]
    assert [(e["event_id"], e["type"], e["amount_cents"]) for e in ours] == \
        [(f"transfer:{body['transfer_id']}", "cap.transferred", 2_000_000)]

    # Another school's pot, an unknown pot or board, a bad date or amount: refused naming the problem.
    def bad(status: int, payload: dict[str, Any], field: str | None = None, path: str = f"/boards/{board}/transfers"
            ) -> str:
        reply = api.post(path, json=payload)
        assert reply.status_code == status, reply.text
        if field is not None:
            assert field in {e["field"] for e in reply.json()["detail"]}, reply.text
        return reply.text

    assert "not one of board" in bad(422, transfer(f"t-{region.tag}-3", oost, noord, 100), "to_arrangement")
    assert "is not registered" in bad(422, transfer(f"t-{region.tag}-4", "no-such-pot", oost, 100), "from_arrangement")
    bad(422, transfer(f"t-{region.tag}-5", oost, west, 100, day="2026-07-31"), "date")  # before both pots run
    bad(422, transfer(f"t-{region.tag}-6", oost, west, 100, day=(dt.date.today() + dt.timedelta(days=1)).isoformat()),
        "date")
    bad(422, transfer(f"t-{region.tag}-7", oost, west, 0), "amount_cents")
    bad(422, transfer(f"t-{region.tag}-8", oost, oost, 100))
    assert "board 'no-such-board' not found" in bad(404, transfer(f"t-{region.tag}-9", oost, west, 100),
                                                     path="/boards/no-such-board/transfers")

    # The board's cap lowered below its pots together (EUR 200,000.00): every transfer is refused until put right.
    api.ok_put(f"/boards/{board}", {"name": "Stichting SO Amsterdam",
                                    "school_ids": [region.schools["west"], region.schools["oost"]],
                                    "cap_cents": 15_000_000})
    assert "above the board's cap of EUR 150,000.00" in bad(409, transfer(f"t-{region.tag}-10", oost, west, 100))

    listed = api.get(f"/boards/{board}/transfers").json()
    assert [t["transfer_id"] for t in listed["transfers"]] == [body["transfer_id"]]
    assert {p["arrangement_id"]: p["cap_cents"] for p in listed["pots"]} == {west: 8_000_000, oost: 12_000_000}


def test_a_board_token_reads_its_schools_pots_and_transfers_and_nothing_else(api: Api) -> None:
    region = build(api, cap_cents=5_000_000)
    board = region.board
    west, oost, noord = region.pot("west"), region.pot("oost"), region.pot("noord")
    schools = [region.schools["west"], region.schools["oost"]]
    api.ok_put(f"/boards/{board}", {"name": "Stichting SO Amsterdam", "school_ids": schools, "cap_cents": 10_000_000})
    assert api.post(f"/boards/{board}/transfers", json=transfer(f"b-{region.tag}-1", oost, west, 100_000)).status_code \
        == 201

    # A board's schools must exist and belong to no other board.
    reply = api.put(f"/boards/{board}-2", {"name": "x", "school_ids": ["no-such-school"], "cap_cents": 1})
    assert reply.status_code == 422 and reply.json()["detail"][0]["field"] == "school_ids"
    reply = api.put(f"/boards/{board}-2", {"name": "x", "school_ids": [schools[0]], "cap_cents": 1})
    assert reply.status_code == 409 and board in reply.json()["detail"]
    reply = api.post("/tokens", json={"role": "board", "subject": "no-such-board"})
    assert reply.status_code == 422 and "not registered" in reply.text

    member = api.as_token(api.token_for("board", board))
    listed = member.get("/pots")
    assert listed.status_code == 200
    assert listed.json()["viewer"] == {"role": "board", "subject": board}
    assert [p["arrangement_id"] for p in listed.json()["pots"]] == sorted([west, oost])
    assert member.get(f"/pots/{west}").json()["cap_cents"] in (5_000_000, 5_100_000)  # the transfer may be in flight
    wait_pot(member, west, lambda p: p["cap_cents"] == 5_100_000 and p["transfers_in_cents"] == 100_000)
    missing = member.get(f"/pots/{noord}")
    assert missing.status_code == 404 and missing.json() == {"detail": f"pot {noord!r} not found"}
    mine = member.get(f"/boards/{board}/transfers")
    assert mine.status_code == 200 and [t["transfer_id"] for t in mine.json()["transfers"]] == [f"b-{region.tag}-1"]
    assert member.get("/boards/other-board/transfers").status_code == 404

    # Nothing else: no writes, no hours, no statements, no other school's or pot's records.
    registration = {"registration_id": f"b-{region.tag}-r", "school_id": schools[0], "group_id": "g1",
                    "date": "2026-11-27", "minutes": 60, "care_worker": "cw", "task_category": 2}
    for status, reply in (
            (403, member.post(f"/boards/{board}/transfers", json=transfer(f"b-{region.tag}-2", oost, west, 1))),
            (403, member.put(f"/boards/{board}", {"name": "x", "school_ids": schools, "cap_cents": 1})),
            (403, member.post("/hours", json=registration)),
            (403, member.post("/hours/batch", json=[registration])),
            (403, member.put(f"/schools/{schools[0]}/groups/g1", {"name": "g1"})),
            (403, member.get("/statements")),
            (403, member.post("/tokens", json={"role": "board", "subject": board})),
            (403, member.get(f"/arrangements/{west}/final-settlements")),
            (404, member.get(f"/arrangements/{west}/payments")),
            (403, member.get("/deadletters"))):
        assert reply.status_code == status, (reply.request.url, reply.status_code, reply.text)
    assert api.get(f"/hours/{registration['registration_id']}").status_code == 404  # nothing was received
