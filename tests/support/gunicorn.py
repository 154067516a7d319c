"""httpbin under gunicorn, a real WSGI server in a process of its own, on 127.0.0.1.

gunicorn's threaded worker keeps HTTP/1.1 connections alive (its sync worker closes
every one), so Fender's pool is exercised against a server that is not ours.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Gunicorn:
    def __init__(self, app: str = "tests.support.wsgi_upstream:app") -> None:
        self.app = app
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        # gunicorn writes here for as long as it runs; stop() closes (and so removes) it.
        self._log = tempfile.NamedTemporaryFile(prefix="fender-gunicorn-", suffix=".log")  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--no-control-socket",
                "--worker-class",
                "gthread",
                "--threads",
                "16",
                "--workers",
                "1",
                "--keep-alive",
                "5",
                "--bind",
                "127.0.0.1:0",
                self.app,
            ],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited {self.proc.returncode}:\n{self.log()}")
            if not self.port:
                found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", self.log())
                if found:
                    self.port = int(found.group(1))
            if self.port and self._answers():
                return
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"gunicorn did not answer within {timeout} s:\n{self.log()}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"GET /status/200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # quick shutdown: no keep-alive grace
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
