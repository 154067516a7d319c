"""The order queued messages go in: fair turns between keys, FIFO within a key."""

from __future__ import annotations

from proxy.delivery.fair import FairQueue

NOW = 1000.0


def queue_of(*keys: str) -> FairQueue:
    """Messages 1, 2, 3, ... with these keys, all due now."""
    fair = FairQueue()
    for seq, key in enumerate(keys, start=1):
        fair.add(seq, key, NOW, NOW, NOW)
    return fair


def drain(fair: FairQueue, now: float = NOW) -> list[int]:
    order = []
    while taken := fair.take(now, 1):
        order += taken
        fair.done(taken[0])
    return order


def test_one_key_is_first_in_first_out() -> None:
    assert drain(queue_of("", "", "", "")) == [1, 2, 3, 4]


def test_keys_take_turns_and_each_keeps_its_order() -> None:
    fair = queue_of("a", "a", "a", "b", "b", "c")
    assert drain(fair) == [1, 4, 6, 2, 5, 3]


def test_a_new_key_waits_one_delivery_behind_a_backlog_of_a_thousand() -> None:
    fair = queue_of(*["a"] * 1000)
    assert fair.take(NOW, 1) == [1]  # in flight when the other tenant's message comes
    fair.add(1001, "b", NOW, NOW, NOW)
    assert fair.take(NOW, 1) == [1001]
    assert fair.take(NOW, 1) == [2]


def test_a_newcomer_goes_after_keys_that_waited_longer() -> None:
    fair = queue_of("a", "a", "b", "b", "c", "c")
    assert fair.take(NOW, 1) == [1]  # a served; b and c wait
    fair.add(7, "d", NOW, NOW, NOW)
    assert drain(fair) == [3, 5, 7, 2, 4, 6]


def test_a_message_waiting_for_its_retry_lets_later_ones_go_then_goes_first() -> None:
    fair = queue_of("a", "a", "a")
    assert fair.take(NOW, 1) == [1]
    fair.back(1, NOW + 10, NOW)  # failed: again in 10 s
    assert fair.next_due() == NOW + 10
    assert fair.take(NOW, 1) == [2]
    fair.done(2)
    assert fair.take(NOW + 10, 2) == [1, 3]


def test_several_in_flight_at_once_and_the_counts() -> None:
    fair = queue_of("a", "b", "c")
    assert len(fair) == 3
    assert fair.take(NOW, 2) == [1, 2]
    assert fair.in_flight == 2 and len(fair) == 3
    fair.done(1)
    fair.back(2, NOW, NOW)
    assert fair.in_flight == 0 and len(fair) == 2
    assert sorted(fair.take(NOW, 5)) == [2, 3]


def test_nothing_is_taken_before_it_is_due() -> None:
    fair = FairQueue()
    fair.add(1, "", NOW + 5, NOW, NOW)
    assert fair.take(NOW, 10) == [] and not fair.ready
    assert fair.next_due() == NOW + 5
    assert fair.take(NOW + 5, 10) == [1]


def test_the_oldest_message_counts_from_its_since() -> None:
    fair = FairQueue()
    fair.add(1, "", NOW, NOW - 30, NOW)
    fair.add(2, "", NOW, NOW - 10, NOW)
    assert fair.oldest() == NOW - 30
    fair.take(NOW, 1)
    assert fair.oldest() == NOW - 30  # in flight still counts
    fair.done(1)
    assert fair.oldest() == NOW - 10
    fair.done(2)  # settled while it waited in line (a dead letter deleted, say)
    assert fair.oldest() is None and len(fair) == 0 and fair.take(NOW, 1) == []
