"""Optimisers: how one step of training moves the parameters, and a step schedule.

* ``Optimizer`` -- what every update rule shares: the model's parameters, the
  learning rate, the checks before a step, and the masks;
* ``Adam`` and ``SGD`` -- the two update rules, with PyTorch's semantics;
* ``StepLR`` -- multiply the learning rate by ``gamma`` at chosen epochs.

An optimiser is bound to one model.  ``model.backward`` leaves a gradient in
``layer.grads`` for every parameter; ``optimizer.step()`` reads them and
moves each parameter in place.  Pruned weights stay at exactly zero: after
every update the parameter is multiplied by its mask (``layer.masks``).
"""

import numpy as np

from .common import check_int, check_number

__all__ = ["Optimizer", "Adam", "SGD", "StepLR"]


class Optimizer:
    """What Adam and SGD share: the list of parameters, masks, and the lr.

    At construction it lists every trainable array
    (``model.named_parameters()``); ``step()`` reads the gradients the last
    ``model.backward`` left in each ``layer.grads``.  A new update rule is a
    subclass with a ``step()`` that loops over ``self._grads()`` and ends each
    parameter's update with ``self._apply_mask``.
    """

    def __init__(self, model, lr):
        where = type(self).__name__
        self.model = model
        self.lr = check_number(lr, "lr", where, low=0, low_open=True)
        self.params = list(model.named_parameters())   # (key, layer, name)
        self.shapes = {key: getattr(layer, name).shape for key, layer, name in self.params}
        if not self.params:
            raise ValueError(f"{where}: the model has no trainable parameters")

    def _grads(self):
        """Every ``(key, layer, name, parameter, gradient)``, all checked before any parameter moves."""
        checked = []
        for key, layer, name in self.params:
            p = getattr(layer, name)
            if p.shape != self.shapes[key]:
                raise ValueError(
                    f"{type(self).__name__}.step: parameter {key!r} changed shape from "
                    f"{self.shapes[key]} to {p.shape} (was the model resized?); make a new optimiser")
            if name not in layer.grads:
                raise RuntimeError(f"{type(self).__name__}.step: no gradient for {key!r}; "
                                   "run model.backward first")
            checked.append((key, layer, name, p, layer.grads[name]))
        return checked

    @staticmethod
    def _apply_mask(layer, name, p):
        # The gradient of a masked entry is already zero, but the update could
        # still move it (weight decay, old momentum, a weight never zeroed);
        # multiplying afterwards makes "pruned stays exactly 0.0" a guarantee.
        mask = layer.masks.get(name)
        if mask is not None:
            p *= mask


class Adam(Optimizer):
    """Adam (Kingma & Ba), exactly as ``torch.optim.Adam`` without weight decay.

    For each parameter p with gradient g, at step t = 1, 2, ...::

        m = beta1 * m + (1 - beta1) * g          # running mean of g
        v = beta2 * v + (1 - beta2) * g**2       # running mean of g**2
        m_hat = m / (1 - beta1**t)               # both start at 0, so early
        v_hat = v / (1 - beta2**t)               # averages are scaled up
        p = p - lr * m_hat / (sqrt(v_hat) + eps)

    ``eps`` is added outside the square root, as PyTorch does.  The state
    (m, v, t) has the parameters' dtype; masked entries end every step at 0.
    """

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(model, lr)
        beta1, beta2 = betas
        self.betas = (check_number(beta1, "betas[0]", "Adam", 0, 1, high_open=True),
                      check_number(beta2, "betas[1]", "Adam", 0, 1, high_open=True))
        self.eps = check_number(eps, "eps", "Adam", low=0)
        self.t = 0
        self.m = {key: np.zeros_like(getattr(layer, name)) for key, layer, name in self.params}
        self.v = {key: np.zeros_like(getattr(layer, name)) for key, layer, name in self.params}

    def step(self):
        """Move every parameter by one Adam update, using the gradients in ``layer.grads``."""
        grads = self._grads()
        self.t += 1
        beta1, beta2 = self.betas
        correction1 = 1 - beta1 ** self.t
        correction2 = 1 - beta2 ** self.t
        for key, layer, name, p, g in grads:
            m, v = self.m[key], self.v[key]
            m *= beta1
            m += (1 - beta1) * g
            v *= beta2
            v += (1 - beta2) * g * g
            denom = np.sqrt(v / correction2) + self.eps
            p -= ((self.lr / correction1) * m / denom).astype(p.dtype, copy=False)
            self._apply_mask(layer, name, p)


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

    def step(self):
        """Move every parameter by one SGD update, using the gradients in ``layer.grads``."""
        for key, layer, name, p, g in self._grads():
            d = g + self.weight_decay * p if self.weight_decay else g
            if self.momentum:
                if key not in self.buffers:
                    self.buffers[key] = np.array(d, dtype=p.dtype, copy=True)
                else:
                    self.buffers[key] *= self.momentum
                    self.buffers[key] += d
                d = self.buffers[key]
            p -= (self.lr * d).astype(p.dtype, copy=False)
            self._apply_mask(layer, name, p)


class StepLR:
    """Multiply the optimiser's learning rate by ``gamma`` at each milestone epoch.

    Call ``step()`` once at the end of every epoch.  After ``epoch`` calls the
    learning rate is ``base_lr * gamma ** k``, k = number of milestones that
    are <= epoch (PyTorch's ``MultiStepLR``).  With ``milestones=[8]`` and
    ``gamma=0.1``, epochs 0-7 run at base_lr and epochs 8 on at base_lr / 10.
    """

    def __init__(self, optimizer, milestones, gamma=0.1):
        self.milestones = sorted(check_int(m, f"milestones[{i}]", "StepLR") for i, m in enumerate(milestones))
        self.gamma = check_number(gamma, "gamma", "StepLR", low=0, low_open=True)
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.epoch = 0

    def lr_at(self, epoch):
        """The learning rate used during ``epoch`` (counting from 0)."""
        passed = sum(1 for m in self.milestones if m <= epoch)
        return self.base_lr * self.gamma ** passed

    def step(self):
        """End an epoch: set the learning rate for the next one."""
        self.epoch += 1
        self.optimizer.lr = self.lr_at(self.epoch)
