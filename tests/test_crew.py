"""The helper threads that stay awake between calls (tinyprune/crew.py).

The same helpers serve a batch's tiles and a single image's steps; a
helper joins a call only while it is open, and the caller never returns
while one is inside it.  Whichever threads do the work, the output is the
same bits as on one thread.
"""

import threading

import numpy as np
import pytest

from test_fused import random, small_mobilenet
from test_fused_threads import assert_two_python_threads_get_their_own_bits, on_one_thread
from tinyprune import crew, fused
from tinyprune import fused_program as program
from tinyprune import fused_share as sharing

pytestmark = [pytest.mark.inference, pytest.mark.integration]


@pytest.mark.parametrize("await_call", [crew.await_call, crew._await_call])
@pytest.mark.parametrize("call, seen, leave, expected", [
    (3, 0, 0, 3),           # open and new: joined
    (3, 2, 0, 3),
    (3, 3, 0, 0),           # served already: idle until the turns run out
    (-3, 0, 0, 0),          # closed
    (0, 0, 0, 0),           # none yet
    (3, 0, 1, 0),           # sent away
])
@pytest.mark.parametrize("leaving", [False, True])
def test_a_helper_joins_only_an_open_call_it_has_not_served(await_call, call, seen, leave, expected, leaving):
    bell = np.zeros(4, np.int64)
    bell[crew.CALL], bell[crew.LEAVE], bell[crew.BUSY] = call, leave, 1 if leaving else 0
    assert await_call(bell, seen, 50, leaving) == expected
    assert bell[crew.BUSY] == (1 if expected else 0)       # joined means counted as busy (and left first)


@pytest.mark.parametrize("keep_serving", [crew.keep_serving, crew._keep_serving])
@pytest.mark.parametrize("call, seen, leave, expected", [
    (4, 3, 0, True),        # rung as the helper stopped serving: it serves on
    (3, 3, 0, False),       # served already
    (-4, 3, 0, False),      # closed
    (4, 3, 1, False),       # sent away
])
def test_a_helper_that_stops_serving_looks_once_more_for_a_call(keep_serving, call, seen, leave, expected):
    bell = np.zeros(4, np.int64)
    bell[crew.CALL], bell[crew.LEAVE], bell[crew.SERVING] = call, leave, 1
    assert keep_serving(bell, seen) == expected
    assert bell[crew.SERVING] == (1 if expected else 0)


@pytest.mark.parametrize("open_call, close_call", [(crew.open_call, crew.close_call),
                                                   (crew._open_call, crew._close_call)])
def test_opening_says_how_many_serve_and_closing_negates_the_call(open_call, close_call):
    bell = np.zeros(4, np.int64)
    bell[crew.SERVING] = 2
    assert open_call(bell, 7) == 2 and bell[crew.CALL] == 7
    close_call(bell, 7)                                    # BUSY is 0: returns at once
    assert bell[crew.CALL] == -7


def until_two_threads(seen, lock):
    """A work function that opens the call (on the caller), notes its thread and returns once two
    threads have been in (or after 5 s)."""
    def work(bell, call):
        if call > 0:
            crew.open_call(bell, call)
        with lock:
            seen.add(threading.get_ident())
        for _ in range(5000):
            with lock:
                if len(seen) >= 2:
                    return
            threading.Event().wait(0.001)
    return work


def test_share_out_runs_the_work_on_the_caller_and_a_helper_at_once():
    seen, lock = set(), threading.Lock()
    crew.share_out(until_two_threads(seen, lock), 2)
    assert threading.get_ident() in seen and len(seen) == 2
    job = crew.helpers.job
    assert isinstance(job, crew.Batches) and job.bell[crew.CALL] == -job.calls
    assert job.bell[crew.BUSY] == 0 and job.work is None       # nobody inside, nothing kept


def test_an_error_in_a_helper_reaches_the_caller_and_the_helpers_serve_on():
    caller, seen, lock = threading.get_ident(), set(), threading.Lock()
    wait = until_two_threads(seen, lock)

    def work(bell, call):
        wait(bell, call)
        if threading.get_ident() != caller:
            raise ValueError("the helper's share failed")

    with pytest.raises(ValueError, match="helper's share"):
        crew.share_out(work, 2)
    seen.clear()
    crew.share_out(until_two_threads(seen, lock), 2)            # the next call is served as before
    assert len(seen) == 2


def test_an_error_on_the_caller_closes_the_call_and_is_not_raised_again():
    seen, lock = set(), threading.Lock()
    wait = until_two_threads(seen, lock)

    def work(bell, call):
        wait(bell, call)
        raise KeyError("every thread")                 # the helper's error is kept, then dropped

    with pytest.raises(KeyError):
        crew.share_out(work, 2)
    job = crew.helpers.job
    assert job.bell[crew.CALL] == -job.calls and job.bell[crew.BUSY] == 0
    assert not crew.helpers.lock.locked()
    done = []
    crew.share_out(lambda bell, call: done.append(1), 2)    # raises nothing from the call before
    assert done


def test_a_call_while_the_crew_is_busy_runs_on_the_calling_thread_alone():
    threads = []
    with crew.helpers.lock:                                     # another call holds the crew
        crew.share_out(lambda bell, call: threads.append((threading.get_ident(), call)), 2)
    assert threads == [(threading.get_ident(), 0)]              # and opens no call


@pytest.mark.parametrize("call", [0, 5])
def test_run_tiles_read_as_python_claims_each_tile_once_and_opens_the_call(call, monkeypatch):
    ran = []
    monkeypatch.setattr(program, "run_tile", lambda x, n0, T, *rest: ran.append((n0, T)))
    bell, claimed = np.zeros(4, np.int64), np.array([1])
    program._run_tiles(bell, call, claimed, None, np.array([0, 2, 3, 7]), 1, 0, None, None, None,
                       None, None, None, None, None)
    assert ran == [(2, 1), (3, 4)] and claimed[0] == 4 and bell[crew.CALL] == call


@pytest.mark.parametrize("call", [0, 5])
def test_a_thread_runs_tiles_until_none_is_left_and_the_caller_opens_the_call(call):
    run_tiles = program.run_tiles
    model = small_mobilenet("relu").eval()
    plan = fused.build_plan(model)
    x = random((5, 3, 32, 32), 79)
    shapes = program.step_shapes(plan.steps, plan.steps[0, program.C_IN], 32, 32)
    expected = np.empty((5, 2, 1, 1))
    program.run_plan(x, plan.steps, plan.params, 1, 1, expected)
    starts = np.array([0, 2, 3, 5])                             # tiles of 2, 1 and 2 images
    size = program.scratch_size(shapes, 0, len(plan.steps), 2)
    buffers = [np.empty(size) for _ in range(2)]
    bell, claimed, out = np.zeros(4, np.int64), np.array([1]), np.full((5, 2, 1, 1), np.nan)
    run_tiles(bell, call, claimed, x, starts, 1, 0, plan.steps, plan.params, shapes,
              np.empty(1), np.empty(1), *buffers, out)
    np.testing.assert_array_equal(out[2:], expected[2:])       # tile 0 was claimed already
    assert np.all(np.isnan(out[:2]))
    assert claimed[0] == 4 and bell[crew.CALL] == call          # one claim too many: the last says stop


def test_tiles_claimed_by_any_thread_give_the_same_bits():
    model = small_mobilenet("slopehtanh").eval()
    plan = fused.build_plan(model)
    x = random((9, 3, 32, 32), 80)
    alone, shared = np.empty((9, 2, 1, 1)), np.empty((9, 2, 1, 1))
    program.run_plan(x, plan.steps, plan.params, 1, 1, alone)
    for _ in range(5):
        program.run_plan(x, plan.steps, plan.params, 1, 2, shared)      # nine tiles, two threads
        np.testing.assert_array_equal(shared, alone)


def test_batches_and_single_images_take_turns_with_the_same_helpers():
    model = small_mobilenet("relu").eval()
    plan = fused.build_plan(model)
    batch, image = random((4, 3, 32, 32), 81), random((1, 3, 32, 32), 82)
    shapes = program.step_shapes(plan.steps, plan.steps[0, program.C_IN], 32, 32)
    expected_batch, expected_image = np.empty((4, 2, 1, 1)), np.empty((1, 2, 1, 1))
    program.run_plan(batch, plan.steps, plan.params, 1, 1, expected_batch)
    program.run_plan(image, plan.steps, plan.params, 1, 1, expected_image)
    before = len(crew.helpers.threads)
    for _ in range(4):
        out = np.empty((4, 2, 1, 1))
        program.run_plan(batch, plan.steps, plan.params, 1, 2, out)
        np.testing.assert_array_equal(out, expected_batch)
        assert isinstance(crew.helpers.job, crew.Batches)
        out = np.empty((1, 2, 1, 1))
        sharing.run_shared(image, plan.steps, plan.params, shapes, out, 2)
        np.testing.assert_array_equal(out, expected_image)
        assert isinstance(crew.helpers.job, sharing._Job)
    assert len(crew.helpers.threads) == max(before, 1)          # the same helper did both kinds of work


def test_batch_calls_from_two_python_threads_at_once_give_the_right_bits():
    model = small_mobilenet("hardtanh").eval()
    plan = fused.build_plan(model)
    batches = [random((3, 3, 32, 32), 83 + k) for k in range(4)]
    expected = [on_one_thread(plan, x) for x in batches]
    assert_two_python_threads_get_their_own_bits(
        lambda x, out: program.run_plan(x, plan.steps, plan.params, 1, 2, out), batches, expected, calls=30)


def test_the_next_call_is_numbered_and_wakes_the_helpers_only_if_some_sleep():
    class Job:
        helpers, calls, bell = 2, 4, np.zeros(4, np.int64)

    crew_of_none, job = crew.Crew(), Job()
    job.bell[crew.SERVING] = 2                                 # both awake: nobody to wake
    assert crew_of_none.next_call(job) == 5 and job.calls == 5
    assert not crew_of_none.wake.is_set()
    job.bell[crew.SERVING] = 1                                 # one asleep
    assert crew_of_none.next_call(job) == 6 and crew_of_none.wake.is_set()
