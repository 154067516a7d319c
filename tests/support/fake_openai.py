"""An OpenAI-compatible upstream (aiohttp): `/v1/chat/completions` in the JSON and SSE
formats of the real API, with scripted rate limits, for tests with the official SDK.

`plan` is a list of what the next calls get, one entry per call (the last one repeats):
`"ok"`, `"stream"`, or `("429", headers)`. Streams hold each chunk after the first until
the test says `release()`, so a test can show that a chunk reached the SDK while the
upstream still had the rest to send.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

MODEL = "gpt-4o-mini"
WORDS = ["Hel", "lo", ", ", "wor", "ld"]


def _chunk(index: int, content: str | None, finish: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if index == 0:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-fender",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "system_fingerprint": "fp_fender",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


class FakeOpenAI:
    def __init__(self) -> None:
        self.plan: list[Any] = ["ok"]
        self.calls: list[dict[str, Any]] = []  # the JSON of each call, with its headers
        self.gate: asyncio.Queue[None] = asyncio.Queue()
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.completions)
        self.url = ""

    def release(self) -> None:
        """Let the stream send its next chunk."""
        self.gate.put_nowait(None)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        self.calls.append({"json": payload, "headers": dict(request.headers)})
        step = self.plan[min(len(self.calls) - 1, len(self.plan) - 1)]
        if isinstance(step, tuple) and step[0] == "429":
            body = {
                "error": {
                    "message": "Rate limit reached for requests",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            }
            return web.json_response(body, status=429, headers=step[1])
        if step == "stream" or payload.get("stream"):
            response = web.StreamResponse(
                headers={
                    "content-type": "text/event-stream; charset=utf-8",
                    "cache-control": "no-cache",
                }
            )
            await response.prepare(request)
            for i, word in enumerate(WORDS):
                if i:
                    await asyncio.wait_for(self.gate.get(), 10)
                await response.write(b"data: " + json.dumps(_chunk(i, word)).encode() + b"\n\n")
            await response.write(
                b"data: " + json.dumps(_chunk(len(WORDS), None, "stop")).encode() + b"\n\n"
            )
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        return web.json_response(
            {
                "id": "chatcmpl-fender",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "".join(WORDS),
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
            }
        )
