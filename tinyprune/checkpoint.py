"""Saving and loading models: one ``.npz`` file, no pickle.

A checkpoint holds everything needed to rebuild a model exactly:

* ``architecture`` -- JSON text describing every layer by its type and
  constructor arguments, chains nested as lists, e.g.
  ``{"type": "Conv2d", "c_in": 3, "c_out": 8, "kernel": [3, 3], "stride": 2,
  "pad": 1, "bias": false}``.  The arguments are read off the layer's
  public attributes, so a resized model (whose sizes are read off its
  sliced weights) is described with its new sizes.
* ``state/<key>`` -- every parameter and BatchNorm statistic, keyed as in
  ``model.state_dict()`` (``0.1.running_mean``), in its own dtype.
* ``mask/<key>`` -- the pruning masks (boolean, True = kept).
* ``metadata`` -- optional JSON (validation accuracy, training history, the
  command that made the file).

Only arrays of numbers, booleans and text are stored, so ``np.load`` reads
the file with ``allow_pickle=False``: opening a checkpoint cannot run code.
"""

import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .data import data_dir
from .layers import (Activation, BatchNorm2d, Chain, Conv2d, Dense, DepthwiseConv2d, Flatten,
                     GlobalMeanPool, HardTanh, Identity, ReLU, SlopeHTanh)

__all__ = ["save", "load", "read_metadata", "pretrained", "pretrained_path", "CheckpointError",
           "PRETRAINED_FILE"]

FORMAT_VERSION = 1
PRETRAINED_FILE = "mobilenet-synthetic.npz"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read back into a model; the message names the file."""


# ---------------------------------------------------------------------------
# Architecture <-> JSON
# ---------------------------------------------------------------------------

def layer_to_json(layer, where="model"):
    """The JSON description of ``layer`` (a dict); ValueError naming ``where`` if unknown."""
    kind = type(layer)
    if kind is Chain:
        return {"type": "Chain",
                "layers": [layer_to_json(child, f"{where}[{i}]") for i, child in enumerate(layer)]}
    if kind is Conv2d:
        return {"type": "Conv2d", "c_in": layer.c_in, "c_out": layer.c_out,
                "kernel": list(layer.kernel), "stride": layer.stride, "pad": layer.pad,
                "bias": layer.bias is not None}
    if kind is DepthwiseConv2d:
        return {"type": "DepthwiseConv2d", "channels": layer.channels, "kernel": list(layer.kernel),
                "stride": layer.stride, "pad": layer.pad, "bias": layer.bias is not None}
    if kind is Dense:
        return {"type": "Dense", "n_in": layer.n_in, "n_out": layer.n_out,
                "bias": layer.bias is not None}
    if kind is BatchNorm2d:
        return {"type": "BatchNorm2d", "channels": layer.channels, "eps": layer.eps,
                "momentum": layer.momentum}
    if kind in (SlopeHTanh, ReLU, HardTanh, Identity, GlobalMeanPool, Flatten):
        return {"type": kind.__name__}
    if isinstance(layer, Activation):
        raise ValueError(f"save: {where} is an activation with a custom function ({layer.name}); "
                         "only slopehtanh, relu, hardtanh and identity can be saved")
    raise ValueError(f"save: {where} is a {kind.__name__}, which checkpoints do not know; "
                     "known: Chain, Conv2d, DepthwiseConv2d, Dense, BatchNorm2d, SlopeHTanh, "
                     "ReLU, HardTanh, Identity, GlobalMeanPool, Flatten")


def layer_from_json(spec, where="model"):
    """Build a freshly initialised layer (or chain) from its JSON description."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"{where}: expected a layer description with a 'type', got {spec!r}")
    kind = spec["type"]
    try:
        if kind == "Chain":
            return Chain(*[layer_from_json(child, f"{where}[{i}]")
                           for i, child in enumerate(spec["layers"])])
        # The weights are overwritten on loading; a fixed seed only saves entropy.
        rng = np.random.default_rng(0)
        if kind == "Conv2d":
            return Conv2d(spec["c_in"], spec["c_out"], tuple(spec["kernel"]), stride=spec["stride"],
                          pad=spec["pad"], bias=spec["bias"], rng=rng)
        if kind == "DepthwiseConv2d":
            # Files written before depthwise convs could have a bias say nothing: none.
            return DepthwiseConv2d(spec["channels"], tuple(spec["kernel"]), stride=spec["stride"],
                                   pad=spec["pad"], bias=spec.get("bias", False), rng=rng)
        if kind == "Dense":
            return Dense(spec["n_in"], spec["n_out"], bias=spec["bias"], rng=rng)
        if kind == "BatchNorm2d":
            return BatchNorm2d(spec["channels"], eps=spec["eps"], momentum=spec["momentum"])
        simple = {"SlopeHTanh": SlopeHTanh, "ReLU": ReLU, "HardTanh": HardTanh, "Identity": Identity,
                  "GlobalMeanPool": GlobalMeanPool, "Flatten": Flatten}
        if kind in simple:
            return simple[kind]()
    except KeyError as missing:
        raise ValueError(f"{where}: the {kind} description lacks {missing}") from None
    except TypeError as error:
        raise ValueError(f"{where}: bad {kind} description {spec!r}: {error}") from None
    raise ValueError(f"{where}: unknown layer type {kind!r}")


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

    The file is written to a temporary name in the same folder and then
    renamed over ``path`` (``os.replace``), so a crash mid-write leaves either
    the old file or no file, never half of one.  Returns ``path`` as a Path.
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

    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix=path.name + ".", suffix=".tmp", delete=False)
    try:
        with handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        # Temporary files are private (0600); give the checkpoint the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(handle.name, 0o666 & ~umask)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------
# Loading
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
    arrays = _read_arrays(path)
    architecture = _json_entry(arrays, "architecture", path)
    metadata = _json_entry(arrays, "metadata", path)
    if not isinstance(architecture, dict) or architecture.get("format") != FORMAT_VERSION:
        found = architecture.get("format") if isinstance(architecture, dict) else architecture
        raise CheckpointError(f"{path}: checkpoint format {found!r}, this tinyprune reads "
                              f"format {FORMAT_VERSION}")
    try:
        model = layer_from_json(architecture.get("model"))
    except ValueError as error:
        raise CheckpointError(f"{path}: cannot rebuild the architecture: {error}") from None

    expected = {}   # "state/<key>" or "mask/<key>" -> (layer, name, shape, kind)
    for key, layer, name in list(model.named_parameters()) + list(model.named_buffers()):
        expected["state/" + key] = (layer, name, np.shape(getattr(layer, name)))
    stored = {k for k in arrays if k.startswith("state/")}
    missing = sorted(set(expected) - stored)
    extra = sorted(stored - set(expected))
    if missing:
        raise CheckpointError(f"{path}: missing array(s) {missing[:5]} that the architecture needs")
    if extra:
        raise CheckpointError(f"{path}: array(s) {extra[:5]} that the architecture has no place for")
    for key, (layer, name, shape) in expected.items():
        value = arrays[key]
        if value.shape != shape:
            raise CheckpointError(f"{path}: array '{key}' has shape {value.shape}, "
                                  f"the architecture expects {shape}")
        if value.dtype.kind not in "fi":
            raise CheckpointError(f"{path}: array '{key}' has dtype {value.dtype}, expected numbers")

    params = {"mask/" + key: (layer, name) for key, layer, name in model.named_parameters()}
    for key in arrays:
        if key.startswith("mask/"):
            if key not in params:
                raise CheckpointError(f"{path}: mask '{key}' belongs to no parameter")
            layer, name = params[key]
            shape = np.shape(getattr(layer, name))
            if arrays[key].shape != shape or arrays[key].dtype != bool:
                raise CheckpointError(f"{path}: mask '{key}' is {arrays[key].dtype} {arrays[key].shape}, "
                                      f"expected bool {shape}")
    unknown = sorted(k for k in arrays
                     if k not in ("architecture", "metadata") and not k.startswith(("state/", "mask/")))
    if unknown:
        raise CheckpointError(f"{path}: unexpected entries {unknown[:5]}")

    # Everything checked: now fill the model in.
    for key, (layer, name, _) in expected.items():
        setattr(layer, name, np.array(arrays[key], copy=True))
    for key, (layer, name) in params.items():
        if key in arrays:
            layer.masks[name] = np.array(arrays[key], copy=True)
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
