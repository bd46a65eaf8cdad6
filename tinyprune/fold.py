"""Folding BatchNorm into the convolution before it.

In eval mode a BatchNorm2d is a fixed affine map per channel c
(``BatchNorm2d.eval_scale_shift``)::

    bn(z)[c] = z[c] * scale[c] + shift[c],
    scale = gamma / sqrt(running_var + eps),   shift = beta - running_mean * scale.

When z is the output of a convolution, z[c] = (W[c] * x) + b[c] (``*`` the
sum over the receptive field), the two maps compose into one convolution::

    bn(conv(x))[c] = ((W[c] * scale[c]) * x) + (b[c] * scale[c] + shift[c])

so weight row c is multiplied by scale[c] and the bias becomes
b * scale + shift (b = 0 for a conv without bias).  The same holds for a
depthwise convolution, whose filter c makes channel c alone.  This is the
model deployment tools want: fewer layers, the same function, and no
statistics to keep.  The products are formed in float64 and rounded once
to the model's dtype.
"""

import numpy as np

from .module import check_model
from .layers import BatchNorm2d, Conv2d, DepthwiseConv2d, layer_at, parse_path

__all__ = ["fold_batchnorm", "folded_parameters", "foldable_pairs"]


def folded_parameters(conv, bn):
    """The (weight, bias) of ``conv`` followed by ``bn`` in eval mode, as float64 arrays.

    ``conv`` a Conv2d (weight (C, C_in, KH, KW)) or DepthwiseConv2d (weight
    (C, 1, KH, KW)), with or without a bias; ``bn`` a BatchNorm2d over its C
    channels.  Masked entries read as zero (``effective``).  Returns weight
    (same shape as conv's) and bias (C,).
    """
    scale, shift = bn.eval_scale_shift()
    weight = conv.effective("weight").astype(np.float64) * scale.reshape(-1, 1, 1, 1)
    bias = shift.copy()
    if conv.bias is not None:
        bias += conv.effective("bias").astype(np.float64) * scale
    return weight, bias


def foldable_pairs(model):
    """``[(conv path, conv, bn path, bn)]``: every BatchNorm2d right after a conv of its size.

    "Right after" in ``named_layers`` order (a pair may straddle two nested
    chains).  Paths are the ``named_layers`` ones, e.g. ``"[0][1]"``.
    """
    leaves = list(model.named_layers())
    pairs = []
    for (conv_path, conv), (bn_path, bn) in zip(leaves, leaves[1:]):
        if (isinstance(conv, (Conv2d, DepthwiseConv2d)) and isinstance(bn, BatchNorm2d)
                and bn.channels == conv.c_out):
            pairs.append((conv_path, conv, bn_path, bn))
    return pairs


def _folded_masks(conv, bn):
    """Masks for the folded weight and bias (None where nothing is masked).

    A channel whose gamma is pruned has scale 0, so its folded weight row is
    zero and stays pruned; its folded bias is beta, zero if beta is pruned
    too.  Everything else the folding mixes together, so it is kept.
    """
    C = bn.channels
    gamma_kept = bn.masks.get("weight", np.ones(C, bool))
    beta_kept = bn.masks.get("bias", np.ones(C, bool))
    rows = np.broadcast_to(gamma_kept.reshape(-1, 1, 1, 1), conv.weight.shape)
    weight_mask = conv.masks.get("weight", np.ones(conv.weight.shape, bool)) & rows
    bias_mask = gamma_kept | beta_kept
    return (None if weight_mask.all() else weight_mask,
            None if bias_mask.all() else bias_mask)


def fold_batchnorm(model):
    """A copy of ``model`` with every BatchNorm2d folded into the conv before it.

    Each BatchNorm2d that directly follows a Conv2d or DepthwiseConv2d over
    the same channels is removed, and that conv gets the folded weight and a
    bias (see the module docstring), so later layers move up one place in
    their chain (``model[0][1]`` was the first BatchNorm; it is now the first
    activation).  A BatchNorm2d anywhere else (first in the model, after an
    activation) is left where it is.  ``model`` itself is unchanged.

    The result computes what ``model`` computes in eval mode, up to float
    rounding; in train mode it differs, since there are no batch statistics
    left to use.  Multiply counts (``compute_dot_prods``, every rule) are
    unchanged, with one exception that is not a loss: a channel whose
    BatchNorm gamma is exactly 0 makes an all-zero weight row, which
    ``prune_propagate`` would zero anyway.  Masks: a pruned gamma keeps its
    conv row pruned, a pruned gamma and beta keep the folded bias pruned.
    """
    check_model(model, 'fold_batchnorm')
    folded = model.copy()
    pairs = foldable_pairs(folded)
    for _, conv, _, bn in pairs:
        weight, bias = folded_parameters(conv, bn)
        dtype = conv.weight.dtype
        weight_mask, bias_mask = _folded_masks(conv, bn)
        conv.weight = weight.astype(dtype)
        conv.bias = bias.astype(dtype)
        conv.param_names = ("weight", "bias")
        conv.masks = {name: mask for name, mask in (("weight", weight_mask), ("bias", bias_mask))
                      if mask is not None}
        conv.grads = {}
        conv._cache = None
    # Remove the BatchNorms from the back, so the indices still to come stay valid.
    for bn_path in sorted((parse_path(p) for _, _, p, _ in pairs), reverse=True):
        layer_at(folded, bn_path[:-1]).layers.pop(bn_path[-1])
    return folded
