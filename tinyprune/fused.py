"""The eval-mode fast path: a model compiled into a short plan of fused steps.

The layers of :mod:`tinyprune.layers` each make one pass over the whole
batch: a convolution writes its output, BatchNorm reads and rewrites it, the
activation once more, and the next layer reads it again.  In eval mode most
of that is unnecessary:

1. BatchNorm is a fixed affine map, so it folds into the convolution before
   it (:func:`tinyprune.fold.folded_parameters`): conv + BatchNorm is one
   convolution with a bias.
2. The activation can be applied to each row of the convolution's output
   the moment it is written, while it is in the level-1 cache.
3. Images can go through the layers a *tile* at a time: the tile's
   activations stay in the level-2 cache from one layer to the next, where
   a whole batch would have to travel to memory and back.

So a model in eval mode is turned into a *plan*: a table of steps, each one
"convolution + bias + activation" (or a pooling), with all their weights
packed into one array, run by one compiled function per tile of images
(:mod:`tinyprune.fused_program`), with as many threads as Numba has
(``numba.set_num_threads``) claiming the tiles in turn; a single image has
every step shared out among the threads instead
(:mod:`tinyprune.fused_share`).  Both keep their helper threads awake
between calls (:mod:`tinyprune.crew`).  One call from Python
runs the whole network through a tile; at batch 1 that matters more than
anything else.  The loops themselves are in :mod:`tinyprune.fused_kernels`.

When it is used.  ``model(x)`` on a Chain in eval mode takes the fast path
(``model.forward(x)`` always runs the plain layers, and keeps what backward
needs; after a fast-path call, ``backward`` first runs the plain forward
pass on the same input).  Set ``model.fast_eval = False`` to switch it off.
The plan covers the longest run of leading layers it knows (convs,
depthwise convs, BatchNorms, the four activations, pooling, flatten after
pooling, dense); any layer after that runs as a plain layer, and a model
that starts with anything else is run plainly altogether.

When it is rebuilt.  The plan is a copy of the weights, folded.  It is
built at the first eval-mode call after ``eval()``, ``train()``, a copy or a
load, and it is dropped by every ``eval()`` and ``train()`` call.  At every
call the plan also checks that the model still holds the very arrays it
was built from (parameters, statistics, masks), so replacing an array --
``load_state_dict``, ``to(dtype)``, a new mask, ``conv.weight = w`` -- is
seen at once.  Changing an array's *values in place* (``conv.weight[0] = 0``)
is not seen until you call ``model.eval()`` again: checking every value at
every call would cost as much as a layer.
"""

import collections
import operator
import statistics
import time

import numba
import numpy as np

from . import fused_kernels as fk
from .fold import folded_parameters
from .layers import (BatchNorm2d, Conv2d, Dense, DepthwiseConv2d, Flatten, GlobalMeanPool, HardTanh,
                     Identity, ReLU, SlopeHTanh)
from .barrier import can_yield
from .fused_program import (ACT, B_AT, C_IN, C_OUT, CONV, DEPTHWISE, FIELDS, KH, KIND, KW, PAD, POINTWISE,
                            POOL, REAL, STRIDE, W_AT, WT_AT, run_plan, step_shapes)
from .fused_share import run_shared

__all__ = ["FusedPlan", "OneImage", "build_plan", "fused_call", "tiling", "TILE_BYTES"]

# How much a step's input and output together may take for one tile: about
# the level-2 cache of a core (1 MB on the machine the README's figures come
# from), so that a tile goes from step to step mostly without leaving it.
# Half as much again measured 5% faster there than 1 MB (768 KB to 2 MB were
# tried), on the full and the resized MobileNet, on one thread and on two:
# larger tiles read each step's weights once for more images, and
# at batch 64 four tiles of 16 share out better between two threads than
# six of 10 or 11.
TILE_BYTES = 1536 * 1024

_ACTIVATIONS = {Identity: fk.IDENTITY, ReLU: fk.RELU, HardTanh: fk.HARDTANH, SlopeHTanh: fk.SLOPEHTANH}


# ---------------------------------------------------------------------------
# Building a plan from the layers
# ---------------------------------------------------------------------------

def _round4(n):
    return (n + 3) // 4 * 4


def _padded(array, shape):
    """``array`` (float64) zero-padded at the end of every axis to ``shape``."""
    out = np.zeros(shape)
    out[tuple(slice(0, n) for n in array.shape)] = array
    return out


class _Builder:
    """Collects the steps of a plan and their packed weights while walking the layers."""

    def __init__(self):
        self.rows = []
        self.chunks = []
        self.size = 0
        self.channels = None     # the real channel count flowing out of the last step
        self.pooled = False      # True after pooling: one pixel per image
        self.flattened = False   # True after Flatten or Dense: (N, features) rather than NCHW

    def pack(self, array):
        """Append ``array`` to the packed weights; returns where it starts."""
        at = self.size
        self.chunks.append(np.ravel(array))
        self.size += array.size
        return at

    def add(self, kind, c_in, c_out, real, weights=(), bias=None, kernel=(1, 1), stride=1, pad=0):
        """Append a step (its activation is set afterwards); weights and bias already padded.

        ``weights``: the weight arranged for planes, then (if it differs) for pixels.
        """
        row = np.zeros(FIELDS, np.int64)
        row[[KIND, C_IN, C_OUT, REAL, KH, KW, STRIDE, PAD]] = (kind, c_in, c_out, real, kernel[0],
                                                               kernel[1], stride, pad)
        at = [self.pack(w) for w in weights]
        row[W_AT], row[WT_AT] = (at + at)[:2] if at else (0, 0)
        row[B_AT] = self.pack(bias) if bias is not None else 0
        self.rows.append(row)

    @property
    def c_in(self):
        """Channels of the tile layout going into the next step (a multiple of 4 after a step)."""
        return int(self.rows[-1][C_OUT]) if self.rows else None


def _conv_step(builder, conv, bn):
    """A Conv2d or DepthwiseConv2d (with the BatchNorm after it folded in, if any)."""
    if bn is not None:
        weight, bias = folded_parameters(conv, bn)
    else:
        weight = conv.effective("weight").astype(np.float64)
        bias = (conv.effective("bias").astype(np.float64) if conv.bias is not None
                else np.zeros(conv.c_out))
    kh, kw = conv.kernel
    if isinstance(conv, DepthwiseConv2d):
        C = builder.c_in or _round4(conv.c_out)
        filters = _padded(weight[:, 0], (C, kh, kw))
        builder.add(DEPTHWISE, C, C, conv.c_out, (filters, filters.transpose(1, 2, 0)),
                    _padded(bias, (C,)), (kh, kw), conv.stride, conv.pad)
    elif conv.pointwise:
        _matrix_step(builder, weight.reshape(conv.c_out, conv.c_in), bias)
    else:
        c_in = builder.c_in or conv.c_in          # the first step reads the images as they are
        O = _round4(conv.c_out)
        builder.add(CONV, c_in, O, conv.c_out, (_padded(weight, (O, c_in, kh, kw)),),
                    _padded(bias, (O,)), (kh, kw), conv.stride, conv.pad)
    builder.channels = conv.c_out


def _matrix_step(builder, weight, bias):
    """A product with weight (O, K): a 1x1 convolution or a dense layer."""
    O, K = _round4(weight.shape[0]), _round4(weight.shape[1])
    padded = _padded(weight, (O, K))
    builder.add(POINTWISE, K, O, weight.shape[0], (padded, padded.T), _padded(bias, (O,)))
    builder.channels = weight.shape[0]


def _affine_step(builder, scale, shift, channels):
    """A per-channel y = x * scale + shift on its own: a 1x1 depthwise step."""
    C = builder.c_in or _round4(channels)
    filters = _padded(scale.reshape(-1, 1, 1), (C, 1, 1))
    builder.add(DEPTHWISE, C, C, channels, (filters, filters.transpose(1, 2, 0)),
                _padded(shift, (C,)))
    builder.channels = channels


def _next_step(builder, leaves, i):
    """Add the step starting at ``leaves[i]``; returns the index after it, or None if unknown.

    An activation is attached to the step before it by ``build_plan``; one
    that has no step to join gets an identity step of its own (returns i).
    """
    layer = leaves[i]
    after = leaves[i + 1] if i + 1 < len(leaves) else None
    channels = builder.channels
    spatial = not builder.pooled
    if isinstance(layer, (Conv2d, DepthwiseConv2d)) and spatial and channels in (None, layer.c_in):
        bn = after if isinstance(after, BatchNorm2d) and after.channels == layer.c_out else None
        _conv_step(builder, layer, bn)
        return i + 1 + (bn is not None)
    if isinstance(layer, BatchNorm2d) and spatial and channels in (None, layer.channels):
        scale, shift = layer.eval_scale_shift()
        _affine_step(builder, scale, shift, layer.channels)
        return i + 1
    if not builder.rows:
        return None                              # the first step must say how many channels come in
    if isinstance(layer, Dense) and builder.flattened and layer.n_in == channels:
        bias = layer.effective("bias") if layer.bias is not None else np.zeros(layer.n_out)
        _matrix_step(builder, layer.effective("weight").astype(np.float64), bias.astype(np.float64))
        return i + 1
    if type(layer) in _ACTIVATIONS:
        _affine_step(builder, np.ones(channels), np.zeros(channels), channels)
        return i
    if isinstance(layer, GlobalMeanPool) and spatial:
        builder.add(POOL, builder.c_in, builder.c_in, channels)
        builder.pooled = True
        return i + 1
    if isinstance(layer, Flatten) and builder.pooled:
        builder.flattened = True                 # one pixel per image: nothing moves
        return i + 1
    return None


# ---------------------------------------------------------------------------
# The plan object and the hook
# ---------------------------------------------------------------------------

def tiling(shapes, itemsize, tile_bytes=None, by_image=False):
    """How to cut a batch into tiles: (split, part, whole) -- see ``fused_program.run_tile``.

    A step's input and output for one tile should fit in ``tile_bytes``
    (default TILE_BYTES, about a core's level-2 cache).  MobileNet's first layers
    hold ten times more numbers per image than its last ones, so one tile
    size for all would leave the last layers' loops short: they get tiles
    of their own, larger ones, when that allows at least twice the images.
    Returns (0, t, t) when one level is enough.  ``by_image``: the first
    step is a full convolution that reads the caller's batch image by
    image (``fused_program.start_tile``), so only its output takes room in
    the tile; and parts of the tile for it alone would buy nothing, while
    placing them into the whole tile would be one more copy: one level
    then.  (Counting its input as well cut the resized MobileNet's
    tiles to the size its 48x48 steps allow, 21 images, where 32 ran 4%
    faster.)
    """
    tile_bytes = TILE_BYTES if tile_bytes is None else tile_bytes
    per_image = shapes[:, 0] * shapes[:, 1] * shapes[:, 2]
    need = (per_image[:-1] + per_image[1:]) * itemsize          # a step's input + output, one image
    if by_image:
        need[0] = per_image[1] * itemsize                       # its input stays in the caller's batch
    for split in range(1, len(need)):
        part = max(1, tile_bytes // int(need[:split].max()))
        whole = max(1, tile_bytes // int(need[split:].max()))
        if whole >= 2 * part:
            return (0, whole, whole) if split == 1 and by_image else (split, part, whole)
    one = max(1, tile_bytes // int(need.max()))
    return 0, one, one


class OneImage:
    """For batches of one image: share each step among the threads, or run on one thread?

    Sharing pays when the other core is free and close by; on a busy
    machine the hand-overs can cost more than the half of the work they
    save.  So both are timed: the first calls try each way until it has
    ``TRIES`` times, then the faster by median of its last ``KEEP`` times is
    used, and every ``RETRY`` calls the other way is timed again, in case
    the machine has changed.  A call made right after one made the other
    way is not timed: after a run of one-thread calls the helper threads
    have gone to sleep, and waking them (tens of microseconds) says nothing
    about the next calls.  So a retry is two calls.  Both ways give the
    same bits.
    """

    TRIES, KEEP, RETRY = 3, 5, 50

    def __init__(self):
        self.times = {True: collections.deque(maxlen=self.KEEP), False: collections.deque(maxlen=self.KEEP)}
        self.calls = 0
        self.last = None           # the way of the last call

    def choose(self):
        """True to share the next call's steps among the threads, False for one thread."""
        self.calls += 1
        for share in (True, False):
            if len(self.times[share]) < self.TRIES:
                return share
        best = statistics.median(self.times[True]) <= statistics.median(self.times[False])
        return (not best) if self.calls % self.RETRY < 2 else best

    def record(self, share, seconds):
        """How long a call made the way ``choose`` said took (kept if the call before went the same way)."""
        if share == self.last:
            self.times[share].append(seconds)
        self.last = share


class FusedPlan:
    """A model's leading layers as fused steps, and the plain layers after them.

    ``steps`` (S, FIELDS) int64, one row per step (columns named at the top
    of this module); ``params`` the packed, folded, padded weights;
    ``tail`` the leaf layers the plan does not cover, run plainly after it;
    ``channels`` the real channel count of the plan's output; ``flattened``
    True if that output is (N, channels) rather than (N, channels, H, W).
    """

    def __init__(self, model, steps, params, tail, channels, flattened):
        self.steps = steps
        self.params = params
        self.tail = tail
        self.channels = channels
        self.flattened = flattened
        self.shapes = {}         # (H, W) of the input -> (step_shapes, tiling)
        self.checked = set()     # (shape, dtype) of inputs the model's own checks accepted
        self.one_image = OneImage()
        self.spare = []          # scratch buffers kept between calls (fused_program.take_scratch)
        # What is_current compares: (dict, key, value) that must still be there, the masks
        # dicts and how many masks each had, every chain's list of layers and a copy of it.
        same, masks, self.lists = [], [], []
        for chain in _chains(model):
            self.lists.append((chain.layers, list(chain.layers)))
        for _, layer in model.named_layers():
            for name in tuple(layer.param_names) + tuple(layer.buffer_names) + ("masks",):
                same.append((layer.__dict__, name, getattr(layer, name)))
            same += [(layer.masks, name, mask) for name, mask in layer.masks.items()]
            masks.append(layer.masks)
        # Kept as parallel tuples, so that is_current's loops run in C (map), not in Python:
        # at batch 1 this check is made at every call.
        self.dicts, self.keys, self.values = (tuple(column) for column in zip(*same))
        self.masks, self.mask_counts = tuple(masks), tuple(len(m) for m in masks)

    def is_current(self, model):
        """True if ``model`` still has its layers and holds every array this plan was built from."""
        return (all(map(operator.is_, map(dict.get, self.dicts, self.keys), self.values))
                and all(map(operator.eq, map(len, self.masks), self.mask_counts))
                and all(now == then for now, then in self.lists))

    def accept(self, model, x):
        """``x`` cast for the plan, after the model's checks (run once per input shape and dtype)."""
        key = (x.shape, x.dtype) if isinstance(x, np.ndarray) else None
        if key is None or key not in self.checked:
            x = model.prepare_input(x)          # raises naming the layer that does not fit
            if key is not None:
                self.checked.add(key)
            return x
        return np.ascontiguousarray(x, dtype=self.params.dtype)

    def sizes(self, H, W):
        """``step_shapes`` and the tiling (``tiling``) for H x W inputs (remembered)."""
        if (H, W) not in self.shapes:
            shapes = step_shapes(self.steps, self.steps[0, C_IN], H, W)
            tiles = tiling(shapes, self.params.itemsize, by_image=self.steps[0, KIND] == CONV)
            self.shapes[H, W] = (shapes, tiles)
        return self.shapes[H, W]

    def __call__(self, x):
        """The model's output for ``x`` (N, C, H, W), already checked and in the plan's dtype."""
        N = x.shape[0]
        shapes, tiles = self.sizes(x.shape[2], x.shape[3])
        out = np.empty((N, self.channels, shapes[-1, 1], shapes[-1, 2]), x.dtype)
        workers = numba.get_num_threads()
        if N == 1 and workers > 1 and can_yield:         # one image: share its steps, or not
            share = self.one_image.choose()
            start = time.perf_counter()
            if share:
                run_shared(x, self.steps, self.params, shapes, out, workers)
            else:
                run_plan(x, self.steps, self.params, tiles, 1, out, shapes, self.spare)
            self.one_image.record(share, time.perf_counter() - start)
        else:
            run_plan(x, self.steps, self.params, tiles, workers, out, shapes, self.spare)
        y = out.reshape(N, self.channels) if self.flattened else out
        for layer in self.tail:
            y = layer.forward(y)
        return y


def _chains(layer):
    """``layer`` and every chain nested in it."""
    if not hasattr(layer, "layers"):
        return []
    return [layer] + [c for child in layer.layers for c in _chains(child)]


def build_plan(model):
    """The :class:`FusedPlan` of ``model`` (a Chain), or None if its first layer is not fusable."""
    leaves = [layer for _, layer in model.named_layers()]
    if model.dtype is None:
        return None
    builder = _Builder()
    i = 0
    while i < len(leaves):
        following = _next_step(builder, leaves, i)
        if following is None:
            break
        i = following
        last = builder.rows[-1]
        if i < len(leaves) and type(leaves[i]) in _ACTIVATIONS and last[KIND] != POOL:
            if last[ACT] == fk.IDENTITY:
                last[ACT] = _ACTIVATIONS[type(leaves[i])]
                i += 1
    if not builder.rows:
        return None
    params = np.concatenate(builder.chunks).astype(model.dtype)
    return FusedPlan(model, np.array(builder.rows), params, leaves[i:], builder.channels,
                     builder.flattened)


def fused_call(chain, x):
    """``chain(x)`` in eval mode through its plan (built if missing or stale), or None if it has none.

    The plan lives in ``chain._fused``: False means "no plan possible",
    None "not built yet".  The input is kept in ``chain._fused_input`` for
    a backward pass (see the module docstring).
    """
    plan = chain._fused
    if plan is None or (plan is not False and not plan.is_current(chain)):
        plan = chain._fused = build_plan(chain) or False
    if plan is False:
        return None
    x = plan.accept(chain, x)
    chain._fused_input = x
    return plan(x)
