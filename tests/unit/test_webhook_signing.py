"""Standard Webhooks signing of statement deliveries, checked with the standardwebhooks package itself."""
from __future__ import annotations

import base64
import datetime as dt

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.gateway.webhooks import gives_up, sign, standard_headers, standard_key

BODY = b'{"statement_id":"arr:2026-01-01:2026-03-31:GM0984","total_cents":12345,"note":"\xc3\xb6"}'


def test_a_plain_secret_signs_with_its_utf8_bytes_and_verifies_with_the_package() -> None:
    secret = "plain-secret-of-20-chars"
    now = dt.datetime.now(dt.timezone.utc)
    headers = standard_headers(secret, "arr:2026-01-01:2026-03-31:GM0984", BODY, now)
    assert headers["webhook-id"] == "arr:2026-01-01:2026-03-31:GM0984"
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret.encode()).verify(BODY, headers)["total_cents"] == 12345
    whsec = "whsec_" + base64.b64encode(secret.encode()).decode()  # the same key in the spec's form
    Webhook(whsec).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(b"another-secret-entirely").verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret.encode()).verify(BODY + b" ", headers)
    # The existing header is unchanged: hex HMAC of the body with the secret as given.
    assert sign(secret, BODY).startswith("sha256=")


def test_a_whsec_secret_is_its_decoded_key_and_stale_timestamps_are_refused() -> None:
    key = bytes(range(24))
    secret = "whsec_" + base64.b64encode(key).decode()
    assert standard_key(secret) == key
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)
    headers = standard_headers(secret, "sid", BODY, old)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY, headers)
    Webhook(secret).verify(BODY, standard_headers(secret, "sid", BODY, dt.datetime.now(dt.timezone.utc)))


def test_give_up_is_measured_from_the_first_failure() -> None:
    start = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    assert not gives_up(start, start + dt.timedelta(hours=71, minutes=59), 72)
    assert gives_up(start, start + dt.timedelta(hours=72), 72)
    assert gives_up(start, start + dt.timedelta(seconds=4), 0.001)
