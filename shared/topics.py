"""Topic names and partition counts: the one list every service and the admin tooling use.

`care.logged` carries both `care.logged` and `care.voided` events, keyed by school, so a void is always
consumed after the registration it voids (one partition keeps a school's facts in order).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    fact: bool  # facts are kept forever (retention.ms=-1 on Apache Kafka)


REGISTRY = "registry.changes"     # reference data, one partition: a total order for the registry version
HOURS_SUBMITTED = "hours.submitted"  # gateway -> hours: registrations and void requests, key school_id
CARE_LOGGED = "care.logged"       # hours -> budget, settlement: accepted care and voids, key school_id
HOURS_REJECTED = "hours.rejected"  # hours -> (gateway views, audit): rejections with reasons, key school_id
BUDGET_ALERTS = "budget.alerts"   # budget -> anyone: threshold crossings, key arrangement_id
STATEMENTS = "settlement.statements"  # settlement -> anyone: issued statements, key municipality code
PAYMENTS = "arrangement.payments"  # gateway -> budget: payments actually made to a pot's payee, key arrangement_id
DEADLETTER = "zorgpot.deadletter"  # stream services -> operators: records that could not be applied
EPOCH = "zorgpot.epoch"           # one record at offset 0 naming the broker's life; see shared/kafka.py

PARTITIONS = 6

ALL: tuple[TopicSpec, ...] = (
    TopicSpec(REGISTRY, 1, True),
    TopicSpec(HOURS_SUBMITTED, PARTITIONS, True),
    TopicSpec(CARE_LOGGED, PARTITIONS, True),
    TopicSpec(HOURS_REJECTED, PARTITIONS, True),
    TopicSpec(BUDGET_ALERTS, PARTITIONS, True),
    TopicSpec(STATEMENTS, PARTITIONS, True),
    TopicSpec(PAYMENTS, PARTITIONS, True),
    TopicSpec(DEADLETTER, 1, True),
    TopicSpec(EPOCH, 1, True),
)

# budget -> anyone: final settlements (afrekening) issued to a pot's payee, key arrangement_id
FINAL_SETTLEMENTS = "budget.final_settlements"
ALL = ALL + (TopicSpec(FINAL_SETTLEMENTS, PARTITIONS, True),)

# gateway -> budget: cap moved between two pots of a school board (drawing rights), key board_id
BOARD_TRANSFERS = "board.transfers"
ALL = ALL + (TopicSpec(BOARD_TRANSFERS, PARTITIONS, True),)
