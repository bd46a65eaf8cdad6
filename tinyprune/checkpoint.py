"""Saving and loading models: one ``.npz`` file, no pickle.

A checkpoint holds everything needed to rebuild a model exactly:

* ``architecture`` -- JSON text describing every layer by its type and
  constructor arguments, chains nested as lists, e.g.
  ``{"type": "Conv2d", "c_in": 3, "c_out": 8, "kernel": [3, 3], "stride": 2,
  "pad": 1, "bias": false}``.  The arguments are read off the layer's
  attributes of the same names (``bias`` as whether there is one), so a
  resized model (whose sizes are read off its sliced weights) is described
  with its new sizes.
* ``state/<key>`` -- every parameter and BatchNorm statistic, keyed as in
  ``model.state_dict()`` (``0.1.running_mean``), in its own dtype.
* ``mask/<key>`` -- the pruning masks (boolean, True = kept).
* ``metadata`` -- optional JSON (validation accuracy, training history, the
  command that made the file).

Only arrays of numbers, booleans and text are stored, so ``np.load`` reads
the file with ``allow_pickle=False``: opening a checkpoint cannot run code.
"""

import inspect
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from .common import atomic_write, data_dir
from .layers import (Activation, BatchNorm2d, Chain, Conv2d, Dense, DepthwiseConv2d, Flatten,
                     GlobalMeanPool, HardTanh, Identity, ReLU, SlopeHTanh)

__all__ = ["save", "load", "read_metadata", "pretrained", "pretrained_path", "CheckpointError",
           "PRETRAINED_FILE"]

FORMAT_VERSION = 1
PRETRAINED_FILE = "mobilenet-synthetic.npz"

# The layer types a checkpoint can describe.  Each is described by its type
# name and its constructor arguments, read off the layer's attributes of the
# same names; a new layer type needs only to be listed here.
LAYER_TYPES = (Chain, Conv2d, DepthwiseConv2d, Dense, BatchNorm2d, SlopeHTanh, ReLU, HardTanh,
               Identity, GlobalMeanPool, Flatten)
_BY_NAME = {kind.__name__: kind for kind in LAYER_TYPES}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read back into a model; the message names the file."""


# ---------------------------------------------------------------------------
# Architecture <-> JSON
# ---------------------------------------------------------------------------

def _arguments(kind):
    """The constructor arguments a description holds: all but ``rng`` and ``dtype``.

    ``rng`` only initialises weights that loading overwrites, and the arrays
    are stored in their own dtype.
    """
    return [name for name in inspect.signature(kind).parameters if name not in ("rng", "dtype")]


def _argument(value):
    """A layer's attribute as the constructor argument that makes it.

    An optional array (``bias``) comes from a flag, so it is stored as
    whether it is there; a tuple (``kernel``) as a JSON list.
    """
    if value is None or isinstance(value, np.ndarray):
        return value is not None
    return list(value) if isinstance(value, tuple) else value


def layer_to_json(layer, where="model"):
    """The JSON description of ``layer`` (a dict); ValueError naming ``where`` if unknown."""
    kind = type(layer)
    if kind is Chain:
        return {"type": "Chain",
                "layers": [layer_to_json(child, f"{where}[{i}]") for i, child in enumerate(layer)]}
    if kind in LAYER_TYPES:
        return {"type": kind.__name__, **{name: _argument(getattr(layer, name)) for name in _arguments(kind)}}
    if isinstance(layer, Activation):
        raise ValueError(f"save: {where} is an activation with a custom function ({layer.name}); "
                         "only slopehtanh, relu, hardtanh and identity can be saved")
    raise ValueError(f"save: {where} is a {kind.__name__}, which checkpoints do not know; "
                     f"known: {', '.join(_BY_NAME)}")


def layer_from_json(spec, where="model"):
    """Build a freshly initialised layer (or chain) from its JSON description."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"{where}: expected a layer description with a 'type', got {spec!r}")
    kind = _BY_NAME.get(spec["type"]) if isinstance(spec["type"], str) else None
    if kind is None:
        raise ValueError(f"{where}: unknown layer type {spec['type']!r}")
    names = ["layers"] if kind is Chain else _arguments(kind)
    missing = [name for name in names if name not in spec]
    if missing:
        raise ValueError(f"{where}: the {kind.__name__} description lacks {missing[0]!r}")
    if kind is Chain:
        if not isinstance(spec["layers"], list):
            raise ValueError(f"{where}: bad Chain description {spec!r}: 'layers' must be a list")
        return Chain(*[layer_from_json(child, f"{where}[{i}]") for i, child in enumerate(spec["layers"])])
    arguments = {name: spec[name] for name in names}
    if "rng" in inspect.signature(kind).parameters:
        # The weights are overwritten on loading; a fixed seed only saves entropy.
        arguments["rng"] = np.random.default_rng(0)
    try:
        return kind(**arguments)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: bad {kind.__name__} description {spec!r}: {error}") from None


# ---------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------

def _json_value(value):
    """Turn NumPy scalars and arrays into plain Python for ``json.dumps``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def save(model, path, metadata=None):
    """Write ``model`` (architecture, parameters, statistics, masks) to ``path`` as ``.npz``.

    metadata: an optional dict of JSON-serialisable values stored beside the
    model (NumPy scalars are converted), read back by :func:`read_metadata`
    or as ``load(path).metadata``.

    The file is written with :func:`tinyprune.common.atomic_write`: to a
    temporary name in the same folder, then renamed over ``path``, so a
    crash mid-write leaves either the old file or no file, never half of
    one.  Returns ``path`` as a Path.
    """
    path = Path(path)
    architecture = {"format": FORMAT_VERSION, "training": bool(model.training),
                    "model": layer_to_json(model)}
    try:
        metadata_text = json.dumps(metadata if metadata is not None else {}, default=_json_value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"save: metadata for {path} is not JSON serialisable: {error}") from None
    arrays = {"architecture": np.array(json.dumps(architecture)), "metadata": np.array(metadata_text)}
    for key, value in model.state_dict().items():
        arrays["state/" + key] = value
    for key, mask in model.mask_dict().items():
        arrays["mask/" + key] = np.asarray(mask, dtype=bool)
    return atomic_write(path, lambda stream: np.savez(stream, **arrays))


# ---------------------------------------------------------------------------
# Loading: read, build, check everything, and only then fill the model in
# ---------------------------------------------------------------------------

def _read_arrays(path):
    """All arrays of the ``.npz`` at ``path``, as a dict; CheckpointError naming it otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        stored = np.load(path, allow_pickle=False)
        if not isinstance(stored, np.lib.npyio.NpzFile):   # a .npy file gives a bare array
            raise ValueError("it holds a single array, not an .npz archive")
        with stored:
            return {key: stored[key] for key in stored.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise CheckpointError(f"{path} is not a readable tinyprune checkpoint (.npz): {error}") from None


def _json_entry(arrays, key, path):
    if key not in arrays:
        raise CheckpointError(f"{path}: missing the '{key}' entry; is it a tinyprune checkpoint?")
    try:
        return json.loads(str(arrays[key]))
    except ValueError as error:
        raise CheckpointError(f"{path}: the '{key}' entry is not valid JSON: {error}") from None


def read_metadata(path):
    """The metadata dict stored in the checkpoint at ``path`` (``{}`` if none was given)."""
    return _json_entry(_read_arrays(path), "metadata", Path(path))


def _read(path):
    """The arrays, architecture and metadata of the checkpoint at ``path``, its format checked."""
    arrays = _read_arrays(path)
    architecture = _json_entry(arrays, "architecture", path)
    metadata = _json_entry(arrays, "metadata", path)
    if not isinstance(architecture, dict) or architecture.get("format") != FORMAT_VERSION:
        found = architecture.get("format") if isinstance(architecture, dict) else architecture
        raise CheckpointError(f"{path}: checkpoint format {found!r}, this tinyprune reads "
                              f"format {FORMAT_VERSION}")
    return arrays, architecture, metadata


def _build(architecture, path):
    """A freshly initialised model of the saved architecture: it says which arrays to expect."""
    try:
        return layer_from_json(architecture.get("model"))
    except ValueError as error:
        raise CheckpointError(f"{path}: cannot rebuild the architecture: {error}") from None


def _check_state(arrays, model, path):
    """``{"state/<key>": (layer, name)}`` for every parameter and statistic of ``model``.

    CheckpointError unless the file holds exactly those arrays, each of
    numbers and of the shape the architecture gives it.
    """
    places = {"state/" + key: (layer, name)
              for key, layer, name in list(model.named_parameters()) + list(model.named_buffers())}
    stored = {key for key in arrays if key.startswith("state/")}
    missing = sorted(set(places) - stored)
    extra = sorted(stored - set(places))
    if missing:
        raise CheckpointError(f"{path}: missing array(s) {missing[:5]} that the architecture needs")
    if extra:
        raise CheckpointError(f"{path}: array(s) {extra[:5]} that the architecture has no place for")
    for key, (layer, name) in places.items():
        value, shape = arrays[key], np.shape(getattr(layer, name))
        if value.shape != shape:
            raise CheckpointError(f"{path}: array '{key}' has shape {value.shape}, "
                                  f"the architecture expects {shape}")
        if value.dtype.kind not in "fi":
            raise CheckpointError(f"{path}: array '{key}' has dtype {value.dtype}, expected numbers")
    return places


def _check_masks(arrays, model, path):
    """``{"mask/<key>": (layer, name)}`` for the masks in the file, each checked to fit its parameter.

    Also refuses entries that are neither a state array, a mask, the
    architecture nor the metadata.
    """
    places = {"mask/" + key: (layer, name) for key, layer, name in model.named_parameters()}
    for key in arrays:
        if not key.startswith("mask/"):
            continue
        if key not in places:
            raise CheckpointError(f"{path}: mask '{key}' belongs to no parameter")
        layer, name = places[key]
        shape = np.shape(getattr(layer, name))
        if arrays[key].shape != shape or arrays[key].dtype != bool:
            raise CheckpointError(f"{path}: mask '{key}' is {arrays[key].dtype} {arrays[key].shape}, "
                                  f"expected bool {shape}")
    unknown = sorted(key for key in arrays
                     if key not in ("architecture", "metadata") and not key.startswith(("state/", "mask/")))
    if unknown:
        raise CheckpointError(f"{path}: unexpected entries {unknown[:5]}")
    return {key: place for key, place in places.items() if key in arrays}


def _fill(model, arrays, state, masks):
    """Copy the checked arrays into ``model``: every parameter and statistic, then the masks."""
    for key, (layer, name) in state.items():
        setattr(layer, name, np.array(arrays[key], copy=True))
    for key, (layer, name) in masks.items():
        layer.masks[name] = np.array(arrays[key], copy=True)
    return model


def load(path):
    """Rebuild the model saved at ``path``; returns it with ``model.metadata`` set.

    Every parameter and statistic comes back with its saved dtype and value,
    masks come back into ``layer.masks``, and the model is in the mode
    (train/eval) it was saved in, so its outputs equal the saved model's
    exactly.  A missing file raises FileNotFoundError; a file that is not
    an ``.npz``, is truncated, or does not match its own architecture
    (missing or extra arrays, wrong shapes, unknown layer types) raises
    :class:`CheckpointError` naming the file and the problem.
    """
    path = Path(path)
    arrays, architecture, metadata = _read(path)
    model = _build(architecture, path)
    state = _check_state(arrays, model, path)       # everything is checked before anything is filled
    masks = _check_masks(arrays, model, path)
    _fill(model, arrays, state, masks)
    model.train(bool(architecture.get("training", False)))
    model.metadata = metadata if isinstance(metadata, dict) else {"value": metadata}
    return model


def pretrained_path():
    """Where the shipped checkpoint is, as a Path (which may not exist).

    A source checkout (or an editable install) keeps it in ``data/``, i.e.
    ``data_dir() / "mobilenet-synthetic.npz"``.  A regular ``pip install .``
    copies it to ``<prefix>/share/tinyprune/`` (see ``data_files`` in
    setup.cfg), which is looked at second -- unless ``TINYPRUNE_DATA`` is
    set, which means "use this folder and nothing else".
    """
    path = data_dir() / PRETRAINED_FILE
    installed = Path(sys.prefix) / "share" / "tinyprune" / PRETRAINED_FILE
    if not path.is_file() and not os.environ.get("TINYPRUNE_DATA") and installed.is_file():
        return installed
    return path


def pretrained():
    """The shipped MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1) trained on SyntheticVWW.

    Loaded from :func:`pretrained_path` in eval mode; ``model.metadata``
    holds its validation accuracy, training history and the command that
    reproduces it.  FileNotFoundError if the file is missing.
    """
    path = pretrained_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"the pretrained checkpoint {path} is missing; it ships with the source checkout, "
            "or make it with: tinyprune pretrain --out " + str(path))
    return load(path).eval()
