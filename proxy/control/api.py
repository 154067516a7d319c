"""The control port: Prometheus metrics, probes, state, and the operator's actions.

`/metrics`, `/livez` and `/readyz` are open, so that kubelets and Prometheus need no
secret. Everything else needs the bearer token when `control.token_file` is set, and is
compared in constant time. Actions are POST only (a GET on one is 405), and each is
written to the audit log. No CORS headers: a browser page must not drive this port.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web
from pydantic import ValidationError

from ..config.faults import FaultSpec
from ..config.units import parse_duration
from ..delivery.queues import Queues
from ..observe.logs import LEVELS as LOG_LEVELS
from ..observe.logs import JsonLog
from ..observe.metrics import Metrics
from ..reload import ReloadResult
from ..state.breaker import CircuitBreaker
from ..state.degradation import LEVELS
from ..state.faults import Faults
from .audit import AuditLog
from .page import page
from .queues import add_queue_routes
from .token import TokenFile

MAX_TTL = 24 * 3600.0


class Controlled(Protocol):
    """What the control API can see and do in a running Fender."""

    def status(self) -> dict[str, Any]: ...

    def breaker(self, upstream: str) -> CircuitBreaker | None: ...

    def request_drain(self) -> None: ...

    async def reload_from_file(self) -> ReloadResult: ...

    @property
    def faults(self) -> Faults: ...

    def set_degradation(self, level: str | None, ttl: float) -> None: ...

    @property
    def queues(self) -> Queues: ...


# `/` is the status page: static, it asks for the token and reads /status with it.
OPEN_PATHS = frozenset({"/metrics", "/livez", "/readyz", "/"})
_PROM_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def control_app(
    *,
    metrics: Metrics,
    ready: Callable[[], bool],
    config_view: Callable[[], dict[str, Any]],
    token: TokenFile | None,
    fender: Controlled,
    audit: AuditLog,
    log: JsonLog,
) -> web.Application:
    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if token is not None and request.path not in OPEN_PATHS:
            given = request.headers.get("authorization", "")
            expected = f"Bearer {token.current()}"
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
        except Exception as exc:  # a bug of ours: a JSON 500, never aiohttp's bare one
            log.event("internal_error", "error", path=request.path, error=type(exc).__name__)
            return json_response({"error": "internal_error"}, 500)

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

    async def get_status(request: web.Request) -> web.Response:
        if "pretty" in request.query:  # for a person with curl
            body = orjson.dumps(fender.status(), option=orjson.OPT_INDENT_2) + b"\n"
            return web.Response(body=body, content_type="application/json")
        return json_response(fender.status())

    async def get_page(request: web.Request) -> web.Response:
        return page(token is not None)

    async def post_breaker(request: web.Request) -> web.Response:
        upstream, action = request.match_info["upstream"], request.match_info["action"]
        breaker = fender.breaker(upstream)
        if breaker is None:
            return json_response({"error": "no_breaker", "upstream": upstream}, 404)
        ttl = None
        if action in ("open", "close"):
            ttl = await _ttl(request)
            if ttl is None:
                return json_response({"error": "bad_ttl", "detail": TTL_HELP}, 400)
            breaker.force("open" if action == "open" else "closed", ttl)
        else:
            breaker.reset()
        audit.record(f"breaker.{action}", upstream=upstream, ttl_s=ttl, remote=request.remote or "")
        return json_response({"upstream": upstream, "breaker": breaker.status()})

    async def post_reload(request: web.Request) -> web.Response:
        result = await fender.reload_from_file()
        view = result.view()
        audit.record("reload", result=view["result"], remote=request.remote or "")
        return json_response(view, result.status)

    async def post_fault(request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            ttl = parse_duration(body.pop("ttl", None)) if isinstance(body, dict) else None
            spec = FaultSpec.model_validate(body)
        except (orjson.JSONDecodeError, ValueError) as exc:
            return json_response({"error": "bad_fault", "detail": _first_line(exc)}, 400)
        if ttl is None or not 0 < ttl <= MAX_TTL:
            return json_response({"error": "bad_ttl", "detail": TTL_HELP}, 400)
        fault = fender.faults.add(spec, ttl)
        audit.record("fault.add", id=fault.id, fault=body, ttl_s=ttl, remote=request.remote or "")
        return json_response({"id": fault.id}, 201)

    async def delete_fault(request: web.Request) -> web.Response:
        fault_id = request.match_info["id"]
        if not fender.faults.remove(fault_id):
            return json_response({"error": "no_fault", "id": fault_id}, 404)
        audit.record("fault.remove", id=fault_id, remote=request.remote or "")
        return json_response({"removed": fault_id})

    async def post_degradation(request: web.Request) -> web.Response:
        level = await _field(request, "level")
        if level == "auto":
            fender.set_degradation(None, 0)
        elif level in LEVELS:
            ttl = await _ttl(request)
            if ttl is None:
                return json_response({"error": "bad_ttl", "detail": TTL_HELP}, 400)
            fender.set_degradation(level, ttl)
        else:
            detail = f"level is one of {', '.join(LEVELS)}, or auto"
            return json_response({"error": "bad_level", "detail": detail}, 400)
        audit.record("degradation", level=level, remote=request.remote or "")
        return json_response(fender.status()["degradation"])

    async def get_log_level(request: web.Request) -> web.Response:
        return json_response({"level": log.level})

    async def post_log_level(request: web.Request) -> web.Response:
        level = await _field(request, "level")
        if level not in LOG_LEVELS:
            detail = f"level is one of {', '.join(LOG_LEVELS)}"
            return json_response({"error": "bad_level", "detail": detail}, 400)
        was = log.level
        log.set_level(level)
        audit.record("log_level", was=was, level=level, remote=request.remote or "")
        return json_response({"level": level})

    async def post_drain(request: web.Request) -> web.Response:
        audit.record("drain", remote=request.remote or "")
        fender.request_drain()
        return json_response({"status": "draining"}, 202)

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", get_page, allow_head=False)
    app.router.add_get("/status", get_status, allow_head=False)
    app.router.add_post(r"/breakers/{upstream}/{action:open|close|reset}", post_breaker)
    app.router.add_post("/drain", post_drain)
    app.router.add_post("/reload", post_reload)
    app.router.add_post("/degradation", post_degradation)
    app.router.add_get("/log-level", get_log_level, allow_head=False)
    app.router.add_post("/log-level", post_log_level)
    app.router.add_post("/faults", post_fault)
    app.router.add_delete("/faults/{id}", delete_fault)
    app.router.add_get("/metrics", get_metrics, allow_head=False)
    app.router.add_get("/livez", livez, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/config", get_config, allow_head=False)
    add_queue_routes(app, fender.queues, audit)
    return app


TTL_HELP = 'give a ttl, like {"ttl": "10m"} (at most 24h): the override then expires by itself'


def _first_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'fault'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc).strip().splitlines()[0][:300]


async def _field(request: web.Request, name: str) -> Any:
    """One field of a JSON object body; None when absent or not JSON. (aiohttp keeps the
    body once read, so several fields can be taken.)"""
    if not request.body_exists:
        return None
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    return body.get(name) if isinstance(body, dict) else None


async def _ttl(request: web.Request) -> float | None:
    """The `ttl` of an override, from the query or the JSON body; None if absent or bad."""
    text = request.query.get("ttl") or await _field(request, "ttl")
    try:
        ttl = parse_duration(text)
    except ValueError:
        return None
    return ttl if 0 < ttl <= MAX_TTL else None
