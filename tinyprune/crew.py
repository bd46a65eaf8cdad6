"""The fast path's helper threads: a crew that stays awake between calls.

The fast path shares its work among threads in two ways: a batch's tiles
(:func:`tinyprune.fused_program.run_plan`) and the steps of a single image
(:mod:`tinyprune.fused_share`).  Either way the calling thread works too,
beside ``workers - 1`` *helpers*, and the same helper threads serve both.

Handing work to a sleeping thread is slow on a virtual machine: the
operating system has to wake the thread, and then the core it runs on
(40 to 120 microseconds measured on the 2-core machine, a tenth of the
resized MobileNet's batch of 64).  So a helper does not go back to sleep
after a call: it *spins*, watching a *bell* (four int64 counters) for the
next call, in compiled code that holds neither the GIL nor a lock.  When
no call comes for a while (IDLE_TURNS turns, a few milliseconds) it sleeps
on an Event, and the next call wakes it the slow way.

The bell: CALL holds the number of the call in progress, positive while
the call is open and negated once it is closed; BUSY counts the helpers
inside a call; SERVING the helpers watching the bell; LEAVE tells them to
go.  A helper joins call k by adding 1 to BUSY and then checking that k is
still open; the caller closes k and then waits for BUSY to drop to 0.
With sequentially consistent counters (:mod:`tinyprune.barrier`) one of
the two sees the other, so no helper is ever inside a call the caller has
returned from.  A helper that joins late finds the work already claimed:
threads claim their work a piece at a time, so nobody waits for a thread
that is not running unless it holds a piece.

What the helpers serve is a *job*: ``fused_share`` makes one per plan and
image size for single images (its buffers and compiled loop), this module
one for batches (``Batches``: each call hands the helpers a Python
function).  The crew serves one job at a time, and one call at a time.

Every compiled function is a plain Python function compiled on the line
after it, as in the kernels' modules.
"""

import atexit
import os
import threading

import numba
import numpy as np

from .barrier import acquire_load, fetch_add, give_way, store, wait_for_zero

__all__ = ["Crew", "Batches", "share_out", "helpers", "await_call", "keep_serving", "open_call", "close_call",
           "leave", "add", "CALL", "BUSY", "SERVING", "LEAVE", "IDLE_TURNS", "BUSY_TURNS"]

CALL, BUSY, SERVING, LEAVE = range(4)
# Turns a helper waits for the next call before it sleeps: the first ones
# only read the bell, the later ones also yield the core (about a
# microsecond each), a few milliseconds in all.
IDLE_TURNS, BUSY_TURNS = 5000, 1000


def _await_call(bell, seen, idle_turns, leaving):
    """A helper's wait for a call: the number of the first open call other than ``seen``, joined.

    Joined means counted in BUSY: the caller does not return before the
    helper takes itself out again, which the helper's next ``await_call``
    does first (``leaving``).  Leaving here, in compiled code, rather than
    in Python before it, means the caller never finds the helper holding
    the GIL when it wants it back (see ``Batches``).
    Returns 0 when LEAVE is set, or when no call came for ``idle_turns``
    turns.
    """
    if leaving:
        fetch_add(bell, BUSY, -1)
    idle = 0
    while acquire_load(bell, LEAVE) == 0:
        call = acquire_load(bell, CALL)
        if call > 0 and call != seen:
            fetch_add(bell, BUSY, 1)
            if acquire_load(bell, CALL) == call:       # still open: the caller waits for this helper
                return call
            fetch_add(bell, BUSY, -1)                  # closed meanwhile: not to be joined
            continue
        idle += 1
        if idle > BUSY_TURNS:
            give_way()
        if idle > idle_turns:
            return 0
    return 0


def _keep_serving(bell, seen):
    """A helper that found no call for a while stops serving; True if it must serve on after all.

    It takes itself out of SERVING, then looks once more: a call other than
    ``seen`` rung just before SERVING dropped saw it serving and woke nobody,
    and would run without it, so it joins in again (unless LEAVE is set).
    """
    fetch_add(bell, SERVING, -1)
    call = acquire_load(bell, CALL)
    if acquire_load(bell, LEAVE) == 0 and call > 0 and call != seen:
        fetch_add(bell, SERVING, 1)
        return True
    return False


def _open_call(bell, call):
    """Ring call number ``call`` (open it); returns how many helpers are serving."""
    store(bell, CALL, call)
    return acquire_load(bell, SERVING)


def _close_call(bell, call):
    """Close call number ``call`` and wait until no helper is inside it."""
    store(bell, CALL, -call)
    wait_for_zero(bell, BUSY)


def _leave(bell):
    """Send the helpers away from the job of ``bell`` and wait until they have left."""
    store(bell, LEAVE, 1)
    wait_for_zero(bell, SERVING)


def _add(bell, i, value):
    """bell[i] += value, atomically (``barrier.fetch_add``): from Python, the compiled one must be used
    on counters that compiled code changes too, since the plain one is atomic only among Python threads."""
    fetch_add(bell, i, value)


await_call = numba.njit(cache=True, nogil=True)(_await_call)
keep_serving = numba.njit(cache=True, nogil=True)(_keep_serving)
add = numba.njit(cache=True, nogil=True)(_add)
open_call = numba.njit(cache=True, nogil=True)(_open_call)
close_call = numba.njit(cache=True, nogil=True)(_close_call)
leave = numba.njit(cache=True, nogil=True)(_leave)


class Crew:
    """The helper threads (made as needed, kept for the process) and the job they serve.

    A job has ``bell``, ``helpers`` (how many helpers it wants) and
    ``serve()``, a helper's side of it: it joins calls until the job sends
    it away or no call comes for a while, and keeps its own errors for the
    caller to raise.  ``lock`` is held by whoever is making a call.
    """

    def __init__(self):
        self.threads = []
        self.job = None
        self.wake = threading.Event()
        self.lock = threading.Lock()
        atexit.register(self.stop)

    def stop(self):
        """Send the helpers away (at exit: not left spinning in compiled code while Python ends)."""
        if self.job is not None:
            leave(self.job.bell)

    def serve_job(self, job):
        """Make ``job`` the one the helpers serve, sending them away from the last one."""
        if self.job is not None:
            leave(self.job.bell)
        self.job = job
        while len(self.threads) < job.helpers:
            thread = threading.Thread(target=self._loop, args=(len(self.threads),), daemon=True,
                                      name=f"tinyprune-helper-{len(self.threads)}")
            self.threads.append(thread)
            thread.start()

    def next_call(self, job):
        """The number of ``job``'s next call, with the helpers that went to sleep woken for it.

        Woken now, before the call is opened: they find it open when they
        come.  (A helper that stops serving just after this look sees the
        call in ``keep_serving`` and stays.)
        """
        job.calls += 1
        if acquire_load(job.bell, SERVING) < job.helpers:
            self.wake.set()
        return job.calls

    def _loop(self, number):
        while True:
            self.wake.wait()
            self.wake.clear()
            job = self.job
            if job is not None and number < job.helpers:
                job.serve()


helpers = Crew()          # the process's helper threads (read it as crew.helpers: a child replaces it)


def _forget_the_helpers_in_a_child():
    """After os.fork the child has none of the parent's threads: start again from none."""
    global helpers
    helpers = Crew()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_the_helpers_in_a_child)


class Batches:
    """The job of sharing out batches: each call hands the helpers a function to run.

    ``work(bell, call)`` is the call's function, set before the call is
    opened and kept until it is closed, so a helper inside the call finds
    it there.  The caller runs it with the call's number, the helpers with
    0; the caller's run opens the call (``open_call(bell, call)``), and it
    must do so from compiled code that has let go of the GIL.

    Why: a helper spinning in ``await_call`` sees the call at once, and
    then needs the GIL to run ``work``.  Had the caller opened the call
    from Python, it would still hold the GIL, the helper would go to sleep
    waiting for it, and being woken costs what the spinning saved (the
    helper of the resized MobileNet's batch of 64 started 34 us after the
    caller).  The same at the end: a helper leaves the call inside its
    next ``await_call``, so the caller, which waits for that in
    ``close_call``, finds the GIL free when it returns.
    """

    def __init__(self, helpers):
        self.helpers = helpers
        self.bell = np.zeros(4, np.int64)
        self.calls = 0
        self.work = None
        self.error = None

    def serve(self):
        """A helper's side: run the work of every call rung on the bell, until idle or sent away."""
        bell, seen, joined = self.bell, 0, False
        add(bell, SERVING, 1)
        while True:
            call = await_call(bell, seen, IDLE_TURNS, joined)
            joined = call > 0
            if joined:
                seen = call
                try:
                    self.work(bell, 0)
                except BaseException as error:        # for the caller to raise
                    self.error = error
            elif not keep_serving(bell, seen):
                return


_ALONE = np.zeros(4, np.int64)      # the bell of a call nobody else joins (its CALL is never read)


def share_out(work, workers):
    """Run ``work`` on the calling thread and on ``workers - 1`` helpers at once.

    The calling thread runs ``work(bell, call)``, which must open the call
    with ``open_call(bell, call)`` from compiled code (see ``Batches``);
    the helpers run ``work(bell, 0)``.  ``work`` must claim its pieces of
    work itself (say with ``barrier.fetch_add`` on a counter of its own)
    until none is left, so that a helper that comes late, or not at all,
    only leaves more to the others.  Returns when every thread is out of
    ``work``; raises what a helper raised.  A call made while the crew is
    busy with another (from another Python thread) runs ``work(bell, 0)``
    on the calling thread alone, with a bell nobody watches.
    """
    crew = helpers
    if workers < 2 or not crew.lock.acquire(blocking=False):
        work(_ALONE, 0)
        return
    try:
        job = crew.job
        if not isinstance(job, Batches) or job.helpers != workers - 1:
            job = Batches(workers - 1)
            crew.serve_job(job)
        job.work, job.error = work, None              # (an error kept from a call that raised on the caller)
        call = crew.next_call(job)
        try:
            work(job.bell, call)
        finally:
            close_call(job.bell, call)
            job.work = None
        if job.error is not None:
            error, job.error = job.error, None
            raise error
    finally:
        crew.lock.release()
