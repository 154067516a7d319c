"""Reading HTTP/1.1 answers off a raw socket exactly as RFC 9112 section 6.3 frames them,
so that a test sees the bytes Fender wrote (a body where none may be, a chunk too many)
rather than what a forgiving client library makes of them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

NO_BODY = frozenset({204, 304})


@dataclass
class Answer:
    status: int
    head: bytes  # status line and header lines, as sent
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # names lower case
    body: bytes = b""
    raw_body: bytes = b""  # the body as framed on the wire (chunk sizes included)

    def get(self, name: str) -> bytes | None:
        key = name.lower().encode()
        return next((v for k, v in self.headers if k == key), None)

    def getall(self, name: str) -> list[bytes]:
        key = name.lower().encode()
        return [v for k, v in self.headers if k == key]


async def read_answer(
    reader: asyncio.StreamReader, method: str = "GET", *, timeout: float = 5.0
) -> Answer:
    """One answer (interim 1xx answers skipped), its body read by the framing rules."""
    return await asyncio.wait_for(_read(reader, method), timeout)


async def _read(reader: asyncio.StreamReader, method: str) -> Answer:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = []
        for text in lines[1:]:
            name, _, value = text.partition(b":")
            headers.append((name.strip().lower(), value.strip(b" \t")))
        answer = Answer(status, head, headers)
        if 100 <= status < 200 and status != 101:
            continue
        break
    if method == "HEAD" or status in NO_BODY or status < 200:
        return answer
    encoding = answer.get("transfer-encoding")
    if encoding is not None and encoding.lower().endswith(b"chunked"):
        raw, body = [], []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            raw.append(size_line)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailer section, then the empty line
                    trailer = await reader.readuntil(b"\r\n")
                    raw.append(trailer)
                    if trailer == b"\r\n":
                        break
                break
            data = await reader.readexactly(size + 2)
            raw.append(data)
            body.append(data[:-2])
        answer.raw_body, answer.body = b"".join(raw), b"".join(body)
    elif answer.get("content-length") is not None:
        answer.body = answer.raw_body = await reader.readexactly(int(answer.get("content-length")))  # type: ignore[arg-type]
    else:
        answer.body = answer.raw_body = await reader.read()  # framed by the connection's end
    return answer


async def at_eof(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    """True when the peer closed without sending anything more."""
    try:
        rest = await asyncio.wait_for(reader.read(1), timeout)
    except ConnectionError:
        return True
    return rest == b""
