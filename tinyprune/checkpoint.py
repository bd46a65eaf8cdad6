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

Only arrays of numbers, booleans and text are stored, so the file is read
without pickle: opening a checkpoint cannot run code.

A checkpoint is untrusted input, so ``load`` checks before it allocates:
each ``.npy`` header must declare exactly the bytes the archive holds for
it, the JSON nests at most ``MAX_JSON_DEPTH`` deep, the architecture's
layers hold no more numbers than the file stores, and every value is usable
(float32 or float64, finite unless masked).  Anything else is a
:class:`CheckpointError` naming the file and the entry -- never a
MemoryError, a RecursionError or a zipfile error.  ``save`` refuses what
``load`` would.
"""

import inspect
import json
import math
import os
import re
import reprlib
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .common import atomic_write, data_dir
from .layers import (Activation, BatchNorm2d, Chain, Conv2d, Dense, DepthwiseConv2d, Flatten,
                     GlobalMeanPool, HardTanh, Identity, Layer, ReLU, SlopeHTanh)
from .module import check_parameter_dtype

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

# How deep a checkpoint's JSON may nest: about 48 chains inside each other (two
# levels each); Python's JSON reader would give up (RecursionError) near 1000.
MAX_JSON_DEPTH = 100

# The constructor arguments whose product a layer's parameters hold at least
# as many numbers as (Conv2d: c_in * c_out * KH * KW): read from a description,
# they bound what building it will allocate.
SIZE_ARGUMENTS = ("c_in", "c_out", "channels", "n_in", "n_out", "kernel")

# Deflate, the only compression .npz files use, cannot expand its input more
# than about 1032 times: a member declaring more is lying about its size.
_MAX_EXPANSION = 1032


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
        raise ValueError(f"{where}: expected a layer description with a 'type', got {reprlib.repr(spec)}")
    kind = _BY_NAME.get(spec["type"]) if isinstance(spec["type"], str) else None
    if kind is None:
        raise ValueError(f"{where}: unknown layer type {reprlib.repr(spec['type'])}")
    names = ["layers"] if kind is Chain else _arguments(kind)
    # An argument with a default may be absent: the file was written before the
    # argument existed (a DepthwiseConv2d's bias), and the default is what it meant.
    defaults = {} if kind is Chain else {name: p.default for name, p in inspect.signature(kind).parameters.items()
                                         if p.default is not inspect.Parameter.empty}
    spec = {**{name: value for name, value in defaults.items() if name in names}, **spec}
    missing = [name for name in names if name not in spec]
    if missing:
        raise ValueError(f"{where}: the {kind.__name__} description lacks {missing[0]!r}")
    if kind is Chain:
        if not isinstance(spec["layers"], list):
            raise ValueError(f"{where}: bad Chain description {reprlib.repr(spec)}: 'layers' must be a list")
        return Chain(*[layer_from_json(child, f"{where}[{i}]") for i, child in enumerate(spec["layers"])])
    arguments = {name: spec[name] for name in names}
    if "rng" in inspect.signature(kind).parameters:
        # The weights are overwritten on loading; a fixed seed only saves entropy.
        arguments["rng"] = np.random.default_rng(0)
    try:
        return kind(**arguments)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: bad {kind.__name__} description {reprlib.repr(spec)}: {error}") from None


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


def _as_path(path, where):
    """``path`` (a str or os.PathLike) as a Path to a file, or not a file yet; an error naming ``where``.

    Refuses what Path would quietly change ('' becomes '.', 'a.npz/' becomes
    'a.npz') and what is there but is no regular file (a folder, a device
    such as /dev/null, a pipe): a rename over it would replace it.
    """
    if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
        raise TypeError(f"{where}: path must be a str or a Path, got {path!r}")
    text = os.fspath(path)
    if not text:
        raise ValueError(f"{where}: path is empty; name a file, e.g. 'model.npz'")
    if "\0" in text:
        raise ValueError(f"{where}: path {text!r} contains a NUL character, which no file name can")
    path = Path(path)
    try:
        folder, other = path.is_dir(), path.exists() and not path.is_file()
    except OSError as error:                      # a name too long, a folder we may not look into
        raise type(error)(f"{where}: cannot use {text!r}: {error.strerror}") from None
    if text.endswith(("/", os.sep)) or folder:
        raise IsADirectoryError(f"{where}: {text!r} names a folder, not a checkpoint file")
    if other:
        raise OSError(f"{where}: {text!r} is not a regular file (a device, a pipe or a socket)")
    return path


def save(model, path, metadata=None):
    """Write ``model`` (architecture, parameters, statistics, masks) to ``path`` as ``.npz``.

    metadata: an optional dict of JSON-serialisable values stored beside the
    model (NumPy scalars are converted), read back by :func:`read_metadata`
    or as ``load(path).metadata``.

    The file is written with :func:`tinyprune.common.atomic_write`: to a
    temporary name in the same folder, then renamed over ``path``, so a
    crash mid-write leaves either the old file or no file, never half of
    one.  A model that :func:`load` would refuse (a NaN weight, an integer
    parameter, chains nested deeper than ``MAX_JSON_DEPTH``) is refused
    before anything is written.  Every error names ``path``.  Returns
    ``path`` as a Path.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"save: model must be a tinyprune layer or chain (e.g. a MobileNet), "
                        f"got {type(model).__name__}")
    path = _as_path(path, "save")
    try:
        architecture_text = json.dumps({"format": FORMAT_VERSION, "training": bool(model.training),
                                        "model": layer_to_json(model)})
    except RecursionError:
        raise ValueError(f"save: the model for {path} nests chains too deeply to describe") from None
    try:
        metadata_text = json.dumps(metadata if metadata is not None else {}, default=_json_value)
    except (TypeError, ValueError, RecursionError) as error:
        raise TypeError(f"save: metadata for {path} is not JSON serialisable: {error}") from None
    for what, text in (("model", architecture_text), ("metadata", metadata_text)):
        if _json_depth(text) > MAX_JSON_DEPTH:
            raise ValueError(f"save: the {what} for {path} nests deeper than {MAX_JSON_DEPTH} levels, "
                             "which load refuses")
    _check_model_values(model, path)
    arrays = {"architecture": np.array(architecture_text), "metadata": np.array(metadata_text)}
    for key, value in model.state_dict().items():
        arrays["state/" + key] = value
    for key, mask in model.mask_dict().items():
        arrays["mask/" + key] = np.asarray(mask, dtype=bool)
    try:
        return atomic_write(path, lambda stream: np.savez(stream, **arrays))
    except OSError as error:
        # atomic_write's own refusals name the path already; the system's name the temporary file.
        reason = str(error) if error.errno is None else f"cannot write {path}: {error.strerror}"
        raise type(error)(f"save: {reason}") from None


def _check_model_values(model, path):
    """ValueError naming ``path`` and the array if ``model`` holds a value ``load`` would refuse."""
    for key, layer, name in list(model.named_parameters()) + list(model.named_buffers()):
        float_place = name in layer.param_names or np.asarray(getattr(layer, name)).dtype.kind == "f"
        _check_array(np.asarray(getattr(layer, name)), key, name, layer.masks.get(name), float_place,
                     f"save: cannot save {path}")


# ---------------------------------------------------------------------------
# Reading the archive: every entry's header is checked before its data is read
# ---------------------------------------------------------------------------

# What a damaged or hostile file can make the reading code raise.  Each becomes
# a CheckpointError naming the file (a CheckpointError raised on the way is
# passed on as it is).
_UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, struct.error,
               RuntimeError, NotImplementedError, KeyError, OverflowError)


def _checkpoint_file(path):
    """``path`` as the Path of an existing file: TypeError, ValueError, IsADirectoryError or FileNotFoundError."""
    path = _as_path(path, "load")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    return path


def _read_arrays(path):
    """All arrays of the ``.npz`` at ``path``, as a dict; CheckpointError naming it otherwise."""
    path = _checkpoint_file(path)
    with open(path, "rb") as stream:
        if stream.read(6) == b"\x93NUMPY":
            raise CheckpointError(f"{path} is not a tinyprune checkpoint: it holds a single array "
                                  "(.npy), not an .npz archive")
    try:
        with zipfile.ZipFile(path) as archive:
            return _read_members(archive, path)
    except CheckpointError:
        raise
    except _UNREADABLE as error:
        raise CheckpointError(f"{path} is not a readable tinyprune checkpoint (.npz): {error}") from None


def _read_members(archive, path):
    """Every ``NAME.npy`` entry of the open archive as ``{NAME: array}``."""
    infos = archive.infolist()
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise CheckpointError(f"{path}: the archive lists an entry twice")
    declared = sum(info.file_size for info in infos)
    if declared > _MAX_EXPANSION * path.stat().st_size:
        raise CheckpointError(f"{path}: the archive declares {declared:,} bytes of entries, more than "
                              f"its {path.stat().st_size:,} bytes can hold")
    arrays = {}
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise CheckpointError(f"{path}: unexpected entry {info.filename!r}; a checkpoint holds .npy arrays")
        arrays[info.filename[:-len(".npy")]] = _read_member(archive, info, path)
    return arrays


def _read_member(archive, info, path):
    """One entry as an array, read only once its header has declared exactly the bytes it holds."""
    key = info.filename[:-len(".npy")]
    stored = info.compress_type == zipfile.ZIP_STORED
    if info.flag_bits & 0x1 or not (stored or info.compress_type == zipfile.ZIP_DEFLATED):
        raise CheckpointError(f"{path}: entry '{key}' is encrypted or compressed in a way .npz files are not")
    if info.file_size > (info.compress_size if stored else _MAX_EXPANSION * info.compress_size):
        raise CheckpointError(f"{path}: entry '{key}' declares {info.file_size:,} bytes, more than its "
                              f"{info.compress_size:,} stored bytes can hold")
    with archive.open(info) as stream:
        shape, fortran, dtype = _npy_header(stream, key, path)
        held = info.file_size - stream.tell()
        declared = dtype.itemsize * math.prod(shape)
        if declared != held:
            raise CheckpointError(f"{path}: entry '{key}' declares a {dtype} array of shape {shape} "
                                  f"({declared:,} bytes), but holds {held:,} bytes of data")
        data = stream.read(declared)          # reading to the end also checks the CRC
    if len(data) != declared:
        raise CheckpointError(f"{path}: entry '{key}' is truncated")
    array = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def _npy_header(stream, key, path):
    """``(shape, fortran_order, dtype)`` from the ``.npy`` header at the start of ``stream``.

    NumPy parses the header (at most 10,000 characters); an object dtype, which
    only pickle could read, or any dtype no checkpoint uses is refused here.
    """
    try:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(stream)
    except (ValueError, SyntaxError, RecursionError, MemoryError, TypeError):
        # NumPy's own message may advise loading with pickles; a checkpoint never needs them.
        raise CheckpointError(f"{path}: entry '{key}' does not start with a readable .npy header") from None
    if dtype.hasobject:
        raise CheckpointError(f"{path}: entry '{key}' holds Python objects (an object array); a "
                              "checkpoint holds only numbers, booleans and text, and is never unpickled")
    if dtype.kind not in "biufU" or dtype.itemsize == 0 or any(n < 0 for n in shape):
        raise CheckpointError(f"{path}: entry '{key}' is a {dtype} array of shape {shape}, "
                              "which no checkpoint holds")
    return shape, fortran, dtype


# ---------------------------------------------------------------------------
# The JSON entries
# ---------------------------------------------------------------------------

_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')   # strings whole, so brackets inside them do not count


def _json_depth(text):
    """How deep the arrays and objects of the JSON ``text`` nest (0 for a bare value)."""
    depth = deepest = 0
    for token in _JSON_TOKEN.finditer(text):
        mark = token.group()[0]
        if mark in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif mark in "]}":
            depth -= 1
    return deepest


def _json_entry(arrays, key, path):
    if key not in arrays:
        raise CheckpointError(f"{path}: missing the '{key}' entry; is it a tinyprune checkpoint?")
    entry = arrays[key]
    if entry.dtype.kind != "U" or entry.shape != ():
        raise CheckpointError(f"{path}: the '{key}' entry is a {entry.dtype} array of shape {entry.shape}, "
                              "not JSON text")
    text = str(entry)
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise CheckpointError(f"{path}: the '{key}' entry nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{path}: the '{key}' entry is not valid JSON: {error}") from None


def read_metadata(path):
    """The metadata dict stored in the checkpoint at ``path`` (``{}`` if none was given)."""
    path = _checkpoint_file(path)
    return _json_entry(_read_arrays(path), "metadata", path)


def _read(path):
    """The arrays, architecture and metadata of the checkpoint at ``path``, its format checked."""
    arrays = _read_arrays(path)
    architecture = _json_entry(arrays, "architecture", path)
    metadata = _json_entry(arrays, "metadata", path)
    if not isinstance(architecture, dict) or architecture.get("format") != FORMAT_VERSION:
        found = architecture.get("format") if isinstance(architecture, dict) else architecture
        raise CheckpointError(f"{path}: checkpoint format {reprlib.repr(found)}, this tinyprune reads "
                              f"format {FORMAT_VERSION}")
    if not isinstance(architecture.get("training", False), bool):
        raise CheckpointError(f"{path}: 'training' must be true or false, got "
                              f"{reprlib.repr(architecture['training'])}")
    return arrays, architecture, metadata


# ---------------------------------------------------------------------------
# Building and checking: nothing is filled in until everything is checked
# ---------------------------------------------------------------------------

def _declared_numbers(spec):
    """At least how many numbers the layers described in ``spec`` hold: per layer, its sizes multiplied."""
    if isinstance(spec, list):
        return sum(_declared_numbers(item) for item in spec)
    if not isinstance(spec, dict):
        return 0
    inside = sum(_declared_numbers(value) for name, value in spec.items() if name not in SIZE_ARGUMENTS)
    sizes = [spec[name] for name in SIZE_ARGUMENTS if name in spec]
    numbers = [n for size in sizes for n in (size if isinstance(size, list) else [size])
               if isinstance(n, int) and not isinstance(n, bool)]
    return inside + (math.prod(max(abs(n), 1) for n in numbers) if numbers else 0)


def _build(architecture, arrays, path):
    """A freshly initialised model of the saved architecture: it says which arrays to expect.

    Before anything is built, the sizes the architecture declares are checked
    against the numbers the file stores, so a description of a 10^6 x 10^6
    convolution in a small file is refused instead of allocated.
    """
    declared = _declared_numbers(architecture.get("model"))
    stored = sum(value.size for key, value in arrays.items() if key.startswith("state/"))
    if declared > stored:
        raise CheckpointError(f"{path}: the architecture declares layers of at least {declared:,} numbers, "
                              f"but the file stores {stored:,}")
    try:
        return layer_from_json(architecture.get("model"))
    except ValueError as error:
        raise CheckpointError(f"{path}: cannot rebuild the architecture: {error}") from None


def _place(key):
    """The layer an array key belongs to: ``"0.3.weight"`` -> ``"model[0][3]"``."""
    return "model" + "".join(f"[{i}]" for i in key.split("/")[-1].split(".")[:-1])


def _check_state(arrays, model, path):
    """``{"state/<key>": (layer, name)}`` for every parameter and statistic of ``model``.

    CheckpointError unless the file holds exactly those arrays, each of the
    shape the architecture gives it and of a type its place can hold
    (parameters all float32 or all float64).
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
                                  f"the architecture expects {shape} for {_place(key)}")
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


def _check_array(value, key, name, mask, float_place, where):
    """ValueError naming ``where``, the array and its layer unless ``value`` can be used in its place.

    The one check of save and load.  A float place (a parameter or a
    statistic) holds float32 or float64 numbers, finite -- a masked entry
    excepted, since it reads as 0 whatever is stored -- and a variance is
    not negative; an integer place (``num_batches_tracked``) holds a count.
    """
    what = f"array {key!r} ({_place(key)})"
    if mask is not None and np.shape(mask) != value.shape:
        raise ValueError(f"{where}: {what} has a mask of shape {np.shape(mask)}, not {value.shape}")
    if not float_place:
        if value.dtype.kind not in "iu" or (value < 0).any():
            raise ValueError(f"{where}: {what} must hold a count (integers >= 0), got {value.dtype} {value}")
        return
    check_parameter_dtype(value.dtype, what, where)
    kept = value if mask is None else value[np.asarray(mask, dtype=bool)]
    bad = kept.size - int(np.count_nonzero(np.isfinite(kept)))
    if bad:
        raise ValueError(f"{where}: {what} holds {bad} NaN or infinite value(s)"
                         + (" where it is not masked" if mask is not None else ""))
    if name == "running_var" and (value < 0).any():
        raise ValueError(f"{where}: {what} holds a negative variance")


def _check_values(arrays, state, masks, path):
    """CheckpointError naming the array and its layer if a stored value is unusable (``_check_array``).

    The parameters must also share one dtype: a model computes in one.
    """
    for key, (layer, name) in state.items():
        mask_key = "mask/" + key[len("state/"):]
        float_place = np.asarray(getattr(layer, name)).dtype.kind == "f"
        try:
            _check_array(arrays[key], key, name, arrays.get(mask_key) if mask_key in masks else None,
                         float_place, str(path))
        except ValueError as error:
            raise CheckpointError(str(error)) from None
    kinds = sorted({str(arrays[key].dtype) for key, (layer, name) in state.items() if name in layer.param_names})
    if len(kinds) > 1:
        raise CheckpointError(f"{path}: the parameters mix {' and '.join(kinds)}; a model computes in one")


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
    exactly.  A missing file raises FileNotFoundError, a folder
    IsADirectoryError; a file that is not an ``.npz``, is truncated or
    damaged, declares sizes it does not hold, or does not match its own
    architecture (missing or extra arrays, wrong shapes or types, unknown
    layer types, NaN weights) raises :class:`CheckpointError` naming the file
    and the problem.
    """
    path = _checkpoint_file(path)
    arrays, architecture, metadata = _read(path)
    model = _build(architecture, arrays, path)
    state = _check_state(arrays, model, path)       # everything is checked before anything is filled
    masks = _check_masks(arrays, model, path)
    _check_values(arrays, state, masks, path)
    _fill(model, arrays, state, masks)
    model.train(architecture.get("training", False))
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
