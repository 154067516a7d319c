"""The floor for a Python HTTP/1.1 proxy: raw uvloop protocols + llhttp (httptools).

usage: python tests/bench/floorproxy.py PORT UPSTREAM_PORT

A reference for instructions.py, not a product and not safe: no hop-by-hop hygiene beyond
the minimum, no timeouts, no streaming (an answer is relayed when it is complete), one
upstream connection per client connection, upstream answers must carry Content-Length.
It shows how few instructions a Python proxy on this stack needs per keep-alive request
when nothing but parsing and copying bytes happens.

Credit: a copy of the idea (and nearly the code) of floorproxy.py in the team's shared
tools (shared/tools/instr/, beside instr.py), kept here so that the benchmark does not
depend on anything outside the repository.
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.buf: list[bytes] = []
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.ready.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf.append(data)
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        out = b"".join(self.buf)
        self.buf.clear()
        self.client.send(out)


class Client(asyncio.Protocol):
    def __init__(self, up_port: int) -> None:
        self.up_port = up_port
        self.parser = httptools.HttpRequestParser(self)
        self.up = Upstream(self)
        self.transport: asyncio.Transport | None = None
        self.headers: list[bytes] = []
        self.url = b""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        loop = asyncio.get_running_loop()
        self.connecting = loop.create_task(
            loop.create_connection(lambda: self.up, "127.0.0.1", self.up_port)
        )

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in (b"connection", b"keep-alive", b"host"):
            self.headers += (name, b": ", value, b"\r\n")

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        head = b"".join(
            [method, b" ", self.url, b" HTTP/1.1\r\nhost: up\r\n", *self.headers, b"\r\n"]
        )
        self.headers = []
        up = self.up
        if up.transport is not None:
            up.transport.write(head)
        else:
            up.ready.add_done_callback(lambda _: up.transport.write(head) if up.transport else None)


async def main() -> None:
    port, up_port = int(sys.argv[1]), int(sys.argv[2])
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(up_port), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main())
