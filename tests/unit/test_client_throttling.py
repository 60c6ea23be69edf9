"""The asynchronous client and 429 Too Many Requests, against a tiny local HTTP server that sends it:
every verb waits Retry-After out (capped), a bounded number of times."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from aiohttp import web

from stargate_operator import kinds
from stargate_operator.client import (
    ApiError,
    ApiResource,
    Connection,
    KubeClient,
)
from stargate_operator.client.asyncclient import MAX_RETRY_AFTER_SECONDS, retry_after_seconds

RACKS = ApiResource.of(kinds.RACK)


# -- 429 Too Many Requests -----------------------------------------------------------------------

class Throttling:
    """A tiny HTTP server that answers 429 (with the given Retry-After values) before it answers."""

    def __init__(self, retry_after: list[str | None]) -> None:
        self.retry_after = retry_after
        self.seen: list[tuple[str, str]] = []
        self._left: dict[str, int] = {}

    def reset(self) -> None:
        self.seen.clear()
        self._left.clear()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key = f"{request.method} {request.path}"
        self.seen.append((request.method, request.path_qs))
        left = self._left.setdefault(key, len(self.retry_after))
        if left > 0:
            self._left[key] = left - 1
            value = self.retry_after[len(self.retry_after) - left]
            headers = {"Retry-After": value} if value is not None else {}
            return web.json_response({"kind": "Status", "code": 429, "message": "slow down"}, status=429,
                                     headers=headers)
        if request.query.get("watch"):
            resp = web.StreamResponse()
            await resp.prepare(request)
            rack = {"kind": "Rack", "metadata": {"name": "r", "resourceVersion": "7"}}
            line = {"type": "ADDED", "object": rack}
            await resp.write(json.dumps(line).encode() + b"\n")
            await resp.write_eof()
            return resp
        if request.method == "GET" and not request.path.endswith("/r"):
            return web.json_response({"kind": "RackList", "apiVersion": kinds.API_VERSION,
                                      "metadata": {"resourceVersion": "5"}, "items": []})
        return web.json_response({"kind": "Rack", "metadata": {"name": "r", "resourceVersion": "6"}})


@pytest.fixture
async def throttling() -> AsyncIterator[tuple[Throttling, str]]:
    server = Throttling(["1", "3600"])  # one wait of a second, then one far too long
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield server, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _client(url: str, waits: list[float], retries: int = 5) -> KubeClient:
    async def record(seconds: float) -> None:
        waits.append(seconds)

    return KubeClient(Connection(url, False), max_throttle_retries=retries, sleep=record)


async def test_every_verb_waits_out_429_with_retry_after_capped(throttling: tuple[Throttling, str]) -> None:
    server, url = throttling
    calls: list[tuple[str, Callable[[KubeClient], Awaitable[Any]]]] = [
        ("get", lambda c: c.get(RACKS, "ns", "r")),
        ("list", lambda c: c.list(RACKS, "ns")),
        ("create", lambda c: c.create(RACKS, "ns", {"metadata": {"name": "r"}})),
        ("apply", lambda c: c.apply(RACKS, "ns", "r", {"metadata": {"name": "r"}}, field_manager="m",
                                 force=True)),
        ("patch", lambda c: c.patch(RACKS, "ns", "r", {"spec": {}})),
        ("patch_status", lambda c: c.patch_status(RACKS, "ns", "r", {"x": 1})),
        ("delete", lambda c: c.delete(RACKS, "ns", "r")),
        ("create_event", lambda c: c.create_event(namespace="ns", involved={}, type_="Normal", reason="R",
                                                  message="m")),
    ]
    for verb, call in calls:
        server.reset()
        waits: list[float] = []
        client = _client(url, waits)
        try:
            out = await call(client)
        finally:
            await client.aclose()
        assert out is not None, verb
        assert waits == [1.0, MAX_RETRY_AFTER_SECONDS], verb
        assert client.throttled == 2 and len(server.seen) == 3, verb  # two refused, one answered
    # The watch too: throttled at connect, then its events.
    server.reset()
    waits = []
    client = _client(url, waits)
    try:
        events = [ev async for ev in client.watch(RACKS, "ns", "5")]
    finally:
        await client.aclose()
    assert waits == [1.0, MAX_RETRY_AFTER_SECONDS] and [e["type"] for e in events] == ["ADDED"]
    assert len(server.seen) == 3


async def test_429_retries_are_bounded(throttling: tuple[Throttling, str]) -> None:
    server, url = throttling
    server.retry_after = [None] * 10  # refuses ten times; no Retry-After: a second each
    waits: list[float] = []
    client = _client(url, waits, retries=3)
    try:
        with pytest.raises(ApiError) as refused:
            await client.get(RACKS, "ns", "r")
    finally:
        await client.aclose()
    assert refused.value.status == 429 and "slow down" in str(refused.value)
    assert waits == [1.0, 1.0, 1.0] and len(server.seen) == 4


def test_retry_after_values() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds("120") == MAX_RETRY_AFTER_SECONDS
    assert retry_after_seconds(None) == 1.0 and retry_after_seconds("soon") == 1.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert 15.0 <= retry_after_seconds(later) <= 20.0  # an HTTP date
