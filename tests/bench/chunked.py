"""A chunked (SSE) upstream in lock-step with its client: each chunk is its own packet.

instructions.py counts what relaying one SSE chunk costs a proxy. nginx cannot send chunks
on demand, and an upstream that writes K chunks back to back lets them pile up in the
proxy's receive buffer (a proxy under callgrind is ~50x slower than the upstream), so it
would read several in one go and the count would miss the per-read work. Here the
upstream (a thread of the benchmark) sends chunk i+1 only after the client (the
benchmark's main thread) has received chunk i through the proxy: every chunk reaches the
proxy alone, as a token-by-token answer from an LLM API does.
"""

from __future__ import annotations

import re
import socket
import threading

STEP_TIMEOUT = 120.0  # seconds either side waits for the other before giving up
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
REQUEST_PATH = re.compile(rb"^GET /sse/(\d+) HTTP/1\.1\r\n")


def event(i: int) -> bytes:
    """The i-th SSE event of an answer (unique within it, so the client can spot it)."""
    return b"data: chunk %05d\n\n" % i


class LockStepUpstream:
    """Answers `GET /sse/K` with K chunks, each sent when `gate` is released once more,
    then the last chunk at one more release. Serves keep-alive connections, one thread each."""

    def __init__(self) -> None:
        self.gate = threading.Semaphore(0)
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.5)
        self.port = int(self._listener.getsockname()[1])
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def close(self) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a write is a packet
        conn.settimeout(0.5)
        buf = b""
        with conn:
            while not self._stop.is_set():
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    try:
                        data = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not data:
                        return
                    buf += data
                    continue
                head, buf = buf[: end + 4], buf[end + 4 :]
                match = REQUEST_PATH.match(head)
                if not match:
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    continue
                conn.sendall(HEAD)
                for i in range(int(match[1])):
                    if not self.gate.acquire(timeout=STEP_TIMEOUT):
                        return  # the client gave up: so do we (closing the connection)
                    conn.sendall(b"%x\r\n%s\r\n" % (len(event(i)), event(i)))
                if not self.gate.acquire(timeout=STEP_TIMEOUT):
                    return
                conn.sendall(b"0\r\n\r\n")


class LockStepClient:
    """One keep-alive connection to the proxy; `get(k)` fetches /sse/k through it, releasing
    the upstream's next chunk each time the previous one has arrived."""

    def __init__(self, port: int, upstream: LockStepUpstream) -> None:
        self.upstream = upstream
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=STEP_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        self.sock.close()

    def get(self, chunks: int) -> None:
        self.sock.sendall(b"GET /sse/%d HTTP/1.1\r\nhost: bench\r\nx-tenant: t1\r\n\r\n" % chunks)
        buf = bytearray()
        at = 0
        for i in range(chunks):
            self.upstream.gate.release()
            at = self._read_until(buf, event(i), at)
        self.upstream.gate.release()  # the last chunk
        self._read_until(buf, b"\r\n0\r\n\r\n", at)
        head = bytes(buf[: buf.find(b"\r\n\r\n")]).lower()
        if not head.startswith(b"http/1.1 200 ") or b"transfer-encoding: chunked" not in head:
            raise RuntimeError(f"unexpected SSE answer head: {head[:300]!r}")
        if b"connection: close" in head:
            raise RuntimeError("the proxy closes the SSE connection: not keep-alive")

    def _read_until(self, buf: bytearray, needle: bytes, start: int) -> int:
        """Receive into `buf` until `needle` is in it after `start`; the index after it."""
        while (found := buf.find(needle, start)) < 0:
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError(
                    f"the proxy closed the SSE connection; got {bytes(buf)[-300:]!r}"
                )
            buf += data
        return found + len(needle)
