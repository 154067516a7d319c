"""The real Fender, in-process, on ephemeral loopback ports, for integration tests."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from proxy.app import Fender
from proxy.config.model import Config
from proxy.observe.logs import JsonLog


def config(
    upstreams: dict[str, Any],
    routes: list[dict[str, Any]] | None = None,
    **top: Any,
) -> dict[str, Any]:
    """A policy file as data: one listener with `routes` (default: everything to the first
    upstream), ephemeral ports, no drain delay."""
    first = next(iter(upstreams))
    routes = routes or [{"name": "all", "upstream": first}]
    listener = {"name": "egress", "address": "127.0.0.1:0", "routes": routes}
    listener.update(top.pop("listener", {}))
    data: dict[str, Any] = {
        "version": 1,
        "control": {"address": "127.0.0.1:0"},
        "drain": {"delay": "0s", "timeout": "5s"},
        "listeners": [listener],
        "upstreams": upstreams,
    }
    data.update(top)
    return data


class RunningProxy:
    def __init__(self, fender: Fender, log: io.BytesIO) -> None:
        self.fender = fender
        self._log = log

    @property
    def port(self) -> int:
        return self.fender.ports["egress"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.fender.ports['control']}"

    def log_lines(self) -> list[dict[str, Any]]:
        self.fender.log.flush()
        return [orjson.loads(line) for line in self._log.getvalue().splitlines()]

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample (0 when the series does not exist yet)."""
        text = self.fender.metrics.render().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0


async def wait_for(predicate: Any, seconds: float = 10.0) -> None:
    """Poll an async predicate until it holds; fail the test after `seconds`."""
    for _ in range(int(seconds / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {seconds} s")


async def start_proxy(data: dict[str, Any]) -> RunningProxy:
    log = io.BytesIO()
    fender = Fender(Config.model_validate(data), log=JsonLog(log))
    await fender.start()
    return RunningProxy(fender, log)


async def spawn_fender(path: Any, env: dict[str, str] | None = None) -> Any:
    """`python -m proxy run -c PATH` as a child process, stdout and stderr piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "run",
        "-c",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
