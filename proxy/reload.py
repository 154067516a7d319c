"""One reload, whatever triggered it (SIGHUP, POST /reload, the file watcher), and what
is said about it.

A reload either swaps the new config in whole or leaves the running one whole. Every
failure is logged (`reload_failed`), counted (`fender_config_reloads_total{result=
"failure"}`) and answered: the policy file's problems, each with file, line and key (the
control API's 422), or any other failure in one line (a taken port, a CA file gone since
it was checked, a bug: the control API's 500, in JSON too). Nothing escapes: the file
watcher and the signal handler go on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .config.model import Config, ConfigError
from .observe.logs import JsonLog
from .observe.metrics import Metrics

MAX_ERROR = 300  # characters of an error's first line


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    config_hash: str = ""
    problems: tuple[str, ...] = ()  # the policy file's: `file:line: key.path: message`
    error: str = ""  # a failure that is not the file's

    @property
    def status(self) -> int:
        """The control API's answer: 200, 422 for the file's problems, 500 for others."""
        return 200 if self.ok else 422 if self.problems else 500

    def view(self) -> dict[str, Any]:
        if self.ok:
            return {"result": "success", "config_hash": self.config_hash}
        if self.problems:
            return {"result": "failure", "problems": list(self.problems)}
        return {"result": "failure", "error": self.error}


class Reloadable(Protocol):
    config: Config
    metrics: Metrics
    log: JsonLog

    async def reload(self, config: Config) -> None: ...


def describe(exc: BaseException) -> str:
    """A failure in one line: the kind and the first line of what it says."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{type(exc).__name__}: {exc.strerror}{where}"
    text = str(exc).strip().splitlines()
    kind = type(exc).__name__
    if kind == "StartError":
        return text[0][:MAX_ERROR]
    return f"{kind}: {text[0][:MAX_ERROR]}" if text else kind


async def attempt_reload(fender: Reloadable, load: Callable[[], Config]) -> ReloadResult:
    """Load a config and swap it in; never raises."""
    try:
        config = load()
    except ConfigError as exc:
        problems = tuple(problem.render(exc.source) for problem in exc.problems)
        return _failed(fender, ReloadResult(False, problems=problems))
    except Exception as exc:
        return _failed(fender, ReloadResult(False, error=describe(exc)))
    # Whole configs compared, not hashes: the hash leaves secret values out, and a
    # rotated API key must still be swapped in.
    if config == fender.config:
        return ReloadResult(True, config.hash)
    try:
        await fender.reload(config)
    except Exception as exc:
        return _failed(fender, ReloadResult(False, error=describe(exc)))
    return ReloadResult(True, config.hash)


def _failed(fender: Reloadable, result: ReloadResult) -> ReloadResult:
    fender.metrics.count_reload("failure")
    said: dict[str, Any] = {"problems": list(result.problems)} if result.problems else {}
    if result.error:
        said["error"] = result.error
    fender.log.event("reload_failed", "error", config=fender.config.source, **said)
    return result
