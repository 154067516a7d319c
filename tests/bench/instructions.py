"""Instructions per request, counted by callgrind: a cost that a busy machine does not move.

usage: python tests/bench/instructions.py [--requests 3000] [--cases NAME,...] [--json PATH]
(or `python tests/bench/run.py --instructions`, which adds this table to its report). About
2 minutes with the defaults on a 2-core VM, most of it Fender starting under callgrind.
Needs valgrind and nginx, apt-installed when missing; everything listens on 127.0.0.1.

The method of issue 11's table (the team's shared/tools/instr/instr.py): an nginx, native
and not counted, is the upstream (`return 200 'ok'`, a 2-byte body, and a 16 KiB file).
Each proxy runs alone under `valgrind --tool=callgrind`. Per case: WARMUP requests, then
`callgrind_control --zero`, N requests one after another on one keep-alive connection, then
`callgrind_control --dump`; the instructions that dump counts (its summary line) / N is
the figure. Callgrind counts the instructions the program executes (every thread), not
time, so the same program and inputs give nearly the same count whatever else the machine
does: a 2% change shows here when wrk's req/s on a shared machine hides it (two runs on a
2-core VM busy with other work agreed within 1% on every case).

Cases (CASES): Fender's plain route; every policy configured but idle (run.py's
"fender-all"); an open-circuit answer (503) and a rate-limit rejection (429), answers Fender
gives itself; a 16 KiB body; one SSE chunk relayed: a LockStepUpstream (chunked.py) sends
the chunks of an SSE answer one packet at a time, and a chunk costs (cost of a K-chunk
answer - cost of a 1-chunk answer) / (K - 1), both measured over --sse-requests answers;
nginx (1 worker, `master_process off` so that one process does all the work, keep-alive
upstream) and floorproxy.py (raw uvloop protocols + llhttp, the floor for Python) as
anchors for the ratios. One Fender process serves all its cases in turn (it takes about a
minute to start under callgrind), run from a copy of proxy/ taken at start (or run.py's),
with $FENDER_PY (default: this interpreter) resolved to the real binary, and
PYTHONHASHSEED=0 so that string hashing is the same from run to run.

What a busy machine still moves: work Fender does per second of wall-clock time rather than
per request. The status board looks at the degradation level every second, the policy file
watcher stats the file every second, the log writer thread wakes every 0.25 s while lines
come (and ends after 2 s without any), and a thread switch or a timer check happens when
the clock says so. Under callgrind a request takes milliseconds, so this adds about
(background instructions per second x wall seconds of the run) / N to each figure, and more
when a busy machine stretches the run. That is why N is large (3,000: the share came out at
0.1-0.3% on a 2-core VM shared with other work, about 100k background instructions a
second against 2-4 ms a request) and why the report measures the background rate of each process over an
idle window (IDLE_WINDOW) and prints each case's estimated share, its raw total and its
wall time beside the figure: a share well above 1% says to rerun on a quieter machine.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests.bench` for a script

from tests.bench.chunked import LockStepClient, LockStepUpstream
from tests.bench.servers import (
    BenchError,
    Service,
    ensure_tool,
    fender_policy,
    fender_python,
    free_port,
    log,
    nginx_proxy_conf,
    snapshot_fender,
    start_fender,
    start_nginx,
)

HERE = Path(__file__).resolve().parent
DEFAULT_REQUESTS = 3000
WARMUP = 300
SSE_CHUNKS = 16  # K, chunks in the long SSE answer
SSE_REQUESTS = 300  # answers of each length (K chunks, 1 chunk)
IDLE_WINDOW = 5.0  # seconds over which a process's background work is counted
START_TIMEOUT = 300.0  # seconds: Fender under callgrind takes about a minute to start
STOP_TIMEOUT = 60.0  # and a while to drain and write its last dump
BODY_16K = bytes(i % 251 for i in range(16384))
SEED = {"PYTHONHASHSEED": "0"}


@dataclass(frozen=True)
class Case:
    name: str
    server: str  # which process serves it: "fender", "nginx" or "floor"
    path: str
    what: str
    status: int = 200
    body: bytes | None = b"ok"  # None: not checked (an answer of Fender's own)
    reason: str = ""  # the x-fender-reason it must carry
    anchor: str = ""  # "x" or "16k": the nginx and floor cases its ratios compare with
    goal: int | None = None  # issue 11's goal, instructions per request (SSE: per chunk)


CASES = (
    Case("fender", "fender", "/p/x", "Fender, plain route", anchor="x", goal=80_000),
    Case("fender-all", "fender", "/all/x", "Fender, every policy idle", anchor="x", goal=100_000),
    Case("open-circuit", "fender", "/open/x", "Fender, open circuit (503)", goal=40_000,
         status=503, body=None, reason="circuit_open"),
    Case("rate-limited", "fender", "/limited/x", "Fender, rate limited (429)", goal=40_000,
         status=429, body=None, reason="rate_limited"),
    Case("fender-16k", "fender", "/p/16k", "Fender, 16 KiB body", anchor="16k", goal=110_000,
         body=BODY_16K),
    Case("sse-chunk", "fender", "/sse/", "Fender, each SSE chunk relayed", goal=5_000),
    Case("nginx", "nginx", "/x", "nginx, 1 worker, keep-alive upstream"),
    Case("nginx-16k", "nginx", "/16k", "nginx, 16 KiB body", body=BODY_16K),
    Case("floor", "floor", "/x", "floorproxy.py (uvloop + llhttp, parse and copy)"),
    Case("floor-16k", "floor", "/16k", "floorproxy.py, 16 KiB body", body=BODY_16K),
)  # fmt: skip
BY_NAME = {case.name: case for case in CASES}


@dataclass
class Count:
    """Instructions counted over one measured window."""

    instructions: int
    requests: int
    seconds: float  # wall time from the zeroing to the dump
    sending_s: float  # of which sending the requests and reading the answers

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests


class Callgrind:
    """A process under callgrind whose counters we zero and dump (`callgrind_control`)."""

    def __init__(self, service: Service, out_prefix: Path) -> None:
        self.service, self.out_prefix = service, out_prefix

    @staticmethod
    def wrapper(out_prefix: Path) -> list[str]:
        return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_prefix}.%p"]

    def _control(self, option: str) -> None:
        self.service.check_alive()
        cmd = ["callgrind_control", option, str(self.service.pid)]  # this PID only, never all
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode:
            raise BenchError(f"{' '.join(cmd)} failed: {done.stdout}{done.stderr}")

    def dump(self) -> int:
        """Dump the counters (which zeroes them): the instructions since the last zeroing."""
        pattern = f"{self.out_prefix.name}.{self.service.pid}.*"
        before = set(self.out_prefix.parent.glob(pattern))
        self._control("--dump")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for path in sorted(set(self.out_prefix.parent.glob(pattern)) - before):
                total = summary(path)
                if total is not None:
                    path.unlink()
                    return total
            time.sleep(0.1)
        raise BenchError(f"no complete callgrind dump of {self.service.name} within 60 s")

    def window(self, requests: int, send: Callable[[], None]) -> Count:
        """Zero, send `requests` requests one after another, dump: that window's count."""
        started = time.monotonic()
        self._control("--zero")
        sending = time.monotonic()
        for _ in range(requests):
            send()
        sending = time.monotonic() - sending
        instructions = self.dump()
        return Count(instructions, requests, time.monotonic() - started, sending)

    def background(self) -> float:
        """Instructions per second while nobody sends anything (IDLE_WINDOW seconds)."""
        started = time.monotonic()
        self._control("--zero")
        time.sleep(IDLE_WINDOW)
        instructions = self.dump()
        return instructions / (time.monotonic() - started)


def summary(path: Path) -> int | None:
    """The instructions a callgrind dump counts, or None while it is being written.

    That is its `summary:` line (what every thread executed since the zeroing or the last
    dump), as instr.py reads it, not its `totals:` line (the sum of the cost lines), which
    in the first dump after a zeroing also holds costs from before it: +70% seen once."""
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace")
        found = re.search(r"^summary:\s+(\d+)$", text, re.M)
        if found and re.search(r"^totals:\s+\d+$", text, re.M):  # the last line: complete
            return int(found[1])
    return None


class KeepAlive:
    """One keep-alive connection; `send()` makes one request and checks the answer."""

    def __init__(self, port: int, case: Case) -> None:
        self.case = case
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.sent = 0

    def send(self) -> None:
        case = self.case
        self.conn.request("GET", case.path, headers={"x-tenant": "t1"})
        response = self.conn.getresponse()
        body = response.read()
        self.sent += 1
        if self.sent == 1 and case.status != 200:
            return  # the request that opens the circuit or spends the one token
        if response.status != case.status or (case.body is not None and body != case.body):
            raise BenchError(
                f"{case.name}: {response.status} {body[:80]!r}, expected {case.status}"
            )
        reason = response.getheader("x-fender-reason", "")
        if case.server == "fender" and reason != case.reason:
            raise BenchError(f"{case.name}: x-fender-reason {reason!r}, expected {case.reason!r}")
        if response.will_close:
            raise BenchError(f"{case.name}: the proxy closes the connection (not keep-alive)")

    def close(self) -> None:
        self.conn.close()


def count_case(cg: Callgrind, port: int, case: Case, requests: int) -> dict[str, Count]:
    client = KeepAlive(port, case)
    try:
        for _ in range(WARMUP):
            client.send()
        return {case.name: cg.window(requests, client.send)}
    finally:
        client.close()


def count_sse(
    cg: Callgrind, port: int, upstream: LockStepUpstream, requests: int, chunks: int
) -> dict[str, Count]:
    """Windows "sse-1" and "sse-K": `requests` SSE answers of 1 chunk, then of K chunks."""
    client = LockStepClient(port, upstream)
    try:
        counts = {}
        for k in (1, chunks):
            for _ in range(min(WARMUP, requests)):
                client.get(k)
            counts[f"sse-{k}"] = cg.window(requests, lambda k=k: client.get(k))
        return counts
    finally:
        client.close()


@dataclass
class Settings:
    requests: int = DEFAULT_REQUESTS
    sse_requests: int = SSE_REQUESTS
    chunks: int = SSE_CHUNKS


def count_server(
    server: str, cases: list[Case], tmp: Path, src: Path, up_port: int, settings: Settings
) -> tuple[dict[str, Count], float]:
    """Start `server` under callgrind, count each of its cases, then its background rate."""
    port, prefix = free_port(), tmp / f"cg.{server}"
    wrapper = Callgrind.wrapper(prefix)
    upstream = None
    if server == "fender":
        control = free_port()
        if any(case.name == "sse-chunk" for case in cases):
            upstream = LockStepUpstream()
        sse_port = upstream.port if upstream else None
        policy = fender_policy(port, control, up_port, free_port(), sse_port)
        stderr = tmp / "fender.stderr"
        service = start_fender(src, policy, stderr, wrapper=wrapper, extra_env=SEED)
        ready = f"http://127.0.0.1:{control}/readyz"
    elif server == "nginx":
        body = nginx_proxy_conf(port, up_port)
        service = start_nginx(
            "nginx proxy", nginx_path(), tmp / "nginx-proxy", body, None, False, wrapper
        )
        ready = f"http://127.0.0.1:{port}/x"
    else:
        cmd = [*wrapper, fender_python(), str(HERE / "floorproxy.py"), str(port), str(up_port)]
        service = Service(
            "floorproxy", cmd, None, tmp / "floor.stderr", env=dict(os.environ) | SEED
        )
        ready = f"http://127.0.0.1:{port}/x"
    cg = Callgrind(service, prefix)
    try:
        slow = " (about a minute)" if server == "fender" else ""
        log(f"{server} under callgrind: waiting for it to start{slow}")
        service.wait_ready(ready, START_TIMEOUT)
        counts: dict[str, Count] = {}
        for case in cases:
            log(f"counting {case.name}")
            if case.name == "sse-chunk" and upstream is not None:
                counts |= count_sse(cg, port, upstream, settings.sse_requests, settings.chunks)
            else:
                counts |= count_case(cg, port, case, settings.requests)
        log(f"counting {server}'s background work over {IDLE_WINDOW:g} idle seconds")
        return counts, cg.background()
    finally:
        service.stop(STOP_TIMEOUT)
        if upstream is not None:
            upstream.close()


def nginx_path() -> str:
    updated = [False]
    nginx = ensure_tool("nginx", updated)
    if (
        not nginx
        or not ensure_tool("valgrind", updated)
        or not ensure_tool("callgrind_control", updated, "valgrind")
    ):
        raise BenchError("needs nginx and valgrind (callgrind), which could not be installed")
    return nginx


def start_upstream(nginx: str, tmp: Path, port: int) -> Service:
    """The upstream, not counted: nginx answering `ok` (2 bytes), and /16k from a file."""
    www = tmp / "www"
    www.mkdir()
    (www / "16k").write_bytes(BODY_16K)
    server = f"""server {{
  listen 127.0.0.1:{port} backlog=4096;
  location / {{ return 200 'ok'; }}
  location = /16k {{ root {www}; }}
}}"""
    return start_nginx("upstream nginx", nginx, tmp / "upstream", server, None)


def measure(src: Path, tmp: Path, names: list[str], settings: Settings) -> dict[str, Any]:
    """Count the cases `names` with Fender from the snapshot in `src` (see
    servers.snapshot_fender); scratch files in `tmp`. The report as a JSON-able dict."""
    nginx = nginx_path()
    tmp.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    up_port = free_port()
    upstream = start_upstream(nginx, tmp, up_port)
    counts: dict[str, Count] = {}
    background: dict[str, float] = {}
    try:
        upstream.wait_ready(f"http://127.0.0.1:{up_port}/x")
        for server in ("fender", "nginx", "floor"):
            cases = [BY_NAME[name] for name in names if BY_NAME[name].server == server]
            if cases:
                these, background[server] = count_server(server, cases, tmp, src, up_port, settings)
                counts |= these
    finally:
        upstream.stop()
    rows = results(names, counts, background, settings)
    meta = {"requests": settings.requests, "warmup": WARMUP, "sse_requests": settings.sse_requests}
    meta |= {"sse_chunks": settings.chunks, "idle_window_s": IDLE_WINDOW, "python": fender_python()}
    meta |= {"wall_s": round(time.monotonic() - started, 1)}
    windows = {name: asdict(count) for name, count in counts.items()}
    return {"meta": meta, "results": rows, "windows": windows, "background_per_s": background}


def results(
    names: list[str], counts: dict[str, Count], background: dict[str, float], settings: Settings
) -> list[dict[str, Any]]:
    """One record per case: the figure, its ratios and goal, the raw windows behind it."""
    rows: list[dict[str, Any]] = []
    for name in names:
        case = BY_NAME[name]
        rate = background.get(case.server, 0.0)
        if name == "sse-chunk":
            one, many = counts["sse-1"], counts[f"sse-{settings.chunks}"]
            per = (many.per_request - one.per_request) / (settings.chunks - 1)
            # the zeroing and the dump take as long in both windows: only the sending differs
            longer = many.sending_s / many.requests - one.sending_s / one.requests
            seconds = max(0.0, longer) / (settings.chunks - 1)
            windows = [one, many]
        else:
            count = counts[name]
            per, seconds, windows = count.per_request, count.seconds / count.requests, [count]
        row: dict[str, Any] = {"case": name, "what": case.what, "per_request": per}
        row |= {"goal": case.goal, "background_share": rate * seconds / per if per else None}
        row |= {
            "instructions": [w.instructions for w in windows],
            "requests": [w.requests for w in windows],
        }
        row |= {"seconds": [round(w.seconds, 1) for w in windows]}
        for anchor in ("floor", "nginx"):
            ref = counts.get(anchor if case.anchor == "x" else f"{anchor}-{case.anchor}")
            row[f"vs_{anchor}"] = per / ref.per_request if case.anchor and ref else None
        rows.append(row)
    return rows


def table(report: dict[str, Any]) -> list[str]:
    """The report as a Markdown table and notes, for the terminal and a closing note."""
    rows = report["results"]

    def ratio(value: object) -> str:
        return f"{value:.1f}x" if isinstance(value, float) else "-"

    lines = [
        "| case | instructions / request | goal (issue 11) | vs floor | vs nginx "
        "| total instructions | requests | wall s | background share |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        goal = row["goal"]
        mark = "" if goal is None else (" ok" if row["per_request"] <= goal else " over")
        share = row["background_share"]
        lines.append(
            f"| {row['case']}: {row['what']} | {row['per_request']:,.0f} "
            f"| {'-' if goal is None else f'{goal:,}{mark}'} | {ratio(row['vs_floor'])} "
            f"| {ratio(row['vs_nginx'])} | {' / '.join(f'{n:,}' for n in row['instructions'])} "
            f"| {' / '.join(str(n) for n in row['requests'])} "
            f"| {' / '.join(str(s) for s in row['seconds'])} "
            f"| {'-' if share is None else f'{share:.2%}'} |"
        )
    meta = report["meta"]
    by_case = {row["case"]: row["per_request"] for row in rows}
    notes = [
        f"callgrind, {meta['requests']} requests per case on one keep-alive connection after "
        f"{meta['warmup']} warm-up requests; SSE: {meta['sse_requests']} answers of 1 and of "
        f"{meta['sse_chunks']} chunks (both raw counts shown), a chunk = the difference / "
        f"{meta['sse_chunks'] - 1}; Python {meta['python']}; {meta['wall_s']:.0f} s in all",
    ]
    if "fender" in by_case and "fender-all" in by_case:
        extra = by_case["fender-all"] / by_case["fender"] - 1
        notes.append(f"every policy idle costs {extra:+.1%} over the plain route (goal < 10%)")
    background = report["background_per_s"]
    rates = ", ".join(f"{server} {rate:,.0f}" for server, rate in background.items())
    notes.append(
        f"background instructions per idle second: {rates}; a case's background share is "
        "that rate x its wall time / its requests, over its figure (rerun if well above 1%)"
    )
    return lines + [""] + [f"note: {note}" for note in notes]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="N per case")
    parser.add_argument("--sse-requests", type=int, default=SSE_REQUESTS)
    parser.add_argument(
        "--chunks", type=int, default=SSE_CHUNKS, help="K, chunks per long SSE answer"
    )
    parser.add_argument(
        "--cases", default=",".join(BY_NAME), help="comma-separated, of: %(default)s"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the report here")
    args = parser.parse_args()
    names = [name for name in args.cases.split(",") if name]
    if unknown := [name for name in names if name not in BY_NAME]:
        parser.error(f"unknown cases: {', '.join(unknown)}")
    if args.chunks < 2 or min(args.requests, args.sse_requests) < 1:
        parser.error("--chunks must be at least 2, --requests and --sse-requests at least 1")
    settings = Settings(args.requests, args.sse_requests, args.chunks)
    with tempfile.TemporaryDirectory(prefix="fender-instr-") as tmp_name:
        tmp = Path(tmp_name)
        source = snapshot_fender(tmp)
        log(f"Fender {source}")
        report = measure(tmp / "src", tmp / "instr", names, settings)
    report["meta"]["fender"] = source
    print(f"Fender {source}")
    print("\n".join(table(report)))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop our servers on the way out
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"FAILED: {exc}")
        sys.exit(1)
