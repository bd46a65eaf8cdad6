"""The fast path's threads: tiles shared out among them, and the steps of a single image.

A batch is cut into tiles, in one or two levels, that threads take turns
at; a single image has each step cut into parts that threads claim
(tinyprune/barrier.py).  However the work is shared out, the output must be
the same -- to the bit between ways of sharing, to 1e-10 against the
plain layers in float64.
"""

import concurrent.futures

import numba
import numpy as np
import pytest

from test_fused import plain, random, small_mobilenet
from tinyprune import MobileNet, fused
from tinyprune import fused_program as program
from tinyprune import crew
from tinyprune import fused_share as sharing

pytestmark = [pytest.mark.inference, pytest.mark.integration]


def both_share(name):
    """A compiled function of fused_share.py and its plain reading."""
    return [getattr(sharing, name), getattr(sharing, "_" + name)]


@pytest.mark.parametrize("tile, workers", [(1, 2), (2, 2), (2, 3), (8, 2), (8, 1)])
def test_any_tiles_and_threads_give_the_same_output(tile, workers):
    model = MobileNet("slopehtanh", 0.125, fcsize=8, nclasses=3, seed=16, dtype=np.float64).eval()
    plan = fused.build_plan(model)
    x = random((5, 3, 16, 16), 17)
    out = np.empty((5, 3, 1, 1))
    program.run_plan(x, plan.steps, plan.params, tile, workers, out)
    np.testing.assert_allclose(out.reshape(5, 3), plain(model, x), rtol=1e-10)


@pytest.mark.parametrize("tiles", [(3, 1, 4), (7, 2, 3), (1, 1, 8)])
def test_two_levels_of_tiles_give_the_same_output(tiles):
    model = MobileNet("hardtanh", 0.125, fcsize=8, nclasses=3, seed=16, dtype=np.float64).eval()
    plan = fused.build_plan(model)
    x = random((7, 3, 16, 16), 61)
    out = np.empty((7, 3, 1, 1))
    program.run_plan(x, plan.steps, plan.params, tiles, 2, out)
    np.testing.assert_allclose(out.reshape(7, 3), plain(model, x), rtol=1e-10)


def one_image_case(seed):
    """A small float64 MobileNet's plan, one image, and what run_part needs for it."""
    model = small_mobilenet("slopehtanh").eval()
    plan = fused.build_plan(model)
    x = random((1, 3, 32, 32), seed)
    shapes = program.step_shapes(plan.steps, plan.steps[0, program.C_IN], 32, 32)
    size = program.scratch_size(shapes, 0, len(plan.steps), 1)
    return plan, x, shapes, size


@pytest.mark.parametrize("threads, parts", [(2, 2), (2, 5), (3, 3), (1, 4)])
@pytest.mark.parametrize("run_part", both_share("run_part"))
def test_threads_sharing_the_steps_of_one_image_give_the_same_bits(run_part, threads, parts):
    plan, x, shapes, size = one_image_case(62)
    a, b, counters = np.empty(size), np.empty(size), sharing.phase_counters(plan.steps)
    out = np.full((1, 2, 1, 1), np.nan)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        jobs = [pool.submit(run_part, x, plan.steps, plan.params, shapes, a, b, out, parts, counters)
                for _ in range(threads)]
        for job in jobs:
            job.result()
    alone = np.empty_like(out)
    program.run_plan(x, plan.steps, plan.params, 1, 1, alone)     # one thread, the tile program
    np.testing.assert_array_equal(out, alone)
    n = (counters.size - 1) // 2
    used = np.flatnonzero(counters[:n])             # the phases claimed, in order: all parts done
    done = counters[n + used]
    assert done[0] == done[-1] == 1 and np.all(done[1:-1] == parts)   # copies in and out: one part


def test_run_shared_gives_the_same_bits_as_one_thread():
    plan, x, shapes, _ = one_image_case(63)
    out, alone = np.empty((1, 2, 1, 1)), np.empty((1, 2, 1, 1))
    sharing.run_shared(x, plan.steps, plan.params, shapes, out, 2, parts=3)
    program.run_plan(x, plan.steps, plan.params, 1, 1, alone)
    np.testing.assert_array_equal(out, alone)


@pytest.mark.parametrize("run_part", both_share("run_part"))
def test_a_failed_thread_stops_the_others_waiting(run_part):
    plan, x, shapes, size = one_image_case(64)
    counters = sharing.phase_counters(plan.steps)
    counters[0] = 1                                 # the copy in was claimed by a thread that failed,
    counters[-1] = 1                                # which said stop: nobody waits for it
    out = np.full((1, 2, 1, 1), 7.0)
    run_part(x, plan.steps, plan.params, shapes, np.empty(size), np.empty(size), out, 2, counters)
    assert np.all(out == 7.0)
    bad = np.empty((1, 2))                          # not 4-D: every thread fails at once
    with pytest.raises(numba.core.errors.TypingError):
        sharing.run_shared(x, plan.steps, plan.params, shapes, bad, 2)


def test_one_image_tries_both_ways_then_keeps_the_faster():
    chooser = fused.OneImage()
    tried = []
    while len(chooser.times[True]) < chooser.TRIES:
        tried.append(chooser.choose())
        chooser.record(tried[-1], 0.004)               # shared: 4 ms
    assert tried == [True] * (chooser.TRIES + 1)       # the first call after a switch is not timed
    tried = []
    while len(chooser.times[False]) < chooser.TRIES:
        tried.append(chooser.choose())
        chooser.record(tried[-1], 0.003)               # one thread: 3 ms, faster
    assert tried == [False] * (chooser.TRIES + 1)
    later = []
    for _ in range(2 * chooser.RETRY):
        later.append(chooser.choose())
        chooser.record(later[-1], 0.004 if later[-1] else 0.003)
    assert later.count(True) == 4 and later.count(False) == 2 * chooser.RETRY - 4   # two calls every RETRY
    assert list(chooser.times[True]) == [0.004] * chooser.KEEP          # the second call of each retry
    for _ in range(chooser.KEEP + 1):
        chooser.record(True, 0.001)                    # the machine changed: sharing is faster now
    assert chooser.choose() is True


def test_one_image_does_not_time_the_call_after_a_switch():
    chooser = fused.OneImage()
    chooser.record(True, 0.5)                          # the first call: nothing before it
    chooser.record(False, 0.5)                         # after a shared call
    chooser.record(False, 0.002)
    chooser.record(True, 0.5)                          # helpers waking up
    chooser.record(True, 0.001)
    assert list(chooser.times[True]) == [0.001] and list(chooser.times[False]) == [0.002]


def test_a_single_image_gives_the_same_bits_whichever_way_it_runs():
    model = small_mobilenet("relu").eval()
    x = np.random.default_rng(65).random((1, 3, 32, 32))
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        outputs = [model(x) for _ in range(8)]
    finally:
        numba.set_num_threads(before)
    times = model._fused.one_image.times
    assert len(times[True]) >= 1 and len(times[False]) >= 1     # both ways were used
    for y in outputs[1:]:
        np.testing.assert_array_equal(y, outputs[0])


# ---------------------------------------------------------------------------
# Helpers that stay awake between calls (fused_share.serve and its bell).
# ---------------------------------------------------------------------------

def a_call_for_serve(seed):
    """The arguments of ``serve`` for one image whose copy in is done, as run_shared leaves them."""
    plan, x, shapes, size = one_image_case(seed)
    a, b, out = np.empty(size), np.empty(size), np.full((1, 2, 1, 1), 7.0)
    counters, bell = sharing.phase_counters(plan.steps), np.zeros(4, np.int64)
    C, H, W = shapes[0]
    a[:C * H * W] = x.reshape(-1)                      # planes of one image: the image itself
    counters[0] = counters[(counters.size - 1) // 2] = 1
    return plan, x, (bell, np.empty_like(x), plan.steps, plan.params, shapes, a, b, out, 2, counters)


@pytest.mark.parametrize("serve", both_share("serve"))
def test_a_helper_runs_an_open_call_alone_then_leaves_when_idle(serve):
    plan, x, args = a_call_for_serve(66)
    bell, out = args[0], args[7]
    bell[crew.CALL] = 1                                # call 1 is open, and nobody else works on it
    serve(*args, 100, 0)
    alone = np.empty((1, 2, 1, 1))
    program.run_plan(x, plan.steps, plan.params, 1, 1, alone)
    np.testing.assert_array_equal(out, alone)
    assert bell[crew.BUSY] == 0 and bell[crew.SERVING] == 0


@pytest.mark.parametrize("serve", both_share("serve"))
def test_the_callers_side_copies_the_image_in_opens_works_and_closes(serve):
    plan, x, args = a_call_for_serve(71)
    bell, a, out, counters = args[0], args[5], args[7], args[9]
    a[:] = np.nan                                       # the copy in is the caller's to make
    counters[:] = 5                                     # and the counters its to reset
    assert serve(bell, x, *args[2:], 0, 3)
    alone = np.empty((1, 2, 1, 1))
    program.run_plan(x, plan.steps, plan.params, 1, 1, alone)
    np.testing.assert_array_equal(out, alone)
    assert bell[crew.CALL] == -3 and bell[crew.BUSY] == 0


@pytest.mark.parametrize("serve", both_share("serve"))
@pytest.mark.parametrize("call, leave", [(-1, 0), (0, 0), (1, 1)])
def test_a_helper_stays_out_of_closed_calls_and_leaves_when_told(serve, call, leave):
    _, _, args = a_call_for_serve(67)
    bell, out, counters = args[0], args[7], args[9]
    before = counters.copy()
    bell[crew.CALL], bell[crew.LEAVE] = call, leave
    serve(*args, 100, 0)
    assert np.all(out == 7.0) and np.array_equal(counters, before)      # nothing claimed, nothing written
    assert bell[crew.BUSY] == 0 and bell[crew.SERVING] == 0


def test_helpers_serve_call_after_call_and_move_to_another_plan():
    first, x, _, _ = one_image_case(68)
    other = fused.build_plan(small_mobilenet("relu").eval())
    expected, shapes = {}, {}
    for name, plan in (("first", first), ("other", other)):
        shapes[name] = program.step_shapes(plan.steps, plan.steps[0, program.C_IN], 32, 32)
        expected[name] = np.empty((1, 2, 1, 1))
        program.run_plan(x, plan.steps, plan.params, 1, 1, expected[name])
    assert not np.array_equal(expected["first"], expected["other"])
    for _ in range(3):
        for name, plan in (("first", first), ("other", other)):
            for _ in range(5):                         # calls in a row: the helper stays awake
                out = np.empty((1, 2, 1, 1))
                sharing.run_shared(x, plan.steps, plan.params, shapes[name], out, 2)
                np.testing.assert_array_equal(out, expected[name])
            job = crew.helpers.job
            assert job.args[2] is plan.steps and job.calls == 5
            assert job.bell[crew.CALL] == -5 and job.bell[crew.BUSY] == 0


def on_one_thread(plan, x):
    """The plan's output for the batch x on the calling thread alone (one level of tiles of one image)."""
    out = np.empty((x.shape[0], plan.channels, 1, 1))
    program.run_plan(x, plan.steps, plan.params, 1, 1, out)
    return out


def assert_two_python_threads_get_their_own_bits(run, inputs, expected, calls=60):
    """``run(x, out)`` called from two Python threads at once, ``calls`` times each, cycling through
    ``inputs`` from different starts: every output is the one ``expected`` for its input."""
    def calls_from(first):
        outs = []
        for k in range(first, first + calls):
            outs.append(np.empty_like(expected[k % len(inputs)]))
            run(inputs[k % len(inputs)], outs[-1])
        return outs

    starts = (0, len(inputs) // 2)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = [pool.submit(calls_from, first) for first in starts]
        for first, job in zip(starts, results):
            outs = job.result()
            assert len(outs) == calls
            for k, out in enumerate(outs, start=first):
                np.testing.assert_array_equal(out, expected[k % len(inputs)])


def test_shared_calls_from_two_python_threads_at_once_give_the_right_bits():
    plan, _, shapes, _ = one_image_case(69)
    images = [random((1, 3, 32, 32), 70 + k) for k in range(6)]
    expected = [on_one_thread(plan, x) for x in images]
    assert_two_python_threads_get_their_own_bits(
        lambda x, out: sharing.run_shared(x, plan.steps, plan.params, shapes, out, 2), images, expected)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no os.fork on this system")
def test_a_forked_child_shares_one_image_with_helpers_of_its_own():
    import os
    plan, x, shapes, _ = one_image_case(72)
    expected = np.empty((1, 2, 1, 1))
    program.run_plan(x, plan.steps, plan.params, 1, 1, expected)
    out = np.empty((1, 2, 1, 1))
    sharing.run_shared(x, plan.steps, plan.params, shapes, out, 2)          # the parent's helpers exist
    read, write = os.pipe()
    child = os.fork()
    if child == 0:                                     # the child: its own helpers, the same bits
        ok = crew.helpers.job is None
        sharing.run_shared(x, plan.steps, plan.params, shapes, out, 2)
        ok = ok and np.array_equal(out, expected) and crew.helpers.threads[0].is_alive()
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(child, 0)
    assert answer == b"1"
