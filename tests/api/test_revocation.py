"""A revoked key is refused by every worker within about a second, however long the auth cache
trusts the keys it found: each worker watches the store's revocations in the background."""

from __future__ import annotations

import time
from contextlib import closing
from datetime import UTC, datetime

import httpx

from api.auth import KeyAuthenticator
from api.settings import Settings
from feature_store.credentials import Scope
from feature_store.factory import open_credentials
from tests.api.conftest import LiveServer, bearer, create_key

DECISION = {"customer_id": "cust-1", "touchpoint": "atm-0042", "channel": "atm"}


def test_a_revocation_reaches_two_workers_whose_cache_would_trust_the_key_for_an_hour(
    settings: Settings,
) -> None:
    trusting = settings.model_copy(
        update={"auth_cache_seconds": 300.0, "auth_revocation_poll_seconds": 0.2}
    )
    key = create_key(trusting, "kiosk", [Scope.DECISIONS])
    with LiveServer(trusting) as one, LiveServer(trusting) as two, httpx.Client() as http:
        for worker in (one, two):  # each worker now remembers the key
            answer = http.post(f"{worker.url}/v1/decisions", json=DECISION, headers=bearer(key))
            assert answer.status_code == 200
        with closing(open_credentials(trusting.store)) as credentials:
            assert credentials.revoke("kiosk", at=datetime.now(UTC))
        revoked_at = time.monotonic()

        refused_after = {}
        for worker in (one, two):
            while time.monotonic() - revoked_at < 30:  # generous: a loaded machine is slow
                answer = http.post(f"{worker.url}/v1/decisions", json=DECISION, headers=bearer(key))
                if answer.status_code == 401:
                    refused_after[worker.port] = time.monotonic() - revoked_at
                    break
                time.sleep(0.02)

    # Both refused it long before their cache (300 s) would have let it go.
    assert len(refused_after) == 2, refused_after


def test_forget_revoked_forgets_only_the_revoked_and_the_deleted(settings: Settings) -> None:
    kept = create_key(settings, "kept", [Scope.DECISIONS])
    gone = create_key(settings, "gone", [Scope.DECISIONS])
    with closing(open_credentials(settings.store)) as credentials:
        keys = KeyAuthenticator(credentials, ttl_seconds=300, stale_if_error_seconds=0)
        assert keys.look_up(kept) is not None
        assert keys.look_up(gone) is not None
        assert credentials.revoke("gone", at=datetime.now(UTC))

        assert keys.forget_revoked(credentials.list_keys()) == 1

        assert keys.remembered(kept) is not None
        assert keys.remembered(gone) is None
