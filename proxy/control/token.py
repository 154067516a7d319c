"""The control API's bearer token, read from `control.token_file` and again when it changes.

Kubernetes updates a mounted Secret the way it updates a ConfigMap (a swap of `..data`), so
a rotated token reaches Fender without a restart. The file is checked with one `stat` per
guarded request; those are rare. A file that is gone, unreadable or empty for a moment
keeps the token in force: rotation must never open the control API.
"""

from __future__ import annotations

from pathlib import Path

from ..watch import Stamp, stamp


class TokenFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: Stamp = stamp(str(path))
        self._token = path.read_text(encoding="utf-8").strip()

    def current(self) -> str:
        now = stamp(str(self.path))
        if now is not None and now != self._stamp:
            try:
                token = self.path.read_text(encoding="utf-8").strip()
            except OSError:
                return self._token
            if token:
                self._token, self._stamp = token, now
        return self._token
