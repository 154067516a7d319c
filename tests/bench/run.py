"""Throughput, latency and CPU cost of one proxy hop: upstream direct vs Fender vs nginx.

Run `python tests/bench/run.py` (about 9 minutes; `--quick` for a ~1 minute smoke run,
`--json PATH` to also write the results as JSON, `--targets A,B` to measure only those
targets beside direct, `--instructions` to add the instructions per request that callgrind
counts, from instructions.py: about 2 minutes more, 1 with --quick). Needs `wrk`, `taskset`
and, for the nginx column and the fast upstream, `nginx` (and `valgrind` for --instructions,
`redis-server` for fender-rl-global); they are apt-installed when missing.

What runs, all on 127.0.0.1 with ports picked by the kernel:
- upstream: nginx (1 worker, no access log) serving /small (20 bytes) and /16k (16 KiB) from
  files; a small aiohttp server instead when nginx cannot be had.
- fender: `python -m proxy run -c POLICY`, run from a copy of proxy/ taken at start (the tree
  may be edited meanwhile); JSON access log ON (its default), with stdout sent to /dev/null.
  Two targets from one process: "fender", a plain pass-through route, and "fender-all", a
  route with every policy configured (timeouts, retry, route rate limit, fallback chain;
  breaker, bulkhead and quota on its upstream) but with limits that never bite. Their
  difference, in the notes, is what idle policies cost.
- a rate limit that never bites, on two more routes of the same Fender: "fender-rl-local"
  (the replica's own bucket) and "fender-rl-global" (`scope: global`, its bucket in a local
  redis-server started niced on the load CPU, apt-installed when missing). The notes give
  their throughput ratio, the CPU per request of each and, from Fender's /status, the
  EVALSHA commands and the round trips (pipelines) to Redis per admission, and any local
  fallbacks (there should be none). With fender-rl-global among the targets, the one Fender
  process has a `redis:` section, so its memory figures include the fleet link (redis-py).
- answered by Fender itself: an open circuit (503, no upstream call) and a rate-limit
  rejection (429), their latency and CPU per answer.
- nginx: a second nginx as reverse proxy, 1 worker, `keepalive 64` to the upstream.
- memory (memory.py, before any proxied request): Fender's and nginx's RSS at idle after
  start, and the RSS each idle keep-alive connection adds (1,000 of them, each after one
  request).

CPU placement (2 cores): the proxy under test alone on CPU 0; the upstream and wrk (-t1) share
CPU 1 in every run, direct runs included. So CPU 1 does exactly the same work for all three
targets (wrk sends and reads the same requests, the upstream serves them), and the direct
figure is what the client side allows; "rps vs direct" is the share of it a proxy keeps. It
can come out slightly above 1 for nginx at 64 connections: with the proxy on the other core,
wrk and the upstream take requests in bigger batches. (Moving the upstream to the idle CPU 0 for
direct runs instead would give the baseline two cores at 64 connections, which no proxied run
has, and a cross-core wake-up per request at 1 connection, which makes that baseline slower.)

Each scenario (body x connections) is measured for each target in turn, and the whole sweep is
repeated (--repeats, interleaved so drift hits all targets alike); the table shows medians.
Every measured wrk run follows a 1 s warm-up. Latency columns are wrk's 50th and 99th
percentiles; "p50 added" is a target's p50 minus the direct p50 of the same scenario (at 1
connection: the latency one proxy hop adds to a call). "CPU us/req" is the proxy's CPU time (utime+stime from /proc/PID/stat, master plus
workers for nginx) during the measured run divided by the requests wrk completed; it is the
number to compare across proxies, as throughput here is bounded by the shared CPU 1 as well.
A run with socket errors or non-2xx responses stops the benchmark. The machine may be shared:
the notes under the table give the load average and how much CPU processes outside the bench
used during the measured runs (from /proc/stat); runs over NOISY_PCT of a core deserve a rerun.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.error
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests.bench` for a script

from tests.bench import instructions, memory
from tests.bench.servers import (
    REPO,
    BenchError,
    Service,
    ensure_tool,
    fender_policy,
    free_port,
    http_get,
    log,
    nginx_proxy_conf,
    process_tree,
    snapshot_fender,
    sources_sha1,
    start_nginx,
    start_redis,
    wait_redis,
)
from tests.bench.servers import start_fender as start_fender_service

PROXY_CPU, LOAD_CPU = "0", "1"
BODIES = {"small": b"hello from upstream\n", "16k": bytes(i % 251 for i in range(16384))}
TARGETS = ("direct", "fender", "fender-all", "fender-rl-local", "fender-rl-global", "nginx")
# Where each target is reached: Fender serves "fender" (plain pass-through), "fender-all"
# (every policy configured but idle) and two routes with a rate limit that never bites,
# one local and one `scope: global` (its bucket in a local Redis), from one process.
PREFIX = {"direct": "", "fender": "/p", "fender-all": "/all", "nginx": ""}
PREFIX |= {"fender-rl-local": "/rl-local", "fender-rl-global": "/rl-global"}
FENDER_TARGETS = ("fender", "fender-all", "fender-rl-local", "fender-rl-global")
# Answers Fender gives without calling an upstream: (path, expected status).
LOCAL = {"open circuit": ("/open/small", 503), "rate limited": ("/limited/small", 429)}
NOISY_PCT = 10  # a run during which others used more than this % of a core is flagged
HZ = os.sysconf("SC_CLK_TCK")
UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes, in seconds."""
    ticks = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / HZ


def start_upstream(nginx: str | None, tmp: Path, port: int) -> Service:
    www = tmp / "www"
    www.mkdir()
    for path, body in BODIES.items():
        (www / path).write_bytes(body)
    if nginx:
        server = f"""sendfile on;
open_file_cache max=16 inactive=1h;
open_file_cache_valid 1h;
server {{ listen 127.0.0.1:{port} backlog=4096; root {www}; }}"""
        return start_nginx("upstream nginx", nginx, tmp / "upstream", server, LOAD_CPU)
    script = tmp / "upstream.py"
    script.write_text(
        "import sys\nfrom pathlib import Path\nfrom aiohttp import web\n"
        "bodies = {'/' + p.name: p.read_bytes() for p in Path(sys.argv[2]).iterdir()}\n"
        "async def handle(request):\n"
        "    body = bodies.get(request.path)\n"
        "    return web.Response(status=404) if body is None else web.Response(body=body)\n"
        "app = web.Application()\napp.router.add_get('/{tail:.*}', handle)\n"
        "web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), access_log=None, print=None)\n"
    )
    cmd = [sys.executable, str(script), str(port), str(www)]
    return Service("upstream aiohttp", cmd, LOAD_CPU, tmp / "upstream.stderr")


def start_fender(
    tmp: Path, port: int, up_port: int, redis_port: int | None = None
) -> tuple[Service, int]:
    """Fender, run from the snapshot of proxy/ in tmp/src, and its control port (routes:
    servers.fender_policy; with `redis_port`, /rl-global/ keeps its bucket in that Redis)."""
    control, dead = free_port(), free_port()
    policy = fender_policy(port, control, up_port, dead, redis_port=redis_port)
    fender = start_fender_service(tmp / "src", policy, tmp / "fender.stderr", cpu=PROXY_CPU)
    return fender, control


def start_nginx_proxy(nginx: str, tmp: Path, port: int, up_port: int) -> Service:
    body = nginx_proxy_conf(port, up_port)
    return start_nginx("nginx proxy", nginx, tmp / "nginx-proxy", body, PROXY_CPU)


@dataclass
class Run:
    rps: float
    requests: int
    p50_us: float
    p99_us: float
    cpu_us_per_req: float | None = None
    other_cpu_pct: float = 0.0  # CPU that processes outside the bench used, % of one core


def latency_us(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise BenchError(f"unreadable wrk latency {text!r}")
    return float(match[1]) * UNITS[match[2]]


def wrk(url: str, connections: int, seconds: float, expect: int = 200) -> Run:
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s"]
    cmd += ["--latency", "--timeout", "5s", url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    out = done.stdout
    failed = re.search(r"Socket errors:.*", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if (expect == 200) == bool(non_2xx) and not failed:  # a 2xx run must have none, a
        failed = non_2xx or re.search(r"Requests/sec", out)  # local-answer run only those
    rps, total = re.search(r"Requests/sec:\s+([\d.]+)", out), re.search(r"(\d+) requests in", out)
    p50, p99 = re.search(r"^\s+50%\s+(\S+)", out, re.M), re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if done.returncode or failed or not (rps and total and p50 and p99) or int(total[1]) == 0:
        raise BenchError(f"wrk run against {url} failed:\n{out}{done.stderr}")
    return Run(float(rps[1]), int(total[1]), latency_us(p50[1]), latency_us(p99[1]))


def busy_seconds() -> float:
    """CPU time the whole machine spent busy, all CPUs (from /proc/stat)."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, stat.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / HZ


def measure(
    url: str, connections: int, seconds: float, proxy: list[int], ours: list[int], expect: int = 200
) -> Run:
    """One wrk run, with the proxy's CPU per request and the CPU that others used meanwhile."""

    def sample() -> tuple[float, float, float, float]:
        wrk_usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is our only waited child
        wrk_cpu = wrk_usage.ru_utime + wrk_usage.ru_stime
        return cpu_seconds(proxy), cpu_seconds(ours), wrk_cpu, busy_seconds()

    before = sample()
    run = wrk(url, connections, seconds, expect)
    proxy_cpu, ours_cpu, wrk_cpu, busy = (a - b for a, b in zip(sample(), before, strict=True))
    if proxy:
        run.cpu_us_per_req = proxy_cpu * 1e6 / run.requests
    run.other_cpu_pct = max(0.0, busy - ours_cpu - wrk_cpu) * 100 / seconds
    return run


def us(micros: float) -> str:
    """A latency for the table."""
    return f"{micros:.0f}us" if micros < 1000 else f"{micros / 1000:.2f}ms"


def signed_us(micros: float) -> str:
    """A latency difference for the table: +62us, -3us, +1.20ms."""
    return ("-" if micros < 0 else "+") + us(abs(micros))


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def stderr_note(service: Service) -> str | None:
    """A one-line summary of what the server wrote to stderr (logged in full-ish), or None."""
    text = service.stderr.read_text(errors="replace").strip()
    if not text:
        return None
    tracebacks = text.count("Traceback (most recent call last)")
    last = text[text.rfind("Traceback") :] if tracebacks else text
    log(f"{service.name} stderr, the last traceback or lines:\n{last[-3000:]}")
    errors = sorted({line for line in text.splitlines() if re.match(r"\w+(\.\w+)*: ", line)})
    summary = f"{service.name} wrote {len(text.splitlines())} lines to stderr"
    return summary + f", {tracebacks} tracebacks" + "".join(f"\n  {e}" for e in errors[:5])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 s runs, 1 repeat, 64 conns")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help="comma-separated subset of " + ", ".join(TARGETS) + " (direct is always run)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions per request under callgrind (instructions.py)",
    )
    args = parser.parse_args()
    wanted = {"direct", *filter(None, args.targets.split(","))}
    if unknown := wanted - set(TARGETS):
        raise BenchError(f"unknown targets: {', '.join(sorted(unknown))}")
    duration, repeats, conns = args.duration, args.repeats, (64, 1)
    if args.quick:
        duration, repeats, conns = 2.0, 1, (64,)
    if not {0, 1} <= os.sched_getaffinity(0):
        raise BenchError("needs two CPUs (0 and 1) for pinning")
    updated = [False]
    if not ensure_tool("wrk", updated):
        raise BenchError("wrk is not installed and could not be installed")
    nginx = ensure_tool("nginx", updated)
    if not nginx:
        log("nginx could not be installed: no nginx column, aiohttp upstream instead")
    redis = ensure_tool("redis-server", updated) if "fender-rl-global" in wanted else None
    if "fender-rl-global" in wanted and not redis:
        log("redis-server could not be installed: no fender-rl-global target")
    targets = [t for t in TARGETS if t in wanted and (nginx or t != "nginx")]
    targets = [t for t in targets if redis or t != "fender-rl-global"]
    scenarios = [(body, c) for c in conns for body in BODIES]
    local_scenarios = [(kind, c) for c in conns for kind in LOCAL]
    runs: dict[tuple[str, int, str], list[Run]] = {}
    redis_use: dict[tuple[str, int], list[RedisUse]] = {}
    notes = [f"load average before the run: {load_average()}"]
    services: list[Service] = []
    memory_figures: dict[str, dict[str, object]] = {}
    counted: dict[str, object] | None = None
    with tempfile.TemporaryDirectory(prefix="fender-bench-") as tmp_name:
        tmp = Path(tmp_name)
        fender_source = snapshot_fender(tmp)
        try:
            ports = {t: free_port() for t in targets}
            ports["fender"] = free_port()  # serves every fender-* target, and LOCAL's
            for target in FENDER_TARGETS:
                ports[target] = ports["fender"]
            services.append(start_upstream(nginx, tmp, ports["direct"]))
            services[0].wait_ready(f"http://127.0.0.1:{ports['direct']}/small")
            redis_port = free_port() if redis else None
            if redis and redis_port:
                services.append(start_redis(redis, tmp, redis_port, LOAD_CPU))
                wait_redis(services[-1], redis_port)
                notes.append(  # memory.py alone measures Fender without it
                    "Fender's memory figures include its fleet link (a redis: section, for "
                    "fender-rl-global; redis-py loaded, a connection held)"
                )
            fender, control = start_fender(tmp, ports["fender"], ports["direct"], redis_port)
            services.append(fender)
            fender.wait_ready(f"http://127.0.0.1:{control}/readyz")
            log("memory: Fender at idle, then 1,000 idle keep-alive connections")
            memory_figures["fender"] = memory.measure_server(fender, ports["fender"], "/p/small")
            proxies = {"fender": fender}
            if nginx and "nginx" in targets:
                proxies["nginx"] = start_nginx_proxy(nginx, tmp, ports["nginx"], ports["direct"])
                services.append(proxies["nginx"])
                memory.wait_listening(proxies["nginx"], ports["nginx"])  # no request yet
                log("memory: nginx at idle, then 1,000 idle keep-alive connections")
                memory_figures["nginx"] = memory.measure_server(
                    proxies["nginx"], ports["nginx"], "/small"
                )
            trees = {target: process_tree(proxy.proc.pid) for target, proxy in proxies.items()}
            for target in FENDER_TARGETS:
                trees[target] = trees["fender"]
            ours = [pid for service in services for pid in process_tree(service.proc.pid)]
            for target in targets:  # every target serves the right bytes
                port = ports[target]
                for path, body in BODIES.items():
                    url = f"http://127.0.0.1:{port}{PREFIX[target]}/{path}"
                    if http_get(url) != (200, body):
                        raise BenchError(f"{target} did not return the /{path} body")
            for path, _status in LOCAL.values():  # open the circuit, spend the one token
                with contextlib.suppress(urllib.error.HTTPError):
                    http_get(f"http://127.0.0.1:{ports['fender']}{path}")
            for repeat in range(1, repeats + 1):
                for kind, connections in local_scenarios:
                    path, status = LOCAL[kind]
                    url = f"http://127.0.0.1:{ports['fender']}{path}"
                    log(f"repeat {repeat}/{repeats}: {kind}, {connections} conn, fender")
                    wrk(url, connections, 1, status)
                    run = measure(url, connections, duration, trees["fender"], ours, status)
                    runs.setdefault((kind, connections, "fender"), []).append(run)
                for body, connections in scenarios:
                    for target in targets:
                        url = f"http://127.0.0.1:{ports[target]}{PREFIX[target]}/{body}"
                        log(f"repeat {repeat}/{repeats}: {body} body, {connections} conn, {target}")
                        wrk(url, connections, 1)  # warm-up: connections, pools, caches
                        proxy = trees.get(target, [])
                        before = fleet_counts(control) if target == "fender-rl-global" else None
                        run = measure(url, connections, duration, proxy, ours)
                        if before is not None:
                            use = RedisUse.between(before, fleet_counts(control), run.requests)
                            redis_use.setdefault((body, connections), []).append(use)
                        for each in services:
                            each.check_alive()
                        runs.setdefault((body, connections, target), []).append(run)
        finally:
            for service in reversed(services):
                service.stop()
            notes.append(f"load average after the run: {load_average()} (others' work adds noise)")
            if sources_sha1(REPO) != sources_sha1(tmp / "src"):
                notes.append("proxy/ changed during the run; measured: its copy taken at start")
            for service in services:  # whatever a server complained about, even on success
                if note := stderr_note(service):
                    notes.append(note)
        if args.instructions:  # after the wrk runs: callgrind's slow processes alone
            settings = instructions.Settings()
            if args.quick:
                settings = instructions.Settings(requests=500, sse_requests=50, chunks=8)
            names = list(instructions.BY_NAME)
            counted = instructions.measure(tmp / "src", tmp / "instructions", names, settings)
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True) if nginx else None
    meta: dict[str, object] = {
        "duration_s": duration,
        "repeats": repeats,
        "fender": fender_source,
    }
    meta |= {"nginx": version.stderr.strip() if version else "none", "python": sys.version}
    meta |= {"proxy_cpu": PROXY_CPU, "load_cpu": LOAD_CPU}
    if redis:
        version = subprocess.run([redis, "--version"], capture_output=True, text=True)
        meta |= {"redis": version.stdout.strip()}
    fleet_notes(runs, targets, scenarios, redis_use, notes)
    fleet = [
        {"body": body, "connections": connections, "runs": [asdict(u) for u in these]}
        for (body, connections), these in redis_use.items()
    ]
    extra = {"memory": memory_figures, "instructions": counted, "fleet": fleet}
    report(runs, targets, scenarios, local_scenarios, meta, notes, extra, args.json)
    return 0


def summarize(
    runs: dict[tuple[str, int, str], list[Run]],
    targets: list[str],
    scenarios: list[tuple[str, int]],
) -> tuple[list[dict[str, object]], list[tuple[str, ...]]]:
    """Medians per scenario and target, as JSON-able records and as table rows."""
    results: list[dict[str, object]] = []
    rows = [("scenario", "target", "rps", "p50", "p50 added", "p99", "rps vs direct", "CPU us/req")]
    for body, connections in scenarios:
        direct_rps = statistics.median(r.rps for r in runs[body, connections, "direct"])
        direct_p50 = statistics.median(r.p50_us for r in runs[body, connections, "direct"])
        for target in targets:
            these = runs[body, connections, target]
            rps = statistics.median(r.rps for r in these)
            p50 = statistics.median(r.p50_us for r in these)
            p99 = statistics.median(r.p99_us for r in these)
            cpus = [r.cpu_us_per_req for r in these if r.cpu_us_per_req is not None]
            cpu = statistics.median(cpus) if cpus else None
            results.append(
                {"body": body, "body_bytes": len(BODIES[body]), "connections": connections}
                | {"target": target, "rps_vs_direct": rps / direct_rps}
                | {"median": {"rps": rps, "p50_us": p50, "p99_us": p99, "cpu_us_per_req": cpu}}
                | {"p50_added_us": p50 - direct_p50}
                | {"runs": [asdict(r) for r in these]}
            )
            cpu_text = "-" if cpu is None else f"{cpu:.0f}"
            ratio = f"{rps / direct_rps:.2f}"
            scenario = f"{body} body, {connections} conn"
            added = "-" if target == "direct" else signed_us(p50 - direct_p50)
            row = (scenario, target, f"{rps:,.0f}", us(p50), added, us(p99), ratio, cpu_text)
            rows.append(row)
    return results, rows


@dataclass
class RedisUse:
    """What one measured fender-rl-global run asked of Redis, per admission, and the
    decisions made locally instead (fallbacks: there should be none)."""

    round_trips_per_req: float
    commands_per_req: float
    fallbacks: float

    @classmethod
    def between(
        cls, before: tuple[float, float, float], after: tuple[float, float, float], requests: int
    ) -> RedisUse:
        trips, commands, fallbacks = (a - b for a, b in zip(after, before, strict=True))
        return cls(trips / requests, commands / requests, fallbacks)


def fleet_counts(control: int) -> tuple[float, float, float]:
    """Pipelines and commands sent to Redis so far (GET /status), and local fallbacks."""
    fleet = json.loads(http_get(f"http://127.0.0.1:{control}/status")[1])["fleet"] or {}
    metrics = http_get(f"http://127.0.0.1:{control}/metrics")[1].decode()
    fallbacks = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("fender_rate_limit_fallbacks_total{")
    )
    return float(fleet.get("round_trips", 0)), float(fleet.get("commands", 0)), fallbacks


def fleet_notes(
    runs: dict[tuple[str, int, str], list[Run]],
    targets: list[str],
    scenarios: list[tuple[str, int]],
    redis_use: dict[tuple[str, int], list[RedisUse]],
    notes: list[str],
) -> None:
    """A global limit that never bites vs the same limit kept locally, and what it asks of
    Redis per admission: EVALSHA commands and pipelines (round trips)."""
    if not {"fender-rl-local", "fender-rl-global"} <= set(targets):
        return
    for body, connections in scenarios:
        local = runs[body, connections, "fender-rl-local"]
        shared = runs[body, connections, "fender-rl-global"]
        rps = statistics.median(r.rps for r in shared) / statistics.median(r.rps for r in local)
        cpu_local = statistics.median(r.cpu_us_per_req or 0.0 for r in local)
        cpu_global = statistics.median(r.cpu_us_per_req or 0.0 for r in shared)
        use = redis_use.get((body, connections), [])
        trips = statistics.median(u.round_trips_per_req for u in use) if use else float("nan")
        commands = statistics.median(u.commands_per_req for u in use) if use else float("nan")
        fallbacks = sum(u.fallbacks for u in use)
        notes.append(
            f"global vs local rate limit ({body} body, {connections} conn): throughput "
            f"x{rps:.3f}, CPU per request {cpu_local:.0f} -> {cpu_global:.0f} us "
            f"({cpu_global / cpu_local - 1:+.1%}); per admission {commands:.3f} EVALSHA in "
            f"{trips:.3f} round trips; {fallbacks:.0f} local fallbacks"
        )


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(width) if i < 2 else cell.rjust(width)  # text left, numbers right
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print(" | ".join(cells))
        if n == 0:
            print("-+-".join("-" * w for w in widths))


def report(
    runs: dict[tuple[str, int, str], list[Run]],
    targets: list[str],
    scenarios: list[tuple[str, int]],
    local_scenarios: list[tuple[str, int]],
    meta: dict[str, object],
    notes: list[str],
    extra: dict[str, Any],
    json_path: Path | None,
) -> None:
    print(f"Fender {meta['fender']} | {meta['nginx']} | Python {sys.version.split()[0]}")
    print(f"wrk -t1, {meta['duration_s']:g} s per run, median of {meta['repeats']} repeats")
    print(f"CPU {PROXY_CPU}: proxy under test; CPU {LOAD_CPU}: wrk + upstream (direct runs too)")
    if meta["nginx"] == "none":
        print("nginx unavailable: no nginx column; upstream is an aiohttp server")
    results, rows = summarize(runs, targets, scenarios)
    print_table(rows)
    print()
    local_rows = [("answered by Fender itself", "target", "rps", "p50", "p99", "CPU us/req")]
    for kind, connections in local_scenarios:
        these = runs[kind, connections, "fender"]
        cpu = statistics.median(r.cpu_us_per_req or 0.0 for r in these)
        rps = statistics.median(r.rps for r in these)
        p50 = us(statistics.median(r.p50_us for r in these))
        p99 = us(statistics.median(r.p99_us for r in these))
        scenario = f"{kind} ({LOCAL[kind][1]}), {connections} conn"
        local_rows.append((scenario, "fender", f"{rps:,.0f}", p50, p99, f"{cpu:.0f}"))
        results.append(
            {"local": kind, "connections": connections, "runs": [asdict(r) for r in these]}
        )
    print_table(local_rows)
    print()
    idle_policies = {"fender", "fender-all"} <= set(targets)
    for body, connections in scenarios if idle_policies else ():  # what idle policies cost
        plain = runs[body, connections, "fender"]
        full = runs[body, connections, "fender-all"]
        rps = statistics.median(r.rps for r in full) / statistics.median(r.rps for r in plain)
        cpu_plain = statistics.median(r.cpu_us_per_req or 0.0 for r in plain)
        cpu_full = statistics.median(r.cpu_us_per_req or 0.0 for r in full)
        notes.append(
            f"every policy idle vs plain ({body} body, {connections} conn): throughput x{rps:.3f} "
            f"({(1 - rps) * 100:+.1f}% cost), CPU per request {cpu_full / cpu_plain - 1:+.1%}"
        )
    others = [(r.other_cpu_pct, key) for key, these in runs.items() for r in these]
    busiest, (body, connections, target) = max(others)
    notes.append(
        f"CPU used by processes outside the bench during measured runs: up to {busiest:.0f}% "
        f"of a core ({body} body, {connections} conn, {target}); "
        f"{sum(pct > NOISY_PCT for pct, _ in others)} of {len(others)} runs over {NOISY_PCT}%"
    )
    for note in notes:
        print(f"note: {note}")
    if extra["memory"]:
        print()
        print("\n".join(memory.table(extra["memory"])))
    if extra["instructions"]:
        print()
        print("\n".join(instructions.table(extra["instructions"])))
    if json_path:
        document = {"meta": meta | {"notes": notes}, "results": results} | extra
        json_path.write_text(json.dumps(document, indent=2) + "\n")
        log(f"wrote {json_path}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop our servers on the way out
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"FAILED: {exc}")
        sys.exit(1)
