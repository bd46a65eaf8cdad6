"""The counters that threads sharing one image's steps claim work with and wait on.

Compiled, they are atomic instructions written in LLVM's terms; plain, they
are reads and writes under a lock.  Both must never lose a count when
threads add at the same moment, and a wait must end when its counter gets
there or when a thread says stop.
"""

import concurrent.futures

import numba
import numpy as np
import pytest

from tinyprune import barrier

pytestmark = pytest.mark.inference


def _add_many(counters, times):
    for _ in range(times):
        barrier.fetch_add(counters, 0, 1)


add_many = numba.njit(nogil=True)(_add_many)


@pytest.mark.parametrize("add, times", [(add_many, 200_000), (_add_many, 5_000)])
def test_no_count_is_lost_when_threads_add_at_once(add, times):
    counters = np.zeros(3, np.int64)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        for job in [pool.submit(add, counters, times) for _ in range(3)]:
            job.result()
    assert counters[0] == 3 * times and counters[1] == 0


@numba.njit
def _compiled_fetch_add(counters, i, value):
    return barrier.fetch_add(counters, i, value)


@numba.njit
def _compiled_load(counters, i):
    return barrier.acquire_load(counters, i)


@pytest.mark.parametrize("fetch_add, load", [(_compiled_fetch_add, _compiled_load),
                                             (barrier.fetch_add, barrier.acquire_load)])
def test_fetch_add_returns_the_value_before(fetch_add, load):
    counters = np.array([5, 0, 0], np.int64)
    assert fetch_add(counters, 0, 3) == 5 and load(counters, 0) == 8


@pytest.mark.parametrize("wait_until", [barrier.wait_until, barrier._wait_until])
def test_a_wait_ends_when_the_count_gets_there_or_at_stop(wait_until):
    counters = np.array([4, 0, 0], np.int64)
    assert wait_until(counters, 0, 4)               # already there
    counters[-1] = 1
    assert not wait_until(counters, 1, 1)           # would wait forever: stop ends it


def test_a_wait_sees_a_count_made_by_another_thread_while_it_spins(monkeypatch):
    monkeypatch.setattr(barrier, "SPINS", 10)       # plain version: yields almost at once
    counters = np.zeros(3, np.int64)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(barrier.wait_until, counters, 1, 2)    # compiled, spinning
        _compiled_fetch_add(counters, 1, 1)
        assert not waiting.done()
        _compiled_fetch_add(counters, 1, 1)
        assert waiting.result(timeout=30)


def test_the_yield_function_is_found_here():
    assert barrier.can_yield and barrier._YIELD in ("sched_yield", "SwitchToThread")


@numba.njit
def _compiled_store(counters, i, value):
    barrier.store(counters, i, value)


@pytest.mark.parametrize("store, load", [(_compiled_store, _compiled_load), (barrier.store, barrier.acquire_load)])
def test_a_store_is_seen_by_the_next_load(store, load):
    counters = np.array([5, 6, 0], np.int64)
    store(counters, 1, -9)
    assert load(counters, 1) == -9 and counters[0] == 5 and counters[2] == 0


def test_a_wait_for_zero_ends_when_the_last_busy_thread_leaves():
    counters = np.array([0, 2, 0], np.int64)
    barrier.wait_for_zero(counters, 0)              # nobody busy: returns at once
    barrier._wait_for_zero(counters, 0)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(barrier.wait_for_zero, counters, 1)    # compiled, spinning
        _compiled_fetch_add(counters, 1, -1)
        assert not waiting.done()
        _compiled_fetch_add(counters, 1, -1)
        waiting.result(timeout=30)
    assert counters[1] == 0
