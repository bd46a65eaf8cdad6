"""Counting the multiplies and adds of a model's dot products.

Only convolutions and dense layers are counted.  Bias additions, BatchNorm,
activations, pooling and flattening count zero under every rule: they are
cheap elementwise passes, and the tutorial's numbers leave them out.  Counts
are for the whole batch of ``input_shape`` (NCHW).

For a convolution let P = HO*WO be the number of output pixels (patches),
K = KH*KW*C_in/groups the terms in one dot product, C = C_out.  A dense layer
is the case P = 1, K = in, C = out.  Zeros are read from the weights as the
forward pass uses them (masked entries are zero).

Three rules, each a function of one layer's weights (``layer_dot_prods``
picks one; their docstrings have the formulas):

``"reference"``, ``reference_counts``
    The original tutorial's rule, which reproduces its printed numbers: an
    all-zero output channel saves its work in every patch, but a scattered
    zero saves one multiply in total, and no add.
``"sparse"``, ``sparse_counts``
    An ideal zero-skipping machine: a zero weight is skipped in every output
    it feeds, and an all-zero channel costs nothing.
``"dense"``, ``dense_counts``
    What a dense kernel executes: zeros change nothing.
"""


import numpy as np

from .common import check_int, format_html_table, format_table
from .layers import Conv2d, Dense, DepthwiseConv2d
from .model import TUTORIAL_INPUT
from .module import check_model

__all__ = ["compute_dot_prods", "dot_prod_table", "DotProdTable", "RULES"]

RULES = ("reference", "sparse", "dense")


def _check_rule(rule, where):
    if not isinstance(rule, str):
        raise TypeError(f"{where}: the counting rule must be one of {', '.join(RULES)} (a string), got {rule!r}")
    if rule not in RULES:
        raise ValueError(f"{where}: unknown counting rule {rule!r}; expected one of {', '.join(RULES)}")


def _check_input_shape(input_shape, where):
    """``input_shape`` as a tuple of four positive ints (N, C, H, W), or an error naming the bad entry.

    A tuple, a list or a 1-D NumPy array; a string such as "1,3,96,96" is
    refused rather than read as nine characters.
    """
    if isinstance(input_shape, np.ndarray) and input_shape.ndim == 1:
        input_shape = tuple(input_shape)
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError(f"{where}: input_shape must be a tuple of four positive ints (N, C, H, W) such as "
                        f"{TUTORIAL_INPUT}, got {input_shape!r}")
    shape = tuple(input_shape)
    if len(shape) != 4:
        raise ValueError(f"{where}: input_shape must be (N, C, H, W), got {shape}; e.g. {TUTORIAL_INPUT}")
    return tuple(check_int(size, f"input_shape[{i}]", where) for i, size in enumerate(shape))


def layer_dot_prods(layer, patches, rule):
    """(mults, adds) of one conv or dense layer for ``patches`` output pixels (per image).

    The weights are read as the forward pass uses them (masked entries are
    zero) and laid out one output channel per row, (C_out, K), for the
    rule's function: ``reference_counts``, ``sparse_counts`` or
    ``dense_counts``.  A dense layer is the case of one patch.
    """
    w = layer.effective("weight")
    rows = w.reshape(w.shape[0], -1)                     # (C_out, K)
    if rule == "reference":
        return reference_counts(rows, patches)
    if rule == "sparse":
        return sparse_counts(rows, patches)
    return dense_counts(rows, patches)


# The three rules.  Each gets the layer's weights as a (C, K) matrix, one
# output channel per row (C output channels, K terms in each dot product:
# KH*KW*C_in/groups for a convolution, ``in`` for a dense layer), and P, the
# output pixels of one image (HO*WO; 1 for a dense layer).  Each returns
# (multiplies, adds) as Python ints.

def reference_counts(w, patches):
    """The course's rule: ``(mults, adds)`` of one layer with weights ``w`` (C, K) over ``patches`` pixels.

    w: (C, K) float, one output channel per row, zeros where weights were
    pruned; patches: P, output pixels per image (1 for a dense layer).

    Let Z be the number of output channels whose K weights are all zero
    (dead channels) and U the number of zero weights in the other channels
    (scattered zeros).  Then

        multiplies  P*K*C - U - Z*P*K
        adds        P*(K-1)*(C-Z)

    A dead channel saves all its work, P*K multiplies and P*(K-1) adds.  A
    scattered zero saves ONE multiply in total (not one per patch) and no
    add.  That asymmetry is the original tutorial's, and it is what makes
    its printed numbers come out: LevelPrune(0.2) barely moves the count
    (7,505,600 -> 7,460,806 multiplies, adds unchanged), ChannelPrune(0.2)
    moves it a lot (6,105,200).  The README, "Counting multiplies and adds", compares the rules.

    Worked case: w = [[1, 0, 2], [0, 0, 0]] (C = 2, K = 3: one scattered
    zero, one dead channel) on P = 4 patches gives 4*3*2 - 1 - 1*4*3 = 11
    multiplies and 4*2*(2-1) = 8 adds.
    """
    C, K = w.shape
    nonzero = np.count_nonzero(w, axis=1)                # (C,) non-zero weights of each output channel
    ### BEGIN SOLUTION
    dead = int(np.count_nonzero(nonzero == 0))           # Z: channels with no weight left
    scattered = C * K - int(nonzero.sum()) - dead * K    # U: the zeros outside dead channels
    return patches * K * C - scattered - dead * patches * K, patches * (K - 1) * (C - dead)
    ### END SOLUTION


def sparse_counts(w, patches):
    """An ideal zero-skipping machine: ``(mults, adds)`` of weights ``w`` (C, K) over ``patches`` pixels.

    w: (C, K) float, one output channel per row, zeros where weights were
    pruned; patches: P, output pixels per image (1 for a dense layer).

    Such a machine skips every zero weight in every output it feeds.  In
    one patch, output channel c sums n_c products, n_c = its non-zero
    weights: n_c multiplies, and n_c - 1 adds to sum them (a channel with
    no weight left costs nothing, not -1).  Over P patches:

        multiplies  P * (sum over c of n_c)
        adds        P * (sum over c of max(n_c - 1, 0))

    Worked case: w = [[1, 0, 2], [0, 0, 0], [3, 4, 5]] (n = 2, 0, 3) on
    P = 4 patches gives 4*(2+0+3) = 20 multiplies and 4*(1+0+2) = 12 adds.
    """
    C, K = w.shape
    nonzero = np.count_nonzero(w, axis=1)                # (C,) non-zero weights of each output channel
    ### BEGIN SOLUTION
    return patches * int(nonzero.sum()), patches * int(np.maximum(nonzero - 1, 0).sum())
    ### END SOLUTION


def dense_counts(w, patches):
    """What a dense kernel executes: ``(mults, adds)`` of weights ``w`` (C, K) over ``patches`` pixels.

    w: (C, K) float, one output channel per row; patches: P, output pixels
    per image (1 for a dense layer).

    A dense kernel multiplies every weight, zero or not, so only the shape
    matters: each of the P*C dot products has K multiplies and K - 1 adds
    (K terms need K - 1 additions to sum).

        multiplies  P*K*C
        adds        P*(K-1)*C

    Worked case: any w of shape (2, 3), zeros or not, on P = 4 patches gives
    24 multiplies and 16 adds.
    """
    C, K = w.shape
    ### BEGIN SOLUTION
    return patches * K * C, patches * (K - 1) * C
    ### END SOLUTION


class DotProdTable(list):
    """Rows ``(path, type, output shape, mults, adds)``; ``str()`` gives an aligned table.

    At a prompt (``repr``) it shows that table too, and in Jupyter an HTML
    table with the same columns and total row; it is still a list of tuples
    to index, loop over and compare.
    """

    def __init__(self, rows, rule):
        super().__init__(rows)
        self.rule = rule

    @property
    def mults(self):
        return sum(row[3] for row in self)

    @property
    def adds(self):
        return sum(row[4] for row in self)

    def _cells(self):
        """``format_table``'s arguments: header, rows and total as strings, the title."""
        rows = [(path, kind, str(shape), f"{mults:,}", f"{adds:,}") for path, kind, shape, mults, adds in self]
        return dict(header=("layer", "type", "output shape", "mults", "adds"), rows=rows, left=3,
                    total=("total", "", "", f"{self.mults:,}", f"{self.adds:,}"),
                    title=f"dot products, rule {self.rule!r}")

    def __str__(self):
        return format_table(**self._cells())

    def __repr__(self):
        return str(self)

    def _repr_html_(self):
        return format_html_table(**self._cells())


def dot_prod_table(model, input_shape, rule="reference"):
    """One row per layer: its path (``[0][7]``), type, output shape, mults and adds.

    Layers that do no dot products appear with zero counts.  Prints as an
    aligned table with totals; ``.mults`` and ``.adds`` hold the totals.
    """
    return _count(model, input_shape, rule, "dot_prod_table")


def compute_dot_prods(model, input_shape, rule="reference"):
    """``(mults, adds, output_shape)`` of one forward pass on a batch of ``input_shape`` (NCHW).

    The tutorial's model on its input, one 96 x 96 RGB image; an unpruned
    model has no zero weights, so every rule gives the same counts::

        >>> from tinyprune import MobileNet, TUTORIAL_INPUT, slopehtanh
        >>> compute_dot_prods(MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1), TUTORIAL_INPUT)
        (7505600, 7273983, (1, 1))
    """
    table = _count(model, input_shape, rule, "compute_dot_prods")
    out_shape = table[-1][2] if table else _check_input_shape(input_shape, "compute_dot_prods")
    return table.mults, table.adds, out_shape


def _count(model, input_shape, rule, where):
    """The DotProdTable of ``model`` on ``input_shape``; ``where`` names the caller in errors."""
    check_model(model, where)
    _check_rule(rule, where)
    shape = _check_input_shape(input_shape, where)
    rows = []
    for path, layer in model.named_layers():
        shape = layer.output_shape(shape, f"{where}: model{path}")
        mults = adds = 0
        if isinstance(layer, (Conv2d, DepthwiseConv2d, Dense)):
            patches = shape[2] * shape[3] if len(shape) == 4 else 1
            mults, adds = layer_dot_prods(layer, patches, rule)
            mults, adds = shape[0] * mults, shape[0] * adds
        rows.append((path, type(layer).__name__, shape, int(mults), int(adds)))
    return DotProdTable(rows, rule)
