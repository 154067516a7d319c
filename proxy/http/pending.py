"""A result that a connection callback will deliver, and the runner that awaits it cheaply.

A request's pipeline is a chain of coroutines (`async def __call__(call, call_next)`).
Running it as an asyncio Task costs a Task, and every wait on the upstream a Future whose
callbacks go through the loop: about a third of a proxied request's instructions. `Driven`
drives the coroutine itself instead: it starts at once, and when it waits on a `Pending`
the connection that resolves it resumes the coroutine directly, within the same callback.
Anything else a policy awaits (a sleep, a queue's future, a Task) works as it would in a
Task. `Pending` also behaves as a Future when awaited from an ordinary Task.

One rule keeps this safe: `resolve()` and `fail()` run the rest of the request right
away, so a connection calls them only once its own state is settled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from typing import Any


class Pending:
    # Class-level defaults: one is made per attempt, and only its loop is set then.
    _asyncio_future_blocking = False
    _driver: Driven | None = None
    _callback: Callable[[Any], object] | None = None
    _state = 0  # 0 waiting, 1 resolved, 2 failed
    _value: Any = None
    _error: BaseException | None = None

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def __await__(self) -> Generator[Any, None, Any]:
        if self._state == 0:
            self._asyncio_future_blocking = True
            yield self
        if self._error is not None:
            raise self._error
        return self._value

    def _done(self) -> bool:
        return self._state != 0

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    def resolve(self, value: Any) -> None:
        """Deliver the result; the waiting request continues now."""
        if self._state == 0:
            self._state, self._value = 1, value
            driver = self._driver
            if driver is not None:  # the common case, inlined from _wake()
                self._driver = None
                driver.step()
            else:
                self._wake()

    def fail(self, error: BaseException) -> None:
        if self._state == 0:
            self._state, self._error = 2, error
            self._wake()

    def _wake(self) -> None:
        driver, self._driver = self._driver, None
        if driver is not None:
            driver.step()
            return
        callback, self._callback = self._callback, None
        if callback is not None:  # an asyncio Task waits: its wake-up goes through the loop
            self._loop.call_soon(callback, self)

    # What an asyncio Task needs of a Future it waits on.
    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def add_done_callback(self, callback: Callable[[Any], object], *, context: Any = None) -> None:
        if self._done():
            self._loop.call_soon(callback, self)
        else:
            self._callback = callback

    def remove_done_callback(self, callback: Callable[[Any], object]) -> int:
        if self._callback is callback:
            self._callback = None
            return 1
        return 0

    def done(self) -> bool:
        return self._done()

    def cancelled(self) -> bool:
        return isinstance(self._error, asyncio.CancelledError)

    def cancel(self, msg: Any = None) -> bool:
        if self._done():
            return False
        self.fail(asyncio.CancelledError())
        return True


class Driven:
    """Runs one coroutine to its end without a Task; `done(result, error)` is called once.

    A base class rather than an object of its own: the request it runs for drives it
    (exchange.py), so that running a pipeline costs no allocation but the coroutine's.
    """

    _coro: Coroutine[Any, Any, Any] | None = None
    _waiting: Pending | asyncio.Future[Any] | None = None
    _cancel = 0  # 1: a cancellation is due at the coroutine's next wait; 2: delivered
    loop: asyncio.AbstractEventLoop

    def drive(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self.step()

    def done(self, result: Any, error: BaseException | None) -> None:
        raise NotImplementedError

    def step(self, error: BaseException | None = None) -> None:
        self._waiting = None
        if self._cancel == 1 and error is None:  # a cancellation is due: delivered now
            self._cancel = 2
            error = asyncio.CancelledError()
        coro = self._coro
        assert coro is not None
        try:
            yielded = coro.send(None) if error is None else coro.throw(error)
        except StopIteration as stop:
            self._coro = None
            self.done(stop.value, None)
            return
        except BaseException as exc:  # the pipeline's own failure, or a cancellation
            self._coro = None
            self.done(None, exc)
            return
        if type(yielded) is Pending:
            yielded._asyncio_future_blocking = False
            if yielded._done():
                self.loop.call_soon(self.step)
                return
            yielded._driver = self
            self._waiting = yielded
        elif getattr(yielded, "_asyncio_future_blocking", None):
            yielded._asyncio_future_blocking = False
            self._waiting = yielded
            yielded.add_done_callback(self._woken)
        else:  # a bare yield (asyncio.sleep(0)), or something no Task would accept
            bad = None if yielded is None else RuntimeError(f"the pipeline yielded {yielded!r}")
            self.loop.call_soon(self.step, bad)
            return
        if self._cancel == 1:  # cancelled while it ran: stopped at the wait it just began
            self._cancel = 0
            self.cancel()

    def _woken(self, _: object) -> None:
        self.step()

    @property
    def running(self) -> bool:
        return self._coro is not None

    def cancel(self) -> None:
        """Stop the coroutine at its current wait, as Task.cancel() would."""
        if self._cancel == 2 or self._coro is None:
            return
        waiting = self._waiting
        if waiting is None:
            self._cancel = 1  # running now, or its wake-up is queued: at its next step
            return
        if type(waiting) is Pending:
            self._cancel = 2
            waiting._driver = None
            self.step(asyncio.CancelledError())
        elif waiting.cancel():  # its callback resumes the coroutine, which then raises
            self._cancel = 2
        else:  # done already, its wake-up queued: the cancellation goes with that step
            self._cancel = 1
