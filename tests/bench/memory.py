"""Resident memory: Fender and nginx at idle after start, and per idle keep-alive connection.

usage: python tests/bench/memory.py [--connections 1000] [--json PATH]
(run.py measures the same on its own servers and adds it to its report). About 20 s.

RSS is VmRSS from /proc/PID/status, summed over the process tree (nginx: master and
worker). "Idle after start": SETTLE seconds after the server first answers, before any
proxied request. "Per connection": WARM connections make one request each and stay open,
so that what the first requests allocate once (the upstream connection in the pool, code
paths, caches) is in the "before" figure; then --connections more connections each make
one request and stay open, idle, as an app's keep-alive connections do between calls; the
RSS growth over them, after SETTLE seconds, divided by their number is the figure. Every
connection must still be open at the end, or the figure would be wrong and the run fails.
Fender runs from a copy of proxy/ taken at start, with $FENDER_PY (default: this
interpreter), not under valgrind; the upstream is an nginx answering `ok`.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests.bench` for a script

from tests.bench.servers import (
    BenchError,
    Service,
    ensure_tool,
    fender_policy,
    free_port,
    log,
    nginx_proxy_conf,
    process_tree,
    raise_fd_limit,
    snapshot_fender,
    start_fender,
    start_nginx,
)

CONNECTIONS = 1000
WARM = 20
SETTLE = 1.0  # seconds of quiet before RSS is read


def rss_kib(pids: list[int]) -> int:
    """VmRSS of the processes, in KiB."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])  # "VmRSS:   12345 kB"
    return total


def idle_rss(pid: int) -> int:
    """The RSS of `pid`'s tree after SETTLE quiet seconds, in KiB."""
    time.sleep(SETTLE)
    return rss_kib(process_tree(pid))


def open_idle(port: int, path: str, count: int) -> list[http.client.HTTPConnection]:
    """`count` connections, each after one request whose answer was read: kept alive."""
    conns = []
    for _ in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conns.append(conn)
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        if response.status != 200 or response.will_close:
            raise BenchError(f"{path} on {port}: {response.status}, or not kept alive")
    return conns


def still_open(conn: http.client.HTTPConnection) -> bool:
    """Whether the server has not closed this connection (nothing to read, no EOF)."""
    sock = conn.sock
    if sock is None:
        return False
    sock.setblocking(False)  # a socket with a timeout would wait for data
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def per_connection(pid: int, port: int, path: str, count: int = CONNECTIONS) -> dict[str, Any]:
    """RSS growth per idle keep-alive connection to `port` (see the module's docstring)."""
    raise_fd_limit(count + WARM + 256)
    warm: list[http.client.HTTPConnection] = []
    idle: list[http.client.HTTPConnection] = []
    try:
        warm = open_idle(port, path, WARM)
        before = idle_rss(pid)
        started = time.monotonic()
        idle = open_idle(port, path, count)
        log(f"{count} idle connections opened in {time.monotonic() - started:.1f} s")
        after = idle_rss(pid)
        closed = sum(not still_open(conn) for conn in warm + idle)
        if closed:
            raise BenchError(f"{closed} of {WARM + count} idle connections to {port} were closed")
    finally:
        for conn in warm + idle:
            conn.close()
    per = (after - before) / count
    return {"connections": count, "rss_before_kib": before, "rss_after_kib": after} | {
        "per_connection_kib": per
    }


def measure_server(
    service: Service, port: int, path: str, count: int = CONNECTIONS
) -> dict[str, Any]:
    """A server's figures: RSS at idle (call it before any request), then per connection."""
    return {"idle_kib": idle_rss(service.pid)} | per_connection(service.pid, port, path, count)


def table(figures: dict[str, dict[str, Any]]) -> list[str]:
    """The figures as a Markdown table."""
    lines = [
        "| server | RSS at idle after start | RSS per idle keep-alive connection | connections |",
        "|---|--:|--:|--:|",
    ]
    for name, fig in figures.items():
        lines.append(
            f"| {name} | {fig['idle_kib'] / 1024:.1f} MiB | {fig['per_connection_kib']:.2f} KiB "
            f"| {fig['connections']:,} ({fig['rss_before_kib'] / 1024:.1f} -> "
            f"{fig['rss_after_kib'] / 1024:.1f} MiB) |"
        )
    return lines


def measure(src: Path, tmp: Path, count: int = CONNECTIONS) -> dict[str, dict[str, Any]]:
    """Fender (from the snapshot in `src`) and nginx, each started here: their figures."""
    updated = [False]
    nginx = ensure_tool("nginx", updated)
    if not nginx:
        raise BenchError("needs nginx (the upstream), which could not be installed")
    tmp.mkdir(parents=True, exist_ok=True)
    up_port, fender_port, nginx_port, control = (free_port() for _ in range(4))
    upstream = f"server {{ listen 127.0.0.1:{up_port}; location / {{ return 200 'ok'; }} }}"
    services = [start_nginx("upstream nginx", nginx, tmp / "upstream", upstream, None)]
    figures: dict[str, dict[str, Any]] = {}
    try:
        services[0].wait_ready(f"http://127.0.0.1:{up_port}/x")
        policy = fender_policy(fender_port, control, up_port, free_port())
        fender = start_fender(src, policy, tmp / "fender.stderr")
        services.append(fender)
        fender.wait_ready(f"http://127.0.0.1:{control}/readyz")
        log("fender: RSS at idle, then per idle keep-alive connection")
        figures["fender"] = measure_server(fender, fender_port, "/p/x", count)
        conf = nginx_proxy_conf(nginx_port, up_port)
        proxy = start_nginx("nginx proxy", nginx, tmp / "nginx-proxy", conf, None)
        services.append(proxy)
        wait_listening(proxy, nginx_port)  # a readiness check by request would come before idle
        log("nginx: RSS at idle, then per idle keep-alive connection")
        figures["nginx"] = measure_server(proxy, nginx_port, "/x", count)
    finally:
        for service in reversed(services):
            service.stop()
    return figures


def wait_listening(service: Service, port: int, timeout: float = 10.0) -> None:
    """Wait until `port` accepts a TCP connection (no request sent)."""
    deadline = time.monotonic() + timeout
    while True:
        service.check_alive()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{service.name} does not listen on {port} after {timeout:.0f} s")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fender-memory-") as tmp_name:
        tmp = Path(tmp_name)
        source = snapshot_fender(tmp)
        figures = measure(tmp / "src", tmp / "memory", args.connections)
    print(f"Fender {source}")
    print("\n".join(table(figures)))
    if args.json:
        args.json.write_text(json.dumps({"fender": source, "memory": figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop our servers on the way out
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"FAILED: {exc}")
        sys.exit(1)
