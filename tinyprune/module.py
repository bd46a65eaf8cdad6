"""What every layer has besides its computation: a mode, a place in a tree, arrays by key.

:class:`tinyprune.layers.Layer` says what a layer *computes*: forward,
backward, the input shapes it accepts, which arrays carry a channel.  What a
layer *has* is the same for every layer, is written once here, in
``Module``, and is inherited by ``Layer``:

* a mode: ``train()`` and ``eval()``, passed down to every child;
* a place in a tree: ``children()``, ``named_layers()`` (``("[0][3]", bn)``),
  ``named_parameters()`` and ``named_buffers()`` (``("0.3.weight", bn, "weight")``);
* its arrays by key: ``state_dict()`` / ``load_state_dict()`` (PyTorch's
  keys and layouts), ``grad_dict()``, ``mask_dict()``;
* a number type: ``dtype``, ``to(dtype)``; and ``copy()``;
* ``prepare_input(x)``: the checks every call ``layer(x)`` makes first.

``Module`` is not used on its own: it reads what ``Layer`` declares
(``param_names``, ``buffer_names``) and what ``Layer.__init__`` sets
(``training``, ``grads``, ``masks``, ``_cache``).
"""

import copy

import numpy as np

__all__ = ["Module"]


class Module:
    """Modes, tree walking, state dicts, masks by key, dtype and copies for a layer."""

    # -- running -----------------------------------------------------------

    def prepare_input(self, x, where=None):
        """Check ``x`` against this layer (or chain) and cast it to its dtype.

        Every error names ``where`` (the layer's type by default, ``model``
        for a chain) and, through ``check_input``, the layer inside it.
        """
        where = where or type(self).__name__
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise ValueError(f"{where}: expected a numeric array, got dtype {x.dtype}")
        if x.dtype.kind != "f":
            raise ValueError(
                f"{where}: expected floating-point input, got {x.dtype}; "
                "scale images to [0, 1] first (tinyprune.data.to_float)")
        self.check_input(x.shape, where)
        dtype = self.dtype or x.dtype
        return np.ascontiguousarray(x, dtype=dtype)

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

        Nothing is copied unless every key is known and every shape fits, so
        a failed load leaves the model as it was.  Arrays keep the model's dtype.
        """
        expected = self._named_arrays()
        missing = [k for k in expected if k not in state]
        extra = [k for k in state if k not in expected]
        if missing:
            raise ValueError(f"load_state_dict: missing key(s) {missing}")
        if extra:
            raise ValueError(f"load_state_dict: unexpected key(s) {extra}")
        for key, (layer, name) in expected.items():
            old = np.asarray(getattr(layer, name))
            new = np.asarray(state[key])
            if new.shape != old.shape:
                raise ValueError(
                    f"load_state_dict: key {key!r} has shape {new.shape}, "
                    f"the model expects {old.shape}")
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

        Integer buffers (``num_batches_tracked``) stay integers; gradients and
        forward caches are dropped, since they have the old type.
        """
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise ValueError(f"{type(self).__name__}.to: expected a floating-point dtype, got {dtype}")
        for layer, name in self._named_arrays().values():
            value = getattr(layer, name)
            if value.dtype.kind == "f":
                setattr(layer, name, value.astype(dtype))
        for _, layer in self.named_layers():
            layer.grads = {}
            layer._cache = None
        return self

    def copy(self):
        """A deep copy (parameters, buffers, masks and mode), without forward caches."""
        return copy.deepcopy(self)

    def __getstate__(self):
        # Copies and pickles leave out what forward kept for backward.
        state = self.__dict__.copy()
        state["_cache"] = None
        return state

    def extra_repr(self):
        """The arguments shown inside ``Type(...)`` when the layer is printed."""
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"
