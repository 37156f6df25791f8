"""The settlement keys: how a close splits the municipalities' cost (design.md section 5), one entry per key.

This registry is the one place a key is declared. What derives from it:
- the contract: `SettlementPolicy.key` accepts exactly these names, and `SettlementPolicy` asks the key which
  inputs it needs (`problems`);
- the gateway's reference checks: which municipalities the policy names and must be registered, and whether
  they need a youth population (`named_municipalities`, `needs_youth_population`);
- the settlement service: whether a close splits per registration (each registration's pupils and their
  residence on the care date) or per period (weights over the period), which picks both the domain's split
  (services/settlement/keys.py holds one split per entry here and checks that at import) and the SQL the
  close runs (per-residence sums or one total);
- statements and their rendering: the basis unit and the words that say how care was split.

Adding a key: one entry here and its split in services/settlement/keys.py; nothing else branches on names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

SplitsBy = Literal["registration", "period"]


def _no_inputs(policy: Any) -> list[str]:
    return []


def _needs_shares(policy: Any) -> list[str]:
    shares = policy.shares or {}
    if not shares or sum(shares.values()) <= 0 or min(shares.values()) < 0:
        return ["key fixed_shares needs shares: {municipality code: non-negative weight}, sum > 0"]
    return []


def _needs_municipalities(policy: Any) -> list[str]:
    return [] if policy.municipalities else ["key youth_share needs municipalities: [municipality codes]"]


@dataclass(frozen=True)
class SettlementKey:
    name: str
    splits_by: SplitsBy
    unit: str  # what a statement's basis counts
    split_words: str  # how the care of a period is split, as a statement line says it
    problems: Callable[[Any], list[str]] = _no_inputs  # what the policy lacks for this key
    named_municipalities: Callable[[Any], list[str]] = lambda policy: []
    needs_youth_population: bool = False
    host_pays_all: bool = False  # every part goes to the host; the statement shows the residence breakdown
    # What the municipalities are charged: the cost of the registered care, or a norm per pupil-day (the
    # registrations then only monitor delivered care against the norm).
    charges: Literal["care", "norm"] = "care"

    @property
    def by_period(self) -> bool:
        return self.splits_by == "period"


KEYS: dict[str, SettlementKey] = {key.name: key for key in (
    SettlementKey("residence_hours", "registration", "attributed_minutes", "for resident pupils, per care day"),
    SettlementKey("residence_pupils", "period", "pupil_days", "pro rata to pupil-days"),
    SettlementKey("youth_share", "period", "youth_population", "pro rata to youth population",
                  problems=_needs_municipalities, named_municipalities=lambda p: list(p.municipalities or []),
                  needs_youth_population=True),
    SettlementKey("fixed_shares", "period", "share_weight", "pro rata to agreed shares",
                  problems=_needs_shares, named_municipalities=lambda p: list(p.shares or {})),
    SettlementKey("host_pays", "registration", "attributed_minutes", "for all pupils (host pays)",
                  host_pays_all=True),
    SettlementKey("per_pupil_norm", "period", "norm_minutes",
                  "at the norm per school day of each collective pupil below the care-need threshold",
                  charges="norm"),
)}

KEY_NAMES: tuple[str, ...] = tuple(KEYS)
