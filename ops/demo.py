"""Demo region: a Venray-like school and a second school, seeded through the gateway's public API."""
from __future__ import annotations

import datetime as dt

import httpx

VENRAY, HORST, BOXMEER, GENNEP = "GM0984", "GM1507", "GM1702", "GM0907"


def seed(base_url: str, token: str) -> dict[str, str]:
    """Idempotent: PUTs full state, so running it twice changes nothing but registry versions."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"{base_url}/api/v1", headers=headers, timeout=30) as api:
        def put(path: str, body: dict) -> None:
            reply = api.put(path, json=body)
            if reply.status_code != 200:
                raise RuntimeError(f"seeding {path} failed: {reply.status_code} {reply.text}")

        for code, name, youth in ((VENRAY, "Venray", 8120), (HORST, "Horst aan de Maas", 8950),
                                  (BOXMEER, "Land van Cuijk", 18400), (GENNEP, "Gennep", 3100)):
            put(f"/municipalities/{code}", {"name": name, "youth_population": youth})
        put("/schools/focus-spectrum", {"name": "SBO Focus / SO Spectrum", "municipality": VENRAY})
        for group in ("group-1", "group-2"):
            put(f"/schools/focus-spectrum/groups/{group}", {"name": f"Onderwijszorggroep {group[-1]}"})
        start = dt.date(2025, 8, 18)
        for i in range(24):
            home = VENRAY if i % 10 != 9 else (HORST if i % 20 == 9 else GENNEP)
            put(f"/schools/focus-spectrum/pupils/fs-{i:03d}", {
                "group_id": "group-1" if i < 12 else "group-2", "enrolled_from": start.isoformat(),
                "residence": [{"municipality": home, "from": start.isoformat()}]})
        put("/arrangements/venray-2025", {
            "school_id": "focus-spectrum", "group_ids": ["group-1", "group-2"],
            "start": start.isoformat(), "end": "2026-07-08",
            "rates": [{"from": start.isoformat(), "hourly_rate_cents": 6500}],
            "cap_cents": 16_380_000, "individual_rate_cents": 9664,
            "funding": [{"source": "jeugdwet", "funder": "Gemeente Venray (Innovatiebudget Jeugd)",
                         "amount_cents": 16_380_000}],
            "installments": [{"due": "2025-09-01", "amount_cents": 4_420_000},
                             {"due": "2026-02-01", "amount_cents": 11_960_000}],
            "settlement": {"key": "residence_hours"},
        })
        put("/schools/de-maasbrug", {"name": "SO De Maasbrug", "municipality": BOXMEER})
        put("/schools/de-maasbrug/groups/zml-a", {"name": "ZML A"})
        for i in range(10):
            home = BOXMEER if i < 7 else (GENNEP if i < 9 else VENRAY)
            put(f"/schools/de-maasbrug/pupils/mb-{i:03d}", {
                "group_id": "zml-a", "enrolled_from": "2025-08-01",
                "residence": [{"municipality": home, "from": "2025-08-01"}]})
        put("/arrangements/maasbrug-2025", {
            "school_id": "de-maasbrug", "group_ids": ["zml-a"], "start": "2025-08-01", "end": "2026-07-31",
            "rates": [{"from": "2025-08-01", "hourly_rate_cents": 6200}, {"from": "2026-01-01", "hourly_rate_cents": 6650}],
            "cap_cents": 9_000_000, "individual_rate_cents": 9664,
            "settlement": {"key": "residence_pupils"},
        })
    return {"school": "focus-spectrum", "group": "group-1", "arrangement": "venray-2025"}
