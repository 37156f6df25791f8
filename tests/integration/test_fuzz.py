"""A short run of `make fuzz` (ops/fuzz.py) in the normal suite: a few hundred schemathesis requests from the
gateway's OpenAPI as coordinator, school and municipality; no 5xx, every 4xx with a `detail` that says what
was wrong. Its own stack: the coordinator's requests rewrite reference data that other tests rely on."""
from __future__ import annotations

import pytest

from ops.fuzz import ROLES, fuzz, seed_region

pytestmark = pytest.mark.stack


def test_short_fuzz_finds_no_server_errors_and_no_silent_4xx(own_stack) -> None:  # noqa: ANN001
    seeded = seed_region(own_stack.gateway_url, own_stack.coordinator_token)
    report = fuzz(own_stack.gateway_url, seeded["tokens"], seeded["known"], examples=2, seed=20261122)
    print(report.summary())
    assert report.requests >= 250, report.summary()
    for role in ROLES:  # each role really got through to the API, not only to 401s
        assert any(status in (200, 201, 202) for (r, status), n in report.statuses.items() if r == role), role
        assert not any(status == 401 for (r, status), n in report.statuses.items() if r == role), role
    assert not report.failures, report.summary()
