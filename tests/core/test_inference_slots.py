"""Bounded analyses: never more than the slots at once, first come first served, waiting callers told their place."""

import threading
import time

import pytest

from core.runtime import InferenceSlots


def test_never_more_than_count_at_once_and_in_arrival_order():
    slots = InferenceSlots(2)
    lock, running, peak, order = threading.Lock(), [0], [0], []

    def analyse(name):
        with slots.slot():
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                order.append(name)
            time.sleep(0.05)
            with lock:
                running[0] -= 1

    threads = []
    for index in range(8):
        threads.append(threading.Thread(target=analyse, args=(index,)))
        threads[-1].start()
        time.sleep(0.01)  # arrive one after the other
    for thread in threads:
        thread.join(10)
    assert peak[0] == 2 and sorted(order) == list(range(8))
    assert order == list(range(8))  # first come, first served
    assert slots.status() == (0, 0)


def test_a_waiting_caller_hears_how_many_are_ahead_and_can_give_up():
    slots = InferenceSlots(1)
    release, started = threading.Event(), threading.Event()

    def holder():
        with slots.slot():
            started.set()
            release.wait(5)

    first = threading.Thread(target=holder)
    first.start()
    started.wait(5)
    heard = []

    class GaveUp(Exception):
        pass

    def impatient(ahead):
        heard.append(ahead)
        raise GaveUp  # e.g. the reviewer left the page while waiting

    with pytest.raises(GaveUp):
        with slots.slot(on_wait=impatient):
            pass
    assert heard == [1] and slots.status() == (1, 0)  # the one that gave up left the queue
    release.set()
    first.join(5)
    with slots.slot():  # and the slot is free again
        assert slots.status() == (1, 0)


def test_at_least_one_slot():
    with pytest.raises(ValueError):
        InferenceSlots(0)
