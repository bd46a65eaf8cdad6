"""Training: the loss, the trainer and evaluation.

The tutorial's ``trainer(m, epochs)`` taken apart, each piece on its own:

* ``bce_with_logits`` -- binary cross-entropy on logits and its gradient;
* ``accuracy`` -- how often the sign of the logit matches the label;
* ``trainer`` -- epochs of shuffled, augmented batches, a progress bar, a
  validation pass after each epoch, a ``History``, and a clean stop on Ctrl-C;
* ``evaluate`` -- loss and accuracy on a data set in eval mode.

The optimisers (``Adam``, ``SGD``) and the step schedule (``StepLR``) are in
``tinyprune/optim.py``.  One training step is the whole of backpropagation
in four lines::

    logits = model(x)                               # forward, (B, 1)
    loss, dlogits = bce_with_logits(logits, y)      # dL/dlogits, (B, 1)
    model.backward(dlogits)                         # fills layer.grads
    optimizer.step()                                # moves every parameter

``trainer`` runs them as a unit (``_train_step``): a NaN or an infinity
anywhere in it stops training with ``DivergenceError`` and undoes the batch,
so no number is ever reported from a model that has gone non-finite.

Shapes: images NCHW float32 in [0, 1], logits (N, 1) or (N,), labels (N,) or the logits'.
"""

import signal
import sys
import threading
import time
import warnings

import numpy as np

from .module import check_model
from .common import check_int
from .data import DataLoader, SyntheticVWW, as_dataset, augment_batch
from .optim import Adam, DivergenceError, Optimizer, StepLR, first_non_finite

__all__ = ["bce_with_logits", "accuracy", "History", "trainer", "evaluate"]


# ---------------------------------------------------------------------------
# Loss and accuracy
# ---------------------------------------------------------------------------

def _numbers(value, name, where):
    """``value`` as a NumPy array of real numbers, or a TypeError naming it."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):                 # ragged nested lists, and the like
        array = None
    if array is None or array.dtype.kind not in "biuf":
        raise TypeError(f"{where}: {name} must be an array of real numbers, got {type(value).__name__}"
                        + (f" of dtype {array.dtype}" if array is not None else ""))
    return array


def _check_logits_labels(logits, labels, where):
    """Return logits as given and labels reshaped like them, or an error naming ``where``.

    Logits: (N,) or (N, 1), floating point, finite.  Labels: (N,), or the
    logits' own shape as PyTorch users write them; finite and in [0, 1] (a
    probability that the image shows class 1).  N >= 1, as a mean needs one.
    A NaN logit is refused rather than counted: ``nan > 0`` is False, so it
    would pass for a confident class 0.
    """
    logits = _numbers(logits, "logits", where)
    labels = _numbers(labels, "labels", where)
    n = logits.shape[0] if logits.ndim in (1, 2) else 0
    if n == 0 or logits.shape not in ((n,), (n, 1)) or labels.shape not in ((n,), logits.shape):
        raise ValueError(f"{where}: expected logits of shape (N,) or (N, 1), N >= 1, and labels of shape (N,) "
                         f"or the logits' shape, got logits {logits.shape} and labels {labels.shape}")
    if logits.dtype.kind != "f":
        raise ValueError(f"{where}: expected floating-point logits, got {logits.dtype}")
    bad = first_non_finite(logits)
    if bad is not None:
        raise ValueError(f"{where}: logits must be finite, got {bad[1]} at index {bad[0]}")
    outside = np.flatnonzero(~((labels >= 0) & (labels <= 1)))      # NaN fails both comparisons
    if outside.size:
        raise ValueError(f"{where}: labels must lie in [0, 1] (binary cross-entropy), got "
                         f"{labels.reshape(-1)[outside[0]]} at index {outside[0]}")
    return logits, labels.reshape(logits.shape)


def bce_with_logits(logits, labels):
    """Mean binary cross-entropy of ``sigmoid(logits)`` against 0/1 ``labels``, and its gradient.

    logits: (N,) or (N, 1) float, one raw score z per image (no sigmoid applied).
    labels: (N,) or the logits' shape, of 0/1 (any numeric dtype; soft labels
    y in [0, 1] work too).
    Returns ``(loss, dlogits)``: the mean loss over the N images as a Python
    float in nats, and dL/dlogits with the shape and dtype of ``logits``.
    Non-finite logits, labels outside [0, 1] and empty batches raise
    ValueError, so the loss is always a finite number.

    What to compute (between the checks, in float64: ``z`` and ``y`` have
    the logits' shape): ``losses``, the loss of each image, and
    ``dlogits``, the gradient of their mean.  Per image, with
    p = sigmoid(z) = 1 / (1 + e^-z), the binary cross-entropy is

        -y log p - (1 - y) log(1 - p).

    Written like that it fails for large |z|: p rounds to exactly 0 or 1 and
    a log gives -inf.  Substitute log p = -log(1 + e^-z) and
    log(1 - p) = -z - log(1 + e^-z) to get z - z*y + log(1 + e^-z), which is
    exact but overflows for z < 0 (e^-z = e^1000 is inf).  For z < 0 use
    z + log(1 + e^-z) = log(1 + e^z) instead, so that for any z

        loss = max(z, 0) - z*y + log(1 + e^-|z|),

    whose exponent is never positive: finite for every z, even |z| = 1000,
    and without cancellation (compute log(1 + u) with ``np.log1p``, exact
    for tiny u).  Its derivative is sigmoid(z) - y per image, and the mean
    over N images divides that by N.  Take the sigmoid from e^-|z| too,
    1/(1 + e^-|z|) for z >= 0 and e^-|z|/(1 + e^-|z|) for z < 0: it never
    overflows and keeps tiny tail values that 1 - p would round to 0.
    """
    logits, labels = _check_logits_labels(logits, labels, "bce_with_logits")
    z = logits.astype(np.float64)
    y = labels.astype(np.float64)
    ### BEGIN SOLUTION
    n = z.shape[0]
    e = np.exp(-np.abs(z))                       # in (0, 1]: never overflows
    losses = np.maximum(z, 0) - z * y + np.log1p(e)
    sigmoid = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    dlogits = (sigmoid - y) / n
    ### END SOLUTION
    with np.errstate(over="ignore"):
        loss = float(losses.mean())
    if not np.isfinite(loss):                    # only a sum past 1.8e308: logits near float64's limit
        raise ValueError(f"bce_with_logits: the mean loss overflows float64 (logits up to {np.abs(z).max():g})")
    return loss, dlogits.astype(logits.dtype)


def accuracy(logits, labels):
    """Fraction of images whose predicted class (logit > 0 means 1) equals the label.

    logits (N,) or (N, 1), labels (N,) or the logits' shape, of 0/1 (a soft
    label counts as class 1 above 0.5).  Returns a float in [0, 1].
    Non-finite logits raise ValueError: a NaN has no class.
    """
    logits, labels = _check_logits_labels(logits, labels, "accuracy")
    return float(np.mean((logits > 0) == (labels > 0.5)))


# ---------------------------------------------------------------------------
# What an epoch measures: History, running sums, the progress bar
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


class _RunningSums:
    """Loss and accuracy summed over batches, each weighted by its size, and the time since the start.

    ``bce_with_logits`` and ``accuracy`` give batch means; multiplying by the
    batch size before summing makes a short last batch count for what it is.
    """

    def __init__(self):
        self.loss_sum = self.correct = self.seen = 0.0
        self.start = time.perf_counter()

    def add(self, loss, logits, labels):
        self.loss_sum += loss * len(labels)
        self.correct += accuracy(logits, labels) * len(labels)
        self.seen += len(labels)

    @property
    def mean_loss(self):
        return self.loss_sum / max(self.seen, 1)

    @property
    def mean_accuracy(self):
        return self.correct / max(self.seen, 1)

    def text(self):
        """Loss, accuracy and images per second so far, for the progress bar."""
        rate = self.seen / (time.perf_counter() - self.start)
        return f"loss {self.loss_sum / self.seen:.4f} acc {self.correct / self.seen:.3f} {rate:.0f} img/s"


def _redraws_in_place(stream):
    """True if a carriage return on ``stream`` goes back to redraw the line: a terminal or a notebook.

    A Jupyter notebook's output (ipykernel's stream) shows a redrawn line
    as a terminal does, though its ``isatty()`` says False.  A file, a
    pipe, a StringIO or a closed stream keeps every redraw.
    """
    if type(stream).__module__.startswith("ipykernel."):
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class _ProgressBar:
    """One line per epoch on stderr: redrawn in place on a terminal or in a notebook, written once elsewhere.

    On a terminal or in a notebook a carriage return brings the cursor
    back to redraw the line.  Into a log file or a pipe each redraw would
    only add to one endless line, so there the bar stays silent until
    ``close`` writes the epoch's last state and summary as one plain line.
    """

    def __init__(self, total, label, enabled, stream=None):
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream or sys.stderr
        self.redraw = _redraws_in_place(self.stream)
        self.last_draw = 0.0
        self.line = f"{label} 0/{total}"

    def update(self, done, text, force=False):
        if not self.enabled:
            return
        width = 24
        filled = width * done // max(self.total, 1)
        self.line = f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} {text}"
        now = time.perf_counter()
        if not self.redraw or (not force and now - self.last_draw < 0.1 and done < self.total):
            return   # redrawing more often than 10 times a second only costs time
        self.last_draw = now
        self.stream.write("\r" + self.line)
        self.stream.flush()

    def close(self, text=""):
        if self.enabled:
            self.stream.write((text if self.redraw else self.line + text) + "\n")
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
# Checking the arguments: all of them, before the model is touched
# ---------------------------------------------------------------------------

def _with_context(what, call, *args, **kwargs):
    """``call(*args, **kwargs)``; a TypeError or ValueError it raises gets ``what: `` in front.

    So an error from a helper (``as_dataset``, ``Adam``, ``StepLR``) still
    says which of the caller's arguments it came from.
    """
    try:
        return call(*args, **kwargs)
    except (TypeError, ValueError) as error:
        kind = TypeError if isinstance(error, TypeError) else ValueError
        raise kind(f"{what}: {error}") from error


def _check_model(model, where):
    check_model(model, where)


def _dataset(data, what):
    """``as_dataset(data)`` with errors that say which argument was wrong; an empty set is refused."""
    dataset = _with_context(what, as_dataset, data)
    if len(dataset.labels) == 0:
        raise ValueError(f"{what} holds no images; a loss and an accuracy need at least one")
    return dataset


def _check_model_input(model, image_shape, what):
    """Fail before training if the model cannot take images of ``image_shape`` or gives no logit."""
    try:
        out = model.output_shape((2,) + tuple(image_shape))
    except ValueError as error:
        raise ValueError(f"{what}: images of shape {tuple(image_shape)} do not fit the model: {error}") from None
    if out not in ((2,), (2, 1)):
        raise ValueError(f"{what}: the model must give one logit per image, shape (N, 1); "
                         f"it gives {out} for a batch of 2")


def _check_train_batches(model, image_shape, n, batch_size, what):
    """Fail before training if a training batch (a full one or the short last one) cannot run.

    Train mode asks more than the shapes: BatchNorm needs two values per
    channel, so a last batch of one image fails where the map is 1 x 1.
    The check runs on a copy in train mode, leaving the model's mode alone.
    """
    probe = model.copy().train()
    for size in sorted({min(n, batch_size), n % batch_size or batch_size}):
        try:
            probe.check_input((size,) + tuple(image_shape))
        except ValueError as error:
            raise ValueError(f"{what}: {n} images in batches of {batch_size} give a batch of {size} that "
                             f"cannot be trained on: {error}") from None


def _check_finite(value, what):
    """DivergenceError saying where ``value`` (an array or a number) is NaN or infinite, if it is."""
    bad = first_non_finite(value)
    if bad is not None:
        index, number = bad
        raise DivergenceError(f"{what} is not finite ({number}{f' at index {index}' if index else ''})")


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
    Bad arguments raise TypeError or ValueError; a model whose logits are
    NaN or infinite raises DivergenceError rather than report a number.
    """
    _check_model(model, "evaluate")
    data = _dataset(data, "evaluate: data")
    check_int(batch_size, "batch_size", "evaluate")
    _check_model_input(model, data.images.shape[1:], "evaluate: data")
    was_training = model.training
    model.eval()
    try:
        sums = _RunningSums()
        batches = DataLoader(data, batch_size=batch_size, shuffle=False)
        for start, (x, y) in zip(range(0, len(data.labels), batch_size), batches):
            logits = model(x)
            _check_finite(logits, f"evaluate: among the logits of data images {start}..{start + len(y) - 1}, one")
            loss, _ = bce_with_logits(logits, y)
            sums.add(loss, logits, y)
        return sums.mean_loss, sums.mean_accuracy
    finally:
        model.train(was_training)
        for _, layer in model.named_layers():   # no backward follows an evaluation: let go of what
            layer._cache = None                 # each layer's forward kept for one (a batch's worth)


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
    data: ``(train, val)``, each a non-empty data set or ``(images, labels)``
        pair; None means ``SyntheticVWW("train")`` and ``SyntheticVWW("val")``.
    seed: an integer >= 0 fixing the batch order and the augmentation draws.
    milestones, gamma: a step schedule (``StepLR``): the lr is multiplied by
        ``gamma`` at the start of each milestone epoch, e.g. ``(8,)``.
    augment: False feeds training images only scaled (any size); True applies the
        augmentation (output min(H, W, 96) a side).  A warning says if validation images differ in size.
    progress: False hides the progress bar (it goes to stderr).
    callback: ``callback(epoch, batch, loss)`` after every training batch.

    Records per-epoch figures in ``model.history`` (a :class:`History`,
    appended to if the model has one).  Ctrl-C ends the run cleanly after
    the current batch and returns the partly trained model, with
    ``model.history.interrupted`` set.  Bad arguments raise TypeError or
    ValueError before the model is touched.  A NaN or infinite logit, loss
    or weight (a learning rate too large) stops training with
    ``DivergenceError`` naming the epoch and batch; the model keeps its
    state from before that batch, its last finite weights.
    """
    _check_options(seed, augment, progress, callback)
    train_set, val_set = _checked_data(model, epochs, batch_size, val_batch_size, data, augment)
    opt = _bound_optimizer(model, optimizer, lr)
    schedule = _with_context("trainer", StepLR, opt, milestones, gamma)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, seed=seed, augment=augment)
    _start_history(model)
    model.train()
    with _StopOnInterrupt() as interrupt:
        for epoch in range(epochs):
            bar = _ProgressBar(len(loader), f"epoch {epoch + 1}/{epochs}", progress)
            sums = _RunningSums()
            where = f"trainer: epoch {epoch + 1}/{epochs}"
            for batch, (x, y) in enumerate(loader):
                logits, loss = _train_step(model, opt, x, y, f"{where}, batch {batch + 1}/{len(loader)}", bar)
                sums.add(loss, logits, y)
                bar.update(batch + 1, sums.text())
                if callback is not None:
                    callback(epoch, batch, loss)
                if interrupt.requested:
                    break
            _end_epoch(model, sums, bar, opt.lr, val_set, val_batch_size, interrupt.requested, where)
            if interrupt.requested:
                model.history.interrupted = True
                break
            schedule.step()
    return model


def _train_step(model, opt, x, y, where, bar):
    """One step of backpropagation on the batch ``(x, y)``, applied whole or not at all.

    Returns ``(logits, loss)``.  A NaN or infinite logit, a running
    statistic the forward pass made NaN or infinite, or an update that would
    make a parameter so (the optimiser then changes nothing) raises
    DivergenceError naming ``where``.  Whatever stops the step, the running
    statistics are put back first, so the model is as it was before the batch.
    """
    statistics = {key: np.array(getattr(layer, name), copy=True) for key, layer, name in model.named_buffers()}
    try:
        logits = model(x)                               # forward, (B, 1)
        _check_finite(logits, "a logit")
        for key, layer, name in model.named_buffers():
            _check_finite(getattr(layer, name), f"the running statistic {key!r}")
        loss, dlogits = bce_with_logits(logits, y)      # dL/dlogits, (B, 1)
        model.backward(dlogits)                         # fills layer.grads
        opt.step()                                      # moves every parameter, or none
    except BaseException as error:
        for key, layer, name in model.named_buffers():
            setattr(layer, name, statistics[key])
        if not isinstance(error, FloatingPointError):   # DivergenceError, or NumPy's under np.errstate
            raise
        bar.close(" | stopped: not finite")
        raise DivergenceError(f"{where}: {error}; the model is left as it was before this batch "
                              f"(is the learning rate, {opt.lr:g}, too large?)") from error
    return logits, loss


def _check_options(seed, augment, progress, callback):
    """trainer's arguments that are not about the data, the optimiser or the schedule."""
    check_int(seed, "seed", "trainer", minimum=0)
    for name, flag in (("augment", augment), ("progress", progress)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"trainer: {name} must be True or False, got {flag!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"trainer: callback must be None or a function callback(epoch, batch, loss), "
                        f"got {callback!r}")


def _checked_data(model, epochs, batch_size, val_batch_size, data, augment):
    """trainer's ``(train_set, val_set)``, once its arguments are known to fit each other and the model."""
    _check_model(model, "trainer")
    check_int(epochs, "epochs", "trainer", minimum=0)
    check_int(batch_size, "batch_size", "trainer")
    check_int(val_batch_size, "val_batch_size", "trainer")
    if data is None:
        data = (SyntheticVWW("train"), SyntheticVWW("val"))
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(f"trainer: data must be a pair (train, val), got {type(data).__name__}")
    what = "trainer: data[0] (the training set)"
    train_set = _dataset(data[0], what)
    val_set = _dataset(data[1], "trainer: data[1] (the validation set)")
    train_shape = _training_image_shape(train_set, val_set, augment)
    _check_model_input(model, train_shape, what)
    _check_train_batches(model, train_shape, len(train_set.labels), batch_size, what)
    _check_model_input(model, val_set.images.shape[1:], "trainer: data[1] (the validation set)")
    return train_set, val_set


def _training_image_shape(train_set, val_set, augment):
    """(C, H, W) of a training image as the model gets it; a warning if validation images differ in size.

    The augmentation decides the size of what it gives (a window of
    min(H, W, 96) a side), so it is asked, on one image, rather than
    assumed here.  A model trained on one picture size and validated on
    another (128 x 128 photos cut to 96 x 96 for training but validated
    whole, say) validates near chance however well it trains: worth a warning.
    """
    stored = tuple(train_set.images.shape[1:])
    shape = stored
    if augment:
        shape = tuple(augment_batch(train_set.images[:1], np.random.default_rng(0)).shape[1:])
    val_shape = tuple(val_set.images.shape[1:])
    if shape[1:] != val_shape[1:]:
        def size(s):
            return f"{s[1]}x{s[2]}"
        given = f"augment=True turns the {size(stored)} training images into {size(shape)}" if augment else \
            f"the training images are {size(shape)}"
        advice = f"; pass augment=False, or {size(shape)} images" if augment else ""
        warnings.warn(f"trainer: {given} but the validation images are {size(val_shape)}: the model would be "
                      f"validated on pictures of another size than it learns from{advice}", stacklevel=4)
    return shape


def _bound_optimizer(model, optimizer, lr):
    """trainer's ``optimizer`` argument as an optimiser bound to ``model`` (Adam when None)."""
    if optimizer is None:
        optimizer = Adam
    if isinstance(optimizer, Optimizer):
        opt = optimizer
    elif callable(optimizer):
        opt = _with_context("trainer", optimizer, model, lr=lr)
    else:
        raise TypeError(f"trainer: optimizer must be None (Adam), an optimiser class such as Adam or SGD, a "
                        f"function optimizer(model, lr=lr) or an optimiser bound to the model; got {optimizer!r}")
    if not isinstance(opt, Optimizer):
        raise TypeError(f"trainer: optimizer(model, lr=lr) must return an optimiser such as Adam(model), "
                        f"got {type(opt).__name__}")
    if opt.model is not model:
        raise ValueError("trainer: the optimizer is bound to a different model")
    opt.check_shapes("trainer: optimizer")
    return opt


def _start_history(model):
    """Give ``model`` a History to append to (its own, if it has one) and clear the interrupted flag."""
    if not isinstance(getattr(model, "history", None), History):
        model.history = History()
    model.history.interrupted = False


def _end_epoch(model, sums, bar, lr, val_set, val_batch_size, interrupted, where):
    """Validate, record the epoch in ``model.history`` and close its progress bar.

    An interrupted epoch is partial, so it is not validated: its validation
    figures are nan, and the time is the training batches' alone either way.
    """
    seconds = time.perf_counter() - sums.start
    if interrupted:
        val_loss = val_acc = float("nan")
    else:
        try:
            val_loss, val_acc = evaluate(model, val_set, val_batch_size)
        except DivergenceError as error:
            bar.close(" | stopped: not finite")
            raise DivergenceError(f"{where}, validation: {error}") from error
        model.train()
    model.history.append(loss=sums.mean_loss, train_accuracy=sums.mean_accuracy, val_loss=val_loss,
                         val_accuracy=val_acc, lr=lr, seconds=seconds,
                         images_per_second=sums.seen / seconds if seconds > 0 else 0.0)
    bar.close(f" | val loss {val_loss:.4f} acc {val_acc:.3f} | {seconds:.0f} s")
