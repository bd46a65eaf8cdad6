"""Checking hand-written gradients against finite differences.

``gradcheck(layer, x)`` is the tool the layer tutorial ends with: write a
layer's forward and backward, then let the computer check the backward by
nudging every input and parameter entry and watching the output move.
"""

import numpy as np

from .common import check_int, check_number
from .layers import Layer

__all__ = ["gradcheck", "GradcheckReport"]


class GradcheckReport(dict):
    """Worst relative error per tensor (``"input"`` and every parameter key)."""

    @property
    def worst(self):
        return max(self.values()) if self else 0.0

    def ok(self, tol=1e-6):
        return self.worst < tol

    def __str__(self):
        width = max(len(k) for k in self) if self else 0
        lines = [f"{k.ljust(width)}  {v:.2e}" for k, v in self.items()]
        lines.append(f"{'worst'.ljust(width)}  {self.worst:.2e}")
        return "\n".join(lines)


def _entries(size, max_entries, rng):
    if max_entries is None or size <= max_entries:
        return np.arange(size)
    return np.sort(rng.choice(size, max_entries, replace=False))


def _check_arguments(layer, eps, max_entries, seed):
    """TypeError or ValueError naming the argument of gradcheck that is wrong; else the random generator."""
    if not isinstance(layer, Layer):
        raise TypeError(f"gradcheck: layer must be a tinyprune Layer (with forward and backward), "
                        f"got {type(layer).__name__}")
    check_number(eps, "eps", "gradcheck", low=0.0, low_open=True)
    if max_entries is not None:
        check_int(max_entries, "max_entries", "gradcheck")
    return np.random.default_rng(check_int(seed, "seed", "gradcheck", minimum=0))


def _analytic(model, x, r):
    """{"input": (x, dL/dx), parameter key: (parameter, its gradient)} from one backward pass of ``model``.

    A backward pass that returns nothing, or a gradient of another shape, or
    stores no gradient for a parameter, is reported by name here (the
    mistakes of a first backward pass) instead of surfacing as a NumPy error
    further down.
    """
    where = f"gradcheck: {type(model).__name__}.backward"
    dx = model.backward(r.copy())
    if not isinstance(dx, np.ndarray):
        raise TypeError(f"{where} returned {type(dx).__name__}; it must return dL/dx, an array shaped like "
                        f"the input {x.shape}")
    analytic = {"input": (x, dx)}
    for key, owner, name in model.named_parameters():
        if name not in owner.grads:
            raise RuntimeError(f"{where} stored no gradient for parameter {key!r}; store it with "
                               f"self.set_grad({name!r}, ...)")
        analytic[key] = (getattr(owner, name), owner.grads[name].copy())
    for key, (tensor, grad) in analytic.items():
        if grad.shape != tensor.shape:
            what = "returned dL/dx" if key == "input" else f"stored the gradient of {key!r}"
            raise ValueError(f"{where} {what} with shape {grad.shape}; it must have the shape of "
                             f"{'the input' if key == 'input' else 'the parameter'}, {tensor.shape}")
    return analytic


def gradcheck(layer, x, eps=1e-6, max_entries=None, seed=0):
    """Compare every analytic gradient of ``layer`` with central differences, in float64.

    The scalar under test is L = sum(y * r) for a fixed random r of the
    output's shape, so dL/dy = r is what backward receives.  For each tensor
    T (the input, then each parameter) and each checked entry t,

        numeric = (L(t + eps) - L(t - eps)) / (2 eps),

    and the tensor's error is max |analytic - numeric| divided by the largest
    |gradient| of that tensor, so a tiny entry does not blow the ratio up.  A
    tensor whose gradient is zero by construction (a BatchNorm beta followed by
    another BatchNorm, say) is measured against 1e-3 of the largest gradient
    of any tensor instead of against its own rounding noise.

    Kinks (relu at 0, slopehtanh at +-1) make the difference quotient wrong
    when a nudge crosses one; in a deep network lower ``eps`` (1e-7) makes
    that rare.  ``max_entries`` checks a random
    subset of each larger tensor (the whole tensor when None).

    Works on a float64 copy, so ``layer`` itself is left as it was; mode
    (train/eval) is the layer's own.  ``layer`` must be a tinyprune layer
    (a function has no backward to check: TypeError); ``x`` is checked as
    ``layer(x)`` checks it.  A backward pass that returns no array, or a
    gradient of the wrong shape, or stores no gradient for a parameter, is
    an error naming what is missing.  Returns a :class:`GradcheckReport`.
    """
    rng = _check_arguments(layer, eps, max_entries, seed)
    model = layer.copy().to(np.float64)
    x = np.array(model.prepare_input(x), dtype=np.float64)     # a copy: the input is nudged below
    y = model.forward(x)
    r = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(model.forward(x) * r))

    analytic = _analytic(model, x, r)
    floor = 1e-3 * max(np.abs(g).max(initial=0.0) for _, g in analytic.values())
    report = GradcheckReport()
    for key, (tensor, grad) in analytic.items():
        flat = tensor.reshape(-1)   # a view: nudging it nudges the tensor
        numeric = np.zeros(flat.size)
        checked = _entries(flat.size, max_entries, rng)
        for i in checked:
            old = flat[i]
            flat[i] = old + eps
            up = loss()
            flat[i] = old - eps
            down = loss()
            flat[i] = old
            numeric[i] = (up - down) / (2 * eps)
        a = grad.reshape(-1)[checked]
        n = numeric[checked]
        scale = max(np.abs(a).max(initial=0.0), np.abs(n).max(initial=0.0), floor)
        report[key] = float(np.abs(a - n).max(initial=0.0) / scale) if scale > 0 else 0.0
    return report
