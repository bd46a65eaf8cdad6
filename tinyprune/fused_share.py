"""One image on several threads: the steps of a single image shared out.

A batch of many images is cut into tiles that threads take turns at
(:mod:`tinyprune.fused_program`).  A batch of one image has no tiles to
share, so its steps are shared instead: each step (and each layout
conversion) is cut into *parts* -- shares of its output channels, or of its
pixel rows -- that the threads claim one at a time, and every part of a
step is done before any thread starts the next step (``run_part``, with
the counters of :mod:`tinyprune.barrier`).  A thread the operating system
has paused holds nobody up: the others take its parts.

The threads other than the caller are the *helpers* of
:mod:`tinyprune.crew`, which stay awake between calls because waking a
sleeping thread costs a tenth of an image; here they run ``serve``, a
compiled loop that joins every call with no Python in between.  Whether
sharing pays at all depends on the machine; ``fused.OneImage`` times both
ways.  Any thread may do any part, and the output is the same bits as on
one thread.

Every compiled function is a plain Python function compiled on the line
after it, as in the kernels' modules.
"""

import numba
import numpy as np

from . import crew
from . import fused_kernels as fk
from .barrier import fetch_add, wait_until
from .crew import IDLE_TURNS, SERVING, await_call, close_call, keep_serving, open_call
from .fused_program import (PLANES, convert, layout, pixel_rows, run_plan, run_step,
                            scratch_size)

__all__ = ["run_shared", "run_part", "phase_counters", "serve"]


def _take_part(counters, phase, parts):
    """Claim the next part of ``phase``: its number, or -1 if all ``parts`` are taken."""
    k = fetch_add(counters, phase, 1)
    return k if k < parts else -1


def _part_done(counters, phase):
    """Count one part of ``phase`` as done (publishing everything written for it)."""
    fetch_add(counters, (counters.size - 1) // 2 + phase, 1)


def _all_done(counters, phase, parts):
    """Wait until all ``parts`` of ``phase`` are done; False if a thread failed."""
    return wait_until(counters, (counters.size - 1) // 2 + phase, parts)


take_part = numba.njit(cache=True, nogil=True)(_take_part)
part_done = numba.njit(cache=True, nogil=True)(_part_done)
all_done = numba.njit(cache=True, nogil=True)(_all_done)


def _run_part(x, steps, params, shapes, a, b, out, parts, counters):
    """One thread's share of the work for the single image of x (N = 1).

    Several threads run this at once on the same scratch buffers a, b.
    The work is a list of phases -- the copy in, each layout conversion,
    each step, the copy out -- and every conversion and step is cut into
    ``parts`` parts (``convert``'s and ``run_step``'s part).  Each thread
    claims parts until none is left, then waits until the phase is done
    (:mod:`tinyprune.barrier`; ``counters`` holds the claims and the parts
    done for each phase, and "stop").  Returns when the image is in out.
    """
    C, H, W = shapes[0, 0], shapes[0, 1], shapes[0, 2]
    T = np.int64(1)          # one image; not the constant 1, so that run_step is run_tile's compilation
    if take_part(counters, 0, 1) == 0:
        fk.gather(x, 0, a[:C * H * W].reshape(C, 1, H, W))
        part_done(counters, 0)
    if not all_done(counters, 0, 1):
        return
    phase, current = 1, PLANES
    for s in range(steps.shape[0]):
        wanted = layout(steps[s], C, T, H, W, current)
        if wanted != current:
            k = take_part(counters, phase, parts)
            while k >= 0:
                convert(a, C, T, H, W, wanted, b, k, parts)
                part_done(counters, phase)
                k = take_part(counters, phase, parts)
            if not all_done(counters, phase, parts):
                return
            phase, a, b, current = phase + 1, b, a, wanted
        O, HO, WO = shapes[s + 1, 0], shapes[s + 1, 1], shapes[s + 1, 2]
        k = take_part(counters, phase, parts)
        while k >= 0:
            run_step(steps[s], params, current, a, T, H, W, b, HO, WO, k, parts)
            part_done(counters, phase)
            k = take_part(counters, phase, parts)
        if not all_done(counters, phase, parts):
            return
        phase, a, b = phase + 1, b, a
        C, H, W = O, HO, WO
    if take_part(counters, phase, 1) == 0:
        if current == PLANES:
            fk.scatter_planes(a[:C * H * W].reshape(C, 1, H, W), 0, out)
        else:
            fk.scatter_pixels(a[:pixel_rows(H * W) * C].reshape(pixel_rows(H * W), C), 0, 1, out)
        part_done(counters, phase)
    all_done(counters, phase, 1)


run_part = numba.njit(cache=True, nogil=True)(_run_part)


def phase_counters(steps):
    """Zeroed counters for ``run_part``: claims and parts done for up to 2*S + 2 phases, and stop."""
    phases = 2 * steps.shape[0] + 2                 # copy in, a conversion and a step each, copy out
    return np.zeros(2 * phases + 1, np.int64)


# ---------------------------------------------------------------------------
# The helpers' loop.  The bell and its protocol are crew's (read its
# docstring first).  The buffers a call works on belong to a *job* (one per
# plan, image size and dtype); the caller copies the image in itself, so
# helpers never read the caller's arrays.
# ---------------------------------------------------------------------------

def _serve(bell, x, steps, params, shapes, a, b, out, parts, counters, idle_turns, call):
    """A helper's loop (``call`` 0): run its share (``run_part``) of every call rung on ``bell``.

    Returns when LEAVE is set, or when no call came for ``idle_turns`` turns
    (crew's ``await_call`` and ``keep_serving``, as ``crew.Batches.serve``).

    With ``call`` > 0 it is instead the caller's side of call number
    ``call``: copy the image x in (phase 0: helpers never read x), open the
    call, do its share, close it; returns False if a thread said stop.  The
    two sides are one function so that the whole program under run_part is
    compiled into one more function, not two (seconds each).
    """
    if call > 0:
        counters[:] = 0
        C, H, W = shapes[0, 0], shapes[0, 1], shapes[0, 2]
        fk.gather(x, 0, a[:C * H * W].reshape(C, 1, H, W))
        counters[0] = 1
        counters[(counters.size - 1) // 2] = 1
        open_call(bell, call)
        run_part(x, steps, params, shapes, a, b, out, parts, counters)
        close_call(bell, call)
        return counters[-1] == 0
    fetch_add(bell, SERVING, 1)
    seen, joined = 0, False
    while True:
        call = await_call(bell, seen, idle_turns, joined)      # (leaving the call before, if joined)
        joined = call > 0
        if joined:
            seen = call
            run_part(x, steps, params, shapes, a, b, out, parts, counters)
        elif not keep_serving(bell, seen):
            return True


serve = numba.njit(cache=True, nogil=True)(_serve)


class _Job:
    """The buffers one kind of call works on (plan, image size, dtype), and its bell."""

    def __init__(self, key, x, steps, params, shapes, out, parts, helpers):
        self.key, self.steps, self.params = key, steps, params
        size = scratch_size(shapes, 0, steps.shape[0], 1)
        self.a, self.b = np.empty(size, x.dtype), np.empty(size, x.dtype)
        self.x, self.out = np.empty_like(x), np.empty_like(out)      # x is never read: see run_shared
        self.counters = phase_counters(steps)
        self.bell = np.zeros(4, np.int64)
        self.args = (self.bell, self.x, steps, params, shapes, self.a, self.b, self.out, parts,
                     self.counters)
        self.helpers = helpers
        self.calls = 0
        self.error = None

    def serve(self):
        """A helper's side of the job (``crew.Crew`` calls it): ``serve`` until idle or sent away."""
        try:
            serve(*self.args, IDLE_TURNS, 0)
        except BaseException as error:                 # the kernels refused the job's arrays
            self.error = error
            self.counters[-1] = 1                      # stop: the caller does not wait for parts


def run_shared(x, steps, params, shapes, out, workers, parts=None):
    """Run the plan on a batch of one image, with ``workers`` threads sharing out every step.

    ``parts``: how many parts each step is cut into (default ``workers``).
    The calling thread works too, with ``workers - 1`` helper threads that
    stay awake between calls (see above); any of them may do any part, and
    the output is the same bits as on one thread.  The helpers serve one
    call at a time: a call made meanwhile from another Python thread runs
    on its own thread.
    """
    helpers = crew.helpers
    if not helpers.lock.acquire(blocking=False):       # another Python thread is in a shared call:
        run_plan(x, steps, params, 1, 1, out, shapes)   # this one runs alone (the same bits)
        return
    try:
        _run_shared(helpers, x, steps, params, shapes, out, workers, parts or workers)
    finally:
        helpers.lock.release()


def _run_shared(helpers, x, steps, params, shapes, out, workers, parts):
    """run_shared's work, with the helpers' lock held."""
    key = (shapes.tobytes(), x.shape, x.dtype, out.shape, out.dtype, parts, workers)
    job = helpers.job
    if not isinstance(job, _Job) or job.key != key or job.steps is not steps or job.params is not params:
        job = _Job(key, x, steps, params, shapes, out, parts, workers - 1)
        helpers.serve_job(job)
    call = helpers.next_call(job)
    try:
        done = serve(job.bell, x, steps, params, shapes, job.a, job.b, job.out, parts, job.counters, 0, call)
    except BaseException:                               # refused before it started (typing)
        job.counters[-1] = 1                            # stop: any helper in the call stops waiting
        close_call(job.bell, call)
        raise
    if job.error is not None:
        error, job.error = job.error, None
        raise error
    if not done:
        raise RuntimeError("a thread sharing the steps of one image stopped")
    out[...] = job.out
