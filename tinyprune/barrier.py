"""Threads sharing out the steps of one computation: counters they claim work with and wait on.

The fast path (:mod:`tinyprune.fused_program`) runs the steps of a network
for a single image on several threads at once.  Each step is cut into a
few *parts* (shares of its output channels).  A thread *claims* the next
unclaimed part of the current step, computes it, counts it as done, and
claims again; when no part is left it waits until every part of the step
is done, then moves on to the next step.  A thread that is late -- the
operating system gave its core to another program for a while -- simply
finds the parts already claimed by the others, so nobody waits for a thread
that is not running unless it holds a part.

A step of one image takes a few microseconds, so waiting must cost far
less than that: threads wait by *spinning* -- reading a counter again and
again -- rather than asking the operating system to wake them (tens of
microseconds).  After a while without news, a spinning thread yields its
core at every turn (``sched_yield``), so that on a busy machine the thread
it waits for gets a core sooner.

The counters are one int64 array: for each phase p of the computation,
``counters[p]`` counts the claims and ``counters[n + p]`` the parts done
(n phases); the last entry is "stop", set when a thread fails, so that
the others give up instead of waiting forever.

Two details make this correct in compiled code.  Two threads claiming at
the same moment must get different parts: the claim is an atomic
*fetch-and-add*, a single instruction that reads and increments the
counter with nothing in between.  And a waiting thread must see the numbers
that were written before a part was counted as done: the compiler could
otherwise keep the counter in a register and never read it again, and the
processor could show the counter before the numbers.  Atomic operations
with *acquire* and *release* order forbid both.  Numba has none of these,
so they are written below in LLVM's own terms, a few lines each; as plain
Python they are ordinary reads and writes under a lock.

They are in fact *sequentially consistent*, the strongest order: all
threads see all of them in one order.  The helper threads that stay awake
between calls (:mod:`tinyprune.crew`) need it: a helper says "I am
here" and then looks whether the call is still open, while the caller
closes the call and then looks whether a helper is there; with weaker
orders both could miss the other.  On x86 it costs nothing more.
"""

import threading
import time

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numba
from numba.core import cgutils, types
from numba.extending import intrinsic, overload

__all__ = ["fetch_add", "acquire_load", "store", "wait_until", "wait_for_zero", "give_way", "can_yield"]

# Turns of spinning before a waiting thread starts yielding its core: some
# tens of microseconds, longer than any step of one image takes.
SPINS = 20000

_lock = threading.Lock()          # the plain-Python versions' atomicity


def fetch_add(counters, i, value):
    """counters[i] += value as one indivisible operation; returns the value it had before."""
    with _lock:
        old = counters[i]
        counters[i] = old + value
    return old


def acquire_load(counters, i):
    """counters[i], read so that everything published before it was set is seen too."""
    return counters[i]


def store(counters, i, value):
    """counters[i] = value, published with everything written before it."""
    with _lock:
        counters[i] = value


def give_way():
    """Let another thread that is ready to run have this core for a moment."""
    time.sleep(0)


def _element_pointer(context, builder, array_type, array, index):
    array = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, array, [index])


@intrinsic
def _atomic_add(typingctx, counters, i, value):
    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.atomic_rmw("add", pointer, args[2], "seq_cst")
    return types.int64(counters, i, value), codegen


@intrinsic
def _atomic_load(typingctx, counters, i):
    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(pointer, "seq_cst", 8)
    return types.int64(counters, i), codegen


@intrinsic
def _atomic_store(typingctx, counters, i, value):
    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        builder.store_atomic(args[2], pointer, "seq_cst", 8)
        return context.get_dummy_value()
    return types.void(counters, i, value), codegen


def _yield_symbol():
    """The C function that gives the core to another thread: sched_yield, SwitchToThread on Windows.

    Called by name from compiled code (not through ctypes), so that the
    compiled code can be cached.
    """
    for name in ("sched_yield", "SwitchToThread"):
        if llvm.address_of_symbol(name):
            return name
    return None


_YIELD = _yield_symbol()
can_yield = _YIELD is not None


@intrinsic
def _call_yield(typingctx):
    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []),
                                                  _YIELD)
        builder.call(function, [])
        return context.get_dummy_value()
    return types.void(), codegen


@overload(fetch_add)
def _fetch_add_compiled(counters, i, value):
    return lambda counters, i, value: _atomic_add(counters, i, value)


@overload(acquire_load)
def _acquire_load_compiled(counters, i):
    return lambda counters, i: _atomic_load(counters, i)


@overload(store)
def _store_compiled(counters, i, value):
    return lambda counters, i, value: _atomic_store(counters, i, value)


@overload(give_way)
def _give_way_compiled():
    return lambda: _call_yield()


def _wait_until(counters, i, target):
    """Spin until counters[i] >= target; False if the stop counter (the last) was set meanwhile."""
    stop = counters.size - 1
    spins = 0
    while acquire_load(counters, i) < target:
        if acquire_load(counters, stop) != 0:
            return False
        spins += 1
        if spins > SPINS:
            give_way()
    return True


wait_until = numba.njit(cache=True, nogil=True)(_wait_until)


def _wait_for_zero(counters, i):
    """Spin until counters[i] is 0 (no thread is busy any more), yielding the core after a while."""
    spins = 0
    while acquire_load(counters, i) != 0:
        spins += 1
        if spins > SPINS:
            give_way()


wait_for_zero = numba.njit(cache=True, nogil=True)(_wait_for_zero)
