"""The region's reference data (municipalities, schools, groups, pupils, arrangements) as plain values.

Pure: the domains take a `ReferenceData` and look things up in it; how it is kept up to date (the registry
topic, the service's database, waiting for a version) is `shared/registry.py`'s business.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from shared.schemas import Arrangement, Board, Calendar, Funder, Group, Municipality, Norm, Pupil, School


class ReferenceData:
    """The reference data as plain values, with the lookups the domains need. No I/O, no clock."""

    def __init__(self) -> None:
        self.version = 0
        self.municipalities: dict[str, Municipality] = {}
        self.schools: dict[str, School] = {}
        self.groups: dict[tuple[str, str], Group] = {}
        self.pupils: dict[tuple[str, str], Pupil] = {}
        self.pupils_by_group: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.arrangements: dict[str, Arrangement] = {}
        self.funders: dict[str, Funder] = {}
        self.calendars: dict[str, Calendar] = {}
        self.boards: dict[str, Board] = {}
        self.norms: dict[str, Norm] = {}
        self.arrangements_by_group: dict[tuple[str, str], set[str]] = defaultdict(set)
        # (school, group, day) -> ((pupil_ref, residence or None), ...); cleared on every change.
        self._enrolled_memo: dict[tuple[str, str, dt.date], tuple[tuple[str, str | None], ...]] = {}

    # -- applying ---------------------------------------------------------------------------------
    def apply(self, kind: str, key: str, doc: dict[str, Any], version: int) -> None:
        self._enrolled_memo.clear()
        if kind == "municipality":
            self.municipalities[key] = Municipality.model_validate(doc)
        elif kind == "school":
            self.schools[key] = School.model_validate(doc)
        elif kind == "group":
            school_id, group_id = key.split("/", 1)
            self.groups[(school_id, group_id)] = Group.model_validate(doc)
        elif kind == "pupil":
            school_id, ref = key.split("/", 1)
            old = self.pupils.get((school_id, ref))
            if old is not None:
                self.pupils_by_group[(school_id, old.group_id)].discard(ref)
            pupil = Pupil.model_validate(doc)
            self.pupils[(school_id, ref)] = pupil
            self.pupils_by_group[(school_id, pupil.group_id)].add(ref)
        elif kind == "arrangement":
            old_arr = self.arrangements.get(key)
            if old_arr is not None:
                for g in old_arr.group_ids:
                    self.arrangements_by_group[(old_arr.school_id, g)].discard(key)
            arrangement = Arrangement.model_validate(doc)
            self.arrangements[key] = arrangement
            for g in arrangement.group_ids:
                self.arrangements_by_group[(arrangement.school_id, g)].add(key)
        elif kind == "funder":
            self.funders[key] = Funder.model_validate(doc)
        elif kind == "calendar":
            self.calendars[key] = Calendar.model_validate(doc)
        elif kind == "board":
            self.boards[key] = Board.model_validate(doc)
        elif kind == "norm":
            self.norms[key] = Norm.model_validate(doc)
        else:
            raise ValueError(f"unknown registry kind {kind!r}")
        self.version = max(self.version, version)

    # -- lookups ----------------------------------------------------------------------------------
    def arrangement_for(self, school_id: str, group_id: str, day: dt.date) -> tuple[str, Arrangement] | None:
        """The arrangement covering the group on `day` (the gateway refuses overlapping ones)."""
        for arrangement_id in sorted(self.arrangements_by_group.get((school_id, group_id), ())):
            arrangement = self.arrangements[arrangement_id]
            if arrangement.covers(day):
                return arrangement_id, arrangement
        return None

    def enrolled_in_group(self, school_id: str, group_id: str, day: dt.date) -> list[str]:
        return [ref for ref, _ in self.enrolled_with_residence(school_id, group_id, day)]

    def enrolled_with_residence(self, school_id: str, group_id: str, day: dt.date
                                ) -> tuple[tuple[str, str | None], ...]:
        """Pupils enrolled in the group on `day` with their residence that day; memoised, because a school
        registers many care moments for the same group and day."""
        memo_key = (school_id, group_id, day)
        found = self._enrolled_memo.get(memo_key)
        if found is None:
            refs = sorted(ref for ref in self.pupils_by_group.get((school_id, group_id), ())
                          if self.pupils[(school_id, ref)].enrolled_on(day))
            found = tuple((ref, self.pupils[(school_id, ref)].residence_on(day)) for ref in refs)
            if len(self._enrolled_memo) > 100_000:
                self._enrolled_memo.clear()
            self._enrolled_memo[memo_key] = found
        return found

    def pupils_of_groups(self, school_id: str, group_ids: list[str]) -> list[tuple[str, Pupil]]:
        return sorted((ref, self.pupils[(school_id, ref)])
                      for g in group_ids for ref in self.pupils_by_group.get((school_id, g), ()))
