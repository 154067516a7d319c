"""Reading how long an upstream asks us to wait."""

from __future__ import annotations

import email.utils

import pytest
from multidict import CIMultiDict

from proxy.retry_after import asked_wait

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": email.utils.formatdate(NOW + 7, usegmt=True)}, 7.0),
        ({"Retry-After": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"RateLimit-Reset": "12"}, 12.0),
        ({"X-RateLimit-Reset": "2.5"}, 2.5),
        ({"X-RateLimit-Reset": str(int(NOW + 40))}, 40.0),
        ({"Retry-After": "soon", "RateLimit-Reset": "4"}, 4.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-1"}, None),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00"}, None),
        ({"X-RateLimit-Reset": "nan"}, None),
        ({"Retry-After": "\u00b2"}, None),  # a superscript two: isdigit(), but not a number
        ({"Retry-After": "9" * 400}, None),  # would be infinite
        ({"X-RateLimit-Reset": "1e400"}, None),
        ({}, None),
    ],
)
def test_asked_wait(headers, wait):
    assert asked_wait(CIMultiDict(headers), NOW) == (pytest.approx(wait, abs=1) if wait else wait)
