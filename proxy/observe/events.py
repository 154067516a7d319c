"""The last events an operator looks at first: circuit transitions, reloads, degradation
changes, endpoints going out and back, start and drain.

A bounded ring (50) fed by the log (`JsonLog.tap`), so that every place that already logs
such an event shows it in GET /status, the status page and `fender status`, whatever the
log level. Each entry has a one-line `text` made here, the same on every screen.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from ..state.clock import Clock

KEPT = 50


def _circuit(f: Mapping[str, Any]) -> str:
    return f"circuit of {f.get('upstream')}: {f.get('was')} -> {f.get('to')} ({f.get('why')})"


def _degradation(f: Mapping[str, Any]) -> str:
    return f"degradation: {f.get('was')} -> {f.get('to')} ({f.get('why')})"


def _reload_failed(f: Mapping[str, Any]) -> str:
    problems = f.get("problems") or []
    said = f"{len(problems)} problem(s), first: {problems[0]}" if problems else f.get("error")
    return f"reload failed, the running policy kept: {said}"


def _endpoint(what: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda f: f"endpoint {f.get('endpoint')} of {f.get('upstream')} {what}"


TEXTS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "circuit": _circuit,
    "degradation": _degradation,
    "reloaded": lambda f: f"policy reloaded (hash {f.get('config_hash')})",
    "reload_failed": _reload_failed,
    "endpoint_ejected": _endpoint("ejected (outlier)"),
    "endpoint_unhealthy": _endpoint("failed its health checks"),
    "endpoint_healthy": _endpoint("healthy again"),
    "started": lambda f: f"started (hash {f.get('config_hash')})",
    "draining": lambda f: "draining",
}


class EventRing:
    def __init__(self, clock: Clock, kept: int = KEPT) -> None:
        self.clock = clock
        self.entries: deque[dict[str, Any]] = deque(maxlen=kept)

    def offer(self, event: str, level: str, fields: Mapping[str, Any]) -> None:
        """A log event: kept when it is one of TEXTS's."""
        text = TEXTS.get(event)
        if text is not None:
            self.entries.append(
                {"time": self.clock.wall(), "event": event, "level": level, "text": text(fields)}
            )

    def view(self) -> list[dict[str, Any]]:
        """Newest first."""
        return list(reversed(self.entries))
