"""A small test client for the gateway and a region builder with unique ids per test."""
from __future__ import annotations

import datetime as dt
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from ops.stack import Stack


class Api:
    def __init__(self, stack: Stack, token: str | None = None):
        self.stack = stack
        self.token = token or stack.coordinator_token
        self.http = httpx.Client(base_url=f"{stack.gateway_url}/api/v1", timeout=60,
                                 headers={"Authorization": f"Bearer {self.token}"})

    def __enter__(self) -> "Api":
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def as_token(self, token: str) -> "Api":
        return Api(self.stack, token)

    def put(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.put(path, json=body)

    def ok_put(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = self.put(path, body)
        assert reply.status_code == 200, (path, reply.status_code, reply.text)
        return reply.json()

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def token_for(self, role: str, subject: str | None) -> str:
        reply = self.post("/tokens", json={"role": role, "subject": subject, "label": "test"})
        assert reply.status_code == 201, reply.text
        return reply.json()["token"]

    def post_retrying(self, path: str, attempts: int = 120, **kwargs: Any) -> httpx.Response:
        """POST, retrying 503 (broker unavailable) and connection errors the way a school's client would."""
        for _ in range(attempts):
            try:
                reply = self.http.post(path, **kwargs)
            except httpx.TransportError:
                time.sleep(0.5)
                continue
            if reply.status_code != 503:
                return reply
            time.sleep(float(reply.headers.get("Retry-After", "1")) / 5)
        raise AssertionError(f"{path} kept failing")

    def wait_status(self, registration_id: str, wanted: set[str], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                reply = self.get(f"/hours/{registration_id}")
                last = reply.json() if reply.status_code == 200 else (reply.status_code, reply.text)
                if reply.status_code == 200 and last["status"] in wanted:
                    return last
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"{registration_id} never reached {wanted}; last seen {last}")

    def hours_stats(self, attempts: int = 60) -> dict[str, Any]:
        # The hours service may be restarting (SIGKILL, broker epoch change): retry until it answers.
        for _ in range(attempts - 1):
            try:
                return httpx.get(f"{self.stack.service_url('hours')}/internal/stats", timeout=10).json()
            except httpx.TransportError:
                time.sleep(0.5)
        return httpx.get(f"{self.stack.service_url('hours')}/internal/stats", timeout=10).json()


@dataclass
class Region:
    """One school with two groups and an arrangement, unique per test so tests do not interfere."""

    api: Api
    school_id: str = field(default_factory=lambda: f"school-{secrets.token_hex(4)}")
    host: str = "GM0984"
    start: dt.date = dt.date(2025, 8, 1)
    end: dt.date = dt.date(2026, 7, 31)
    rate_cents: int = 6500
    pupils: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def arrangement_id(self) -> str:
        return f"arr-{self.school_id}"

    def build(self, pupils_per_group: int = 5) -> "Region":
        api = self.api
        for code, name in (("GM0984", "Venray"), ("GM1507", "Horst aan de Maas"), ("GM0907", "Gennep")):
            api.ok_put(f"/municipalities/{code}", {"name": name, "youth_population": 8000})
        api.ok_put(f"/schools/{self.school_id}", {"name": "Test school", "municipality": self.host})
        for group in ("g1", "g2"):
            api.ok_put(f"/schools/{self.school_id}/groups/{group}", {"name": group})
            for i in range(pupils_per_group):
                ref = f"{group}-p{i}"
                home = "GM0984" if i % 5 else "GM1507"
                self.add_pupil(ref, group, [{"municipality": home, "from": self.start.isoformat()}])
        api.ok_put(f"/arrangements/{self.arrangement_id}", {
            "school_id": self.school_id, "group_ids": ["g1", "g2"], "start": self.start.isoformat(),
            "end": self.end.isoformat(), "rates": [{"from": self.start.isoformat(), "hourly_rate_cents": self.rate_cents}],
            "cap_cents": 16_380_000, "individual_rate_cents": 9664, "settlement": {"key": "residence_hours"}})
        return self

    def add_pupil(self, ref: str, group: str, residence: list[dict[str, Any]],
                  enrolled_from: dt.date | None = None, enrolled_until: dt.date | None = None) -> None:
        body = {"group_id": group, "enrolled_from": (enrolled_from or self.start).isoformat(), "residence": residence}
        if enrolled_until:
            body["enrolled_until"] = enrolled_until.isoformat()
        self.api.ok_put(f"/schools/{self.school_id}/pupils/{ref}", body)
        self.pupils[ref] = body

    def registration(self, rid: str, day: dt.date | None = None, minutes: int = 60, group: str = "g1",
                     **extra: Any) -> dict[str, Any]:
        return {"registration_id": rid, "school_id": self.school_id, "group_id": group,
                "date": (day or dt.date(2026, 3, 2)).isoformat(), "minutes": minutes,
                "care_worker": "cw-1", "task_category": 2, **extra}
