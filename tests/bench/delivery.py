"""Durable delivery: how fast Fender accepts into SQLite, and what a delivery costs.

Run `python tests/bench/delivery.py` (about 2 minutes; `--quick` for a ~30 s smoke run,
`--json PATH` to also write the results). Needs `taskset` and `nginx` (apt-installed when
missing, as tests/bench/run.py does).

What runs, on 127.0.0.1: Fender (`fender run`, from a copy of proxy/ taken at start, JSON
access log on) alone on CPU 0, with a plain route `/p/` and a delivery route `/send`
whose queue is an SQLite file in a temporary directory (WAL, synchronous=FULL: every
202 waited for an fsync'd commit); the upstream (nginx answering 200 to anything) and the
load generators share CPU 1.

1. Accepting. The queue is paused, so that only accepts run. An open-loop load generator
   (this script, on CPU 1) sends POSTs of a 100-byte JSON body at a fixed rate over 64
   keep-alive connections and times each answer from the moment it issued the request,
   whether a connection was free or not (a stall counts for every request it held up: no
   coordinated omission). Its own lateness (issued after the request was due: timer
   granularity) is reported apart, and shows the rate was offered. Each rate runs
   --duration seconds, --repeats times; the table shows the median run by p99, and the
   CPU that processes outside the benchmark used meanwhile (a shared machine's other work
   lands on Fender's core too, and its tail shows it: over NOISY_PCT, rerun). Then wrk
   (closed loop, 8 connections) shows the most accepts a second one core gives.
2. Delivering. The proxied baseline: wrk POSTs the same body through `/p/` (8 connections)
   and Fender's CPU time (utime+stime from /proc) is divided by the requests. Then the
   queue, holding every message accepted above, is resumed (concurrency 8) and Fender's
   CPU time until 80% of them are out (or --duration) is divided by the deliveries counted by
   fender_deliveries_total in that time. The ratio of the two is the overhead of a
   delivery (taking it from the file, the pipeline, the upstream exchange, settling it in
   a group commit) over a proxied request. The machine may be shared: figures move, the
   ratio within one run moves less.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run import (  # the sibling benchmark's helpers
    LOAD_CPU,
    NOISY_PCT,
    BenchError,
    Service,
    busy_seconds,
    cpu_seconds,
    ensure_tool,
    free_port,
    log,
    snapshot_fender,
    start_nginx,
)

BODY = b'{"to": "+4915112345678", "text": "Your code is 482913. It expires in ten minutes."}'
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def control(port: int, method: str, path: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with HTTP.open(request, timeout=5) as response:
        data: dict = json.loads(response.read())
        return data


def metric(port: int, name: str, **labels: str) -> float:
    with HTTP.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.M)
    return float(match[1]) if match else 0.0


@dataclass
class Accepts:
    rate: int
    achieved: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_us: float  # Fender's CPU per accept
    errors: int
    late_p99_ms: float  # the generator's: issued this long after the request was due
    others_pct: float  # CPU that processes outside the bench used meanwhile, % of one core


class Conn(asyncio.Protocol):
    def __init__(self, load: OpenLoop) -> None:
        self.load, self.buffer, self.due = load, b"", 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.load.free.append(self)

    def send(self, due: float) -> None:
        self.due = due
        assert self.transport is not None
        self.transport.write(self.load.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end]
            length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            size = end + 4 + (int(length[1]) if length else 0)
            if len(self.buffer) < size:
                return
            self.buffer = self.buffer[size:]
            self.load.answered(self, int(head[9:12]))


class OpenLoop:
    """Requests sent at a fixed rate whatever the answers do; latency from the due time."""

    def __init__(self, port: int, path: str) -> None:
        self.port = port
        self.request = (
            f"POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
            f"content-length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY
        self.free: list[Conn] = []
        self.late: list[float] = []  # issued requests waiting for a free connection
        self.latencies: list[float] = []
        self.lateness: list[float] = []
        self.errors = 0
        self.total = 0
        self.all_answered = asyncio.Event()

    def answered(self, conn: Conn, status: int) -> None:
        now = time.monotonic()
        self.latencies.append(now - conn.due)
        self.errors += status != 202
        if len(self.latencies) == self.total:
            self.all_answered.set()
        if self.late:
            conn.send(self.late.pop(0))
        else:
            self.free.append(conn)

    async def run(self, rate: int, seconds: float, connections: int = 64) -> float:
        loop = asyncio.get_running_loop()
        for _ in range(connections):
            await loop.create_connection(lambda: Conn(self), "127.0.0.1", self.port)
        total, sent = int(rate * seconds), 0
        self.total = total
        start = time.monotonic() + 0.05
        while sent < total:
            now = time.monotonic()
            while sent < total and start + sent / rate <= now:
                self.lateness.append(now - (start + sent / rate))
                if self.free:
                    self.free.pop().send(now)
                else:
                    self.late.append(now)
                sent += 1
            await asyncio.sleep(0.0005)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_answered.wait(), 30)
        return total / (time.monotonic() - start)


def ours() -> float:
    """CPU seconds of this process (the load generator)."""
    usage = os.times()
    return usage.user + usage.system


def open_loop(
    port: int, rate: int, seconds: float, fender: list[int], others: list[int]
) -> Accepts:
    load = OpenLoop(port, "/send")
    cpu, busy, own, rest = cpu_seconds(fender), busy_seconds(), ours(), cpu_seconds(others)
    started = time.monotonic()
    asyncio.run(load.run(rate, seconds))
    spent = time.monotonic() - started
    cpu = cpu_seconds(fender) - cpu
    outside = busy_seconds() - busy - cpu - (ours() - own) - (cpu_seconds(others) - rest)
    lat = sorted(load.latencies)
    if len(lat) < rate * seconds * 0.99:
        raise BenchError(f"only {len(lat)} of {int(rate * seconds)} accepts answered")

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000

    achieved = len(lat) / seconds
    late = sorted(load.lateness)[int(0.99 * len(load.lateness))] * 1000
    return Accepts(rate, achieved, pct(0.5), pct(0.99), lat[-1] * 1000, cpu * 1e6 / len(lat),
                   load.errors, late, max(0.0, outside) * 100 / spent)  # fmt: skip


def wrk_post(url: str, connections: int, seconds: float) -> tuple[float, float, int]:
    """(requests a second, p99 ms, requests) of a closed-loop wrk POST run."""
    import subprocess

    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text(f"wrk.method = 'POST'\nwrk.body = '{BODY.decode()}'\n"
                      "wrk.headers['content-type'] = 'application/json'\n")  # fmt: skip
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s"]
    cmd += ["--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", out, re.M)
    assert p99 is not None and "Non-2xx" not in out, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99[2]]
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    return rps, float(p99[1]) * scale, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="2000,3000,4000", help="accepts a second to offer")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one 4 s run of 2000/s")
    parser.add_argument("--json", type=Path, metavar="PATH")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    duration, repeats = args.duration, args.repeats
    if args.quick:
        rates, duration, repeats = [2000], 4.0, 1
    updated = [False]
    for tool in ("wrk", "taskset"):
        if ensure_tool(tool, updated) is None:
            raise BenchError(f"{tool} is needed")
    nginx = ensure_tool("nginx", updated)
    if nginx is None:
        raise BenchError("nginx is needed (the upstream)")
    os.sched_setaffinity(0, {int(LOAD_CPU)})  # the load generator beside the upstream
    tmp = Path(tempfile.mkdtemp(prefix="fender-delivery-bench-"))
    version = snapshot_fender(tmp)
    up_port, port, control_port = free_port(), free_port(), free_port()
    body = f'server {{ listen 127.0.0.1:{up_port}; location / {{ return 200 "ok\\n"; }} }}'
    upstream = start_nginx("upstream nginx", nginx, tmp / "upstream", body, LOAD_CPU)
    (tmp / "fender.yaml").write_text(f"""version: 1
control: {{address: 127.0.0.1:{control_port}}}
drain: {{delay: 0s, timeout: 5s}}
listeners:
  - name: bench
    address: 127.0.0.1:{port}
    routes:
      - {{name: plain, upstream: up, match: {{path_prefix: /p/}}, rewrite: {{strip_prefix: /p}}}}
      - {{name: send, upstream: up, match: {{path: /send}}, delivery: {{queue: outbox}}}}
upstreams:
  up: {{endpoints: ["http://127.0.0.1:{up_port}"]}}
queues:
  outbox: {{store: "sqlite://{tmp}/outbox.db", max_messages: 10000000, concurrency: 8}}
""")
    cmd = [sys.executable, "-m", "proxy", "run", "-c", str(tmp / "fender.yaml")]
    fender = Service("fender", cmd, "0", tmp / "fender.stderr", cwd=tmp / "src")
    results: dict = {"version": version, "accepts": [], "closed_loop": None, "delivery": None}
    try:
        fender.wait_ready(f"http://127.0.0.1:{control_port}/readyz")
        pids, helpers = [fender.proc.pid], [upstream.proc.pid]
        control(control_port, "POST", "/queues/outbox/pause")
        open_loop(port, 1000, 2.0, pids, helpers)  # warm-up
        log(f"Fender {version}; accepting at {rates}/s, {duration:g} s x {repeats}")
        for rate in rates:
            runs = [open_loop(port, rate, duration, pids, helpers) for _ in range(repeats)]
            median = sorted(runs, key=lambda r: r.p99_ms)[len(runs) // 2]
            results["accepts"].append(asdict(median))
            said = [f"{r.p99_ms:.2f} ms (others {r.others_pct:.0f}%)" for r in runs]
            log(f"{rate}/s: p99 of each run: {', '.join(said)}")
        cpu = cpu_seconds(pids)
        rps, p99, total = wrk_post(f"http://127.0.0.1:{port}/send", 8, duration)
        closed_cpu = (cpu_seconds(pids) - cpu) * 1e6 / total
        results["closed_loop"] = {"rps": rps, "p99_ms": p99, "cpu_us": closed_cpu}
        cpu = cpu_seconds(pids)
        _, _, proxied = wrk_post(f"http://127.0.0.1:{port}/p/send", 8, duration)
        proxied_cpu = (cpu_seconds(pids) - cpu) * 1e6 / proxied
        waiting = control(control_port, "GET", "/queues")["queues"]["outbox"]["depth"]
        before = metric(control_port, "fender_deliveries_total", queue="outbox", result="delivered")
        cpu, started = cpu_seconds(pids), time.monotonic()
        control(control_port, "POST", "/queues/outbox/resume")
        # Measured while messages still wait: until 80% are out, or --duration.
        while time.monotonic() - started < duration:
            time.sleep(0.2)
            depth = control(control_port, "GET", "/queues")["queues"]["outbox"]["depth"]
            if depth < waiting * 0.2:
                break
        control(control_port, "POST", "/queues/outbox/pause")
        cpu, spent = cpu_seconds(pids) - cpu, time.monotonic() - started
        done = metric(control_port, "fender_deliveries_total", queue="outbox", result="delivered")
        delivered = done - before
        if delivered <= 0 or delivered >= waiting:
            raise BenchError(
                f"{delivered} delivered of {waiting}: the run measured no steady state"
            )
        results["delivery"] = {
            "proxied_cpu_us": proxied_cpu,
            "delivery_cpu_us": cpu * 1e6 / delivered,
            "deliveries_per_s": delivered / spent,
            "ratio": cpu * 1e6 / delivered / proxied_cpu,
        }
    finally:
        fender.stop()
        upstream.stop()
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def report(results: dict) -> str:
    lines = [f"Fender {results['version']}", "", "Accepting into SQLite (open loop, 64 conns):",
             "| offered/s | answered/s | p50 | p99 | max | Fender CPU/accept | non-202 | "
             "generator late p99 | others' CPU |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for a in results["accepts"]:
        lines.append(
            f"| {a['rate']} | {a['achieved']:.0f} | {a['p50_ms']:.2f} ms | {a['p99_ms']:.2f} ms "
            f"| {a['max_ms']:.1f} ms | {a['cpu_us']:.0f} us | {a['errors']} "
            f"| {a['late_p99_ms']:.2f} ms | {a['others_pct']:.0f}%"
            f"{' (noisy: rerun)' if a['others_pct'] > NOISY_PCT else ''} |"
        )
    closed = results["closed_loop"]
    lines.append(f"\nClosed loop (wrk, 8 conns): {closed['rps']:.0f} accepts/s, p99 "
                 f"{closed['p99_ms']:.2f} ms, {closed['cpu_us']:.0f} us CPU each")  # fmt: skip
    d = results["delivery"]
    lines.append(f"Delivery: {d['delivery_cpu_us']:.0f} us CPU a message "
                 f"({d['deliveries_per_s']:.0f}/s) vs {d['proxied_cpu_us']:.0f} us a proxied "
                 f"request: {d['ratio']:.2f}x")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"failed: {exc}")
        sys.exit(1)
