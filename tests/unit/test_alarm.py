"""One lazy timer per connection: moving a deadline later makes no new timer."""

from __future__ import annotations

from proxy.http.alarm import Alarm


class FakeLoop:
    """call_at recorded; time moves when the test says."""

    def __init__(self) -> None:
        self.now = 100.0
        self.handles: list[Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: object) -> Handle:
        handle = Handle(when, callback)
        self.handles.append(handle)
        return handle

    def run_until(self, when: float) -> None:
        self.now = when
        for handle in list(self.handles):
            if not handle.cancelled and handle.when <= when and not handle.ran:
                handle.ran = True
                handle.callback()  # type: ignore[operator]


class Handle:
    def __init__(self, when: float, callback: object) -> None:
        self.when, self.callback = when, callback
        self.cancelled = self.ran = False

    def cancel(self) -> None:
        self.cancelled = True


def test_later_deadlines_reuse_the_armed_timer_and_ring_once_due():
    loop, rang = FakeLoop(), []
    alarm = Alarm(loop, lambda: rang.append(loop.now))  # type: ignore[arg-type]
    alarm.set(110)
    for due in (111, 112, 113):  # one request after another, each a bit later
        alarm.set(due)
    assert len(loop.handles) == 1
    loop.run_until(110)  # the old deadline: re-armed for the current one, not rung
    assert rang == [] and len(loop.handles) == 2
    loop.run_until(113)
    assert rang == [113]


def test_an_earlier_deadline_replaces_the_timer():
    loop, rang = FakeLoop(), []
    alarm = Alarm(loop, lambda: rang.append(loop.now))  # type: ignore[arg-type]
    alarm.set(200)
    alarm.set(105)
    assert loop.handles[0].cancelled and loop.handles[1].when == 105
    loop.run_until(105)
    assert rang == [105]


def test_a_cleared_alarm_rings_into_nothing():
    loop, rang = FakeLoop(), []
    alarm = Alarm(loop, lambda: rang.append(loop.now))  # type: ignore[arg-type]
    alarm.set(110)
    alarm.clear()
    loop.run_until(120)
    assert rang == []
