"""Deadline: puts the request's time limits on the Call, from the policy's `timeouts`.

It sits outside everything that waits, so that each wait can see what is left: an
attempt is cut at `min(per_try, deadline)` by the upstream's send, a backoff or a queue
that does not fit the deadline is not started, and the server cuts a body stream at
`stream_deadline` or after `idle`.
"""

from __future__ import annotations

from ..config.policy import Timeouts
from ..http.message import INF, Call, Handler, Reply


class Deadline:
    def __init__(self, timeouts: Timeouts) -> None:
        self.total = timeouts.total
        self.first_byte = timeouts.first_byte
        self.idle = timeouts.idle
        self.per_try = timeouts.per_try
        self.connect = timeouts.connect

    async def __call__(self, call: Call, call_next: Handler) -> Reply:
        started = call.started
        if self.total is not None:
            total = call.stream_deadline = started + self.total
            first = started + self.first_byte if self.first_byte is not None else INF
            call.deadline = total if total < first else first
        elif self.first_byte is not None:
            call.deadline = started + self.first_byte
        call.idle = self.idle
        call.per_try = self.per_try
        call.connect = self.connect
        return await call_next(call)
