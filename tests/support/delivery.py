"""Policy files with a delivery route, and the app's side of one: post, then wait for the
queue to settle."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.support.proxy import RunningProxy, config, wait_for


def delivery_config(
    upstream_url: str,
    store: str,
    *,
    queue: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    **top: Any,
) -> dict[str, Any]:
    """One route `send` (any path) that delivers through queue `outbox` to upstream `up`."""
    route: dict[str, Any] = {"name": "send", "upstream": "up", "delivery": {"queue": "outbox"}}
    if policy is not None:
        route["policy"] = "p"
        top["policies"] = {"p": policy}
    section = {"store": store, "schedule": ["50ms"], "max_attempts": 50, **(queue or {})}
    return config(
        {"up": {"endpoints": [upstream_url], **(upstream or {})}},
        routes=[route],
        queues={"outbox": section},
        **top,
    )


async def post(
    client: aiohttp.ClientSession, url: str, body: bytes = b"{}", **headers: str
) -> tuple[int, dict[str, Any], Any]:
    """(status, JSON body, headers) of the app's POST."""
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    async with client.post(url + "/v1/send", data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


def stats(proxy: RunningProxy, queue: str = "outbox") -> dict[str, Any]:
    view: dict[str, Any] = proxy.fender.queues.status()[queue]
    return view


async def settled(proxy: RunningProxy, seconds: float = 20.0) -> dict[str, Any]:
    """Wait until nothing waits in the queue or is in flight; its numbers then."""

    async def empty() -> bool:
        view = stats(proxy)
        return bool(view["depth"] == 0 and view["in_flight"] == 0)

    await wait_for(empty, seconds)
    return stats(proxy)


async def control(
    client: aiohttp.ClientSession, proxy_or_url: RunningProxy | str, method: str, path: str
) -> tuple[int, Any]:
    base = proxy_or_url if isinstance(proxy_or_url, str) else proxy_or_url.control_url
    async with client.request(method, base + path) as resp:
        return resp.status, await resp.json(content_type=None)
