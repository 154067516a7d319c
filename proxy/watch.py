"""Watching the policy file: a change on disk triggers a reload.

Polls `os.stat` (which follows symlinks), so it sees an editor's save, a `mv` over the
file, and the way Kubernetes updates a mounted ConfigMap: an atomic swap of the `..data`
symlink, which changes the inode behind the unchanged path. A file caught half-written
fails validation and is simply tried again at its next change.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from .state.clock import Clock

Stamp = tuple[int, int, int, int] | None


def stamp(path: str) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None  # gone for a moment (mid-swap): not a change to act on
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


async def watch_file(
    path: str,
    interval: float,
    clock: Clock,
    on_change: Callable[[], Awaitable[object]],
    on_error: Callable[[BaseException], object] = lambda exc: None,
    seen: Stamp = None,
) -> None:
    """Run until cancelled; await `on_change()` after each change of `path` from `seen`
    (its stamp when it was loaded; default: when the watching starts). Whatever
    `on_change()` raises is handed to `on_error()`: the watching goes on."""
    seen = seen or stamp(path)
    while True:
        await clock.sleep(interval)
        now = stamp(path)
        if now is not None and now != seen:
            seen = now
            try:
                await on_change()
            except Exception as exc:
                on_error(exc)
