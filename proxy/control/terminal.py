"""`fender status`: a running Fender's GET /status as tables in the terminal.

Routes, upstreams, faults and overrides, the sections other parts add (queues), the last
events. With `--watch` the screen is redrawn in place every interval until Ctrl-C. When
stdout is not a terminal the same tables come as plain text (no colour, no redraw: one
block per look), for a pipe or a log.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from .tables import render


class StatusError(Exception):
    """What keeps `fender status` from showing anything, in one line."""


def fetch(control: str, token: str | None, timeout: float = 5.0) -> dict[str, Any]:
    url = control.rstrip("/") + "/status"
    headers = {"accept": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        ) as r:
            data: dict[str, Any] = orjson.loads(r.read())
            return data
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise StatusError(
                f"{url} wants the control token: give --token-file"
                if not token
                else f"{url} refused the token"
            ) from None
        raise StatusError(f"{url} answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusError(f"cannot reach {url}: {reason}") from None


def read_token(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise StatusError(f"cannot read the token file {path}: {exc.strerror}") from None


def run_status(control: str, token_file: str | None, *, watch: bool, interval: float) -> int:
    tty = sys.stdout.isatty()
    try:
        token = read_token(token_file or os.environ.get("FENDER_TOKEN_FILE"))
    except StatusError as exc:
        print(f"fender status: {exc}", file=sys.stderr)
        return 1
    if not watch:
        try:
            sys.stdout.write(render(fetch(control, token), _width(tty), colour=tty))
        except StatusError as exc:
            print(f"fender status: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        while True:
            try:
                text = render(fetch(control, token), _width(tty), colour=tty)
            except StatusError as exc:
                text = f"fender status: {exc} (trying again every {interval:g}s)\n"
            if tty:  # home, then clear to the end: redrawn in place
                sys.stdout.write("\x1b[H\x1b[J" + text)
            else:
                sys.stdout.write(text + "\n")
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0


def _width(tty: bool) -> int:
    """A terminal's columns; no limit for a pipe, where nothing should be cut."""
    return max(60, shutil.get_terminal_size((120, 40)).columns) if tty else 1 << 16
