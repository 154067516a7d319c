"""What the benchmarks start: tools, ports, servers stopped by PID, nginx, Redis, Fender.

Shared by run.py (wrk), instructions.py (callgrind) and memory.py (RSS). Everything listens
on 127.0.0.1 with ports picked by the kernel; every process is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an env proxy


class BenchError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_tool(name: str, updated: list[bool], package: str | None = None) -> str | None:
    """The tool's path, apt-installing it (or `package`) first when missing; None when that
    fails. `updated[0]` says whether `apt-get update` ran already."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found:
        return found
    log(f"{name} not found, installing it with apt-get")
    apt = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not updated[0]:
        subprocess.run(["apt-get", "update", "-qq"], env=apt, check=False)
        updated[0] = True
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package or name]
    subprocess.run(cmd, env=apt, check=False)
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 2) -> tuple[int, bytes]:
    with HTTP.open(url, timeout=timeout) as response:
        return int(response.status), bytes(response.read())


def raise_fd_limit(needed: int) -> None:
    """Lift this process's open-file limit (children inherit it) to `needed` if allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def fender_python() -> str:
    """The interpreter that runs Fender: $FENDER_PY (default: this one), as the real binary.

    Asked from the interpreter itself, so a pyenv shim (a shell script) or `python3` on PATH
    becomes the binary behind it: valgrind must run Python, not a shell. A venv's own path
    is kept (its pyvenv.cfg is found beside it)."""
    chosen = os.environ.get("FENDER_PY")
    if not chosen:
        return sys.executable
    done = subprocess.run(
        [chosen, "-c", "import sys; print(sys.executable)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode or not done.stdout.strip():
        raise BenchError(f"FENDER_PY={chosen} does not run: {done.stderr.strip()}")
    return done.stdout.strip()


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


class Service:
    """A server started by the bench, pinned to `cpu` when given, stopped by PID."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        cpu: str | None,
        stderr: Path,
        cwd: Path = REPO,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name, self.stderr = name, stderr
        pin = ["taskset", "-c", cpu] if cpu is not None else []
        with stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [*pin, *cmd],  # taskset execs: the PID is the server's
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # Ctrl-C reaches the bench only; it stops us in order
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.stderr.read_text(errors="replace")[-3000:]
            raise BenchError(f"{self.name} exited with {self.proc.returncode}; stderr:\n{tail}")

    def wait_ready(self, url: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            with contextlib.suppress(OSError):
                if http_get(url, timeout=max(2.0, timeout / 20))[0] == 200:
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} not ready at {url} after {timeout:.0f} s")
            time.sleep(0.1 if timeout <= 10 else 0.5)

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


def nginx_conf(tmp: Path, body: str, master: bool = True, connections: int = 4096) -> str:
    """An nginx.conf with everything under `tmp`, 1 worker, no access log, keep-alive kept.

    `master=False`: one process, no master (what callgrind should count)."""
    temps = "\n".join(f"{kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy"))
    temps += "".join(f"\n{kind}_temp_path {tmp / kind};" for kind in ("fastcgi", "uwsgi", "scgi"))
    user = "user root;" if os.geteuid() == 0 else ""  # workers must read the 0700 temp dir
    return f"""{user}
worker_processes 1;
{"" if master else "master_process off;"}
daemon off;
pid {tmp / "nginx.pid"};
error_log {tmp / "error.log"} warn;
events {{ worker_connections {connections}; }}
http {{
access_log off;
{temps}
default_type application/octet-stream;
keepalive_requests 1000000;
keepalive_timeout 75s;
{body}
}}
"""


def start_nginx(
    name: str,
    nginx: str,
    tmp: Path,
    body: str,
    cpu: str | None,
    master: bool = True,
    wrapper: list[str] | None = None,
) -> Service:
    """nginx from a config of its own in `tmp` (created), optionally under `wrapper`."""
    tmp.mkdir()
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_conf(tmp, body, master))
    cmd = [*(wrapper or []), nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")]
    return Service(name, cmd, cpu, tmp / "stderr.log")


def nginx_proxy_conf(port: int, up_port: int, keepalive: int = 64) -> str:
    """nginx as a reverse proxy to 127.0.0.1:up_port, with keep-alive upstream connections."""
    return f"""upstream up {{
  server 127.0.0.1:{up_port};
  keepalive {keepalive};
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


def fender_policy(
    port: int,
    control: int,
    up_port: int,
    dead_port: int,
    sse_port: int | None = None,
    redis_port: int | None = None,
) -> str:
    """The benchmark's policy file.

    Routes: /p/ plain pass-through; /all/ every policy configured (timeouts, retry, route
    rate limit, fallback chain; breaker, bulkhead and quota on its upstream), with limits
    too high to bite (so idle); /open/ an upstream on a closed port whose breaker opens at
    the first failure and stays open; /limited/ a rate limit of one request an hour; with
    `sse_port`, /sse/ plain to that upstream (the chunked one of instructions.py);
    /rl-local/ and /rl-global/ a rate limit that never bites, the replica's own bucket and,
    with `redis_port` (a `redis:` section for a Redis there), `scope: global` (without it,
    local too). These two come last, so that they add no route to match before the others.
    """
    sse_route = sse_upstream = ""
    if sse_port is not None:
        sse_route = "\n      - {name: sse, upstream: sse, match: {path_prefix: /sse/}}"
        sse_upstream = f"\n  sse:\n    endpoints: [http://127.0.0.1:{sse_port}]"
    fleet = f"redis: {{url: 'redis://127.0.0.1:{redis_port}/0'}}\n" if redis_port else ""
    scope = "global" if redis_port else "local"
    return f"""version: 1
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
      - {{name: limited, upstream: up, policy: limited, match: {{path_prefix: /limited/}}}}{sse_route}
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
    endpoints: [http://127.0.0.1:{dead_port}]
    circuit_breaker: {{consecutive_failures: 1, open_for: 1h, max_open_for: 1h}}{sse_upstream}
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
{fleet}"""


def start_redis(redis: str, tmp: Path, port: int, cpu: str | None) -> Service:
    """A redis-server on 127.0.0.1:port (no persistence, its files in `tmp`), pinned to `cpu`
    and niced ahead of what shares that CPU (as a Redis elsewhere would not wait for it)."""
    cmd = ["nice", "-n", "-10", redis, "--bind", "127.0.0.1", "--port", str(port)]
    cmd += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(tmp)]
    return Service("redis", cmd, cpu, tmp / "redis.stderr")


def wait_redis(service: Service, port: int, timeout: float = 10.0) -> None:
    """Wait until the Redis on `port` answers PING."""
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
    src: Path,
    policy: str,
    stderr: Path,
    cpu: str | None = None,
    wrapper: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> Service:
    """`python -m proxy run` from the snapshot in `src` (see snapshot_fender), with the
    FENDER_PY interpreter, optionally under `wrapper` (valgrind). stdout (the access log)
    goes to /dev/null; the policy file is written beside `stderr`."""
    path = stderr.with_suffix(".yaml")
    path.write_text(policy)
    paths = [str(src), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **(extra_env or {})}
    cmd = [*(wrapper or []), fender_python(), "-m", "proxy", "run", "-c", str(path)]
    return Service("fender", cmd, cpu, stderr, cwd=src, env=env)


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
