"""Two or more threads taking turns at the steps of one computation: a spinning barrier.

The fast path (:mod:`tinyprune.fused`) shares out the steps of a network
for a single image between threads: each thread computes its part of a
step's output channels, and before the next step every thread must wait
until all parts of this one are written.  A step of one image takes a few
microseconds, so that wait must cost far less than one: the threads wait
by *spinning* -- reading a shared counter again and again -- instead of
asking the operating system to wake them (tens of microseconds).

The counters.  ``flags`` is an int64 array with one counter per thread and
one more, the last, for "stop".  After its part of step s, thread p sets
``flags[p] = s + 1``; it may start step s + 1 when every counter is at
least s + 1 (``wait_for(flags, parts, s + 1)``).  The counters only grow, so nothing has to be reset between
steps.  A thread that fails sets the stop counter, and the others give up
instead of waiting forever.

Two details make that correct in compiled code.  The compiler may keep a
value it has read in a register and never read it again, which turns "wait
until the counter changes" into "wait forever"; and the processor may let
other threads see a counter before the numbers written just before it.
Atomic loads and stores with *acquire* and *release* order forbid both:
``release_store`` publishes everything written before it, and an
``acquire_load`` that sees the new value sees all of that too.  Compiled,
they are single instructions (Numba has no such operation, so they are
written below in LLVM's terms); as plain Python they are ordinary reads and
writes, which are atomic under the interpreter's lock.

A thread that has spun for a while without news yields its core
(``sched_yield``, a call by name, so that the compiled code can be cached) at every further turn, so that on a machine busy with
other programs the thread it waits for gets the core sooner.
"""

import time

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numba
from numba.core import cgutils, types
from numba.extending import intrinsic, overload

__all__ = ["acquire_load", "release_store", "wait_for", "can_yield"]

# Turns of spinning before a waiting thread starts yielding its core: a few
# microseconds, longer than a step of one image takes.
SPINS = 20000


def acquire_load(flags, i):
    """flags[i], read so that everything written before it was published is seen too."""
    return flags[i]


def release_store(flags, i, value):
    """flags[i] = value, published after everything this thread wrote before it."""
    flags[i] = value


@intrinsic
def _atomic_load(typingctx, flags, i):
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, signature.args[0], array, [args[1]])
        return builder.load_atomic(pointer, "acquire", 8)
    return types.int64(flags, i), codegen


@intrinsic
def _atomic_store(typingctx, flags, i, value):
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, signature.args[0], array, [args[1]])
        builder.store_atomic(args[2], pointer, "release", 8)
        return context.get_dummy_value()
    return types.void(flags, i, value), codegen


@overload(acquire_load)
def _acquire_load_compiled(flags, i):
    return lambda flags, i: _atomic_load(flags, i)


@overload(release_store)
def _release_store_compiled(flags, i, value):
    return lambda flags, i, value: _atomic_store(flags, i, value)


def _yield_symbol():
    """The C function that gives the core to another thread: sched_yield, SwitchToThread on Windows."""
    for name in ("sched_yield", "SwitchToThread"):
        if llvm.address_of_symbol(name):
            return name
    return None


_YIELD = _yield_symbol()
can_yield = _YIELD is not None


def give_way():
    """Let another thread that is ready to run have this core for a moment."""
    time.sleep(0)


@intrinsic
def _call_yield(typingctx):
    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []),
                                                  _YIELD)
        builder.call(function, [])
        return context.get_dummy_value()
    return types.void(), codegen


@overload(give_way)
def _give_way_compiled():
    return lambda: _call_yield()


def _wait_for(flags, parts, count):
    """Spin until the counters of threads 0 ... parts - 1 are all at least ``count``.

    Returns False if the stop counter ``flags[parts]`` was set meanwhile.
    """
    spins = 0
    for p in range(parts):
        while acquire_load(flags, p) < count:
            if acquire_load(flags, parts) != 0:
                return False
            spins += 1
            if spins > SPINS:
                give_way()
    return True


wait_for = numba.njit(cache=True, nogil=True)(_wait_for)
