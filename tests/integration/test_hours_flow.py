"""Registrations through the real stack: gateway -> Kafka -> hours service -> care.logged."""
from __future__ import annotations

import datetime as dt
import random
import secrets

import httpx
import orjson
import pytest

from shared.money import cent_minutes_to_cents
from tests.integration.client import Api, Region
from tests.integration.topic_reader import read_topic

pytestmark = pytest.mark.stack


def test_single_registration_is_received_then_accepted_with_exact_cost(api: Api) -> None:
    region = Region(api).build()
    reg = region.registration(f"one-{secrets.token_hex(3)}", minutes=7)
    reply = api.post("/hours", json=reg)
    assert reply.status_code == 202, reply.text
    assert reply.json() == {"registration_id": reg["registration_id"], "status": "pending"}
    status = api.wait_status(reg["registration_id"], {"accepted", "rejected"})
    assert status["status"] == "accepted"
    assert status["cost_cents"] == 758  # 7 min x EUR 65/h = 7.5833.. -> rounded once, half-up
    # Identical resend: a no-op that says so; other content under the same id: conflict.
    assert api.post("/hours", json=reg).json()["status"] == "duplicate"
    changed = dict(reg, minutes=8)
    conflict = api.post("/hours", json=changed)
    assert conflict.status_code == 409 and "different content" in conflict.json()["detail"]


def test_thousand_registrations_each_end_in_the_right_state_exactly_once(api: Api) -> None:
    region = Region(api).build(pupils_per_group=6)
    rng = random.Random(7)
    tag = secrets.token_hex(3)
    valid: dict[str, dict] = {}
    unknown_group: dict[str, dict] = {}
    out_of_pot: dict[str, dict] = {}
    for i in range(940):
        day = region.start + dt.timedelta(days=rng.randrange(0, 300))
        reg = region.registration(f"bulk-{tag}-{i}", day=day, minutes=rng.randint(1, 720),
                                  group=rng.choice(["g1", "g2"]))
        valid[reg["registration_id"]] = reg
    for i in range(20):
        reg = region.registration(f"nogroup-{tag}-{i}", group="no-such-group")
        unknown_group[reg["registration_id"]] = reg
    for i in range(20):
        reg = region.registration(f"outside-{tag}-{i}", day=dt.date(2025, 7, 15))
        out_of_pot[reg["registration_id"]] = reg
    malformed = [region.registration(f"bad-{tag}-0", minutes=0),
                 region.registration(f"bad-{tag}-1", task_category=12),
                 region.registration(f"bad-{tag}-2", minutes=721),
                 region.registration(f"bad-{tag}-3", pupils=["111222333"]),
                 {"registration_id": f"bad-{tag}-4", "school_id": region.school_id}]
    well_formed = list(valid.values()) + list(unknown_group.values()) + list(out_of_pot.values())
    assert len(well_formed) + len(malformed) == 985
    duplicates = rng.sample(list(valid.values()), 98)  # about 10% resent
    stream = well_formed + malformed + duplicates
    rng.shuffle(stream)
    # The first time a registration is sent it counts as new; later copies are duplicates, whichever
    # batch or format they come in.
    totals = {"accepted": 0, "duplicates": 0, "rejected": 0}
    rejected_ids: set[str] = set()
    for start in range(0, len(stream), 100):
        chunk = stream[start:start + 100]
        fmt = (start // 100) % 3
        if fmt == 0:
            reply = api.post("/hours/batch", json=chunk)
        elif fmt == 1:
            body = b"\n".join(orjson.dumps(item) for item in chunk)
            reply = api.post("/hours/batch", content=body, headers={"content-type": "application/x-ndjson"})
        else:
            reply = api.post("/hours/batch", content=_csv(chunk), headers={"content-type": "text/csv"})
        assert reply.status_code == 200, reply.text
        result = reply.json()
        for key in totals:
            totals[key] += len(result[key]) if key == "rejected" else result[key]
        for entry in result["rejected"]:
            assert entry["errors"], entry
            assert chunk[entry["index"]].get("registration_id") == entry["registration_id"]
            rejected_ids.add(entry["registration_id"])
    assert totals == {"accepted": 980, "duplicates": 98, "rejected": 5}
    assert rejected_ids == {m["registration_id"] for m in malformed}

    for rid, reg in valid.items():
        status = api.wait_status(rid, {"accepted", "rejected"})
        assert status["status"] == "accepted", status
        assert status["cost_cents"] == cent_minutes_to_cents(reg["minutes"] * region.rate_cents)
    for rid in unknown_group:
        status = api.wait_status(rid, {"accepted", "rejected"})
        assert status["status"] == "rejected" and "group 'no-such-group' is not registered" in status["reason"]
    for rid in out_of_pot:
        status = api.wait_status(rid, {"accepted", "rejected"})
        assert status["status"] == "rejected" and "no arrangement covers" in status["reason"]

    # Exactly once on the wire: care.logged holds one event per accepted registration of this school.
    events = read_topic(api.stack.broker_port, "care.logged",
                        until=lambda evs: len({e["registration_id"] for e in evs
                                               if e["school_id"] == region.school_id}) >= len(valid))
    ours = [e for e in events if e["school_id"] == region.school_id]
    assert sorted(e["registration_id"] for e in ours) == sorted(valid)
    assert sum(e["cost_cent_minutes"] for e in ours) == sum(r["minutes"] * region.rate_cents for r in valid.values())


def test_void_turns_accepted_into_voided_once(api: Api) -> None:
    region = Region(api).build()
    rid = f"void-{secrets.token_hex(3)}"
    assert api.post("/hours", json=region.registration(rid)).status_code == 202
    api.wait_status(rid, {"accepted"})
    assert api.post(f"/hours/{rid}/void", json={"reason": "registered twice by mistake"}).status_code == 202
    assert api.post(f"/hours/{rid}/void", json={"reason": "again"}).json()["status"] == "duplicate"
    status = api.wait_status(rid, {"voided"})
    assert status["reason"] == "registered twice by mistake"
    assert api.post("/hours/never-sent/void", json={"reason": "x"}).status_code == 404


def test_pupil_attribution_follows_residence_on_the_care_date(api: Api) -> None:
    region = Region(api).build(pupils_per_group=0)
    region.add_pupil("mover", "g1", [{"municipality": "GM0984", "from": "2025-08-01", "until": "2026-01-31"},
                                     {"municipality": "GM0907", "from": "2026-02-01"}])
    tag = secrets.token_hex(3)
    before, after = f"mv-{tag}-a", f"mv-{tag}-b"
    api.post("/hours", json=region.registration(before, day=dt.date(2026, 1, 31), pupils=["mover"]))
    api.post("/hours", json=region.registration(after, day=dt.date(2026, 2, 1)))  # no list: the enrolled pupils
    api.wait_status(before, {"accepted"})
    api.wait_status(after, {"accepted"})
    events = read_topic(api.stack.broker_port, "care.logged",
                        until=lambda evs: {before, after} <= {e["registration_id"] for e in evs})
    by_id = {e["registration_id"]: e for e in events}
    assert by_id[before]["attributions"] == [{"pupil_ref": "mover", "municipality": "GM0984"}]
    assert by_id[before]["attributed_to"] == "listed"
    assert by_id[after]["attributions"] == [{"pupil_ref": "mover", "municipality": "GM0907"}]
    assert by_id[after]["attributed_to"] == "enrolled"


def test_group_without_enrolled_pupils_is_rejected_with_a_reason(api: Api) -> None:
    region = Region(api).build(pupils_per_group=0)
    rid = f"empty-{secrets.token_hex(3)}"
    api.post("/hours", json=region.registration(rid))
    status = api.wait_status(rid, {"accepted", "rejected"})
    assert status["status"] == "rejected" and "nobody to attribute" in status["reason"]


def test_pupils_not_collective_are_never_charged_to_the_pot(api: Api) -> None:
    """Eligibility (design.md section 11): a listed pupil with an individual decision or excluded on the care
    date is rejected saying so; unlisted care goes to the collective pupils only, and with none left it is
    rejected. The rejection counts under its own metric label."""
    region = Region(api).build(pupils_per_group=0)
    home = [{"municipality": "GM0984", "from": "2025-08-01"}]
    region.add_pupil("p1", "g1", home)
    region.add_pupil("p2", "g1", [{"municipality": "GM1507", "from": "2025-08-01"}])
    region.add_pupil("p3", "g2", home)
    for ref, group, kind in (("p2", "g1", "individual_decision"), ("p3", "g2", "excluded")):
        body = {**region.pupils[ref], "eligibility": [{"from": "2026-03-01", "status": kind}]}
        api.ok_put(f"/schools/{region.school_id}/pupils/{ref}", body)
    tag = secrets.token_hex(3)
    ids = {name: f"elig-{tag}-{name}" for name in ("listed", "before", "unlisted", "excluded", "nobody")}
    day = dt.date(2026, 3, 2)
    for item in (region.registration(ids["listed"], day=day, pupils=["p1", "p2"]),
                 region.registration(ids["before"], day=dt.date(2026, 2, 27), pupils=["p2"]),
                 region.registration(ids["unlisted"], day=day),  # p1 and p2 enrolled; p2 is not collective
                 region.registration(ids["excluded"], day=day, group="g2", pupils=["p3"]),
                 region.registration(ids["nobody"], day=day, group="g2")):
        assert api.post("/hours", json=item).status_code == 202
    status = {name: api.wait_status(rid, {"accepted", "rejected"}) for name, rid in ids.items()}
    assert status["listed"]["status"] == "rejected"
    assert status["listed"]["reason"] == ("pupil 'p2' has an individual decision (individual_decision) on "
                                          "2026-03-02: their care is funded individually, not from this pot")
    assert status["excluded"]["status"] == "rejected" and "excluded from collective funding" in status["excluded"]["reason"]
    assert status["nobody"]["status"] == "rejected"
    assert "p3: excluded" in status["nobody"]["reason"] and "nobody to attribute" in status["nobody"]["reason"]
    assert status["before"]["status"] == "accepted" and status["unlisted"]["status"] == "accepted"
    assert status["unlisted"]["cost_cents"] == 6500  # 60 min at EUR 65.00: the cost does not depend on who
    events = read_topic(api.stack.broker_port, "care.logged",
                        until=lambda evs: {ids["before"], ids["unlisted"]} <= {e["registration_id"] for e in evs})
    by_id = {e["registration_id"]: e for e in events}
    assert by_id[ids["unlisted"]]["attributions"] == [{"pupil_ref": "p1", "municipality": "GM0984"}]
    assert by_id[ids["before"]]["attributions"] == [{"pupil_ref": "p2", "municipality": "GM1507"}]
    scrape = httpx.get(f"{api.stack.service_url('hours')}/metrics", timeout=10).text
    assert 'reason="not_collective"' in scrape


def _csv(items: list[dict]) -> bytes:
    fields = ["registration_id", "school_id", "group_id", "date", "minutes", "care_worker", "task_category",
              "funding", "pupils"]
    lines = [",".join(fields)]
    for item in items:
        row = []
        for f in fields:
            value = item.get(f, "")
            row.append("|".join(value) if isinstance(value, list) else str(value if value is not None else ""))
        lines.append(",".join(row))
    return ("\n".join(lines) + "\n").encode()
