"""Where the pipeline's CPU goes: `python -m ops.bench_cpu [--registrations 20000]`.

Starts a stack of its own (embedded broker, four services, SQLite), posts the registrations in batches of
1,000 and waits until the pot and the settlement books count them all, like `ops/bench.py`. It reports
the CPU seconds each process (and its children) spent meanwhile, per registration. CPU time is far less
disturbed than wall time by other work on a shared machine, so this is the figure to compare before and
after an optimisation of one service.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from ops import bench

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process, or 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants (the broker runs under a wrapper)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            parents.setdefault(parent, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(parents.get(current, []))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.bench_cpu")
    parser.add_argument("--registrations", type=int, default=20_000)
    args = parser.parse_args()
    n = args.registrations
    with bench.bench_stack("zorgpot-bench-cpu-") as (stack, api):
        items = bench.registrations("bench", n)
        trees = {name: process_tree(child.process.pid)
                 for name, child in stack.children.items() if child.process is not None}
        before = {name: sum(map(cpu_seconds, pids)) for name, pids in trees.items()}
        started = time.monotonic()
        ingest_rate = bench.ingest(api, items)
        bench.wait_books(stack, n)
        wall = time.monotonic() - started
        after = {name: sum(map(cpu_seconds, pids)) for name, pids in trees.items()}
    per_process = {name: round((after[name] - before[name]) / n * 1e6, 1) for name in before}
    report = {"registrations": n, "ingest_per_s": round(ingest_rate), "pipeline_per_s": round(n / wall),
              "cpu_us_per_registration": per_process,
              "cpu_us_per_registration_total": round(sum(per_process.values()), 1)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
