"""GET /: the status page, one self-contained file (control/page.html) read from the package.

Nothing comes from elsewhere: its CSS and JavaScript are inline, allowed by their hashes
in a Content-Security-Policy that lets the page talk to this port only, so neither an
injected script nor a request to another host can run. The page holds no state of its
own: every 2 seconds it reads GET /status, sending the token as a bearer header when
Fender has one. The page is served without the token (it has nothing to hide); it is
told whether one is needed, and asks for it once, keeping it in sessionStorage.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from aiohttp import web

_TEXT = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")


def _hash(pattern: str) -> str:
    found = re.search(pattern, _TEXT, re.S)
    assert found is not None, pattern
    digest = hashlib.sha256(found.group(1).encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


_POLICY = "; ".join(
    (
        "default-src 'none'",
        f"script-src {_hash(r'<script>(.*?)</script>')}",
        f"style-src {_hash(r'<style>(.*?)</style>')}",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
_PAGES = {
    needed: _TEXT.replace("{{TOKEN}}", "required" if needed else "none").encode()
    for needed in (True, False)
}


def page(token_needed: bool) -> web.Response:
    response = web.Response(body=_PAGES[token_needed], content_type="text/html", charset="utf-8")
    response.headers.update(
        {
            "content-security-policy": _POLICY,
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "cache-control": "no-store",
            "x-frame-options": "DENY",
        }
    )
    return response
