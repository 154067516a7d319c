"""A scripted upstream: a real aiohttp server on 127.0.0.1 that answers as a test says.

Push steps (status codes, delays before headers, resets before or after headers, slow
or gated streams, any headers such as Retry-After); each request takes the next step, or
the default when the script is empty. Every request is recorded as the upstream saw it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy


@dataclass
class Step:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0  # before the response headers
    # Streaming: chunks sent one by one, `interval` apart; a gate, if given, must be set
    # before each chunk after the first (so a test can prove a chunk arrived early).
    chunks: list[bytes] | None = None
    interval: float = 0.0
    gates: list[asyncio.Event] | None = None
    framed: bool = False  # chunks sent with a Content-Length (not chunked encoding)
    # "before_headers": read the request, then drop the connection.
    # "after_headers": send the headers and part of the body, then drop it.
    reset: str | None = None
    hang: bool = False  # never answer
    gate: asyncio.Event | None = None  # answer only once it is set


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: CIMultiDictProxy[str]
    body: bytes
    raw_headers: tuple[tuple[bytes, bytes], ...]
    at: float  # loop time of arrival


class ScriptedUpstream:
    def __init__(self) -> None:
        self.script: deque[Step] = deque()
        self.default = Step()
        # When set, picks the step for the n-th request (1-based) once the script is empty.
        self.choose: Callable[[int], Step] | None = None
        self.seen: list[Seen] = []
        self.arrived = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.app = web.Application(client_max_size=1 << 31)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self.url = ""

    def push(self, *steps: Step) -> None:
        self.script.extend(steps)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = b""
        if request.headers.get("x-test-discard-body"):
            async for _ in request.content.iter_any():
                pass
        else:
            body = await request.read()
        now = asyncio.get_running_loop().time()
        self.seen.append(
            Seen(request.method, request.path_qs, request.headers, body, request.raw_headers, now)
        )
        self.arrived.set()
        if self.script:
            step = self.script.popleft()
        elif self.choose is not None:
            step = self.choose(len(self.seen))
        else:
            step = self.default
        if step.hang:
            await asyncio.Event().wait()
        if step.gate is not None:
            await step.gate.wait()
        if step.delay:
            await asyncio.sleep(step.delay)
        if step.reset == "before_headers":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        headers = CIMultiDict(step.headers)
        if step.chunks is None and step.reset is None:
            return web.Response(status=step.status, body=step.body, headers=headers)
        response = web.StreamResponse(status=step.status, headers=headers)
        if step.framed and step.chunks is not None:
            response.content_length = sum(map(len, step.chunks))
        if step.reset == "after_headers":
            response.content_length = len(step.body) * 2
        await response.prepare(request)
        if step.reset == "after_headers":
            await response.write(step.body)
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.abort()
            return response
        for i, chunk in enumerate(step.chunks or []):
            if i and step.gates:
                await step.gates[i - 1].wait()
            elif i and step.interval:
                await asyncio.sleep(step.interval)
            await response.write(chunk)
        await response.write_eof()
        return response
