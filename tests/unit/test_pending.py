"""Running a pipeline without a Task: results delivered in the same callback, asyncio
futures and sleeps still awaited as a Task would, cancellation as Task.cancel()."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.http.pending import Driven, Pending


class Run(Driven):
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False

    def done(self, result: Any, error: BaseException | None) -> None:
        self.result, self.error, self.finished = result, error, True


async def test_a_resolved_pending_resumes_the_coroutine_at_once():
    pending = Pending(asyncio.get_running_loop())
    steps: list[str] = []

    async def body() -> str:
        steps.append("waits")
        value = await pending
        steps.append("resumed")
        return value + "!"

    run = Run()
    run.drive(body())
    assert steps == ["waits"] and not run.finished
    pending.resolve("answer")  # no loop iteration between: the same callback goes on
    assert steps == ["waits", "resumed"] and run.result == "answer!"


async def test_a_failed_pending_raises_in_the_coroutine():
    pending = Pending(asyncio.get_running_loop())

    async def body() -> None:
        await pending

    run = Run()
    run.drive(body())
    pending.fail(ValueError("broken"))
    assert isinstance(run.error, ValueError)


async def test_futures_and_sleeps_are_awaited_as_in_a_task():
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()

    async def body() -> int:
        await asyncio.sleep(0)
        await asyncio.sleep(0.001)
        return await future + 1

    run = Run()
    run.drive(body())
    loop.call_later(0.01, future.set_result, 41)
    for _ in range(100):
        if run.finished:
            break
        await asyncio.sleep(0.005)
    assert run.result == 42


async def test_cancel_stops_the_coroutine_at_its_wait():
    pending = Pending(asyncio.get_running_loop())
    cleaned: list[bool] = []

    async def body() -> None:
        try:
            await pending
        finally:
            cleaned.append(True)

    run = Run()
    run.drive(body())
    run.cancel()
    assert cleaned == [True] and isinstance(run.error, asyncio.CancelledError)
    pending.resolve("late")  # nobody listens any more: nothing happens


async def test_cancel_while_waiting_on_a_future_cancels_the_future():
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    async def body() -> None:
        await future

    run = Run()
    run.drive(body())
    run.cancel()
    await asyncio.sleep(0)
    assert future.cancelled() and isinstance(run.error, asyncio.CancelledError)


async def test_a_pending_also_works_inside_an_ordinary_task():
    pending = Pending(asyncio.get_running_loop())
    task = asyncio.ensure_future(_await(pending))
    await asyncio.sleep(0)
    pending.resolve(7)
    assert await task == 7
    failed = Pending(asyncio.get_running_loop())
    task = asyncio.ensure_future(_await(failed))
    await asyncio.sleep(0)
    failed.fail(KeyError("x"))
    with pytest.raises(KeyError):
        await task


async def _await(pending: Pending) -> Any:
    return await pending


async def test_cancel_reaches_a_coroutine_whose_future_is_already_done():
    # The future's result is in, its wake-up queued: a Task would still raise there.
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str] = loop.create_future()
    went_on: list[str] = []

    async def body() -> None:
        await future
        went_on.append("called the upstream")

    run = Run()
    run.drive(body())
    future.set_result("slot")
    run.cancel()
    await asyncio.sleep(0)
    assert went_on == [] and isinstance(run.error, asyncio.CancelledError)
