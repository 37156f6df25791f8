"""Drawing rights of a school board (Amsterdam, domain.md M4; design.md section 11): cap moved between the pots
of a board's schools, within the board's cap and never below what a pot has spent.

Pure: no I/O, no clock (`today` is passed in). The gateway uses `transfer_problem` before it stores a transfer;
the gateway and the budget service both use `effective_cap_cents` (arrangement cap + transfers in - transfers
out). Money is integer cents; refusals carry the figures they are about, and a message for the HTTP detail.

Which pots count as "the board's pots together": the arrangements of the board's schools that cover the
transfer's date. A board's cap is its drawing right for the period it is in; the pots of other school years are
not part of it (otherwise a board with two school years of pots would always be over its cap). A transfer moves
cap between two of those pots, so it never changes their total: a board whose pots together already exceed its
cap (its cap lowered, or a pot's cap raised by a PUT) gets every transfer refused until that is put right.
"""
from __future__ import annotations

import datetime as dt
import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping

from shared.money import format_euro
from shared.schemas import Arrangement, Board, Transfer


@dataclass(frozen=True)
class CapTransfer:
    """A transfer as recorded (the gateway's `transfers` row, the budget service's copy of the event)."""

    transfer_id: str
    board_id: str
    from_arrangement: str
    to_arrangement: str
    amount_cents: int
    date: dt.date


@dataclass(frozen=True)
class TransferRefused:
    """Why a transfer cannot be made. `kind` "unknown" (HTTP 404), "invalid" (422, naming `field`) or
    "conflict" (409); `figures` are the cents the refusal is about."""

    kind: Literal["unknown", "invalid", "conflict"]
    message: str
    field: str | None = None
    figures: Mapping[str, int] = dataclasses.field(default_factory=dict)


def moved_cents(arrangement_id: str, transfers: Iterable[CapTransfer]) -> tuple[int, int]:
    """(transfers in, transfers out) of a pot, in cents."""
    into = out = 0
    for t in transfers:
        if t.to_arrangement == arrangement_id:
            into += t.amount_cents
        if t.from_arrangement == arrangement_id:
            out += t.amount_cents
    return into, out


def effective_cap_cents(arrangement_id: str, cap_cents: int, transfers: Iterable[CapTransfer]) -> int:
    """The pot's cap after its transfers: the arrangement's cap + transfers in - transfers out."""
    into, out = moved_cents(arrangement_id, transfers)
    return cap_cents + into - out


def board_pots(board: Board, arrangements: Mapping[str, Arrangement], day: dt.date) -> list[str]:
    """The arrangements of the board's schools covering `day`, sorted."""
    schools = set(board.school_ids)
    return sorted(aid for aid, arr in arrangements.items() if arr.school_id in schools and arr.covers(day))


def reference_problem(board_id: str, board: Board, transfer: Transfer, arrangements: Mapping[str, Arrangement],
                      today: dt.date) -> TransferRefused | None:
    """What is wrong with the transfer's references and date (422), before any figure is looked at."""
    if transfer.date > today:
        return TransferRefused("invalid", f"{transfer.date.isoformat()} is in the future: record a transfer when "
                                          "it is agreed", "date")
    for side in ("from_arrangement", "to_arrangement"):
        arrangement_id = getattr(transfer, side)
        arrangement = arrangements.get(arrangement_id)
        if arrangement is None:
            return TransferRefused("invalid", f"arrangement {arrangement_id!r} is not registered", side)
        if arrangement.school_id not in board.school_ids:
            return TransferRefused("invalid", f"arrangement {arrangement_id!r} is a pot of school "
                                              f"{arrangement.school_id!r}, which is not one of board {board_id!r}'s "
                                              f"schools ({', '.join(board.school_ids)})", side)
        if not arrangement.covers(transfer.date):
            return TransferRefused("invalid", f"{transfer.date.isoformat()} is outside arrangement {arrangement_id!r} "
                                              f"({arrangement.start.isoformat()}..{arrangement.end.isoformat()}): "
                                              "a transfer moves cap between pots that both run on its date", "date")
    return None


def cap_problem(board_id: str, board: Board, transfer: Transfer, arrangements: Mapping[str, Arrangement],
                transfers: Iterable[CapTransfer], source_spent_cents: int) -> TransferRefused | None:
    """Whether the transfer keeps within the budget (409 otherwise): the source's cap after it must not fall
    below what the source has spent, and the board's pots on the transfer's date must not together exceed the
    board's cap. `transfers` are those recorded before (at least every one touching the board's pots)."""
    recorded = list(transfers)
    amount = transfer.amount_cents
    source = transfer.from_arrangement
    source_cap = effective_cap_cents(source, arrangements[source].cap_cents, recorded)
    if source_cap - amount < source_spent_cents:
        most = max(0, source_cap - source_spent_cents)
        return TransferRefused(
            "conflict",
            f"moving {format_euro(amount)} from {source!r} would leave it a cap of {format_euro(source_cap - amount)}, "
            f"below the {format_euro(source_spent_cents)} it has spent: at most {format_euro(most)} can move",
            figures={"source_cap_cents": source_cap, "source_spent_cents": source_spent_cents,
                     "amount_cents": amount, "most_cents": most})
    pots = board_pots(board, arrangements, transfer.date)
    after = recorded + [CapTransfer(transfer.transfer_id, board_id, source, transfer.to_arrangement, amount,
                                    transfer.date)]
    total = sum(effective_cap_cents(aid, arrangements[aid].cap_cents, after) for aid in pots)
    if total > board.cap_cents:
        return TransferRefused(
            "conflict",
            f"the pots of board {board_id!r} on {transfer.date.isoformat()} ({', '.join(pots)}) would together have "
            f"a cap of {format_euro(total)}, above the board's cap of {format_euro(board.cap_cents)}",
            figures={"pots_cap_cents": total, "board_cap_cents": board.cap_cents})
    return None


def transfer_history(arrangement_id: str, cap_cents: int, transfers: Iterable[CapTransfer]) -> dict[str, Any]:
    """Pot fields for drawing rights: the arrangement's own cap, the transfers in and out and each transfer
    touching the pot (date order), signed from the pot's side. `cap_cents` itself is the effective cap, made
    by the figures from `effective_cap_cents`."""
    mine = sorted((t for t in transfers if arrangement_id in (t.from_arrangement, t.to_arrangement)),
                  key=lambda t: (t.date, t.transfer_id))
    into, out = moved_cents(arrangement_id, mine)
    rows = []
    for t in mine:
        incoming = t.to_arrangement == arrangement_id
        rows.append({"transfer_id": t.transfer_id, "board_id": t.board_id, "date": t.date.isoformat(),
                     "direction": "in" if incoming else "out",
                     "counterpart": t.from_arrangement if incoming else t.to_arrangement,
                     "amount_cents": t.amount_cents, "amount_display": format_euro(t.amount_cents)})
    return {"arrangement_cap_cents": cap_cents, "arrangement_cap_display": format_euro(cap_cents),
            "transfers_in_cents": into, "transfers_in_display": format_euro(into),
            "transfers_out_cents": out, "transfers_out_display": format_euro(out),
            "transfers": rows}


def effective_arrangement(arrangement_id: str, arrangement: Arrangement, transfers: Iterable[CapTransfer]
                          ) -> Arrangement:
    """The arrangement with its effective cap, for every pot figure and alert (remaining, status, thresholds,
    the straight line, the final settlement's cap). The same object when no transfer touches it."""
    cap = effective_cap_cents(arrangement_id, arrangement.cap_cents, transfers)
    return arrangement if cap == arrangement.cap_cents else arrangement.model_copy(update={"cap_cents": cap})
