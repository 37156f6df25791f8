"""Payments and budget years through the real stack (design.md section 10): the coordinator records payments
actually made, the pot's paid and true-up figures follow them (not the installments' due dates), and the pot
reports spent, minutes, planned and paid per budget year and per school year, adding up to the pot's totals."""
from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.integration.budget_helpers import wait_pot
from tests.integration.client import Api, Region

pytestmark = pytest.mark.stack


def payment(payment_id: str, day: str, cents: int, **extra: Any) -> dict[str, Any]:
    return {"payment_id": payment_id, "date": day, "amount_cents": cents, **extra}


def test_payments_drive_paid_true_up_and_the_budget_year_figures(api: Api) -> None:
    region = Region(api).build(pupils_per_group=2)
    arr = region.arrangement_id
    # The Venray plan (case g): EUR 44,200.00 due 2025-09-01, EUR 119,600.00 due 2026-02-01.
    body = api.get(f"/pots/{arr}").json()
    api.ok_put(f"/arrangements/{arr}", {
        "school_id": region.school_id, "group_ids": ["g1", "g2"], "start": region.start.isoformat(),
        "end": region.end.isoformat(), "rates": [{"from": region.start.isoformat(), "hourly_rate_cents": 6500}],
        "cap_cents": 16_380_000, "individual_rate_cents": 9664, "settlement": {"key": "residence_hours"},
        "installments": [{"due": "2025-09-01", "amount_cents": 4_420_000},
                         {"due": "2026-02-01", "amount_cents": 11_960_000}]})
    assert body["paid_cents"] == 0

    # Care: 90 minutes on 2025-12-31 and 30 minutes on 2026-01-02 at EUR 65.00/h:
    # 2025: 90 x 65 / 60 = 97.50; 2026: 30 x 65 / 60 = 32.50; spent 130.00.
    # Individual rate EUR 96.64/h: 2025 90 x 96.64 / 60 = 144.96; 2026 30 x 96.64 / 60 = 48.32.
    items = [region.registration("pay-a", day=dt.date(2025, 12, 31), minutes=90),
             region.registration("pay-b", day=dt.date(2026, 1, 2), minutes=30)]
    assert api.post("/hours/batch", json=items).json()["accepted"] == 2

    first = api.post(f"/arrangements/{arr}/payments", json=payment("ven-2025-1", "2025-09-01", 4_420_000,
                                                                    reference="voorschot 2025"))
    assert first.status_code == 201, first.text
    assert first.json()["amount_cents"] == 4_420_000 and first.json()["arrangement_id"] == arr
    again = api.post(f"/arrangements/{arr}/payments", json=payment("ven-2025-1", "2025-09-01", 4_420_000,
                                                                    reference="voorschot 2025"))
    assert again.status_code == 200 and again.json() == first.json()

    pot = wait_pot(api, arr, lambda p: p["registrations"] == 2 and p["paid_cents"] == 4_420_000)
    assert pot["spent_cents"] == 13_000
    assert [i["paid"] for i in pot["installments"]] == [True, False]  # covered by what was paid, in order
    assert pot["true_up_cents"] == 13_000 - 4_420_000
    assert pot["by_budget_year"] == [
        {"year": 2025, "planned_cents": 4_420_000, "spent_cents": 9_750, "minutes": 90, "paid_cents": 4_420_000,
         "individual_equivalent_cents": 14_496, "savings_cents": 14_496 - 9_750},
        {"year": 2026, "planned_cents": 11_960_000, "spent_cents": 3_250, "minutes": 30, "paid_cents": 0,
         "individual_equivalent_cents": 4_832, "savings_cents": 4_832 - 3_250},
    ]
    assert pot["by_school_year"] == [{"school_year": "2025/2026", "spent_cents": 13_000, "minutes": 120}]

    listed = api.get(f"/arrangements/{arr}/payments").json()
    assert listed["total_cents"] == 4_420_000 and [p["payment_id"] for p in listed["payments"]] == ["ven-2025-1"]
    school = api.as_token(api.token_for("school", region.school_id))
    assert school.get(f"/arrangements/{arr}/payments").json()["total_cents"] == 4_420_000


def test_bad_payments_are_refused_naming_the_field_and_change_no_figure(api: Api) -> None:
    region = Region(api).build(pupils_per_group=1)
    arr = region.arrangement_id
    assert api.post(f"/arrangements/{arr}/payments", json=payment("bad-0", "2025-10-01", 1_000)).status_code == 201

    def refused(body: dict[str, Any], status: int, field: str | None = None) -> None:
        reply = api.post(f"/arrangements/{arr}/payments", json=body)
        assert reply.status_code == status, reply.text
        if field is not None:
            assert field in {e["field"] for e in reply.json()["detail"]}, reply.text

    refused(payment("bad-1", "2025-10-01", -500), 422, "amount_cents")
    refused(payment("bad-2", "2025-10-01", 0), 422, "amount_cents")
    refused(payment("bad-3", "2024-12-31", 1_000), 422, "date")  # the arrangement's budget years are 2025, 2026
    refused(payment("bad-4", "2027-01-01", 1_000), 422, "date")
    refused(payment("bad-5", (dt.date.today() + dt.timedelta(days=1)).isoformat(), 1_000), 422, "date")
    refused(payment("bad-0", "2025-10-01", 2_000), 409)  # the same id with other content
    refused({"payment_id": "bad-6", "date": "2025-10-01"}, 422, "amount_cents")
    assert api.post("/arrangements/no-such-arr/payments", json=payment("bad-7", "2025-10-01", 1)).status_code == 404
    school = api.as_token(api.token_for("school", region.school_id))
    assert school.post(f"/arrangements/{arr}/payments", json=payment("bad-8", "2025-10-01", 1)).status_code == 403
    other = Region(api).build(pupils_per_group=1)
    stranger = api.as_token(api.token_for("school", other.school_id))
    assert stranger.get(f"/arrangements/{arr}/payments").status_code == 404

    pot = wait_pot(api, arr, lambda p: p["paid_cents"] == 1_000)
    assert pot["paid_cents"] == 1_000 and api.get(f"/arrangements/{arr}/payments").json()["total_cents"] == 1_000
