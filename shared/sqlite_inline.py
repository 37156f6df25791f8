"""aiosqlite without its thread: every call runs at once on the event loop's own thread.

Why: aiosqlite hands each call (execute, fetch, cursor close, commit ...) to a worker thread and back, ~4
hand-overs per statement. When the two cores are busy each hand-over waits for the scheduler, and a batch
of ~10 statements spent 20-190 ms in hand-overs at 1,000 registrations/s (docs/performance.md, session 3).
SQLite's own work per statement is micro- to milliseconds, so running it inline is cheaper than handing it
over. What could wait long, `BEGIN IMMEDIATE` while another *process* writes the same file (scale-out
workers share one SQLite book), still goes to a worker thread, so the loop keeps heartbeating meanwhile.

Used through SQLAlchemy's own aiosqlite dialect: `make_engine` passes `open_connection` as `async_creator`.
"""
from __future__ import annotations

import asyncio
import sqlite3
from functools import partial
from typing import Any, Callable

import aiosqlite

_WAITS_FOR_OTHER_WRITERS = ("BEGIN IMMEDIATE", "BEGIN EXCLUSIVE")


class _NoThread:
    """Stands in for aiosqlite's worker thread, which is never started."""

    daemon = True

    def start(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass


class _Inline:
    """Stands in for aiosqlite's queue to the worker thread: runs each call now and settles its future."""

    def put_nowait(self, item: tuple[asyncio.Future | None, Callable[[], Any]]) -> None:
        future, function = item
        if future is not None and _may_wait(function):
            asyncio.ensure_future(_in_thread(future, function))
            return
        try:
            result = function()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller, as aiosqlite does
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        if future is not None and not future.done():
            future.set_result(result)


def _may_wait(function: Callable[[], Any]) -> bool:
    args = function.args if isinstance(function, partial) else ()
    return bool(args) and isinstance(args[0], str) and args[0].lstrip().upper().startswith(_WAITS_FOR_OTHER_WRITERS)


async def _in_thread(future: asyncio.Future, function: Callable[[], Any]) -> None:
    try:
        result = await asyncio.to_thread(function)
    except BaseException as exc:  # noqa: BLE001
        if not future.done():
            future.set_exception(exc)
        return
    if not future.done():
        future.set_result(result)


async def open_connection(database: str, **kwargs: Any) -> aiosqlite.Connection:
    """An open aiosqlite connection whose calls run inline (see the module doc). `check_same_thread=False`:
    the one call that may wait runs in a worker thread while the loop's thread waits for it."""
    kwargs["check_same_thread"] = False
    connection = aiosqlite.Connection(partial(sqlite3.connect, database, **kwargs), iter_chunk_size=64)
    connection._thread = _NoThread()  # type: ignore[assignment]
    connection._tx = _Inline()  # type: ignore[assignment]
    return await connection
