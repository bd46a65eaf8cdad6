"""Optimisers: how one step of training moves the parameters, and a step schedule.

* ``Optimizer`` -- what every update rule shares: the model's parameters, the
  learning rate, the checks before a step, the masks, and the all-or-nothing
  commit;
* ``Adam`` and ``SGD`` -- the two update rules, with PyTorch's semantics;
* ``StepLR`` -- multiply the learning rate by ``gamma`` at chosen epochs;
* ``DivergenceError`` -- what a step raises instead of writing a NaN or an
  infinity into the model.

An optimiser is bound to one model.  ``model.backward`` leaves a gradient in
``layer.grads`` for every parameter; ``optimizer.step()`` reads them and
moves every parameter.  Two promises hold after every step:

* pruned weights are exactly 0.0: a masked entry is *selected* away
  (``np.where``), never multiplied by its mask, because NaN x 0 and
  inf x 0 are NaN;
* the parameters are finite: every new value is computed first, and only if
  all of them (and the optimiser's own state) are finite is anything written.
  Otherwise ``DivergenceError`` is raised and the model and the optimiser are
  exactly as before the step, so the model keeps its last finite weights.
"""

import numpy as np

from .common import check_int, check_number
from .module import check_model

__all__ = ["Optimizer", "Adam", "SGD", "StepLR", "DivergenceError"]


class DivergenceError(FloatingPointError):
    """Training produced a NaN or an infinity; nothing of the step that produced it was applied.

    A FloatingPointError (what NumPy raises for an overflow when asked to),
    not a ValueError: every argument was valid, the arithmetic ran away --
    usually a learning rate too large for the model.
    """


def first_non_finite(array):
    """``(index, value)`` of the first NaN or infinity in ``array``, or None if it is all finite."""
    finite = np.isfinite(array)
    if finite.all():
        return None
    index = np.unravel_index(np.argmin(finite), np.shape(array))   # the first False
    return tuple(int(i) for i in index), np.asarray(array)[index]


class Optimizer:
    """What Adam and SGD share: the list of parameters, masks, the lr, and the commit.

    At construction it lists every trainable array
    (``model.named_parameters()``); ``step()`` reads the gradients the last
    ``model.backward`` left in each ``layer.grads``.  A new update rule is a
    subclass with an ``update(key, p, g)`` that returns the new parameter
    and the new state, changing nothing itself: ``step`` checks everything it
    returns and commits it.
    """

    def __init__(self, model, lr):
        where = type(self).__name__
        check_model(model, where)
        self.model = model
        self.lr = check_number(lr, "lr", where, low=0, low_open=True)
        self.params = list(model.named_parameters())   # (key, layer, name)
        self.shapes = {key: getattr(layer, name).shape for key, layer, name in self.params}
        if not self.params:
            raise ValueError(f"{where}: the model has no trainable parameters")

    def check_shapes(self, where=None):
        """Raise ValueError if a parameter changed shape since this optimiser was made (a resize)."""
        where = where or f"{type(self).__name__}.step"
        for key, layer, name in self.params:
            shape = getattr(layer, name).shape
            if shape != self.shapes[key]:
                raise ValueError(f"{where}: parameter {key!r} changed shape from {self.shapes[key]} to "
                                 f"{shape} (was the model resized?); make a new optimiser")

    def _grads(self):
        """Every ``(key, layer, name, parameter, gradient)``, all checked before any parameter moves."""
        self.check_shapes()
        checked = []
        for key, layer, name in self.params:
            if name not in layer.grads:
                raise RuntimeError(f"{type(self).__name__}.step: no gradient for {key!r}; "
                                   "run model.backward first")
            p, g = getattr(layer, name), layer.grads[name]
            if np.shape(g) != p.shape:
                raise ValueError(f"{type(self).__name__}.step: the gradient of {key!r} has shape {np.shape(g)}, "
                                 f"the parameter {p.shape}")
            checked.append((key, layer, name, p, g))
        return checked

    def step(self):
        """Move every parameter by one update, all of them or none.

        Parameters and gradients are read as the forward pass uses them
        (masked entries as 0); each new parameter has its masked entries set
        to exactly 0.  If any new parameter or state entry is NaN or
        infinite, raises DivergenceError naming it and changes nothing.
        """
        new = []
        for key, layer, name, p, g in self._grads():
            p_new, state = self.update(key, layer.masked(name, p), layer.masked(name, g))
            p_new = layer.masked(name, p_new)
            self._check_finite(p_new, f"the parameter {key!r}")
            for attribute, value in state.items():
                self._check_finite(value, f"the optimiser's {attribute}[{key!r}]")
            new.append((p, p_new, key, state))
        for p, p_new, key, state in new:
            p[...] = p_new                  # in place: whoever holds the array sees the step
            for attribute, value in state.items():
                getattr(self, attribute)[key] = value

    def _check_finite(self, value, what):
        bad = first_non_finite(value)
        if bad is not None:
            index, number = bad
            raise DivergenceError(
                f"{type(self).__name__}.step at lr {self.lr:g}: the update would make {what} non-finite "
                f"({number} at index {index}); nothing was changed")

    def update(self, key, p, g):
        """``(new p, {state attribute: new value})`` for parameter ``key``; must not change anything."""
        raise NotImplementedError


class Adam(Optimizer):
    """Adam (Kingma & Ba), exactly as ``torch.optim.Adam`` without weight decay.

    Per parameter it keeps running means of the gradient (m) and of its
    square (v), and moves each entry by about lr in the direction of -m,
    scaled by 1 / sqrt(v): ``update`` has the formulas.  The state (m, v,
    t) has the parameters' dtype; masked entries end every step at 0.
    """

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(model, lr)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise TypeError(f"Adam: betas must be a pair (beta1, beta2) such as (0.9, 0.999), got {betas!r}")
        beta1, beta2 = betas
        self.betas = (check_number(beta1, "betas[0]", "Adam", 0, 1, high_open=True),
                      check_number(beta2, "betas[1]", "Adam", 0, 1, high_open=True))
        # eps = 0 would divide 0 by 0 for any entry whose gradient has always been exactly 0.
        self.eps = check_number(eps, "eps", "Adam", low=0, low_open=True)
        self.t = 0
        self.m = {key: np.zeros_like(getattr(layer, name)) for key, layer, name in self.params}
        self.v = {key: np.zeros_like(getattr(layer, name)) for key, layer, name in self.params}

    def step(self):
        """Move every parameter by one Adam update, using the gradients in ``layer.grads``."""
        super().step()          # raises, changing nothing, if the step is not finite
        self.t += 1

    def update(self, key, p, g):
        """One Adam step of parameter ``key``: ``(new p, {"m": new m, "v": new v})``, changing nothing.

        p, g: the parameter and its gradient, arrays of one shape and dtype
        (masked entries already 0); ``self.m[key]``, ``self.v[key]``: the
        running means of g and g**2 after the steps so far (zeros before
        the first); ``t``: the number of this step, 1 on the first call.
        ``Optimizer.step`` commits what this returns, masks it and checks
        that it is finite, so this only computes, from Kingma & Ba's
        Algorithm 1 (https://arxiv.org/abs/1412.6980):

            m = beta1 * m + (1 - beta1) * g          # new running mean of g
            v = beta2 * v + (1 - beta2) * g**2       # new running mean of g**2
            p = p - lr * m_hat / (sqrt(v_hat) + eps)

        where m_hat = m / (1 - beta1**t) and v_hat = v / (1 - beta2**t)
        undo the bias of averages that start at 0: after one step m is only
        (1 - beta1) g, and m_hat is g again.  ``eps`` is added after the
        square root, as PyTorch does.  The new m, v and p keep p's dtype
        (float32 stays float32).
        """
        t = self.t + 1          # the number of the step being computed
        beta1, beta2 = self.betas
        ### BEGIN SOLUTION
        m = (self.m[key] * beta1 + (1 - beta1) * g).astype(p.dtype, copy=False)
        v = (self.v[key] * beta2 + (1 - beta2) * g * g).astype(p.dtype, copy=False)
        denom = np.sqrt(v / (1 - beta2 ** t)) + self.eps
        p_new = p - ((self.lr / (1 - beta1 ** t)) * m / denom).astype(p.dtype, copy=False)
        ### END SOLUTION
        return p_new, {"m": m, "v": v}


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and weight decay, as ``torch.optim.SGD``.

    For each parameter p with gradient g::

        d = g + weight_decay * p                 # L2 penalty's gradient added
        b = d                 on the first step  # the momentum buffer
        b = momentum * b + d  afterwards
        p = p - lr * b

    (PyTorch's defaults: no dampening, no Nesterov.)  ``momentum=0`` is plain
    gradient descent.  Masked entries end every step at exactly 0.
    """

    def __init__(self, model, lr, momentum=0.9, weight_decay=0.0):
        super().__init__(model, lr)
        self.momentum = check_number(momentum, "momentum", "SGD", 0, 1, high_open=True)
        self.weight_decay = check_number(weight_decay, "weight_decay", "SGD", low=0)
        self.buffers = {}   # key -> momentum buffer, created on the first step

    def update(self, key, p, g):
        d = g + self.weight_decay * p if self.weight_decay else g
        if not self.momentum:
            return p - (self.lr * d).astype(p.dtype, copy=False), {}
        if key not in self.buffers:
            b = np.array(d, dtype=p.dtype, copy=True)
        else:
            b = (self.buffers[key] * self.momentum + d).astype(p.dtype, copy=False)
        return p - (self.lr * b).astype(p.dtype, copy=False), {"buffers": b}


class StepLR:
    """Multiply the optimiser's learning rate by ``gamma`` at each milestone epoch.

    Call ``step()`` once at the end of every epoch.  After ``epoch`` calls the
    learning rate is ``base_lr * gamma ** k``, k = number of milestones that
    are <= epoch (PyTorch's ``MultiStepLR``).  With ``milestones=[8]`` and
    ``gamma=0.1``, epochs 0-7 run at base_lr and epochs 8 on at base_lr / 10.
    """

    def __init__(self, optimizer, milestones, gamma=0.1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"StepLR: optimizer must be an optimiser such as Adam(model), "
                            f"got {type(optimizer).__name__}")
        if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
            raise TypeError(f"StepLR: milestones must be a sequence of epoch numbers such as (8,), "
                            f"got {milestones!r}")
        self.milestones = sorted(check_int(m, f"milestones[{i}]", "StepLR") for i, m in enumerate(milestones))
        self.gamma = check_number(gamma, "gamma", "StepLR", low=0, low_open=True)
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.epoch = 0
        # The rate moves one way, so it stays finite and positive if its last value does.
        try:
            last = self.lr_at(self.milestones[-1]) if self.milestones else self.base_lr
        except OverflowError:                       # gamma ** k beyond a float
            last = float("inf")
        if not (np.isfinite(last) and last > 0):
            raise ValueError(f"StepLR: gamma {self.gamma!r} at {len(self.milestones)} milestone(s) takes the "
                             f"learning rate from {self.base_lr!r} to {last!r}; it must stay finite and positive")

    def lr_at(self, epoch):
        """The learning rate used during ``epoch`` (counting from 0)."""
        passed = sum(1 for m in self.milestones if m <= epoch)
        return self.base_lr * self.gamma ** passed

    def step(self):
        """End an epoch: set the learning rate for the next one."""
        self.epoch += 1
        self.optimizer.lr = self.lr_at(self.epoch)
