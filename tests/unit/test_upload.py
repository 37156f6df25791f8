"""The upload client's pure parts: where each row stands in the file, the batches it sends, the summary."""
from __future__ import annotations

import csv
import re
import io
from pathlib import Path

import httpx
import pytest

from ops import upload
from ops.cli import main
from services.gateway.parsing import parse_csv, parse_ndjson

CSV = (
    "registration_id;school_id;group_id;date;minutes;care_worker;task_category;pupils\n"
    "r1;s;g1;2026-03-02;60;cw;2;p1|p2\n"
    "\n"
    'r2;s;g1;2026-03-02;45;"cw\nwith a line break";2;p1\n'
    "r3;s;g1;2026-03-03;0;cw;2;\n"
)


def test_csv_rows_keep_their_line_in_the_file_and_match_the_gateways_items() -> None:
    header, delimiter, rows = upload.read_csv("\ufeff" + CSV)
    assert delimiter == ";" and header[0] == "registration_id"
    assert [(r.line, r.registration_id) for r in rows] == [(2, "r1"), (4, "r2"), (6, "r3")]
    body = upload.encode_batch("csv", rows[1:], header, delimiter)
    items = parse_csv(body)  # what the gateway reads: item i is rows[1:][i]
    assert [i["registration_id"] for i in items] == ["r2", "r3"]
    assert items[0]["care_worker"] == "cw\nwith a line break" and items[1]["minutes"] == 0


def test_ndjson_rows_skip_blank_lines_and_keep_unreadable_ones_in_place() -> None:
    text = '{"registration_id": "a"}\n\n{not json\n{"registration_id": "c"}\n'
    rows = upload.read_ndjson(text)
    assert [(r.line, r.registration_id) for r in rows] == [(1, "a"), (3, None), (4, "c")]
    assert len(parse_ndjson(upload.encode_batch("ndjson", rows, [], ","))) == 3


def test_a_csv_without_a_header_of_field_names_is_a_usage_error() -> None:
    with pytest.raises(upload.UsageError, match="header row"):
        upload.read_csv("r1,s,g1\n")


def test_replies_map_back_to_file_rows_and_the_summary_names_them() -> None:
    _, _, rows = upload.read_csv(CSV)
    summary = upload.Summary(rows=3)
    upload.apply_reply(summary, rows[:2], {"accepted": 1, "duplicates": 1, "rejected": []})
    upload.apply_reply(summary, rows[2:], {"accepted": 0, "duplicates": 0, "rejected": [
        {"index": 0, "registration_id": "r3", "errors": [
            {"field": "minutes", "message": "Input should be greater than or equal to 1"}]}]})
    assert (summary.accepted, summary.duplicates, summary.rejected_rows, summary.exit_status()) == (1, 1, 1, 1)
    out = io.StringIO()
    upload.render_summary(summary, "hours.csv", out)
    text = out.getvalue()
    assert "already received:  1" in text
    assert re.search(r"^ +6  r3 +minutes: Input should be greater than or equal to 1$", text, re.M)
    assert summary.as_dict()["rejections"] == [{"line": 6, "registration_id": "r3", "field": "minutes",
                                                "message": "Input should be greater than or equal to 1"}]


def test_format_from_extension_or_option() -> None:
    assert upload.detect_format(Path("a.CSV"), None) == "csv"
    assert upload.detect_format(Path("a.jsonl"), None) == "ndjson"
    assert upload.detect_format(Path("a.txt"), "ndjson") == "ndjson"
    with pytest.raises(upload.UsageError, match="--format"):
        upload.detect_format(Path("a.txt"), None)
    assert upload.api_base("http://h:8000/") == "http://h:8000/api/v1"
    assert upload.api_base("http://h:8000/api/v1") == "http://h:8000/api/v1"


class FakeHttp:
    def __init__(self, replies: list) -> None:  # noqa: ANN001
        self.replies = replies
        self.calls = 0

    def post(self, *args, **kwargs) -> httpx.Response:  # noqa: ANN002, ANN003
        self.calls += 1
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def test_sender_retries_503_honouring_retry_after_and_connection_errors_with_backoff() -> None:
    slept: list[float] = []
    http = FakeHttp([httpx.Response(503, headers={"Retry-After": "7"}), httpx.ConnectError("refused"),
                     httpx.ConnectError("refused"), httpx.Response(200, json={"accepted": 1})])
    sender = upload.Sender(http, "text/csv", retry_for=100, sleep=slept.append, clock=lambda: sum(slept))
    assert sender.send(b"x").status_code == 200
    assert slept == [7.0, 0.5, 1.0]


def test_sender_gives_up_after_the_retry_window_and_passes_client_errors_through() -> None:
    slept: list[float] = []
    http = FakeHttp([httpx.ConnectError("refused")] * 10)
    sender = upload.Sender(http, "text/csv", retry_for=2, sleep=slept.append, clock=lambda: sum(slept))
    with pytest.raises(upload.Unreachable):
        sender.send(b"x")
    assert sender.send.__self__ is sender and sum(slept) <= 2
    assert upload.Sender(FakeHttp([httpx.Response(401)]), "text/csv").send(b"x").status_code == 401


def test_usage_failures_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    monkeypatch.delenv("ZORGPOT_TOKEN", raising=False)
    path = tmp_path / "h.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerow(["registration_id"])
    assert main(["upload", str(path)]) == 2
    assert "no token" in capsys.readouterr().err
    assert main(["upload", str(tmp_path / "missing.csv"), "--token", "t"]) == 2
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["upload"])
    assert exit_.value.code == 2
    # Nothing listens on port 9: unreachable within the retry window -> 2, saying a re-run is safe.
    path.write_text("registration_id,school_id\nr1,s\n")
    assert main(["upload", str(path), "--token", "t", "--url", "http://127.0.0.1:9", "--retry-for", "0.5"]) == 2
    assert "run the same command again" in capsys.readouterr().err
