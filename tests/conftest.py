from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import uvloop

from tests.support.proxy import RunningProxy, start_proxy
from tests.support.redis_server import RedisServer
from tests.support.upstream import ScriptedUpstream


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
    """Every test runs on uvloop, the loop Fender itself runs on."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
async def upstream(aiohttp_server: Any) -> ScriptedUpstream:
    scripted = ScriptedUpstream()
    server = await aiohttp_server(scripted.app)
    scripted.url = f"http://127.0.0.1:{server.port}"
    return scripted


@pytest.fixture
async def proxy_factory() -> AsyncIterator[Callable[[dict[str, Any]], Awaitable[RunningProxy]]]:
    running: list[RunningProxy] = []

    async def make(data: dict[str, Any]) -> RunningProxy:
        proxy = await start_proxy(data)
        running.append(proxy)
        return proxy

    yield make
    for proxy in running:
        await proxy.fender.close()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An app's HTTP client: plain, no decompression, no cookies kept."""
    async with aiohttp.ClientSession(
        auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        yield session


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session (installed from Debian's packages if missing)."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, running and emptied for this test."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()  # a test before this one stopped it
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=2) as s:
        s.sendall(b"FLUSHALL\r\n")
        assert s.recv(16).startswith(b"+OK")
    return redis_server.url
