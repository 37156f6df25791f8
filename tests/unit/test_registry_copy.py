"""A service's registry copy never jumps past a version it did not see.

The gateway publishes every registry version, gap-free, on one partition. A follower that carries an old
offset across a broker restart (the broker forgot everything, the gateway republishes from version 1) can be
offered version 7 while its copy is at 4: applying it would make "wait for version 7" pass without the school
created at version 5 (CI saw exactly that: "school ... is not registered" for a registration the gateway took).
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import MetaData

from shared.db import create_tables, make_engine
from shared.events import RegistryChanged
from shared.registry import GapInRegistry, RegistryCopy, RegistryStore, registry_table


def change(version: int) -> RegistryChanged:
    return RegistryChanged(event_id=f"registry:{version}", version=version, kind="municipality",
                           key=f"GM{1000 + version}", doc={"name": f"municipality {version}", "youth_population": 1})


def run_with_store(tmp_path: Path, body) -> None:  # noqa: ANN001
    async def go() -> None:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}")
        metadata = MetaData()
        table = registry_table(metadata)
        await create_tables(engine, metadata)
        try:
            await body(RegistryStore(engine, table, RegistryCopy()))
        finally:
            await engine.dispose()
    asyncio.run(go())


def test_a_gap_stops_the_copy_at_the_last_version_that_follows_on(tmp_path: Path) -> None:
    async def body(store: RegistryStore) -> None:
        assert await store.apply_events([change(1), change(2)]) == 2
        with pytest.raises(GapInRegistry) as gap:
            await store.apply_events([change(3), change(5), change(6)])  # 4 missing: 3 applies, 5 and 6 wait
        assert (gap.value.have, gap.value.got) == (3, 5)
        assert store.copy.version == 3
        assert "GM1005" not in store.copy.municipalities
        # Read again from the start (as the follower does): 1..3 are known, 4..6 now follow on.
        assert await store.apply_events([change(v) for v in range(1, 7)]) == 3
        assert store.copy.version == 6
        assert {f"GM{1000 + v}" for v in range(1, 7)} <= set(store.copy.municipalities)
    run_with_store(tmp_path, body)


def test_a_read_that_offers_only_later_versions_applies_nothing(tmp_path: Path) -> None:
    async def body(store: RegistryStore) -> None:
        with pytest.raises(GapInRegistry):
            await store.apply_events([change(2)])
        assert store.copy.version == 0
        assert await store.apply_events([change(1), change(1), change(2)]) == 2  # a republished duplicate
        assert store.copy.version == 2
    run_with_store(tmp_path, body)
