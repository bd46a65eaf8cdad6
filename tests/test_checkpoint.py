"""Chapter 8: checkpoints -- save, load, the shipped pretrained model, and every bad file.

The pruned and resized models saved here are made in the tests (masks set
directly, channels cut by hand), not by the prune, propagate and resize
chapters, so these tests run in a course copy where those are exercises.
Comparing outputs runs the convolutions' forward pass, which unfolds
receptive fields (exercise kernels.1): in a copy where that is still to do,
those tests are skipped (``waits_for``).
"""

import json
import os
import zipfile

import numpy as np
import pytest

from tinyprune import MobileNet, slopehtanh
from tinyprune.checkpoint import PRETRAINED_FILE, CheckpointError, load, pretrained, read_metadata, save
from tinyprune.common import data_dir
from tinyprune.data import SyntheticVWW, to_float
from tinyprune.layers import (Activation, BatchNorm2d, Chain, Conv2d, Dense, DepthwiseConv2d, Flatten,
                              GlobalMeanPool, HardTanh, Identity, Layer, ReLU, SlopeHTanh)

from helpers import waits_for

pytestmark = pytest.mark.train

WEIGHTED = (Conv2d, DepthwiseConv2d, Dense)


@pytest.fixture(scope="module")
def model():
    """A small trained-looking MobileNet: non-trivial BatchNorm statistics, eval mode."""
    m = MobileNet(slopehtanh, 0.25, fcsize=16, nclasses=1, seed=3)
    rng = np.random.default_rng(0)
    for _, layer in m.named_layers():
        if isinstance(layer, BatchNorm2d):
            layer.running_mean[:] = rng.normal(0, 0.5, layer.channels)
            layer.running_var[:] = rng.uniform(0.5, 2.0, layer.channels)
    return m.eval()


def masked(model, seed=0):
    """A copy of ``model`` pruned as the prune chapter would leave it, with masks set here.

    Every conv and dense weight gets a keep-mask (about half its entries);
    the first conv also loses whole output channels, with its BatchNorm's
    gamma and beta masked there.  The stored values under the masks stay,
    as prune leaves them.
    """
    result = model.copy()
    rng = np.random.default_rng(seed)
    for _, layer in result.named_layers():
        if isinstance(layer, WEIGHTED):
            layer.masks["weight"] = rng.random(layer.weight.shape) < 0.5
    conv, bn = result[0][0], result[0][1]
    dead = np.arange(conv.c_out) % 3 == 0
    conv.masks["weight"][dead] = False
    bn.masks["weight"], bn.masks["bias"] = ~dead, ~dead
    return result


def narrowed(model, keep):
    """A copy of MobileNet ``model`` keeping only the channels ``keep`` of its first group.

    The group is made by the conv [0][0], filtered by the depthwise conv
    [0][3] (each followed by a BatchNorm) and read by the pointwise conv
    [0][6]: the shape ``resize`` gives a model whose other channels there
    were pruned, made here by cutting every array that carries the group's
    channels (as each layer declares in ``out_channel_arrays``).
    """
    result = model.copy()
    for i in (0, 1, 3, 4):
        layer = result[0][i]
        for name, axis in layer.out_channel_arrays.items():
            if getattr(layer, name) is not None:
                setattr(layer, name, np.take(getattr(layer, name), keep, axis=axis))
    result[0][6].weight = np.take(result[0][6].weight, keep, axis=1)
    return result


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).random((3, 3, 32, 32), dtype=np.float32)


def _same_arrays(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]) for k in sa)


def _rewrite(src, dst, change):
    """Copy the checkpoint ``src`` to ``dst`` with ``change(arrays)`` applied to its dict of arrays."""
    with np.load(src, allow_pickle=False) as stored:
        arrays = {k: stored[k] for k in stored.files}
    change(arrays)
    with open(dst, "wb") as f:
        np.savez(f, **arrays)


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------

def test_round_trip_gives_identical_outputs_and_arrays(model, x, tmp_path):
    path = save(model, tmp_path / "m.npz", metadata={"val_accuracy": np.float32(0.5), "note": "hi"})
    loaded = load(path)
    assert _same_arrays(model, loaded)
    assert not loaded.training
    assert loaded.metadata == {"val_accuracy": 0.5, "note": "hi"}
    assert read_metadata(path) == loaded.metadata
    with waits_for("kernels"):
        assert np.array_equal(model(x), loaded(x))


def test_round_trip_keeps_train_mode_and_float64(model, x, tmp_path):
    m64 = model.copy().to(np.float64).train()
    loaded = load(save(m64, tmp_path / "m64.npz"))
    assert loaded.training and loaded.dtype == np.float64
    assert loaded.metadata == {}
    with waits_for("kernels"):
        assert np.array_equal(m64.copy()(x), loaded(x))   # train mode: batch statistics, on copies


def test_round_trip_of_a_pruned_model_keeps_its_masks(model, x, tmp_path):
    pruned = masked(model)
    loaded = load(save(pruned, tmp_path / "pruned.npz"))
    masks, loaded_masks = pruned.mask_dict(), loaded.mask_dict()
    assert masks.keys() == loaded_masks.keys() and len(masks) > 27   # every conv/dense weight
    assert all(np.array_equal(masks[k], loaded_masks[k]) and loaded_masks[k].dtype == bool
               for k in masks)
    assert _same_arrays(pruned, loaded)
    with waits_for("kernels"):
        assert np.array_equal(pruned(x), loaded(x))


def test_round_trip_of_a_resized_model(model, x, tmp_path):
    small = narrowed(model, [6, 1, 4, 2])
    assert small[0][3].c_out < model[0][3].c_out   # really smaller
    loaded = load(save(small, tmp_path / "small.npz"))
    assert [repr(layer) for _, layer in loaded.named_layers()] == \
           [repr(layer) for _, layer in small.named_layers()]
    assert _same_arrays(small, loaded)
    with waits_for("kernels"):
        assert np.array_equal(small(x), loaded(x))


def test_round_trip_keeps_the_arguments_of_every_layer_type(tmp_path):
    model = Chain(Conv2d(3, 4, (3, 1), stride=2, pad=1, bias=True), BatchNorm2d(4, eps=1e-3, momentum=0.2),
                  ReLU(), DepthwiseConv2d(4, 3, pad=1), HardTanh(), Identity(), GlobalMeanPool(), Flatten(),
                  Dense(4, 2, bias=False), SlopeHTanh())
    loaded = load(save(model, tmp_path / "every.npz"))
    assert [repr(layer) for layer in loaded] == [repr(layer) for layer in model]
    assert "bias=True" in repr(loaded[0]) and "momentum=0.2" in repr(loaded[1])
    assert "bias=False" in repr(loaded[8])
    assert _same_arrays(model, loaded)


def test_save_replaces_an_existing_file_without_leftovers(model, tmp_path):
    path = tmp_path / "m.npz"
    save(Chain(Dense(3, 1)), path)
    save(model, path)
    assert os.listdir(tmp_path) == ["m.npz"]
    assert len(load(path)) == 2


def test_saved_file_has_the_usual_permissions(model, tmp_path):
    umask = os.umask(0o022)
    try:
        path = save(model, tmp_path / "m.npz")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644   # not the temporary file's private 0o600


def test_a_failed_save_leaves_the_old_file_and_no_temporary(model, tmp_path, monkeypatch):
    path = save(model, tmp_path / "m.npz")
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        save(Chain(Dense(3, 1)), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]


def test_save_refuses_a_layer_it_cannot_describe(tmp_path):
    class Mystery(Layer):
        pass

    with pytest.raises(ValueError, match=r"model\[1\] is a Mystery"):
        save(Chain(Dense(2, 2), Mystery()), tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"model\[0\] is an activation with a custom function \(tanh\)"):
        save(Chain(Activation(np.tanh, lambda v: 1 - np.tanh(v) ** 2)), tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_save_refuses_metadata_json_cannot_hold(model, tmp_path):
    with pytest.raises(TypeError, match=r"metadata for .*m\.npz is not JSON serialisable"):
        save(model, tmp_path / "m.npz", metadata={"when": object()})


# ---------------------------------------------------------------------------
# Bad files: every error names the file
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    return save(model, tmp_path_factory.mktemp("ck") / "good.npz")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint file at .*nothing\.npz"):
        load(tmp_path / "nothing.npz")


def test_not_an_npz(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("these are not the weights you are looking for")
    with pytest.raises(CheckpointError, match=r"notes\.npz is not a readable tinyprune checkpoint"):
        load(path)


def test_truncated_file(saved, tmp_path):
    path = tmp_path / "half.npz"
    data = saved.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"half\.npz"):
        load(path)


def test_a_plain_npy_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(CheckpointError, match=r"array\.npy .*single array"):
        load(path)


def _first_layer_edited(edit):
    """A change of a checkpoint's arrays: ``edit`` the description of the model's first layer."""
    def change(arrays):
        arch = json.loads(str(arrays["architecture"]))
        edit(arch["model"]["layers"][0]["layers"][0])
        arrays["architecture"] = np.array(json.dumps(arch))
    return change


BROKEN = {   # what is done to a good file, and what the error must say after the file's name
    "missing parameter": (lambda a: a.pop("state/0.4.running_var"),
                          r": missing array.*state/0\.4\.running_var"),
    "extra parameter": (lambda a: a.update({"state/9.weight": np.zeros(2, np.float32)}),
                        r": .*state/9\.weight.*no place"),
    "wrong shape": (lambda a: a.update({"state/1.4.weight": np.zeros((1, 15), np.float32)}),
                    r": array 'state/1\.4\.weight' has shape \(1, 15\), the architecture expects \(1, 16\)"),
    "mask of the wrong type": (lambda a: a.update({"mask/1.4.weight": np.ones((1, 16), np.float32)}),
                               r": mask 'mask/1\.4\.weight' is float32"),
    "mask of no parameter": (lambda a: a.update({"mask/0.1.running_mean": np.ones(8, bool)}),
                             r": mask 'mask/0\.1\.running_mean' belongs to no parameter"),
    "unexpected entry": (lambda a: a.update({"notes": np.array("hi")}), r": unexpected entries \['notes'\]"),
    "missing architecture": (lambda a: a.pop("architecture"), r": missing the 'architecture' entry"),
    "unknown layer type": (_first_layer_edited(lambda spec: spec.update(type="Conv3d")),
                           r": .*model\[0\]\[0\]: unknown layer type 'Conv3d'"),
    "missing argument": (_first_layer_edited(lambda spec: spec.pop("c_in")),
                         r": .*model\[0\]\[0\]: the Conv2d description lacks 'c_in'"),
    "garbled architecture": (lambda a: a.update({"architecture": np.array("{not json")}),
                             r": the 'architecture' entry is not valid JSON"),
}


@pytest.mark.parametrize("problem", BROKEN)
def test_a_broken_file_is_refused_naming_the_file_and_the_problem(saved, tmp_path, problem):
    change, words = BROKEN[problem]
    path = tmp_path / "broken.npz"
    _rewrite(saved, path, change)
    with pytest.raises(CheckpointError, match=r"broken\.npz" + words):
        load(path)


def test_the_file_loads_without_pickle(saved):
    with zipfile.ZipFile(saved) as archive:
        names = archive.namelist()
    assert "architecture.npy" in names and "metadata.npy" in names
    with np.load(saved, allow_pickle=False) as stored:   # would raise on an object array
        assert all(stored[k].dtype != object for k in stored.files)


# ---------------------------------------------------------------------------
# The shipped checkpoint
# ---------------------------------------------------------------------------

def test_pretrained_is_the_tutorial_model_trained_on_the_current_data():
    m = pretrained()
    reference = MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1, seed=0)
    assert {k: v.shape for k, v in m.state_dict().items()} == \
           {k: v.shape for k, v in reference.state_dict().items()}
    assert m.dtype == np.float32 and not m.training
    meta = m.metadata
    assert "python -m tinyprune.pretrain" in meta["command"]
    assert meta["data_version"] == SyntheticVWW.VERSION   # the data changed: retrain the checkpoint
    assert len(meta["history"]["val_accuracy"]) == meta["epochs_trained"]
    assert meta["val_accuracy"] == meta["history"]["val_accuracy"][-1]
    with waits_for("kernels"):
        logits = m(to_float(SyntheticVWW("val", seed=7, size=16).images))
    assert logits.shape == (16, 1) and np.isfinite(logits).all()


@waits_for("kernels", "train.1")
def test_pretrained_reaches_90_percent_on_the_validation_set_as_its_metadata_says():
    from tinyprune.train import evaluate
    m = pretrained()
    _, acc = evaluate(m, SyntheticVWW("val"))       # all 2,000 validation images
    assert acc >= 0.90
    assert acc == m.metadata["val_accuracy"]


def test_pretrained_says_how_to_make_a_missing_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYPRUNE_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match=r"mobilenet-synthetic\.npz is missing.*tinyprune pretrain"):
        pretrained()


def test_an_installed_copy_is_found_when_the_data_folder_has_none(tmp_path, monkeypatch):
    # A non-editable install has no data/ folder beside the package; setup.cfg's
    # data_files put the checkpoint under <prefix>/share/tinyprune instead.
    import tinyprune.checkpoint as ckpt
    empty, prefix = tmp_path / "data", tmp_path / "prefix"
    installed = prefix / "share" / "tinyprune" / PRETRAINED_FILE
    installed.parent.mkdir(parents=True)
    save(MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1, seed=3), installed)
    monkeypatch.delenv("TINYPRUNE_DATA", raising=False)
    monkeypatch.setattr(ckpt, "data_dir", lambda: empty)
    monkeypatch.setattr(ckpt.sys, "prefix", str(prefix))
    assert ckpt.pretrained_path() == installed
    assert np.array_equal(pretrained()[0][0].weight, load(installed)[0][0].weight)
    # TINYPRUNE_DATA means "this folder only": no fallback.
    monkeypatch.setenv("TINYPRUNE_DATA", str(empty))
    assert ckpt.pretrained_path() == empty / PRETRAINED_FILE


def test_the_checkpoint_reader_gives_every_entry_exactly_as_numpy_reads_it(model, tmp_path):
    # load reads the archive itself (checking each header before its data); it must
    # not change a bit of what np.load would give, in the shipped file or a pruned one.
    from tinyprune.checkpoint import _read_arrays, pretrained_path
    pruned = save(masked(model), tmp_path / "pruned.npz")
    for path in (pretrained_path(), pruned):
        ours = _read_arrays(path)
        with np.load(path, allow_pickle=False) as stored:
            assert sorted(ours) == sorted(stored.files)
            for key in stored.files:
                assert ours[key].dtype == stored[key].dtype and ours[key].shape == stored[key].shape, key
                assert ours[key].tobytes() == stored[key].tobytes(), key
