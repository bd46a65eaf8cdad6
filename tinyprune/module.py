"""What every layer has besides its computation: a mode, a place in a tree, arrays by key.

:class:`tinyprune.layers.Layer` says what a layer *computes*: forward,
backward, the input shapes it accepts, which arrays carry a channel.  What a
layer *has* is the same for every layer, is written once here, in
``Module``, and is inherited by ``Layer``:

* a mode: ``train()`` and ``eval()``, passed down to every child;
* a place in a tree: ``children()``, ``named_layers()`` (``("[0][3]", bn)``),
  ``named_parameters()`` and ``named_buffers()`` (``("0.3.weight", bn, "weight")``),
  and back from a path to its layer: ``layer_at(model, "[0][3]")``;
* its arrays by key: ``state_dict()`` / ``load_state_dict()`` (PyTorch's
  keys and layouts), ``grad_dict()``, ``mask_dict()``;
* a number type: ``dtype``, ``to(dtype)``; and ``copy()``;
* the checks at the door: ``prepare_input(x)``, what every call ``layer(x)``
  makes first; ``forward_input(x)`` and ``backward_input(dy)``, the cheap
  ones every ``forward`` and ``backward`` makes, so that no public method
  hands a kernel an array it would read out of bounds.

``Module`` is not used on its own: it reads what ``Layer`` declares
(``param_names``, ``buffer_names``) and what ``Layer.__init__`` sets
(``training``, ``grads``, ``masks``, ``_cache``, ``_output``).

Parameters are float32 or float64 and nothing else: an integer weight would
make every input an integer (and most outputs zero), a float16 one reaches a
compiled kernel that has no float16 version.  ``check_parameter_dtype`` is
the one place that says so; the constructors, ``to``, ``load_state_dict`` and
the checkpoint reader all ask it.
"""

import copy

import numpy as np

__all__ = ["Module", "NonFiniteError", "check_model", "PARAMETER_DTYPES", "check_parameter_dtype", "layer_at", "parse_path"]

PARAMETER_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_parameter_dtype(dtype, what, where):
    """``dtype`` as a NumPy dtype if parameters may have it (float32 or float64).

    Otherwise a ValueError (a TypeError if ``dtype`` is no dtype at all)
    naming ``where`` and ``what`` (``"dtype"``, ``"array '0.weight'"``).
    """
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{where}: {what} must be float32 or float64, got {dtype!r}") from None
    if dtype not in PARAMETER_DTYPES:
        raise ValueError(f"{where}: {what} must be float32 or float64, a floating-point dtype, "
                         f"got {dtype}")
    return dtype


def _numbers(value, where, what, kinds="fiu"):
    """``value`` as an ndarray whose dtype kind is one of ``kinds``; a ValueError naming ``where`` and ``what``."""
    try:
        value = np.asarray(value)
    except (TypeError, ValueError) as error:      # ragged lists, objects NumPy cannot take
        raise ValueError(f"{where}: {what} is not an array of numbers ({error})") from None
    if value.dtype.kind not in kinds:
        raise ValueError(f"{where}: expected {what} of real numbers, got dtype {value.dtype}")
    return value


def _float_input(x, where):
    """``x`` as an ndarray of real floating-point numbers, or a ValueError naming ``where``."""
    if type(x) is np.ndarray and x.dtype in PARAMETER_DTYPES:
        return x                                  # the usual case, decided at once
    x = _numbers(x, where, "input", kinds="fiub")
    if x.dtype.kind != "f":
        raise ValueError(f"{where}: expected floating-point input, got {x.dtype}; "
                         "scale images to [0, 1] first (tinyprune.data.to_float)")
    return x


def check_model(model, where):
    """A TypeError naming ``where`` unless ``model`` is a tinyprune layer or chain; the one such check."""
    if not isinstance(model, Module):
        raise TypeError(f"{where}: expected a model (a Layer or Chain), got {type(model).__name__}")
    return model


class NonFiniteError(ValueError, FloatingPointError):
    """Numbers grew NaN or infinite inside a layer (say BatchNorm's batch statistics).

    A ValueError, like every refusal of bad input; also a FloatingPointError,
    because inside training it means the arithmetic ran away, and the
    trainer reports it as divergence, naming the epoch and batch.
    """


class Module:
    """Modes, tree walking, state dicts, masks by key, dtype and copies for a layer."""

    # -- the checks at the door ----------------------------------------------

    def prepare_input(self, x, where=None):
        """``x`` checked against this layer (or chain) and cast to its dtype: what ``layer(x)`` runs.

        Everything ``forward_input`` checks, and in train mode one more pass
        over ``x``: a NaN or an infinity is refused before any BatchNorm
        statistic moves (a single NaN pixel would otherwise poison the running
        statistics for good).  Every error names ``where`` (the layer's type by
        default, ``model`` for a chain) and, through ``check_input``, the layer
        inside it.
        """
        where = where or self._where()
        x = self.forward_input(x, where)
        if self.training and not np.isfinite(x).all():
            bad = x.size - int(np.count_nonzero(np.isfinite(x)))
            raise ValueError(f"{where}: the input holds {bad} NaN or infinite value(s) "
                             f"(shape {x.shape}); train mode refuses them before any statistic moves")
        return x

    def forward_input(self, x, where=None):
        """``x`` as ``forward`` may use it, checked cheaply (no pass over the values).

        A ValueError naming ``where`` unless ``x`` holds real floating-point
        numbers, has no empty axis (a batch needs at least one image) and has
        a shape the layer accepts (``check_input``).  Returns ``x`` C-contiguous
        in the layer's dtype -- the same array when it already is one.  A layer
        without parameters keeps float32 and float64 and computes anything
        else in float64.
        """
        where = where or self._where()
        x = _float_input(x, where)
        if not x.shape or 0 in x.shape:
            raise ValueError(f"{where}: a batch needs at least one image with at least one value, "
                             f"got input shape {x.shape}")
        self.check_input(x.shape, where)
        dtype = self._parameter_dtype(where)
        if dtype is None:
            dtype = x.dtype if x.dtype in PARAMETER_DTYPES else np.float64
        return np.ascontiguousarray(x, dtype=dtype)

    def keep_for_backward(self, cache, y):
        """Keep ``cache`` for ``backward``, and ``y``'s shape and dtype to check ``dy`` against; returns ``y``."""
        self._cache = cache
        self._output = (y.shape, y.dtype)
        return y

    def backward_input(self, dy, where=None):
        """``dy`` checked against the output of the last ``forward``, C-contiguous in its dtype.

        RuntimeError naming ``where`` if no forward pass was kept (none ran, or
        ``to``, ``copy`` or a failed forward dropped it); ValueError unless
        ``dy`` holds real numbers of exactly the shape that forward produced.
        """
        where = where or self._where()
        if self._cache is None or self._output is None:
            raise RuntimeError(f"{where}: backward called before forward (or after to(), copy() "
                               "or a failed forward, which drop what forward kept)")
        shape, dtype = self._output
        dy = _numbers(dy, where, "dy")
        if dy.shape != shape:
            raise ValueError(f"{where}: dy has shape {dy.shape}, the last forward produced {shape}")
        return np.ascontiguousarray(dy, dtype=dtype)

    def _where(self):
        return type(self).__name__

    def _parameter_dtype(self, where):
        """The dtype of the first parameter (None if there is none), checked to be float32 or float64."""
        first = next(self.named_parameters(), None) if not self.param_names else \
            (self.param_names[0], self, self.param_names[0])
        if first is None:
            return None
        key, layer, name = first
        dtype = getattr(layer, name).dtype
        return dtype if dtype in PARAMETER_DTYPES else check_parameter_dtype(dtype, f"parameter {key!r}", where)

    # -- modes ---------------------------------------------------------------

    def train(self, mode=True):
        """Switch to training mode (batch statistics in BatchNorm); returns self."""
        self.training = bool(mode)
        for child in self.children():
            child.train(mode)
        return self

    def eval(self):
        """Switch to evaluation mode (running statistics in BatchNorm); returns self."""
        return self.train(False)

    # -- the tree --------------------------------------------------------------

    def children(self):
        """The layers directly inside this one (a Chain's elements; none for a leaf)."""
        return ()

    def named_layers(self, path=""):
        """Yield ``(path, layer)`` for every leaf layer, e.g. ``("[0][3]", bn)``."""
        yield path, self

    def named_parameters(self, prefix=""):
        """Yield ``(key, layer, name)`` for every trainable array (state_dict keys)."""
        for name in self.param_names:
            yield prefix + name, self, name

    def named_buffers(self, prefix=""):
        """Yield ``(key, layer, name)`` for every saved statistic (``running_mean``, ...)."""
        for name in self.buffer_names:
            yield prefix + name, self, name

    def _named_arrays(self):
        """``key -> (layer, name)`` for every parameter, then every buffer."""
        arrays = {}
        for key, layer, name in list(self.named_parameters()) + list(self.named_buffers()):
            arrays[key] = (layer, name)
        return arrays

    # -- arrays by key -----------------------------------------------------------

    def state_dict(self):
        """Flat dict of copies of all parameters and buffers, keyed like PyTorch.

        The layouts match ``torch.nn.Conv2d/Linear/BatchNorm2d``, so an
        ``nn.Sequential`` of the same nesting loads it unchanged.  Masks are
        not included (see :meth:`mask_dict`).
        """
        out = {}
        for key, layer, name in self.named_parameters():
            out[key] = getattr(layer, name).copy()
        for key, layer, name in self.named_buffers():
            out[key] = np.array(getattr(layer, name), copy=True)    # also a 0-d counter
        return out

    def load_state_dict(self, state):
        """Inverse of :meth:`state_dict`: copies every array in; checks keys and shapes.

        Nothing is copied unless every key is known, every shape fits and
        every array has a type its place can hold (float32 or float64 where
        the model has floats, integers for ``num_batches_tracked``), so a
        failed load leaves the model as it was.  Arrays keep the model's dtype.
        """
        if not hasattr(state, "keys"):
            raise TypeError(f"load_state_dict: state must be a dict of arrays, got {type(state).__name__}")
        expected = self._named_arrays()
        missing = [k for k in expected if k not in state]
        extra = [k for k in state if k not in expected]
        if missing:
            raise ValueError(f"load_state_dict: missing key(s) {missing}")
        if extra:
            raise ValueError(f"load_state_dict: unexpected key(s) {extra}")
        for key, (layer, name) in expected.items():
            old = np.asarray(getattr(layer, name))
            new = _numbers(state[key], "load_state_dict", f"array {key!r}")
            if new.shape != old.shape:
                raise ValueError(
                    f"load_state_dict: key {key!r} has shape {new.shape}, "
                    f"the model expects {old.shape}")
            if old.dtype.kind == "f":
                check_parameter_dtype(new.dtype, f"array {key!r}", "load_state_dict")
            elif new.dtype.kind not in "iu":
                raise ValueError(f"load_state_dict: array {key!r} must hold integers, got {new.dtype}")
        for key, (layer, name) in expected.items():
            old = np.asarray(getattr(layer, name))
            setattr(layer, name, np.array(state[key], dtype=old.dtype, copy=True))
        return self

    def grad_dict(self):
        """Gradients of the last backward pass, keyed like the trainable state_dict entries."""
        out = {}
        for key, layer, name in self.named_parameters():
            if name not in layer.grads:
                raise RuntimeError(f"grad_dict: no gradient for {key!r}; run backward first")
            out[key] = layer.grads[name]
        return out

    def mask_dict(self):
        """The pruning masks, keyed like the state_dict entries they belong to."""
        return {key: layer.masks[name] for key, layer, name in self.named_parameters()
                if name in layer.masks}

    # -- number type and copies -------------------------------------------------

    @property
    def dtype(self):
        """The floating-point type of the parameters (None for a parameter-free layer)."""
        for _, layer, name in self.named_parameters():
            return getattr(layer, name).dtype
        return None

    def to(self, dtype):
        """Convert parameters and statistics to ``dtype`` in place; returns self.

        ``dtype`` is float32 or float64 (ValueError otherwise, before anything
        changes).  Integer buffers (``num_batches_tracked``) stay integers;
        gradients and forward caches are dropped, since they have the old type.
        """
        dtype = check_parameter_dtype(dtype, "dtype", f"{self._where()}.to")
        for layer, name in self._named_arrays().values():
            value = getattr(layer, name)
            if value.dtype.kind == "f":
                setattr(layer, name, value.astype(dtype))
        self._drop_forward()
        return self

    def _drop_forward(self):
        """Forget the gradients and what forward kept, here and in every layer inside."""
        self.grads = {}
        self._cache = None
        self._output = None
        for child in self.children():
            child._drop_forward()

    def copy(self):
        """A deep copy (parameters, buffers, masks and mode), without forward caches."""
        return copy.deepcopy(self)

    def __getstate__(self):
        # Copies and pickles leave out what forward kept for backward.
        state = self.__dict__.copy()
        state["_cache"] = None
        state["_output"] = None
        return state

    def extra_repr(self):
        """The arguments shown inside ``Type(...)`` when the layer is printed."""
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"


def parse_path(path):
    """``"[0][3]"``, ``"model[0][3]"`` or ``(0, 3)`` -> ``(0, 3)``."""
    text = "".join(f"[{i}]" for i in path) if isinstance(path, (tuple, list)) else str(path)
    if text.startswith("model"):
        text = text[len("model"):]
    if not text.startswith("[") or not text.endswith("]"):
        raise ValueError(f"layer path {path!r} is not of the form '[0][3]'")
    try:
        return tuple(int(part) for part in text[1:-1].split("]["))
    except ValueError:
        raise ValueError(f"layer path {path!r} is not of the form '[0][3]'") from None


def layer_at(model, path):
    """The layer at ``path`` (``"[0][3]"`` means ``model[0][3]``); ValueError naming the path if none."""
    layer = model
    walked = "model"
    for i in parse_path(path):
        children = layer.children()
        if not -len(children) <= i < len(children):
            raise ValueError(f"layer path {path!r} names no layer: {walked} has no element [{i}]")
        layer = children[i]
        walked += f"[{i}]"
    return layer
