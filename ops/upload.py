"""`zorgpot upload FILE`: a school's administration system sends a CSV or NDJSON file of care registrations.

The file is read here into records that remember where they stood in the file (the line a school sees in
its editor or spreadsheet), sent in batches to `POST /api/v1/hours/batch` in the file's own format, and the
gateway's per-item answers are mapped back to those lines. Safe to run again after an interruption: the
gateway answers a registration it already has (same id, same content) as a duplicate, so a re-run sends the
whole file again and every row is counted once - new rows as accepted, rows the first run got through as
"already received". A 503 (broker unavailable) or a lost connection is retried with backoff, honouring
`Retry-After`; a batch resent after a connection broke mid-request is answered as duplicates, never twice.

Exit status: 0 every row accepted or already received; 1 some rows were rejected (listed with row, id,
field and message); 2 usage error, refused token, or the gateway stayed unreachable.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

DEFAULT_URL = "http://127.0.0.1:8000"
API_PREFIX = "/api/v1"
CONTENT_TYPES = {"csv": "text/csv", "ndjson": "application/x-ndjson"}


class UsageError(Exception):
    """Exit 2: the file, the options or the token are wrong; nothing to retry."""


class Unreachable(Exception):
    """Exit 2: the gateway did not answer (or kept answering 503) for longer than the retry window."""


@dataclass(frozen=True)
class Row:
    """One item of the file: `line` is where it starts in the file (1-based; a CSV's header is line 1)."""
    line: int
    registration_id: str | None
    payload: Any  # CSV: the list of cells; NDJSON: the line's text


@dataclass
class Rejection:
    line: int
    registration_id: str | None
    field: str
    message: str


@dataclass
class Summary:
    rows: int = 0
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def rejected_rows(self) -> int:
        return len({r.line for r in self.rejections})

    def exit_status(self) -> int:
        return 1 if self.rejections else 0

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "accepted": self.accepted, "already_received": self.duplicates,
                "rejected": self.rejected_rows,
                "rejections": [r.__dict__ for r in sorted(self.rejections, key=lambda r: r.line)]}


# -- reading the file -------------------------------------------------------------------------------------

def detect_format(path: Path, given: str | None) -> str:
    if given:
        return given
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".ndjson", ".jsonl", ".jsonlines"):
        return "ndjson"
    raise UsageError(f"cannot tell the format of {path.name!r} from its extension: use --format csv or ndjson")


def csv_delimiter(header_line: str) -> str:
    """The gateway's rule (services/gateway/parsing.py): ';' when the header has more of them than ','."""
    return ";" if header_line.count(";") > header_line.count(",") else ","


def read_csv(text: str) -> tuple[list[str], str, list[Row]]:
    """Header, delimiter and the data rows with their starting line. Blank lines are skipped, as the gateway
    skips them, so the n-th row sent is the n-th item the gateway answers for."""
    text = text.removeprefix("\ufeff")
    delimiter = csv_delimiter(text.split("\n", 1)[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    names = [h.strip() for h in header or []]
    if "registration_id" not in names:
        raise UsageError("the CSV needs a header row with field names (registration_id, school_id, group_id, date, "
                         "minutes, care_worker, task_category, funding, pupils)")
    id_at = names.index("registration_id")
    rows: list[Row] = []
    previous_end = reader.line_num
    for cells in reader:
        start, previous_end = previous_end + 1, reader.line_num
        if not cells:
            continue
        rid = cells[id_at].strip() if id_at < len(cells) and cells[id_at].strip() else None
        rows.append(Row(start, rid, cells))
    return header or [], delimiter, rows


def read_ndjson(text: str) -> list[Row]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        rid = None
        try:
            item = json.loads(line)
            if isinstance(item, dict) and isinstance(item.get("registration_id"), str):
                rid = item["registration_id"]
        except ValueError:
            pass  # the gateway reports the line as unreadable; it still gets its place in the batch
        rows.append(Row(number, rid, line))
    return rows


def encode_batch(fmt: str, rows: list[Row], header: list[str], delimiter: str) -> bytes:
    if fmt == "ndjson":
        return ("\n".join(r.payload for r in rows) + "\n").encode()
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(r.payload for r in rows)
    return out.getvalue().encode()


def batches(rows: list[Row], size: int) -> Iterable[list[Row]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def apply_reply(summary: Summary, rows: list[Row], reply: dict[str, Any]) -> None:
    """Count one batch's answer; `index` in each rejection is the row's place in this batch."""
    summary.sent += len(rows)
    summary.accepted += int(reply.get("accepted", 0))
    summary.duplicates += int(reply.get("duplicates", 0))
    for item in reply.get("rejected", []):
        row = rows[item["index"]]
        errors = item.get("errors") or [{"field": "item", "message": "rejected"}]
        for err in errors:
            summary.rejections.append(Rejection(row.line, item.get("registration_id") or row.registration_id,
                                                str(err.get("field", "")), str(err.get("message", ""))))


def render_summary(summary: Summary, name: str, out: TextIO) -> None:
    out.write(f"{name}: {summary.rows} rows\n")
    out.write(f"  accepted:          {summary.accepted}\n")
    out.write(f"  already received:  {summary.duplicates}  (sent before; counted once)\n")
    out.write(f"  rejected:          {summary.rejected_rows}\n")
    if summary.rejections:
        out.write("\nRejected rows (fix them and run the command again; accepted rows are not sent twice):\n")
        width = max(len("registration_id"), *(len(r.registration_id or "-") for r in summary.rejections))
        out.write(f"  {'row':>6}  {'registration_id':<{width}}  field: message\n")
        for r in sorted(summary.rejections, key=lambda r: r.line):
            out.write(f"  {r.line:>6}  {r.registration_id or '-':<{width}}  {r.field}: {r.message}\n")


# -- sending ---------------------------------------------------------------------------------------------

def api_base(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith(API_PREFIX) else url + API_PREFIX


@dataclass
class Sender:
    """POSTs one batch, retrying what is worth retrying, until `retry_for` seconds passed without success."""
    http: Any  # httpx.Client
    content_type: str
    retry_for: float = 300.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    notice: Callable[[str], None] = lambda message: None

    def send(self, body: bytes) -> Any:
        import httpx

        deadline = self.clock() + self.retry_for
        delay = 0.5
        while True:
            wait: float | None = None
            try:
                reply = self.http.post("/hours/batch", content=body, headers={"Content-Type": self.content_type})
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if reply.status_code in (200, 413) or reply.status_code < 500 and reply.status_code != 429:
                    return reply
                problem = f"HTTP {reply.status_code}"
                wait = retry_after(reply.headers.get("Retry-After"))
            if wait is None:
                wait, delay = delay, min(delay * 2, 30.0)
            pause = min(max(wait, 0.1), 60.0)
            if self.clock() + pause > deadline:
                raise Unreachable(f"the gateway did not take the batch for {self.retry_for:.0f} s ({problem})")
            self.notice(f"{problem}; retrying in {pause:.1f} s")
            self.sleep(pause)


def retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: use our own backoff


def upload(path: Path, fmt: str, url: str, token: str, batch_size: int, retry_for: float,
           progress: Callable[[int, int, Summary], None], notice: Callable[[str], None]) -> Summary:
    import httpx

    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8: {exc}") from exc
    header: list[str] = []
    delimiter = ","
    if fmt == "csv":
        header, delimiter, rows = read_csv(text)
    else:
        rows = read_ndjson(text)
    summary = Summary(rows=len(rows))
    with httpx.Client(base_url=api_base(url), timeout=120,
                      headers={"Authorization": f"Bearer {token}", "User-Agent": "zorgpot-upload/1"}) as http:
        sender = Sender(http, CONTENT_TYPES[fmt], retry_for=retry_for, notice=notice)
        pending = list(batches(rows, batch_size))
        while pending:
            chunk = pending.pop(0)
            reply = sender.send(encode_batch(fmt, chunk, header, delimiter))
            if reply.status_code == 413 and len(chunk) > 1:  # body or item limit: halve and go on
                half = len(chunk) // 2
                pending[:0] = [chunk[:half], chunk[half:]]
                notice(f"batch of {len(chunk)} rows too large for the gateway; sending {half} at a time")
                continue
            if reply.status_code != 200:
                raise UsageError(f"the gateway refused the batch of rows {chunk[0].line}-{chunk[-1].line}: "
                                 f"HTTP {reply.status_code}: {_detail(reply)}")
            apply_reply(summary, chunk, reply.json())
            progress(len(chunk), chunk[-1].line, summary)
    return summary


def _detail(reply: Any) -> str:
    try:
        detail = reply.json().get("detail", reply.text)
    except ValueError:
        detail = reply.text
    return detail if isinstance(detail, str) else json.dumps(detail)[:500]


# -- command line ----------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="CSV (header row of field names) or NDJSON, one registration a row")
    parser.add_argument("--format", choices=sorted(CONTENT_TYPES), help="default: from the extension (.csv, .ndjson/.jsonl)")
    parser.add_argument("--url", default=os.environ.get("ZORGPOT_URL", DEFAULT_URL),
                        help="the gateway (env ZORGPOT_URL; default %(default)s)")
    parser.add_argument("--token", default=os.environ.get("ZORGPOT_TOKEN", ""),
                        help="the school's bearer token (env ZORGPOT_TOKEN)")
    parser.add_argument("--batch-size", type=int, default=500, help="rows per request (default %(default)s)")
    parser.add_argument("--retry-for", type=float, default=300.0,
                        help="seconds to keep retrying an unreachable gateway or a 503 (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    out, err = out or sys.stdout, err or sys.stderr
    if not args.token:
        err.write("zorgpot upload: no token: pass --token or set ZORGPOT_TOKEN\n")
        return 2
    if args.batch_size < 1:
        err.write("zorgpot upload: --batch-size must be at least 1\n")
        return 2
    console = Console(file=err)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=console, disable=not console.is_terminal, transient=False)

    def notice(message: str) -> None:
        console.print(f"zorgpot upload: {message}", highlight=False) if console.is_terminal else err.write(
            f"zorgpot upload: {message}\n")
        err.flush()

    try:
        fmt = detect_format(args.file, args.format)
        task = bar.add_task(f"uploading {args.file.name}", total=None)

        def progress(count: int, line: int, summary: Summary) -> None:
            bar.update(task, total=summary.rows, advance=count)
            if not console.is_terminal:  # a log, not a bar: one line per batch (cron, CI, a pipe)
                err.write(f"sent {summary.sent}/{summary.rows} rows (to line {line}): {summary.accepted} accepted, "
                          f"{summary.duplicates} already received, {summary.rejected_rows} rejected\n")
                err.flush()

        with bar:
            summary = upload(args.file, fmt, args.url, args.token, args.batch_size, args.retry_for, progress, notice)
    except UsageError as exc:
        err.write(f"zorgpot upload: {exc}\n")
        return 2
    except Unreachable as exc:
        err.write(f"zorgpot upload: {exc}. Rows sent so far are kept; run the same command again to send the "
                  "rest (rows already received are counted once).\n")
        return 2
    if args.json:
        out.write(json.dumps(summary.as_dict(), indent=2) + "\n")
    else:
        render_summary(summary, str(args.file), out)
    return summary.exit_status()
