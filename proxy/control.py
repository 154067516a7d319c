"""The control port: Prometheus metrics, probes, and the (token-guarded) state endpoints.

`/metrics`, `/livez` and `/readyz` are open, so that kubelets and Prometheus need no
secret. Everything else needs the bearer token when `control.token_file` is set, and is
compared in constant time. No CORS headers: a browser page must not drive this port.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from .metrics import Metrics

OPEN_PATHS = frozenset({"/metrics", "/livez", "/readyz"})
_PROM_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def control_app(
    *,
    metrics: Metrics,
    ready: Callable[[], bool],
    config_view: Callable[[], dict[str, Any]],
    token: str | None,
) -> web.Application:
    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if token is not None and request.path not in OPEN_PATHS:
            given = request.headers.get("authorization", "")
            expected = f"Bearer {token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                response = json_response({"error": "unauthorized"}, status=401)
                response.headers["www-authenticate"] = 'Bearer realm="fender"'
                return response
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return json_response({"error": exc.reason.lower().replace(" ", "_")}, exc.status)
            raise

    async def get_metrics(request: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.headers["content-type"] = _PROM_TEXT
        return response

    async def livez(request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if ready():
            return json_response({"status": "ready"})
        return json_response({"status": "not_ready"}, status=503)

    async def get_config(request: web.Request) -> web.Response:
        return json_response(config_view())

    app = web.Application(middlewares=[guard])
    app.router.add_get("/metrics", get_metrics, allow_head=False)
    app.router.add_get("/livez", livez, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/config", get_config, allow_head=False)
    return app
