"""The split of each settlement key: one object per entry of shared/settlement_keys.py `KEYS`.

A key splits either per registration (`bucket`: whose statement carries one attributed pupil's part of a
registration, by the pupil's residence on the care date) or per period (`period_basis`: weights over the
buckets for the period, the counts a statement shows). Non-participation is routed the same way for every
key (services/settlement/routing.py `route`). Pure: no I/O, no clock.

Adding a key: its `SettlementKey` in shared/settlement_keys.py (contract: name, inputs, unit, words) and its
split here; the import-time check below keeps the two registries equal.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from fractions import Fraction
from typing import Mapping

from services.settlement.routing import (UNKNOWN_RESIDENCE, ArrangementContext, Bucket, PeriodBasis,
                                         SettlementError, each_day, participates, participating_days, route)
from shared.norms import norm_days
from shared.schemas import Municipality
from shared.settlement_keys import KEYS, SettlementKey


class Split:
    """A key's split. Registration keys implement `bucket`, period keys `weights`."""

    def __init__(self, key: SettlementKey) -> None:
        self.key = key

    def bucket(self, residence: str, day: dt.date, policy: str, host: str,
               municipalities: Mapping[str, Municipality]) -> Bucket:
        raise NotImplementedError(f"key {self.key.name} splits per period, not per registration")

    def weights(self, context: ArrangementContext, period_start: dt.date, period_end: dt.date,
                weights: dict[Bucket, Fraction], counts: dict[str, Fraction]) -> None:
        raise NotImplementedError(f"key {self.key.name} splits per registration, not per period")

    def period_basis(self, context: ArrangementContext, period_start: dt.date, period_end: dt.date) -> PeriodBasis:
        """Weights per bucket for the period; non-participation is pro-rated per day of the period."""
        host = context.host_municipality
        period_days = (period_end - period_start).days + 1
        weights: dict[Bucket, Fraction] = defaultdict(Fraction)
        counts: dict[str, Fraction] = defaultdict(Fraction)
        self.weights(context, period_start, period_end, weights, counts)
        basis = PeriodBasis(unit=self.key.unit)
        for code in counts:
            basis.participating_days[code] = period_days if code == host else participating_days(
                context.municipalities, code, period_start, period_end)
        basis.weights = {b: w for b, w in weights.items() if w != 0}
        basis.counts = dict(counts)
        return basis


class ByResidence(Split):
    """Each attributed pupil's part to the pupil's residence municipality that day (routed if not participating)."""

    def bucket(self, residence: str, day: dt.date, policy: str, host: str,
               municipalities: Mapping[str, Municipality]) -> Bucket:
        return route(residence, day, policy, host, municipalities)


class ToHost(Split):
    """Every part to the host municipality (the statement still shows who the care was for)."""

    def bucket(self, residence: str, day: dt.date, policy: str, host: str,
               municipalities: Mapping[str, Municipality]) -> Bucket:
        return Bucket(host)


class ByPupilDays(Split):
    """Every enrolled pupil-day of a collective pupil counts for the pupil's residence municipality that day."""

    def weights(self, context: ArrangementContext, period_start: dt.date, period_end: dt.date,
                weights: dict[Bucket, Fraction], counts: dict[str, Fraction]) -> None:
        policy = context.arrangement.settlement
        groups = set(context.arrangement.group_ids)
        for _ref, pupil in context.pupils:
            if pupil.group_id not in groups:
                continue
            for day in each_day(max(period_start, pupil.enrolled_from), period_end):
                if not pupil.enrolled_on(day) or pupil.eligibility_on(day) != "collective":
                    continue  # a pupil with an individual decision (or excluded) is not funded by the pot
                residence = pupil.residence_on(day) or UNKNOWN_RESIDENCE
                counts[residence] += 1
                weights[route(residence, day, policy.non_participating, context.host_municipality,
                              context.municipalities)] += 1


class ByWeights(Split):
    """A fixed weight per municipality, times its participating days / period days; the rest of its weight
    is routed by the policy."""

    def base(self, context: ArrangementContext) -> dict[str, int]:
        raise NotImplementedError

    def weights(self, context: ArrangementContext, period_start: dt.date, period_end: dt.date,
                weights: dict[Bucket, Fraction], counts: dict[str, Fraction]) -> None:
        policy = context.arrangement.settlement
        host, munis = context.host_municipality, context.municipalities
        period_days = (period_end - period_start).days + 1
        for code, weight in self.base(context).items():
            counts[code] += weight
            if weight == 0:
                continue
            participating = period_days if code == host else participating_days(munis, code, period_start, period_end)
            if participating:
                weights[Bucket(code)] += Fraction(weight * participating, period_days)
            if participating < period_days:
                # Any non-participating day routes the same way, so use the first such day.
                day = next(d for d in each_day(period_start, period_end) if not participates(munis, code, d))
                bucket = route(code, day, policy.non_participating, host, munis)
                weights[bucket] += Fraction(weight * (period_days - participating), period_days)


class ByYouthPopulation(ByWeights):
    def base(self, context: ArrangementContext) -> dict[str, int]:
        base: dict[str, int] = {}
        for code in context.arrangement.settlement.municipalities or []:
            municipality = context.municipalities.get(code)
            if municipality is None or municipality.youth_population is None:
                raise SettlementError(f"key {self.key.name} needs the youth_population of {code}; it is not known")
            base[code] = municipality.youth_population
        return base


class ByAgreedShares(ByWeights):
    def base(self, context: ArrangementContext) -> dict[str, int]:
        return dict(context.arrangement.settlement.shares or {})


class ByNorm(Split):
    """Per-pupil norm (Nijmegen, design.md section 11): each school day a pupil of the arrangement's groups is
    enrolled, collective and has a care need below the norm's threshold costs norm_minutes_per_week / 5 at the
    rate in force that day, charged to the pupil's residence that day (routed if not participating).

    A pupil without a recorded care need on a day is not charged that day: "below the threshold" cannot be
    known. School days are the arrangement's calendar's, Monday to Friday without one. The norm version in
    force on each day applies, so a recalibrated norm changes only days from its date, and a closed period
    is never computed again. The weights are the exact norm cost per bucket, so the split charges each
    municipality exactly its pupils' norm cost (`charged_cent_minutes` is their sum).
    """

    def period_basis(self, context: ArrangementContext, period_start: dt.date, period_end: dt.date) -> PeriodBasis:
        arrangement = context.arrangement
        if context.norm is None:
            raise SettlementError(f"key {self.key.name} needs the arrangement's norm {arrangement.norm_id!r}; "
                                  "it is not known")
        policy = arrangement.settlement
        host, munis = context.host_municipality, context.municipalities
        cost: dict[Bucket, Fraction] = defaultdict(Fraction)
        minutes: dict[str, Fraction] = defaultdict(Fraction)
        shown: dict[Bucket, Fraction] = defaultdict(Fraction)
        for paid in norm_days(arrangement, context.pupils, context.norm, context.calendar, period_start, period_end):
            residence = paid.residence or UNKNOWN_RESIDENCE
            bucket = route(residence, paid.day, policy.non_participating, host, munis)
            minutes[residence] += paid.minutes
            shown[bucket] += paid.minutes
            cost[bucket] += paid.cost_cent_minutes
        basis = PeriodBasis(unit=self.key.unit, counts=dict(minutes))
        period_days = (period_end - period_start).days + 1
        for code in minutes:
            basis.participating_days[code] = period_days if code == host else participating_days(
                munis, code, period_start, period_end)
        basis.weights = {b: w for b, w in cost.items() if w != 0}
        basis.charged_cent_minutes = sum(cost.values(), Fraction(0))
        basis.shown = dict(shown)
        return basis


SPLITS: dict[str, Split] = {
    "residence_hours": ByResidence(KEYS["residence_hours"]),
    "residence_pupils": ByPupilDays(KEYS["residence_pupils"]),
    "youth_share": ByYouthPopulation(KEYS["youth_share"]),
    "fixed_shares": ByAgreedShares(KEYS["fixed_shares"]),
    "host_pays": ToHost(KEYS["host_pays"]),
    "per_pupil_norm": ByNorm(KEYS["per_pupil_norm"]),
}
if SPLITS.keys() != KEYS.keys():  # pragma: no cover - a key declared without its split (or the reverse)
    raise ImportError(f"settlement keys without a split: {sorted(KEYS.keys() - SPLITS.keys())}; "
                      f"splits without a key: {sorted(SPLITS.keys() - KEYS.keys())}")
