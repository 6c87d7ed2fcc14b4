"""Bounded input, before anything is parsed: a request without a valid key is refused before
its body is read, and a body over its route's limit is a 413, whether it declares its length
or streams it."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx

from api.settings import Settings
from tests.api.conftest import LiveServer

DECISION = {"customer_id": "cust-1", "touchpoint": "atm-0042", "channel": "atm"}


def raw_exchange(server: LiveServer, head: str) -> tuple[int, dict[str, object]]:
    """Send only a request's head (it announces a body that never comes) and read the answer:
    an answer proves the server did not wait for the body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode())
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(body)


def test_without_a_key_a_huge_body_is_refused_before_it_is_read(server: LiveServer) -> None:
    status, body = raw_exchange(
        server,
        "POST /v1/events HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\n"
        "content-length: 108000000\r\n\r\n",
    )

    assert status == 401
    assert body["error"] == "unauthorized"


def test_a_declared_length_over_the_limit_is_a_413_before_the_body_is_read(
    server: LiveServer, api_key: str
) -> None:
    status, body = raw_exchange(
        server,
        "POST /v1/events HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {api_key}\r\ncontent-length: {5 * 1024 * 1024}\r\n\r\n",
    )

    assert status == 413
    assert body["error"] == "body_too_large"
    assert body["errors"] == [{"field": "body", "reason": f"at most {4 * 1024 * 1024} bytes"}]


def test_a_streamed_body_is_refused_once_it_passes_the_limit(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"events": ['
        for _ in range(6 * 1024):
            yield b"[" + b"0," * 511 + b"0],"
        yield b"0]}"

    answer = client.post(
        "/v1/events", content=chunks(), headers={"content-type": "application/json"}
    )

    assert answer.status_code == 413
    assert answer.json()["error"] == "body_too_large"


def test_a_decision_body_has_its_own_smaller_limit(client: httpx.Client) -> None:
    big = {**DECISION, "context": {"note": "x" * 20_000}}
    assert client.post("/v1/decisions", json=big).status_code == 413
    assert client.post("/v1/decisions", json=DECISION).status_code == 200


def test_limits_are_settings(settings: Settings, api_key: str) -> None:
    tight = settings.model_copy(update={"body_limit_decisions_bytes": 1024})
    with LiveServer(tight) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        answer = http.post(
            "/v1/decisions",
            json={**DECISION, "context": {"note": "x" * 2000}},
            headers={"Authorization": f"Bearer {api_key}"},
        )
    assert answer.status_code == 413
    assert "1,024 bytes" in answer.json()["message"]
