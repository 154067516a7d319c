"""Watching the policy file: a change on disk triggers a reload.

Polls `os.stat` (which follows symlinks), so it sees an editor's save, a `mv` over the
file, and the way Kubernetes updates a mounted ConfigMap: an atomic swap of the `..data`
symlink, which changes the inode behind the unchanged path. A file caught half-written
fails validation and is simply tried again at its next change.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from .clock import Clock

Stamp = tuple[int, int, int, int] | None


def stamp(path: str) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None  # gone for a moment (mid-swap): not a change to act on
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


async def watch_file(
    path: str, interval: float, clock: Clock, on_change: Callable[[], Awaitable[object]]
) -> None:
    """Run until cancelled; await `on_change()` after each change of `path`."""
    seen = stamp(path)
    while True:
        await clock.sleep(interval)
        now = stamp(path)
        if now is not None and now != seen:
            seen = now
            await on_change()
