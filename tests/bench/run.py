"""Throughput, latency and CPU cost of one proxy hop: upstream direct vs Fender vs nginx.

Run `python tests/bench/run.py` (about 7 minutes; `--quick` for a ~20 s smoke run,
`--json PATH` to also write the results as JSON). Needs `wrk`, `taskset` and, for the nginx
column and the fast upstream, `nginx`; wrk and nginx are apt-installed when missing.

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
  redis-server started on the load CPU, apt-installed when missing). The notes give their
  throughput ratio and, from Fender's /status, the EVALSHA commands and the round trips
  (pipelines) to Redis per admission, and any local fallbacks (there should be none).
- answered by Fender itself: an open circuit (503, no upstream call) and a rate-limit
  rejection (429), their latency and CPU per answer.
- nginx: a second nginx as reverse proxy, 1 worker, `keepalive 64` to the upstream.

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
percentiles. "CPU us/req" is the proxy's CPU time (utime+stime from /proc/PID/stat, master plus
workers for nginx) during the measured run divided by the requests wrk completed; it is the
number to compare across proxies, as throughput here is bounded by the shared CPU 1 as well.
A run with socket errors or non-2xx responses stops the benchmark. The machine may be shared:
the notes under the table give the load average and how much CPU processes outside the bench
used during the measured runs (from /proc/stat); runs over NOISY_PCT of a core deserve a rerun.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
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
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an env proxy


class BenchError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_tool(name: str, updated: list[bool]) -> str | None:
    """The tool's path, apt-installing it first when missing; None when that fails."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found:
        return found
    log(f"{name} not found, installing it with apt-get")
    apt = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not updated[0]:
        subprocess.run(["apt-get", "update", "-qq"], env=apt, check=False)
        updated[0] = True
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", name]
    subprocess.run(cmd, env=apt, check=False)
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str) -> tuple[int, bytes]:
    with HTTP.open(url, timeout=2) as response:
        return int(response.status), bytes(response.read())


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (nginx: the master and its workers)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    tree = [pid]
    for parent in tree:
        tree.extend(child for child, ppid in parents.items() if ppid == parent)
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes, in seconds."""
    ticks = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / HZ


class Service:
    """A server started by the bench, pinned to one CPU, stopped by PID."""

    def __init__(self, name: str, cmd: list[str], cpu: str, stderr: Path, cwd: Path = REPO) -> None:
        self.name, self.stderr = name, stderr
        with stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                ["taskset", "-c", cpu, *cmd],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # Ctrl-C reaches the bench only; it stops us in order
            )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.stderr.read_text(errors="replace")[-3000:]
            raise BenchError(f"{self.name} exited with {self.proc.returncode}; stderr:\n{tail}")

    def wait_ready(self, url: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            with contextlib.suppress(OSError):
                if http_get(url)[0] == 200:
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} not ready at {url} after {timeout:.0f} s")
            time.sleep(0.1)

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is not None:
            return
        pids = process_tree(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{self.name} ignored SIGTERM for {timeout:.0f} s, killing it")
            self.proc.kill()
            self.proc.wait()
        for pid in pids[1:]:  # workers the master left behind, if any
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def nginx_conf(tmp: Path, body: str) -> str:
    temps = "\n".join(f"{kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy"))
    temps += "".join(f"\n{kind}_temp_path {tmp / kind};" for kind in ("fastcgi", "uwsgi", "scgi"))
    user = "user root;" if os.geteuid() == 0 else ""  # workers must read the 0700 temp dir
    return f"""{user}
worker_processes 1;
daemon off;
pid {tmp / "nginx.pid"};
error_log {tmp / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
access_log off;
{temps}
default_type application/octet-stream;
keepalive_requests 1000000;
keepalive_timeout 75s;
{body}
}}
"""


def start_nginx(name: str, nginx: str, tmp: Path, body: str, cpu: str) -> Service:
    tmp.mkdir()
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_conf(tmp, body))
    cmd = [nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")]
    return Service(name, cmd, cpu, tmp / "stderr.log")


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


def start_redis(redis: str, tmp: Path, port: int) -> Service:
    """A local Redis for the global limit, on the load CPU (it is not the proxy's work),
    before wrk and the upstream there (as a Redis elsewhere would not wait for them)."""
    cmd = ["nice", "-n", "-10", redis, "--bind", "127.0.0.1", "--port", str(port)]
    cmd += ["--save", "", "--appendonly"]
    cmd += ["no", "--daemonize", "no", "--dir", str(tmp)]
    return Service("redis", cmd, LOAD_CPU, tmp / "redis.stderr")


def wait_redis(service: Service, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service.check_alive()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return
        time.sleep(0.05)
    raise BenchError(f"redis not answering on port {port}")


def start_fender(
    tmp: Path, port: int, up_port: int, redis_port: int | None = None
) -> tuple[Service, int]:
    """Fender, run from the snapshot of proxy/ in tmp/src, and its control port.

    Routes: /p/ plain pass-through; /all/ every policy configured, with limits too high to
    bite (so idle); /open/ an upstream on a closed port whose breaker opens at the first
    failure and stays open; /limited/ a rate limit of one request an hour; /rl-local/ and
    /rl-global/ a rate limit that never bites, local and (with a Redis) global.
    """
    control, dead = free_port(), free_port()
    fleet = f"redis: {{url: 'redis://127.0.0.1:{redis_port}/0'}}\n" if redis_port else ""
    scope = "global" if redis_port else "local"
    policy = tmp / "fender.yaml"
    policy.write_text(f"""version: 1
control: {{address: 127.0.0.1:{control}}}
drain: {{delay: 0s, timeout: 5s}}
listeners:
  - name: bench
    address: 127.0.0.1:{port}
    routes:
      - {{name: plain, upstream: up, match: {{path_prefix: /p/}}, rewrite: {{strip_prefix: /p}}}}
      - name: all
        upstream: guarded
        policy: full
        match: {{path_prefix: /all/}}
        rewrite: {{strip_prefix: /all}}
      - {{name: open, upstream: dead, match: {{path_prefix: /open/}}}}
      - {{name: limited, upstream: up, policy: limited, match: {{path_prefix: /limited/}}}}
      - name: rl-local
        upstream: up
        policy: rl-local
        match: {{path_prefix: /rl-local/}}
        rewrite: {{strip_prefix: /rl-local}}
      - name: rl-global
        upstream: up
        policy: rl-global
        match: {{path_prefix: /rl-global/}}
        rewrite: {{strip_prefix: /rl-global}}
upstreams:
  up:
    endpoints: [http://127.0.0.1:{up_port}]
  guarded:
    endpoints: [http://127.0.0.1:{up_port}]
    circuit_breaker:
      consecutive_failures: 5
      failure_rate: {{threshold: 50%, min_calls: 20, window: 30s}}
      slow_calls: {{duration: 10s, threshold: 80%}}
    bulkhead: {{max_concurrent: 1000, max_queued: 100, queue_timeout: 1s}}
    rate_limit: {{rate: 1000000/s, burst: 1000000, on_limit: queue, max_wait: 1s}}
  spare:
    endpoints: [http://127.0.0.1:{up_port}]
  dead:
    endpoints: [http://127.0.0.1:{dead}]
    circuit_breaker: {{consecutive_failures: 1, open_for: 1h, max_open_for: 1h}}
policies:
  full:
    timeouts: {{connect: 2s, per_try: 10s, first_byte: 30s, idle: 30s, total: 60s}}
    retry: {{attempts: 3, backoff: {{base: 100ms}}}}
    rate_limit: {{rate: 1000000/s, burst: 1000000, key: "header:x-tenant"}}
    fallback:
      on: [circuit_open, rate_limited, bulkhead_full, timeout, exhausted]
      chain: [{{upstream: spare}}, {{stale: {{max_age: 1m}}}}, {{static: {{status: 503}}}}]
  limited:
    rate_limit: {{rate: 1/h, burst: 1}}
  rl-local:
    rate_limit: {{rate: 1000000/s, burst: 1000000}}
  rl-global:
    rate_limit: {{rate: 1000000/s, burst: 1000000, scope: {scope}}}
{fleet}""")
    cmd = [sys.executable, "-m", "proxy", "run", "-c", str(policy)]
    return Service("fender", cmd, PROXY_CPU, tmp / "fender.stderr", cwd=tmp / "src"), control


def start_nginx_proxy(nginx: str, tmp: Path, port: int, up_port: int) -> Service:
    body = f"""upstream up {{
  server 127.0.0.1:{up_port};
  keepalive 64;
  keepalive_requests 1000000;
}}
server {{
  listen 127.0.0.1:{port} backlog=4096;
  location / {{
    proxy_pass http://up;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
  }}
}}"""
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


def sources_sha1(root: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    for path in sorted((root / "proxy").rglob("*.py")):
        digest.update(f"{path.relative_to(root)}\0".encode() + path.read_bytes())
    return digest.hexdigest()[:10]


def snapshot_fender(tmp: Path) -> str:
    """Copy proxy/ to tmp/src (it may be edited while we run); say which version it is."""
    shutil.copytree(REPO / "proxy", tmp / "src" / "proxy", ignore=shutil.ignore_patterns("*.pyc"))
    state = f"proxy/ sources sha1 {sources_sha1(tmp / 'src')}"

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    with contextlib.suppress(OSError):
        dirty = " + uncommitted changes in proxy/" if git("status", "--short", "proxy") else ""
        return f"{git('rev-parse', '--short', 'HEAD') or 'unknown'}{dirty}, {state}"
    return state


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
    args = parser.parse_args()
    wanted = {"direct", *args.targets.split(",")}
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
    redis_use: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    notes = [f"load average before the run: {load_average()}"]
    services: list[Service] = []
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
                services.append(start_redis(redis, tmp, redis_port))
                wait_redis(services[-1], redis_port)
            fender, control = start_fender(tmp, ports["fender"], ports["direct"], redis_port)
            services.append(fender)
            fender.wait_ready(f"http://127.0.0.1:{control}/readyz")
            proxies = {"fender": fender}
            if "nginx" in targets:
                proxies["nginx"] = start_nginx_proxy(nginx, tmp, ports["nginx"], ports["direct"])
                services.append(proxies["nginx"])
                proxies["nginx"].wait_ready(f"http://127.0.0.1:{ports['nginx']}/small")
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
                            after = fleet_counts(control)
                            trips, commands, fallbacks = (
                                a - b for a, b in zip(after, before, strict=True)
                            )
                            redis_use.setdefault((body, connections), []).append(
                                (trips / run.requests, commands / run.requests, fallbacks)
                            )
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
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True) if nginx else None
    meta: dict[str, object] = {
        "duration_s": duration,
        "repeats": repeats,
        "fender": fender_source,
    }
    meta |= {"nginx": version.stderr.strip() if version else "none", "python": sys.version}
    meta |= {"proxy_cpu": PROXY_CPU, "load_cpu": LOAD_CPU}
    fleet_notes(runs, targets, scenarios, redis_use, notes)
    report(runs, targets, scenarios, local_scenarios, meta, notes, args.json)
    return 0


def summarize(
    runs: dict[tuple[str, int, str], list[Run]],
    targets: list[str],
    scenarios: list[tuple[str, int]],
) -> tuple[list[dict[str, object]], list[tuple[str, ...]]]:
    """Medians per scenario and target, as JSON-able records and as table rows."""
    results: list[dict[str, object]] = []
    rows = [("scenario", "target", "rps", "p50", "p99", "rps vs direct", "CPU us/req")]
    for body, connections in scenarios:
        direct_rps = statistics.median(r.rps for r in runs[body, connections, "direct"])
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
                | {"runs": [asdict(r) for r in these]}
            )
            cpu_text = "-" if cpu is None else f"{cpu:.0f}"
            ratio = f"{rps / direct_rps:.2f}"
            scenario = f"{body} body, {connections} conn"
            rows.append((scenario, target, f"{rps:,.0f}", us(p50), us(p99), ratio, cpu_text))
    return results, rows


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
    redis_use: dict[tuple[str, int], list[tuple[float, float, float]]],
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
        trips = statistics.median(u[0] for u in use) if use else float("nan")
        commands = statistics.median(u[1] for u in use) if use else float("nan")
        fallbacks = sum(u[2] for u in use)
        notes.append(
            f"global vs local rate limit ({body} body, {connections} conn): throughput "
            f"x{rps:.3f}, CPU per request {cpu_global / cpu_local - 1:+.1%}; per admission "
            f"{commands:.3f} EVALSHA in {trips:.3f} round trips; {fallbacks:.0f} local fallbacks"
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
    json_path: Path | None,
) -> None:
    print(f"Fender {meta['fender']} | {meta['nginx']} | Python {sys.version.split()[0]}")
    print(f"wrk -t1, {meta['duration_s']:g} s per run, median of {meta['repeats']} repeats")
    print(f"CPU {PROXY_CPU}: proxy under test; CPU {LOAD_CPU}: wrk + upstream (direct runs too)")
    if "nginx" not in targets:
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
    for body, connections in scenarios if "fender-all" in targets else ():  # idle policies
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
    if json_path:
        document = {"meta": meta | {"notes": notes}, "results": results}
        json_path.write_text(json.dumps(document, indent=2) + "\n")
        log(f"wrote {json_path}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop our servers on the way out
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"FAILED: {exc}")
        sys.exit(1)
