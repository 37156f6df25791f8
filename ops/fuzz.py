"""Fuzz the gateway from its own OpenAPI document (schemathesis): no 5xx, and every 4xx says what was wrong.

`make fuzz` (python -m ops.fuzz) starts a stack of its own, seeds the demo region plus a registration and a
closed period (so statements exist), and then, for each role (coordinator, school, municipality) and each
operation in /openapi.json, sends requests that schemathesis generates:

* positive: inputs the schema allows (they may still be refused: unknown references, other tenants' data);
* negative: inputs the schema forbids (wrong types, missing fields, bad path parameters);
* known: positive inputs with the path parameters set to ids that exist (a pot, a statement, a registration,
  a school), so the code behind the lookups is reached and not only the 404 for a random id.

Every answer is checked: status below 500, and a 4xx is JSON with a non-empty `detail` (a string, or a list
of problems each with a message). The summary prints the number of requests per role and status; the exit
code is 1 on any failure. tests/integration/test_fuzz.py runs a short version in the normal suite.
"""
from __future__ import annotations

import argparse
import datetime as dt
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROLES = ("coordinator", "school", "municipality")
# Path parameters filled with existing ids in the `known` pass. Token ids are left out on purpose: the
# coordinator pass must not revoke the tokens the other passes use.
KNOWN_SKIP = {("PUT", "/api/v1/municipalities/{code}/webhook")}  # would point a real webhook at a random URL


@dataclass
class Failure:
    role: str
    mode: str
    method: str
    path: str
    status: int | None
    problem: str
    curl: str

    def __str__(self) -> str:
        return (f"[{self.role}/{self.mode}] {self.method} {self.path} -> {self.status}: {self.problem}\n"
                f"    {self.curl}")


@dataclass
class Report:
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)  # (role, status) -> count
    failures: list[Failure] = field(default_factory=list)
    not_generated: list[str] = field(default_factory=list)  # operation/mode pairs schemathesis could not fill

    def add(self, other: "Report") -> None:
        self.requests += other.requests
        self.statuses.update(other.statuses)
        self.failures.extend(other.failures)
        self.not_generated.extend(other.not_generated)

    def summary(self) -> str:
        lines = [f"fuzz: {self.requests} requests, {len(self.failures)} failures"]
        for role in ROLES:
            counts = {s: n for (r, s), n in sorted(self.statuses.items()) if r == role}
            if counts:
                lines.append(f"  {role:<12} {sum(counts.values()):>5} requests  " +
                             "  ".join(f"{s}: {n}" for s, n in counts.items()))
        if self.not_generated:
            lines.append(f"  no cases generated for {len(self.not_generated)} operation/mode pairs: "
                         + ", ".join(self.not_generated))
        for failure in self.failures[:30]:
            lines.append(str(failure))
        if len(self.failures) > 30:
            lines.append(f"  ... and {len(self.failures) - 30} more failures")
        return "\n".join(lines)


def problem_with(status: int, content_type: str, body: bytes) -> str | None:
    """Why this answer breaks the contract, or None: no 5xx; a 4xx says in `detail` what was wrong."""
    if status >= 500:
        return f"server error: {body[:300]!r}"
    if not 400 <= status < 500:
        return None
    if "json" not in content_type:
        return f"4xx is not JSON ({content_type!r}): {body[:200]!r}"
    import orjson

    try:
        detail = orjson.loads(body).get("detail")
    except (orjson.JSONDecodeError, AttributeError):
        return f"4xx body is not a JSON object with detail: {body[:200]!r}"
    if isinstance(detail, str):
        return None if detail.strip() else "empty detail"
    if isinstance(detail, list) and detail:
        for entry in detail:
            message = entry.get("msg") or entry.get("message") if isinstance(entry, dict) else None
            if not (isinstance(message, str) and message.strip()):
                return f"a detail entry says nothing: {entry!r}"
        return None
    return f"detail is missing or empty: {body[:200]!r}"


# -- seeding ----------------------------------------------------------------------------------------

def seed_region(base_url: str, coordinator_token: str) -> dict[str, Any]:
    """The demo region, one accepted registration and one closed period; returns tokens and known ids."""
    from ops.demo import VENRAY, region, seed

    ids = seed(base_url, coordinator_token)
    focus = region()[0]
    start = dt.date.fromisoformat(focus.arrangement["start"])
    group = next(g for g in focus.groups if g.care_from == start)
    pupil = group.pupils[0]
    headers = {"Authorization": f"Bearer {coordinator_token}"}
    with httpx.Client(base_url=f"{base_url}/api/v1", headers=headers, timeout=30) as api:
        def token(role: str, subject: str | None) -> str:
            reply = api.post("/tokens", json={"role": role, "subject": subject, "label": "fuzz"})
            reply.raise_for_status()
            return reply.json()["token"]

        rid = f"fuzz-{secrets.token_hex(4)}"
        reply = api.post("/hours", json={
            "registration_id": rid, "school_id": focus.school_id, "group_id": group.group_id,
            "date": start.isoformat(), "minutes": 90, "care_worker": group.care_worker, "task_category": 2,
            "pupils": [pupil]})
        reply.raise_for_status()
        deadline = time.monotonic() + 60
        while api.get(f"/hours/{rid}").json().get("status") != "accepted":
            if time.monotonic() > deadline:
                raise RuntimeError(f"seeded registration {rid} was not accepted within 60 s")
            time.sleep(0.2)
        close = api.post("/settlements/close", json={
            "arrangement_id": focus.arrangement_id, "period_start": start.isoformat(),
            "period_end": (start + dt.timedelta(days=13)).isoformat()})
        if close.status_code not in (200, 201):
            raise RuntimeError(f"closing the seeded period failed: {close.status_code} {close.text}")
        statements = close.json()["statements"]
        tokens = {"coordinator": coordinator_token, "school": token("school", focus.school_id),
                  "municipality": token("municipality", VENRAY)}
    known = {"code": VENRAY, "school_id": ids["school"], "group_id": group.group_id, "pupil_ref": pupil,
             "arrangement_id": ids["arrangement"], "registration_id": rid,
             "statement_id": statements[0]["statement_id"]}
    return {"tokens": tokens, "known": known}


# -- fuzzing ----------------------------------------------------------------------------------------

def fuzz(base_url: str, tokens: dict[str, str], known: dict[str, str], examples: int, seed: int = 0,
         progress: bool = False) -> Report:
    """`examples` cases per operation, role and mode (positive, negative, known ids)."""
    import requests
    import schemathesis
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    report = Report()
    for role in ROLES:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {tokens[role]}"}
        for operation in operations:
            method, path = operation.method.upper(), operation.path
            names = [p.name for p in operation.path_parameters]
            passes: list[tuple[str, Any]] = [
                ("positive", operation.as_strategy(generation_mode=GenerationMode.POSITIVE)),
                ("negative", operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))]
            if names and all(n in known for n in names) and (method, path) not in KNOWN_SKIP:
                passes.append(("known", operation.as_strategy(
                    generation_mode=GenerationMode.POSITIVE, path_parameters={n: known[n] for n in names})))
            for mode, strategy in passes:
                part = Report()
                try:
                    _run_pass(strategy, examples, seed, lambda case, mode=mode, part=part: _send(
                        case, base_url, session, headers, role, mode, part))
                except Unsatisfiable:
                    pass
                if part.requests == 0:
                    part.not_generated.append(f"{method} {path} ({role}, {mode})")
                report.add(part)
        session.close()
        if progress:
            print(f"fuzz: {role} done, {report.requests} requests so far", flush=True)
    return report


def _run_pass(strategy: Any, examples: int, seed: int, send: Any) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    @hypothesis_seed(seed)
    @settings(max_examples=examples, deadline=None, database=None, print_blob=False,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        send(case)

    run()


def _send(case: Any, base_url: str, session: Any, headers: dict[str, str], role: str, mode: str,
          part: Report) -> None:
    import requests

    method, path = case.method.upper(), case.formatted_path
    part.requests += 1
    try:
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
    except requests.RequestException as exc:
        part.statuses[(role, "no answer")] += 1
        part.failures.append(Failure(role, mode, method, path, None, f"no answer: {exc!r}", case.as_curl_command(headers=headers, base_url=base_url)))
        return
    part.statuses[(role, response.status_code)] += 1
    content_type = response.headers.get("content-type") or ""  # schemathesis keeps a list of values
    content_type = ", ".join(content_type) if isinstance(content_type, list) else content_type
    why = problem_with(response.status_code, content_type, response.content)
    if why:
        part.failures.append(Failure(role, mode, method, path, response.status_code, why,
                                     case.as_curl_command(headers=headers, base_url=base_url)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=20,
                        help="cases per operation, role and mode (default 20: about 2,600 requests)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random, printed)")
    parser.add_argument("--data-dir", type=Path, default=None, help="the stack's data dir (default: a temp dir)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)

    from ops.stack import Stack, stack_ports

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="zorgpot-fuzz-"))
    gateway_port, broker_port = stack_ports()
    stack = Stack(data_dir, gateway_port, broker_port, coordinator_token=f"zp_fuzz_{secrets.token_hex(8)}")
    report = Report(failures=[Failure("-", "-", "-", "-", None, "the run did not finish", "")])
    try:
        print(f"fuzz: starting a stack in {data_dir} (gateway {stack.gateway_url}), seed {seed}", flush=True)
        stack.start_all(timeout=120)
        seeded = seed_region(stack.gateway_url, stack.coordinator_token)
        started = time.monotonic()
        report = fuzz(stack.gateway_url, seeded["tokens"], seeded["known"], args.examples, seed, progress=True)
        print(report.summary())
        print(f"fuzz: {time.monotonic() - started:.0f} s; reproduce with --seed {seed} --examples {args.examples}")
    finally:
        stack.stop_all()
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
