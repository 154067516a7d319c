"""An upstream connection fed bytes by the test: what the Reply holds, what is reused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.http.connection import UpstreamConnection
from proxy.http.headers import Headers
from proxy.http.message import Call, Reply, UpstreamFailed
from proxy.http.stream import BodyStream
from tests.support.streams import Collect


class FakePool:
    name = "up"

    def __init__(self) -> None:
        self.returned: list[UpstreamConnection] = []

    def put(self, conn: UpstreamConnection) -> None:
        self.returned.append(conn)

    def lost(self, conn: UpstreamConnection) -> None:
        pass


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    abort = close

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connection() -> tuple[UpstreamConnection, FakePool, FakeTransport]:
    pool, transport = FakePool(), FakeTransport()
    conn = UpstreamConnection(pool, "e", asyncio.get_running_loop(), (8192, 100))  # type: ignore[arg-type]
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, pool, transport


def call(method: str = "GET") -> Call:
    return Call(method, "/", Headers(), None, "r", "id", 0.0)


async def answer(conn: UpstreamConnection, *parts: bytes, method: str = "GET") -> Any:
    pending = conn.send(b"GET / HTTP/1.1\r\n\r\n", call(method), False, float("inf"))
    for part in parts:
        conn.data_received(part)
    assert pending.done()
    return pending.result()


async def test_a_whole_answer_is_handed_over_with_its_body_and_the_connection_reused():
    conn, pool, _ = connection()
    reply: Reply = await answer(
        conn,
        b"HTTP/1.1 201 Made\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n"
        b"Keep-Alive: timeout=5\r\nX-Fender-Outcome: forged\r\nContent-Length: 5\r\n"
        b"Set-Cookie: a=1\r\n\r\nhello",
    )
    assert (reply.status, reply.reason, reply.body, reply.content_length) == (
        201,
        b"Made",
        b"hello",
        5,
    )
    assert list(reply.headers.items()) == [("Content-Type", "text/plain"), ("Set-Cookie", "a=1")]
    assert pool.returned == [conn]


async def test_headers_the_connection_header_names_are_dropped_and_close_is_honoured():
    conn, pool, transport = connection()
    reply = await answer(
        conn, b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nX-Kept: 2\r\n\r\nbody"
    )
    assert "x-hop" not in reply.headers and reply.headers["x-kept"] == "2"
    assert isinstance(reply.body, BodyStream)  # framed by the connection's end: it streams
    assert pool.returned == [] and not transport.closed


async def test_interim_answers_are_skipped():
    conn, _, _ = connection()
    reply = await answer(
        conn,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    assert (reply.status, reply.body) == (200, b"ok") and "link" not in reply.headers


async def test_an_answer_to_head_keeps_its_length_and_has_no_body():
    conn, _, transport = connection()
    reply = await answer(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", method="HEAD")
    assert (reply.content_length, reply.body) == (1234, b"")
    assert transport.closed  # llhttp was stopped mid-message: not reused


async def test_a_body_split_over_reads_streams_to_its_sink():
    conn, pool, _ = connection()
    reply = await answer(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    sink = Collect()
    reply.body.pipe(sink)
    conn.data_received(b"2\r\nde\r\n0\r\n\r\n")
    assert (sink.body, sink.ended) == (b"abcde", True) and pool.returned == [conn]


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", id="too-many"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX: " + b"y" * 9000 + b"\r\n\r\n", id="too-long"),
    ],
)
async def test_an_answer_that_is_not_http_within_the_limits_is_bad_response(head):
    conn, _, transport = connection()
    pending = conn.send(b"GET / HTTP/1.1\r\n\r\n", call(), False, float("inf"))
    conn.data_received(head)
    with pytest.raises(UpstreamFailed) as failed:
        pending.result()
    assert failed.value.reason == "bad_response" and transport.closed


async def test_a_whole_answer_followed_by_stray_bytes_is_kept_and_the_connection_closed():
    conn, pool, transport = connection()
    reply = await answer(conn, b"HTTP/1.1 204 No Content\r\n\r\nxx")
    assert reply.status == 204 and transport.closed and pool.returned == []


async def test_a_transfer_coding_without_chunked_is_framed_by_the_connections_end():
    conn, _, _ = connection()
    reply = await answer(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz")
    sink = Collect()
    reply.body.pipe(sink)
    conn.connection_lost(None)
    assert (sink.body, sink.ended) == (b"zz", True)


async def test_the_upgrade_headers_of_an_answer_that_is_not_a_101_are_dropped():
    conn, _, _ = connection()
    pending = conn.send(b"GET / HTTP/1.1\r\n\r\n", call(), False, float("inf"))
    conn._upgrade = True  # as send() sets it for an Upgrade request
    conn.data_received(
        b"HTTP/1.1 426 Upgrade Required\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    reply = pending.result()
    assert reply.status == 426 and "upgrade" not in reply.headers
