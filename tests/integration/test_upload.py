"""`zorgpot upload` against a running stack: a file of 400 rows with 2 bad ones, the client killed halfway,
then run again: every good row counted once, the bad rows named by their line, exit status 1."""
from __future__ import annotations

import csv
import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops.stack import ROOT, Stack
from tests.integration.client import Api, Region
from tests.integration.test_settlement import wait_applied

pytestmark = pytest.mark.stack

ROWS = 400
BAD = {57: ("minutes", "0"), 301: ("date", "2026-02-30")}  # index in the file's data rows -> broken field


def _command() -> list[str]:
    """The installed `zorgpot` script when there is one (pip install -e .), else the same entry point."""
    script = shutil.which("zorgpot", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "ops.cli"]


def _write_file(path: Path, region: Region) -> list[str]:
    ids = []
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["registration_id", "school_id", "group_id", "date", "minutes", "care_worker",
                         "task_category", "pupils"])
        for i in range(ROWS):
            group = "g1" if i % 2 else "g2"
            row = {"registration_id": f"up-{i:03d}", "school_id": region.school_id, "group_id": group,
                   "date": (dt.date(2025, 9, 1) + dt.timedelta(days=i % 200)).isoformat(),
                   "minutes": str(30 + i % 60), "care_worker": f"cw-{i % 3}", "task_category": "2",
                   "pupils": f"{group}-p{i % 5}|{group}-p{(i + 1) % 5}"}
            if i in BAD:
                field, value = BAD[i]
                row[field] = value
            else:
                ids.append(row["registration_id"])
            writer.writerow(row.values())
    return ids


def test_upload_interrupted_halfway_then_run_again_counts_every_row_once(own_stack: Stack, tmp_path: Path) -> None:
    with Api(own_stack) as api:
        region = Region(api).build(pupils_per_group=5)
        token = api.token_for("school", region.school_id)
        path = tmp_path / "uren.csv"
        good = _write_file(path, region)
        env = {**os.environ, "ZORGPOT_TOKEN": token, "ZORGPOT_URL": own_stack.gateway_url, "PYTHONPATH": str(ROOT)}
        command = _command() + ["upload", str(path), "--batch-size", "10"]

        # First run, killed (SIGKILL: no chance to tidy up) once it has reported its 5th batch.
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        progress = []
        assert first.stderr is not None
        for line in first.stderr:
            if line.startswith("sent "):
                progress.append(line)
            if len(progress) == 5:
                first.send_signal(signal.SIGKILL)
                break
        first.wait(30)
        assert first.returncode == -signal.SIGKILL, (first.returncode, progress)
        sent_before = int(re.match(r"sent (\d+)/", progress[-1]).group(1))
        assert 50 <= sent_before < ROWS

        # Run again: the rows the first run got through come back as already received, not as errors.
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 1, (second.stdout, second.stderr)
        out = second.stdout
        accepted = int(re.search(r"accepted:\s+(\d+)", out).group(1))
        again = int(re.search(r"already received:\s+(\d+)", out).group(1))
        assert int(re.search(r"rejected:\s+(\d+)", out).group(1)) == 2, out
        assert accepted + again == len(good) == ROWS - 2, out
        assert again >= sent_before - len([i for i in BAD if i < sent_before]), out
        # Each bad row by its line in the file (header = line 1), id, field and message.
        assert re.search(r"\b59\s+up-057\s+minutes: Input should be greater than or equal to 1", out), out
        assert re.search(r"\b303\s+up-301\s+date: ", out), out

        # Counted once: the hours service and the settlement service each hold exactly the good rows.
        wait_applied(own_stack, region.arrangement_id, len(good), timeout=180)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and api.hours_stats().get("accepted", {}).get("count") != len(good):
            time.sleep(0.3)
        stats = api.hours_stats()
        assert stats["accepted"]["count"] == len(good) and "rejected" not in stats, stats
        for rid in (good[0], good[len(good) // 2], good[-1]):
            assert api.get(f"/hours/{rid}").json()["status"] == "accepted"

        # A third run changes nothing: everything already received, the same two rejections, JSON on request.
        third = subprocess.run(command + ["--json"], env=env, capture_output=True, text=True, timeout=300)
        assert third.returncode == 1, third.stderr
        summary = __import__("json").loads(third.stdout)
        assert (summary["accepted"], summary["already_received"], summary["rejected"]) == (0, len(good), 2)
        assert [(r["line"], r["registration_id"], r["field"]) for r in summary["rejections"]] == [
            (59, "up-057", "minutes"), (303, "up-301", "date")]
        assert api.hours_stats()["accepted"]["count"] == len(good)

        # A token of another school: every row refused for school_id; a bad token: usage failure, exit 2.
        other = api.token_for("school", "some-other-school")
        refused = subprocess.run(command + ["--token", other, "--json"], env=env, capture_output=True, text=True,
                                 timeout=300)
        assert refused.returncode == 1 and __import__("json").loads(refused.stdout)["rejected"] == ROWS
        bad = subprocess.run(command + ["--token", "nope"], env=env, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "HTTP 401" in bad.stderr, bad.stderr
