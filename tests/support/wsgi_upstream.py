"""The real WSGI upstream the client tests run under gunicorn: httpbin, plus `/big/N`.

httpbin caps `/bytes`, `/stream-bytes` and `/range` at 100 KiB, so the one route it lacks
for a download of several MiB is added here, in front of it: `/big/N` answers N bytes
(a repeating pattern, so a client can check every byte) with a Content-Length, written
in 64 KiB blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

BLOCK = 64 * 1024


def pattern(size: int) -> bytes:
    """The body of `/big/{size}`."""
    unit = bytes(range(256))
    return (unit * (size // 256 + 1))[:size]


def _big(size: int) -> Iterator[bytes]:
    block = pattern(BLOCK)
    left = size
    while left > 0:
        yield block[: min(left, BLOCK)]
        left -= BLOCK


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path.startswith("/big/") and path[5:].isdigit():
        size = int(path[5:])
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
        )
        return _big(size)
    from httpbin import app as httpbin  # imported here: the test process needs only pattern()

    return httpbin(environ, start_response)  # type: ignore[no-any-return]
