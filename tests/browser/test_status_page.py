"""The status page (GET / on the control port) in a real browser: headless Chromium
against a running Fender process, its upstream a small HTTP server that an outage can
be switched on in. Screenshots go to .artifacts/browser/ (and the outage's to
/tmp/fender-status-outage.png, for the issue's closing note)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.browser import browser, console_errors, screenshot
from tests.support.tools import ROOT

OUTAGE_SHOT = Path("/tmp/fender-status-outage.png")
TOKEN = "s3cret-token-for-the-page"


class Upstream:
    """An HTTP server on a free port that answers 200, or 503 while `down`."""

    def __init__(self) -> None:
        self.down = False
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = 503 if upstream.down else 200
                body = b'{"ok": true}' if status == 200 else b"unavailable"
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FenderProcess:
    """`python -m proxy run` on ephemeral ports, read from its `started` line."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "run", "-c", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = json.loads(self.proc.stdout.readline() or b'{"event": "exited"}')
            if line["event"] in ("started", "start_failed", "exited"):
                break
        assert line["event"] == "started", line
        self.ports: dict[str, int] = line["ports"]
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:  # its log: read so that it never blocks on a full pipe
            pass

    @property
    def control(self) -> str:
        return f"http://127.0.0.1:{self.ports['control']}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['egress']}"

    def status(self, token: str | None = None) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"{self.control}/status", headers=headers)
        with urllib.request.urlopen(request, timeout=5) as answer:
            data: dict[str, Any] = json.loads(answer.read())
            return data

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


def policy(upstream: str, payments: str, tmp: Path, token: bool = False) -> Path:
    data: dict[str, Any] = {
        "version": 1,
        "control": {"address": "127.0.0.1:0"},
        "drain": {"delay": "0s", "timeout": "2s"},
        "log": {"access": False},
        "listeners": [
            {
                "name": "egress",
                "address": "127.0.0.1:0",
                "routes": [
                    {
                        "name": "chat",
                        "match": {"path_prefix": "/chat/"},
                        "upstream": "llm",
                        "policy": "llm",
                        "slo": {
                            "availability": "99.9%",
                            "latency": {"threshold": "250ms", "target": "95%"},
                        },
                    },
                    {
                        "name": "pay",
                        "match": {"path_prefix": "/pay/"},
                        "upstream": "payments",
                        "slo": {"availability": "99.95%"},
                    },
                ],
            }
        ],
        "upstreams": {
            "llm": {
                "endpoints": [upstream],
                "priority": "high",
                "circuit_breaker": {"consecutive_failures": 3, "open_for": "60s"},
                "bulkhead": {"max_concurrent": 16, "max_queued": 8},
            },
            "payments": {"endpoints": [payments], "rate_limit": {"rate": "100/s"}},
        },
        "policies": {
            "llm": {
                "retry": {"attempts": 2, "backoff": {"base": "10ms"}},
                "fallback": {
                    "on": ["circuit_open"],
                    "chain": [{"static": {"status": 503, "body": '{"error": "later"}'}}],
                },
            }
        },
    }
    if token:
        (tmp / "token").write_text(TOKEN + "\n")
        data["control"]["token_file"] = str(tmp / "token")
    path = tmp / "fender.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Traffic:
    """A steady trickle of requests on both routes, so that the page has figures."""

    def __init__(self, fender: FenderProcess) -> None:
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(fender.url,), daemon=True)
        self.thread.start()

    def _run(self, url: str) -> None:
        while not self.stopped.wait(0.05):
            get(f"{url}/chat/complete")
            get(f"{url}/pay/charge")

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def payments() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def fender(
    upstream: Upstream, payments: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FenderProcess]:
    process = FenderProcess(policy(upstream.url, payments.url, tmp_path_factory.mktemp("open")))
    traffic = Traffic(process)
    yield process
    traffic.stop()
    process.stop()


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with browser() as chromium:
        yield chromium


def wait_for(driver: Any, seconds: float, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(condition)


def circuit(driver: Any, upstream: str) -> str | None:
    cells = driver.find_elements("css selector", f'[data-upstream="{upstream}"] [data-circuit]')
    return cells[0].get_attribute("data-circuit") if cells else None


def test_the_page_loads_with_no_console_error_and_shows_the_state(driver, fender):
    driver.get(f"{fender.control}/")
    wait_for(
        driver, 10, lambda d: d.find_element("id", "banner").get_attribute("data-level") == "full"
    )
    assert driver.find_elements("css selector", '[data-route="chat"]')
    assert driver.find_elements("css selector", '[data-route="pay"] [data-slo="availability"]')
    assert circuit(driver, "llm") == "closed"
    events = driver.find_element("id", "events").text
    assert "started" in events
    assert console_errors(driver) == []
    screenshot(driver, "healthy")


def test_an_open_circuit_shows_within_3_seconds_of_opening(driver, fender, upstream):
    driver.get(f"{fender.control}/")
    wait_for(driver, 10, lambda d: circuit(d, "llm") == "closed")
    fault = {"route": "pay", "delay": "20ms", "percentage": "10%", "ttl": "10m"}
    request = urllib.request.Request(
        f"{fender.control}/faults", data=json.dumps(fault).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 201
    upstream.down = True
    for _ in range(20):  # the trickle and these: 3 failures in a row open it
        get(f"{fender.url}/chat/complete")
        if fender.status()["upstreams"]["llm"]["breaker"]["state"] == "open":
            break
    opened = time.monotonic()
    assert fender.status()["upstreams"]["llm"]["breaker"]["state"] == "open"
    wait_for(driver, 3, lambda d: circuit(d, "llm") == "open")
    shown = time.monotonic() - opened
    wait_for(
        driver, 5, lambda d: d.find_element("id", "banner").get_attribute("data-level") == "limited"
    )
    text = driver.find_element("css selector", '[data-upstream="llm"]').text
    assert "left open" in text
    assert "circuit of llm: closed -> open" in driver.find_element("id", "events").text
    assert "delay 20ms on 10%" in driver.find_element("id", "overrides").text
    assert console_errors(driver) == []
    path = screenshot(driver, "outage")
    shutil.copy(path, OUTAGE_SHOT)
    print(f"open circuit shown {shown:.2f}s after it opened")


def test_the_page_asks_for_the_token_once_and_keeps_it_for_the_tab(
    driver, upstream, payments, tmp_path_factory
):
    tmp = tmp_path_factory.mktemp("token")
    guarded = FenderProcess(policy(upstream.url, payments.url, tmp, token=True))
    try:
        driver.get(f"{guarded.control}/")
        wait_for(driver, 5, lambda d: d.find_element("id", "ask").is_displayed())
        assert console_errors(driver) == []  # told it needs a token: no refused request
        screenshot(driver, "token-asked")
        field = driver.find_element("id", "token")
        field.send_keys("not-the-token")
        driver.find_element("css selector", "#token-form button").click()
        wait_for(driver, 5, lambda d: "refused" in d.find_element("id", "why").text)
        driver.find_element("id", "token").send_keys(TOKEN)
        driver.find_element("css selector", "#token-form button").click()
        wait_for(driver, 5, lambda d: circuit(d, "llm") is not None)
        assert not driver.find_element("id", "ask").is_displayed()
        assert driver.execute_script("return sessionStorage.getItem('fender-token')") == TOKEN
        assert TOKEN not in driver.current_url
        driver.refresh()  # the same tab: asked once, not again
        wait_for(driver, 5, lambda d: circuit(d, "llm") is not None)
        assert not driver.find_element("id", "ask").is_displayed()
        errors = console_errors(driver)
        assert all("401" in e["message"] for e in errors), errors  # only the wrong token's
    finally:
        guarded.stop()
