"""`make up` seeds the demo region through the gateway (ops/demo.py): it must keep working as the contract
grows (funders, calendars, plans), and seeding twice changes nothing but registry versions."""
from __future__ import annotations

import pytest

from ops.demo import WLZ_OFFICE, region, seed
from ops.stack import Stack
from tests.integration.client import Api

pytestmark = pytest.mark.stack


def test_the_demo_region_seeds_twice_on_a_fresh_stack(own_stack: Stack) -> None:
    with Api(own_stack) as api:
        first = seed(own_stack.gateway_url, api.token)
        again = seed(own_stack.gateway_url, api.token)
        assert first == again
        pots = {p["arrangement_id"] for p in api.get("/pots").json()["pots"]}
        assert {school.arrangement_id for school in region()} <= pots
        assert api.get(f"/funders/{WLZ_OFFICE[0]}").json()["kind"] == "wlz_office"
