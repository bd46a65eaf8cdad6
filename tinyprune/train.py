"""Training: the loss, two optimisers, a step schedule, the trainer and evaluation.

This is the tutorial's ``trainer(m, epochs)`` taken apart so each piece can
be read on its own:

* ``bce_with_logits`` -- binary cross-entropy on logits and its gradient;
* ``accuracy`` -- how often the sign of the logit matches the label;
* ``Adam`` and ``SGD`` -- update rules bound to a model, PyTorch's semantics,
  that keep pruned (masked) weights at exactly zero;
* ``StepLR`` -- multiply the learning rate by ``gamma`` at chosen epochs;
* ``trainer`` -- epochs of shuffled, augmented batches, a progress bar, a
  validation pass after each epoch, a ``History``, and a clean stop on Ctrl-C;
* ``evaluate`` -- loss and accuracy on a data set in eval mode.

One training step is the whole of backpropagation in four lines::

    logits = model(x)                               # forward, (B, 1)
    loss, dlogits = bce_with_logits(logits, y)      # dL/dlogits, (B, 1)
    model.backward(dlogits)                         # fills layer.grads
    optimizer.step()                                # moves every parameter

Shapes: images NCHW float32 in [0, 1], logits (N, 1) or (N,), labels (N,).
"""

import math
import signal
import sys
import threading
import time

import numpy as np

from .data import DataLoader, SyntheticVWW, as_dataset

__all__ = ["bce_with_logits", "accuracy", "Adam", "SGD", "StepLR", "History", "trainer", "evaluate"]


# ---------------------------------------------------------------------------
# Loss and accuracy
# ---------------------------------------------------------------------------

def _check_logits_labels(logits, labels, where):
    """Return logits as given and labels reshaped like them; ValueError on a mismatch."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    n = labels.shape[0] if labels.ndim == 1 else None
    if n is None or logits.shape not in ((n,), (n, 1)):
        raise ValueError(f"{where}: expected logits of shape (N,) or (N, 1) and labels of shape (N,), "
                         f"got logits {logits.shape} and labels {labels.shape}")
    if logits.dtype.kind != "f":
        raise ValueError(f"{where}: expected floating-point logits, got {logits.dtype}")
    return logits, labels.reshape(logits.shape)


def bce_with_logits(logits, labels):
    """Mean binary cross-entropy of ``sigmoid(logits)`` against 0/1 ``labels``, and its gradient.

    logits: (N,) or (N, 1) float, one raw score per image (no sigmoid applied).
    labels: (N,) of 0/1 (any numeric dtype; soft labels in [0, 1] work too).
    Returns ``(loss, dlogits)``: the loss as a Python float in nats, and
    dL/dlogits with the shape and dtype of ``logits``.

    Per image, with p = sigmoid(z), the loss is -y log p - (1 - y) log(1 - p).
    Substituting log p = -log(1 + e^-z) and log(1 - p) = -z - log(1 + e^-z)
    gives z - z*y + log(1 + e^-z); for negative z, e^-z overflows, so we use
    the same value written as

        max(z, 0) - z*y + log1p(exp(-|z|)),

    whose exponent is never positive: finite for any z, even |z| = 1000.
    Its derivative is sigmoid(z) - y, so the mean's gradient is
    (sigmoid(z) - y) / N.  The sigmoid is computed from exp(-|z|) too, so it
    neither overflows nor loses the tiny tail values.
    """
    logits, labels = _check_logits_labels(logits, labels, "bce_with_logits")
    z = logits.astype(np.float64)
    y = labels.astype(np.float64)
    n = z.shape[0]
    e = np.exp(-np.abs(z))                       # in (0, 1]: never overflows
    losses = np.maximum(z, 0) - z * y + np.log1p(e)
    sigmoid = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    dlogits = (sigmoid - y) / n
    return float(losses.mean()), dlogits.astype(logits.dtype)


def accuracy(logits, labels):
    """Fraction of images whose predicted class (logit > 0 means 1) equals the label.

    logits (N,) or (N, 1), labels (N,) of 0/1.  Returns a float in [0, 1].
    """
    logits, labels = _check_logits_labels(logits, labels, "accuracy")
    return float(np.mean((logits > 0) == (labels > 0.5)))


# ---------------------------------------------------------------------------
# Optimisers
# ---------------------------------------------------------------------------

class _Optimizer:
    """What Adam and SGD share: the list of parameters, masks, and the lr.

    An optimiser is bound to one model: at construction it lists every
    trainable array (``model.named_parameters()``), and ``step()`` reads the
    gradients the last ``model.backward`` left in each ``layer.grads``.
    """

    def __init__(self, model, lr):
        if not (isinstance(lr, (int, float, np.floating)) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"{type(self).__name__}: lr must be a positive number, got {lr!r}")
        self.model = model
        self.lr = float(lr)
        self.params = list(model.named_parameters())   # (key, layer, name)
        self.shapes = {key: getattr(layer, name).shape for key, layer, name in self.params}
        if not self.params:
            raise ValueError(f"{type(self).__name__}: the model has no trainable parameters")

    def _grads(self):
        """Yield ``(key, layer, name, parameter, gradient)``, checked before anything moves."""
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


class Adam(_Optimizer):
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
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"Adam: betas must lie in [0, 1), got {betas!r}")
        if not eps >= 0:
            raise ValueError(f"Adam: eps must be non-negative, got {eps!r}")
        self.betas = (float(beta1), float(beta2))
        self.eps = float(eps)
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


class SGD(_Optimizer):
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
        if not 0 <= momentum < 1:
            raise ValueError(f"SGD: momentum must lie in [0, 1), got {momentum!r}")
        if not weight_decay >= 0:
            raise ValueError(f"SGD: weight_decay must be non-negative, got {weight_decay!r}")
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
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
        milestones = sorted(int(m) for m in milestones)
        if any(m < 1 for m in milestones):
            raise ValueError(f"StepLR: milestones must be epochs >= 1, got {milestones}")
        if not gamma > 0:
            raise ValueError(f"StepLR: gamma must be positive, got {gamma!r}")
        self.optimizer = optimizer
        self.milestones = milestones
        self.gamma = float(gamma)
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


# ---------------------------------------------------------------------------
# History and progress bar
# ---------------------------------------------------------------------------

class History:
    """What ``trainer`` measured, one list entry per epoch (``model.history``).

    loss, train_accuracy: mean over the epoch's training batches (augmented
        images, train mode), loss in nats.
    val_loss, val_accuracy: ``evaluate`` on the validation set after the epoch.
    lr: the learning rate the epoch ran at.
    seconds: wall time of the epoch's training batches (validation excluded).
    images_per_second: training images / seconds.
    interrupted: True if Ctrl-C stopped the run; the last epoch is then
        partial and its val_loss / val_accuracy are nan (not evaluated).
    A trainer call on a model that already has a history appends to it.
    """

    fields = ("loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
              "images_per_second")

    def __init__(self):
        for field in self.fields:
            setattr(self, field, [])
        self.interrupted = False

    def __len__(self):
        return len(self.loss)

    def append(self, **values):
        for field in self.fields:
            getattr(self, field).append(float(values[field]))

    def as_dict(self):
        """Plain lists and a bool, ready for JSON (checkpoint metadata)."""
        out = {field: list(getattr(self, field)) for field in self.fields}
        out["interrupted"] = self.interrupted
        return out

    def __repr__(self):
        return f"History({len(self)} epochs, val_accuracy={self.val_accuracy})"


class _ProgressBar:
    """One line on stderr, redrawn in place with a carriage return."""

    def __init__(self, total, label, enabled, stream=None):
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream or sys.stderr
        self.last_draw = 0.0

    def update(self, done, text, force=False):
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self.last_draw < 0.1 and done < self.total:
            return   # redrawing more often than 10 times a second only costs time
        self.last_draw = now
        width = 24
        filled = width * done // max(self.total, 1)
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total} {text}")
        self.stream.flush()

    def close(self, text=""):
        if self.enabled:
            self.stream.write(text + "\n")
            self.stream.flush()


# ---------------------------------------------------------------------------
# Ctrl-C
# ---------------------------------------------------------------------------

class _StopOnInterrupt:
    """A context in which the first Ctrl-C only sets ``self.requested``.

    The trainer checks the flag after every batch, so a Ctrl-C finishes the
    batch (the model is never left half-updated) and then returns.  A second
    Ctrl-C raises KeyboardInterrupt as usual.  Signal handlers can only be
    installed from the main thread; elsewhere this does nothing.  The
    previous handler is restored on exit.
    """

    def __init__(self):
        self.requested = False
        self.previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        sys.stderr.write("\n[tinyprune] Ctrl-C: stopping after this batch (press again to abort)\n")
        sys.stderr.flush()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


# ---------------------------------------------------------------------------
# Data arguments
# ---------------------------------------------------------------------------

def _dataset(data, what):
    """``as_dataset(data)`` with errors that say which argument was wrong."""
    try:
        return as_dataset(data)
    except (ValueError, TypeError) as error:
        raise type(error)(f"{what}: {error}") from None


def _check_model_input(model, image_shape, what):
    """Fail before training if the model cannot take images of ``image_shape`` or gives no logit."""
    try:
        out = model.output_shape((2,) + tuple(image_shape))
    except ValueError as error:
        raise ValueError(f"{what}: images of shape {tuple(image_shape)} do not fit the model: {error}") from None
    if out not in ((2,), (2, 1)):
        raise ValueError(f"{what}: the model must give one logit per image, shape (N, 1); "
                         f"it gives {out} for a batch of 2")


# ---------------------------------------------------------------------------
# Evaluation and training
# ---------------------------------------------------------------------------

def evaluate(model, data, batch_size=64):
    """Mean loss (nats) and accuracy of ``model`` on ``data``, in eval mode.

    data: a data set (``.images``/``.labels``) or an ``(images, labels)``
    pair, images (N, C, H, W) uint8 or float in [0, 1], labels (N,) of 0/1.
    Images are only scaled (no augmentation).  Eval mode makes BatchNorm
    use its running statistics; the model's previous mode is restored
    afterwards, even on an error.  Returns ``(loss, accuracy)`` as floats.
    """
    data = _dataset(data, "evaluate: data")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be a positive integer, got {batch_size!r}")
    _check_model_input(model, data.images.shape[1:], "evaluate: data")
    was_training = model.training
    model.eval()
    try:
        total_loss = 0.0
        correct = 0.0
        for x, y in DataLoader(data, batch_size=batch_size, shuffle=False):
            logits = model(x)
            loss, _ = bce_with_logits(logits, y)
            total_loss += loss * len(y)        # the loss is a batch mean: undo it
            correct += accuracy(logits, y) * len(y)
        n = len(data.labels)
        return total_loss / n, correct / n
    finally:
        model.train(was_training)


def trainer(model, epochs, optimizer=None, lr=1e-3, batch_size=32, data=None, seed=0,
            milestones=(), gamma=0.1, augment=True, val_batch_size=64, progress=True,
            callback=None):
    """Train ``model`` in place for ``epochs`` epochs; returns the model.

    The tutorial's defaults: Adam at lr 1e-3, batches of 32, binary
    cross-entropy on the logit, augmented training images (random rotation,
    shift, zoom and mirror: ``data.augment_batch``), and after each epoch a
    validation pass (scaling only, batches of ``val_batch_size``).

    model: images (N, C, H, W) -> logits (N, 1).
    epochs: number of passes over the training set.
    optimizer: ``Adam`` (the default, when None), ``SGD``, any callable
        ``optimizer(model, lr=lr)`` returning an optimiser, or an optimiser
        already bound to ``model`` (its state carries over; ``lr`` is unused).
    data: ``(train, val)``, each a data set or an ``(images, labels)`` pair;
        None means ``SyntheticVWW("train")`` and ``SyntheticVWW("val")``.
    seed: fixes the batch order and the augmentation draws.
    milestones, gamma: a step schedule (``StepLR``): the lr is multiplied by
        ``gamma`` at the start of each milestone epoch, e.g. ``(8,)``.
    augment: False feeds training images only scaled (any image size);
        True applies the augmentation, whose output is 96 x 96.
    progress: False hides the progress bar (it goes to stderr).
    callback: called as ``callback(epoch, batch, loss)`` after every
        training batch; useful for tests and custom logging.

    Records per-epoch figures in ``model.history`` (a :class:`History`,
    appended to if the model has one).  Ctrl-C ends the run cleanly after
    the current batch and returns the partly trained model, with
    ``model.history.interrupted`` set.  Errors in the arguments are raised
    before the model is touched.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"trainer: epochs must be a non-negative integer, got {epochs!r}")
    if data is None:
        data = (SyntheticVWW("train"), SyntheticVWW("val"))
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(f"trainer: data must be a pair (train, val), got {type(data).__name__}")
    train_set = _dataset(data[0], "trainer: data[0] (the training set)")
    val_set = _dataset(data[1], "trainer: data[1] (the validation set)")
    train_shape = (train_set.images.shape[1], 96, 96) if augment else train_set.images.shape[1:]
    _check_model_input(model, train_shape, "trainer: data[0] (the training set)")
    _check_model_input(model, val_set.images.shape[1:], "trainer: data[1] (the validation set)")

    if optimizer is None:
        optimizer = Adam
    opt = optimizer if isinstance(optimizer, _Optimizer) else optimizer(model, lr=lr)
    if opt.model is not model:
        raise ValueError("trainer: the optimizer is bound to a different model")
    schedule = StepLR(opt, milestones, gamma)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, seed=seed, augment=augment)
    history = getattr(model, "history", None)
    if not isinstance(history, History):
        history = History()
    model.history = history
    history.interrupted = False

    model.train()
    with _StopOnInterrupt() as interrupt:
        for epoch in range(epochs):
            bar = _ProgressBar(len(loader), f"epoch {epoch + 1}/{epochs}", progress)
            loss_sum = correct = seen = 0.0
            start = time.perf_counter()
            for batch, (x, y) in enumerate(loader):
                logits = model(x)
                loss, dlogits = bce_with_logits(logits, y)
                model.backward(dlogits)
                opt.step()
                loss_sum += loss * len(y)
                correct += accuracy(logits, y) * len(y)
                seen += len(y)
                rate = seen / (time.perf_counter() - start)
                bar.update(batch + 1, f"loss {loss_sum / seen:.4f} acc {correct / seen:.3f} "
                                      f"{rate:.0f} img/s")
                if callback is not None:
                    callback(epoch, batch, loss)
                if interrupt.requested:
                    break
            seconds = time.perf_counter() - start
            if interrupt.requested:
                val_loss = val_acc = float("nan")
            else:
                val_loss, val_acc = evaluate(model, val_set, val_batch_size)
                model.train()
            history.append(loss=loss_sum / max(seen, 1), train_accuracy=correct / max(seen, 1),
                           val_loss=val_loss, val_accuracy=val_acc, lr=opt.lr, seconds=seconds,
                           images_per_second=seen / seconds if seconds > 0 else 0.0)
            bar.close(f" | val loss {val_loss:.4f} acc {val_acc:.3f} | {seconds:.0f} s")
            if interrupt.requested:
                history.interrupted = True
                break
            schedule.step()
    return model
