"""Rebuild a stream service's books from its topics: `python -m ops replay-from-start <service>`.

The fact topics keep everything (retention.ms=-1) and every consumer is idempotent, so a service whose
database is empty rebuilds identical figures by reading its input topic from offset 0. Its consumer group
(`zorgpot-<service>`, Faust's app id) still remembers where the old books stopped, so the rebuild is:

    stop every worker of the service; empty its database; reset the group to offset 0 (this); start it.

Which services can be rebuilt this way:

* budget: everything (pots, ledger, alert counters) follows from `care.logged`.
* hours: everything follows from `hours.submitted`, judged again against the registry copy as it is now
  (the same verdicts as long as reference data was not changed retroactively). The regenerated care events
  carry the same deterministic event ids, so budget and settlement ignore them as duplicates.
* settlement: NOT from topics alone. Its closes and statements are decisions taken on HTTP calls
  (POST /settlements/close), not events it consumes; rebuilding only its care lines into an empty database
  would settle closed periods a second time. After restoring its database from a backup, though, resetting
  its group to 0 is right (`--after-restore`): it re-reads care.logged, skips what the backup already had
  and applies what came after it.

After restoring hours or budget from a backup the same reset applies: the group's committed offsets are
newer than the restored books, and reading from 0 (deduplicated) fills the gap.

The group must have no members (every worker stopped): the command refuses otherwise, and so does Apache
Kafka. The embedded broker keeps listing a stopped worker as a member; there, with every worker stopped,
`--force` takes the listed members out of the group first.
"""
from __future__ import annotations

from kafka import TopicPartition
from kafka.admin import KafkaAdminClient, MemberToRemove
from kafka.errors import NoError
from kafka.structs import OffsetAndMetadata

from shared import topics

REPLAYABLE: dict[str, tuple[str, ...]] = {
    "hours": (topics.HOURS_SUBMITTED,),
    "budget": (topics.CARE_LOGGED,),
    "settlement": (topics.CARE_LOGGED,),
}
ONLY_AFTER_RESTORE = {
    "settlement": "its closes and statements are not in any topic it consumes: restore its database from a "
                  "backup first, then reset with --after-restore",
}
NOT_REPLAYABLE = {
    "gateway": "it is the source of the reference data, tokens and submissions: restore it from a backup",
}


class ReplayRefused(RuntimeError):
    pass


class _Admin(KafkaAdminClient):
    def _process_acl_operations(self, obj):  # noqa: ANN001, ANN202
        # Only the members matter here; the embedded broker reports ACL operation codes kafka-python rejects.
        obj.pop("authorized_operations", None)
        return obj


def group_of(service: str) -> str:
    return f"zorgpot-{service}"


def reset_to_start(bootstrap: str, service: str, after_restore: bool = False, force: bool = False) -> dict[str, int]:
    """Commit offset 0 on every partition of the service's input topics for its consumer group.

    `force` removes the members the group still lists instead of refusing: for the embedded broker, which
    keeps listing a stopped worker as a member (Apache Kafka drops it when it leaves or its session times
    out). Only with every worker of the service stopped."""
    if service in ONLY_AFTER_RESTORE and not after_restore:
        raise ReplayRefused(f"{service} cannot be rebuilt from topics alone: {ONLY_AFTER_RESTORE[service]}")
    if service in NOT_REPLAYABLE:
        raise ReplayRefused(f"{service} cannot be rebuilt from topics: {NOT_REPLAYABLE[service]}")
    if service not in REPLAYABLE:
        raise ReplayRefused(f"unknown service {service!r}; one of {sorted(REPLAYABLE)}")
    specs = {spec.name: spec for spec in topics.ALL}
    group = group_of(service)
    admin = _Admin(bootstrap_servers=bootstrap, client_id="zorgpot-replay", request_timeout_ms=15000)
    try:
        members = admin.describe_groups([group]).get(group, {}).get("members") or []
        if members and not force:
            raise ReplayRefused(f"consumer group {group} still has {len(members)} member(s): stop every {service} "
                                "worker first (docker compose stop <service>), or wait for the session timeout of a killed one")
        if members:  # forced: take the stopped workers out of the group, as their session expiry would
            admin.remove_group_members(group, [MemberToRemove(member_id=m["member_id"],
                                                              group_instance_id=m.get("group_instance_id"))
                                               for m in members])
        offsets = {TopicPartition(name, p): OffsetAndMetadata(0, "", None)
                   for name in REPLAYABLE[service] for p in range(specs[name].partitions)}
        errors = {tp: error for tp, error in admin.alter_group_offsets(group, offsets).items() if error is not NoError}
        if errors:
            raise ReplayRefused(f"the broker refused the reset of {group}: {errors} (is a worker still running?)")
        return {f"{tp.topic}:{tp.partition}": 0 for tp in sorted(offsets)}
    finally:
        admin.close()
