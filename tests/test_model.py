"""Chapter 1 (continued): the MobileNet the tutorial prunes, as one model.

Its architecture is checked against the configuration table (written out
again in tests/mobilenet_table.py), its gradients against finite
differences, its float32 arithmetic against float64, its state_dict against
PyTorch's key and layout conventions, and bad input against the error a
student should see.

Run this chapter alone with ``python -m pytest -m layers``.
"""

import numba
import numpy as np
import pytest

from tinyprune import (BatchNorm2d, Chain, Conv2d, Dense, DepthwiseConv2d, Flatten, GlobalMeanPool,
                       MobileNet, SlopeHTanh, TUTORIAL_INPUT, gradcheck, layer_at, slopehtanh)

from mobilenet_table import CONFIG

from helpers import TRAINING, waits_for

pytestmark = pytest.mark.layers


def unrolled_config(width):
    """[(depthwise?, c_out, stride)], one entry per conv block, channels truncated to int."""
    return [(dw, int(ch * width), stride) for dw, ch, stride, repeats in CONFIG for _ in range(repeats)]


def tutorial_model(seed=0):
    return MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1, seed=seed)


@pytest.fixture(scope="module", autouse=True)
def one_numba_thread():
    """Run this file's kernels on one thread.

    Most calls here are on small arrays (gradchecks repeat a forward pass
    hundreds of times) and a second thread's wake-up costs more than it saves,
    all the more on a busy machine.  The compiled code is the same.
    """
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


@pytest.fixture(scope="module")
def tutorial():
    """The tutorial's model, built once; tests that change it work on a copy."""
    return tutorial_model(seed=0)


def trained_statistics(model, shape, steps=3, seed=100):
    """Run a few train-mode forwards on random images so BatchNorm's running statistics move."""
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        model(rng.random(shape).astype(model.dtype))
    return model


# ---------------------------------------------------------------------------
# Architecture
# ---------------------------------------------------------------------------

def test_tutorial_input_is_one_96_by_96_rgb_image_in_nchw():
    assert TUTORIAL_INPUT == (1, 3, 96, 96)


def test_width_quarter_channels_follow_the_configuration_table():
    channels = [c for _, c, _ in unrolled_config(0.25)]
    assert channels == [8, 16, 32, 32, 64, 64] + [128] * 6 + [256, 256]


def test_backbone_layers_match_the_configuration_table(tutorial):
    backbone, head = tutorial
    expected = []        # (type, c_in, c_out, kernel, stride, pad)
    c_in = 3
    for depthwise, c_out, stride in unrolled_config(0.25):
        if depthwise:
            expected += [(DepthwiseConv2d, c_in, c_in, (3, 3), stride, 1), (BatchNorm2d, c_in), (SlopeHTanh,),
                         (Conv2d, c_in, c_out, (1, 1), 1, 0), (BatchNorm2d, c_out), (SlopeHTanh,)]
        else:
            expected += [(Conv2d, c_in, c_out, (3, 3), stride, 1), (BatchNorm2d, c_out), (SlopeHTanh,)]
        c_in = c_out
    assert len(backbone) == len(expected) == 3 + 13 * 6
    for i, (layer, want) in enumerate(zip(backbone, expected)):
        assert type(layer) is want[0], f"model[0][{i}]"
        if want[0] is BatchNorm2d:
            assert layer.channels == want[1], f"model[0][{i}]"
        elif want[0] is not SlopeHTanh:
            got = (type(layer), layer.c_in, layer.c_out, tuple(layer.kernel), layer.stride, layer.pad)
            assert got == want, f"model[0][{i}]"
    # No conv in MobileNet has a bias: the BatchNorm after it supplies the shift.
    assert all(layer.bias is None for layer in backbone if type(layer) is Conv2d)


def test_head_is_pool_flatten_dense_activation_dense(tutorial):
    head = tutorial[1]
    assert [type(layer) for layer in head] == [GlobalMeanPool, Flatten, Dense, SlopeHTanh, Dense]
    assert (head[2].n_in, head[2].n_out) == (256, 64)
    assert (head[4].n_in, head[4].n_out) == (64, 1)
    assert head[2].bias is not None and head[4].bias is not None


def test_spatial_sizes_at_96_pixels(tutorial):
    # Each 3x3 padded conv maps a side s to (s - 1) // stride + 1.
    shape = TUTORIAL_INPUT
    sides = {}
    for path, layer in tutorial.named_layers():
        shape = layer.output_shape(shape)
        sides[path] = shape[2] if len(shape) == 4 else None
    assert sides["[0][0]"] == 48
    group_sides = [sides[f"[0][{6 + 6 * g}]"] for g in range(13)]
    assert group_sides == [48, 24, 24, 12, 12, 6, 6, 6, 6, 6, 6, 3, 3]


def test_tutorial_model_has_224048_conv_and_dense_weights(tutorial):
    weights = sum(layer.weight.size for _, layer in tutorial.named_layers()
                  if isinstance(layer, (Conv2d, DepthwiseConv2d, Dense)))
    # Worked out by hand: 3*8*9 for the first conv, 9*c_in + c_in*c_out per
    # group, 256*64 + 64*1 for the two dense layers.
    by_hand = 3 * 8 * 9 + 256 * 64 + 64 * 1
    c_in = 8
    for _, c_out, _ in unrolled_config(0.25)[1:]:
        by_hand += 9 * c_in + c_in * c_out
        c_in = c_out
    assert weights == by_hand == 224_048


@waits_for("kernels")        # a forward pass through a 3x3 conv unfolds with im2col
def test_tutorial_model_maps_one_image_to_one_logit(tutorial):
    model = tutorial.copy()
    x = np.random.default_rng(1).random(TUTORIAL_INPUT).astype(np.float32)
    y = model(x)
    assert y.shape == (1, 1) and y.dtype == np.float32
    assert np.isfinite(y).all()
    assert model.eval()(x).shape == (1, 1)


def test_new_models_train_and_eval_switches_every_layer(tutorial):
    model = tutorial.copy()
    assert all(layer.training for _, layer in model.named_layers())
    model.eval()
    assert not any(layer.training for _, layer in model.named_layers())
    assert not model.training and not model[0].training and not model[1].training
    model.train()
    assert all(layer.training for _, layer in model.named_layers())


def test_layer_paths_and_layer_at(tutorial):
    paths = [path for path, _ in tutorial.named_layers()]
    assert len(paths) == 81 + 5
    assert paths[0] == "[0][0]" and paths[80] == "[0][80]" and paths[-1] == "[1][4]"
    assert layer_at(tutorial, "[0][3]") is tutorial[0][3]
    assert layer_at(tutorial, "model[1][2]") is tutorial[1][2]
    with pytest.raises(ValueError, match=r"'\[0\]\[81\]' names no layer: model\[0\] has no element \[81\]"):
        layer_at(tutorial, "[0][81]")
    with pytest.raises(ValueError, match=r"'0\.3' is not of the form"):
        layer_at(tutorial, "0.3")


# ---------------------------------------------------------------------------
# Initialisation of the whole model
# ---------------------------------------------------------------------------

def test_every_weight_lies_within_its_glorot_bound(tutorial):
    for path, layer in tutorial.named_layers():
        if isinstance(layer, DepthwiseConv2d):
            kh, kw = layer.kernel
            fan_in, fan_out = kh * kw, layer.channels * kh * kw     # Flux: per group
        elif isinstance(layer, Conv2d):
            kh, kw = layer.kernel
            fan_in, fan_out = layer.c_in * kh * kw, layer.c_out * kh * kw
        elif isinstance(layer, Dense):
            fan_in, fan_out = layer.n_in, layer.n_out
        else:
            continue
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        w = np.abs(layer.weight.astype(np.float64))
        assert w.max() <= limit, path
        # The bound is the one used, not a looser one: the largest draw comes close.
        assert w.max() > 0.8 * limit, path


def test_model_biases_and_batchnorms_start_at_defaults_with_gamma_one_half(tutorial):
    # The default init="calm" starts every BatchNorm gamma at 0.5, not Flux's 1 (see the next test).
    for path, layer in tutorial.named_layers():
        if isinstance(layer, Dense):
            assert np.all(layer.bias == 0), path
        if isinstance(layer, BatchNorm2d):
            assert np.all(layer.weight == 0.5) and np.all(layer.bias == 0), path
            assert np.all(layer.running_mean == 0) and np.all(layer.running_var == 1), path
            assert int(layer.num_batches_tracked) == 0, path


def test_init_flux_starts_gamma_at_1_and_draws_the_same_weights_as_the_default(tutorial):
    flux = MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1, seed=0, init="flux").state_dict()
    calm = tutorial.state_dict()
    gammas = [key for key in calm if key.startswith("0.") and key.endswith(".weight") and calm[key].ndim == 1]
    assert len(gammas) == 27
    for key in gammas:
        assert np.all(flux[key] == 1.0) and np.all(calm[key] == 0.5), key
    assert flux.keys() == calm.keys()
    for key in calm.keys() - set(gammas):       # every conv and dense weight, bias and statistic
        np.testing.assert_array_equal(flux[key], calm[key], err_msg=key)


def test_init_calm_is_the_default():
    named = MobileNet(slopehtanh, 0.25, fcsize=4, nclasses=1, seed=2, init="calm").state_dict()
    default = MobileNet(slopehtanh, 0.25, fcsize=4, nclasses=1, seed=2).state_dict()
    assert all(np.array_equal(named[key], default[key]) for key in default)


def test_same_seed_same_weights_different_seed_different_weights(tutorial):
    same = tutorial_model(seed=0).state_dict()
    other = tutorial_model(seed=1).state_dict()
    for key, value in tutorial.state_dict().items():
        np.testing.assert_array_equal(same[key], value, err_msg=key)
        if key.endswith("weight") and value.ndim >= 2:
            assert np.all(other[key] != value), key


def test_rng_argument_makes_initialisation_reproducible():
    a = MobileNet(slopehtanh, 0.25, fcsize=4, nclasses=2, rng=np.random.default_rng(7))
    b = MobileNet(slopehtanh, 0.25, fcsize=4, nclasses=2, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a[0][0].weight, b[0][0].weight)
    np.testing.assert_array_equal(a[1][4].weight, b[1][4].weight)


def test_dtype_argument_and_to_convert_every_array():
    model = MobileNet(slopehtanh, 0.25, fcsize=4, nclasses=2, seed=0, dtype=np.float64)
    assert {v.dtype for k, v in model.state_dict().items() if "num_batches" not in k} == {np.dtype(np.float64)}
    model.to(np.float32)
    assert {v.dtype for k, v in model.state_dict().items() if "num_batches" not in k} == {np.dtype(np.float32)}
    assert model.state_dict()["0.1.num_batches_tracked"].dtype == np.int64


# ---------------------------------------------------------------------------
# Gradients of the whole model
# ---------------------------------------------------------------------------

# A small MobileNet at 64x64: every layer type, both strides, and BatchNorm
# with several values per channel down to the last 2x2 maps.
#
# slopehtanh has kinks at +-1; a nudge of a weight early in the network moves
# thousands of pre-activations, and if one of them crosses a kink the
# difference quotient is off by a large amount (measured: a 1e-2 "error"
# that disappears at eps=1e-9).  eps=1e-7 and 4 sampled entries per tensor
# keep crossings rare; the seeds are fixed so the check is repeatable.

SMALL_INPUT = (2, 3, 64, 64)


def small_mobilenet():
    return MobileNet(slopehtanh, 0.25, fcsize=8, nclasses=2, seed=1)


@waits_for(*TRAINING)       # every backward pass of the chapter at once: waits while one is a stub
def test_small_mobilenet_gradients_match_finite_differences_in_train_mode():
    model = small_mobilenet()
    x = np.random.default_rng(0).random(SMALL_INPUT)
    report = gradcheck(model, x, eps=1e-7, max_entries=4)
    assert len(report) == 1 + len(list(model.named_parameters())) == 86
    assert report.worst < 1e-6, str(report)


@waits_for(*TRAINING)       # every backward pass of the chapter at once: waits while one is a stub
def test_small_mobilenet_gradients_match_finite_differences_in_eval_mode():
    model = trained_statistics(small_mobilenet(), (4, 3, 64, 64)).eval()
    # The running statistics really moved away from (0, 1).
    assert np.abs(model[0][1].running_mean).max() > 0.01
    assert np.abs(model[0][79].running_var - 1).max() > 0.01
    x = np.random.default_rng(0).random(SMALL_INPUT)
    report = gradcheck(model, x, eps=1e-7, max_entries=4)
    assert report.worst < 1e-6, str(report)


# ---------------------------------------------------------------------------
# float32 against float64 at the tutorial size
# ---------------------------------------------------------------------------

def relative_error(value, reference):
    """max |value - reference| / max |reference|, for one tensor."""
    reference = np.asarray(reference, np.float64)
    return float(np.abs(value - reference).max() / np.abs(reference).max())


def forward_backward(model, x, dy):
    y = model(x)
    dx = model.backward(dy.astype(model.dtype))
    tensors = {"output": y, "input gradient": dx}
    tensors.update(model.grad_dict())
    return tensors


def float32_and_float64_errors(model, x, dy):
    wide = model.copy().to(np.float64)
    narrow = forward_backward(model, x.astype(np.float32), dy)
    reference = forward_backward(wide, x.astype(np.float64), dy)
    assert narrow["output"].dtype == np.float32 and reference["output"].dtype == np.float64
    assert narrow.keys() == reference.keys()
    return {k: relative_error(narrow[k], reference[k]) for k in reference}


@waits_for(*TRAINING)       # every backward pass of the chapter at once: waits while one is a stub
def test_float32_model_agrees_with_float64_in_eval_mode(tutorial):
    model = trained_statistics(tutorial.copy(), (2, 3, 96, 96)).eval()
    x = np.random.default_rng(2).random((2, 3, 96, 96))
    dy = np.random.default_rng(3).standard_normal((2, 1))
    errors = float32_and_float64_errors(model, x, dy)
    assert len(errors) == 2 + 85           # output, input gradient, every parameter gradient
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-4, (worst, errors[worst])


@waits_for(*TRAINING)       # every backward pass of the chapter at once: waits while one is a stub
def test_float32_layers_agree_with_float64_in_train_mode(tutorial):
    # Layer by layer, each fed the same float32-representable input and
    # output gradient: this isolates each layer's own float32 rounding.
    narrow = tutorial.copy()
    wide = tutorial.copy().to(np.float64)
    h = np.random.default_rng(4).random((2, 3, 96, 96))
    rng = np.random.default_rng(5)
    for (path, layer), (_, layer64) in zip(narrow.named_layers(), wide.named_layers()):
        h = h.astype(np.float32).astype(np.float64)
        y = layer.forward(h.astype(np.float32))
        y64 = layer64.forward(h)
        dy = rng.standard_normal(y64.shape).astype(np.float32)
        errors = {"output": relative_error(y, y64),
                  "input gradient": relative_error(layer.backward(dy), layer64.backward(dy.astype(np.float64)))}
        errors.update({name: relative_error(layer.grads[name], layer64.grads[name]) for name in layer.grads})
        worst = max(errors, key=errors.get)
        assert errors[worst] < 1e-5, (f"model{path}", worst, errors[worst])
        h = y64


@waits_for("kernels")        # a forward pass through a 3x3 conv unfolds with im2col
def test_float32_model_output_agrees_with_float64_in_train_mode_within_its_conditioning(tutorial):
    # End to end in train mode the untrained network amplifies rounding: its
    # 27 train-mode BatchNorms, several over channels whose batch standard
    # deviation is 0.02-0.05, grow a perturbation about a thousandfold.  The
    # float64 model alone moves its output by 1.5e-4 here (up to 1e-2 for
    # other seeds and batch 1) when its input moves by one float32 rounding,
    # so float32 can agree only that well: measured 3.3e-4.  Gradients are
    # compared layer by layer (the test above) for a second reason: where a
    # slopehtanh input lies within rounding of +-1, float32 and float64 take
    # different slopes (1 and -1/4), and one such unit moves some gradients by
    # 5%.
    model = tutorial.copy()
    x = np.random.default_rng(0).random((2, 3, 96, 96))
    y = model(x.astype(np.float32))
    y64 = model.copy().to(np.float64)(x)
    assert relative_error(y, y64) < 1e-3


# ---------------------------------------------------------------------------
# state_dict: PyTorch's keys and layouts
# ---------------------------------------------------------------------------

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def expected_state_keys():
    """The tutorial model's state_dict keys, built from the architecture alone."""
    keys = ["0.0.weight"] + [f"0.1.{k}" for k in BN_KEYS]
    for g in range(13):
        dw, pw = 3 + 6 * g, 6 + 6 * g
        keys += [f"0.{dw}.weight"] + [f"0.{dw + 1}.{k}" for k in BN_KEYS]
        keys += [f"0.{pw}.weight"] + [f"0.{pw + 1}.{k}" for k in BN_KEYS]
    keys += ["1.2.weight", "1.2.bias", "1.4.weight", "1.4.bias"]
    return keys


def test_state_dict_keys_are_pytorch_dotted_paths(tutorial):
    state = tutorial.state_dict()
    assert set(state) == set(expected_state_keys())
    assert len(state) == 1 + 5 + 13 * 12 + 4
    for key in ("0.0.weight", "0.1.running_var", "0.1.num_batches_tracked", "1.2.weight", "1.2.bias",
                "1.4.weight"):
        assert key in state


def test_state_dict_layouts_are_pytorch_layouts(tutorial):
    state = tutorial.state_dict()
    assert state["0.0.weight"].shape == (8, 3, 3, 3)         # Conv2d: (out, in, kh, kw)
    assert state["0.3.weight"].shape == (8, 1, 3, 3)         # depthwise: (C, 1, kh, kw)
    assert state["0.6.weight"].shape == (16, 8, 1, 1)        # pointwise conv
    assert state["0.1.running_var"].shape == (8,)
    assert state["0.1.num_batches_tracked"].shape == ()
    assert state["1.2.weight"].shape == (64, 256)            # Linear: (out, in)
    assert state["1.2.bias"].shape == (64,)
    assert state["1.4.weight"].shape == (1, 64)


@waits_for("kernels")        # a forward pass through a 3x3 conv unfolds with im2col
def test_state_dict_round_trip_reproduces_outputs_exactly(tutorial):
    source = trained_statistics(tutorial.copy(), (2, 3, 32, 32))
    target = tutorial_model(seed=5)
    x = np.random.default_rng(6).random((2, 3, 32, 32)).astype(np.float32)
    assert not np.array_equal(source.copy().eval()(x), target.copy().eval()(x))
    target.load_state_dict(source.state_dict())
    np.testing.assert_array_equal(target.copy().eval()(x), source.copy().eval()(x))
    np.testing.assert_array_equal(target.copy()(x), source.copy()(x))
    assert int(target[0][1].num_batches_tracked) == 3


def test_state_dict_returns_copies(tutorial):
    model = tutorial.copy()
    state = model.state_dict()
    state["0.0.weight"][...] = 0
    state["0.1.running_mean"][...] = 5
    state["0.1.num_batches_tracked"][...] = 9
    assert np.all(model[0][0].weight != 0)
    assert np.all(model[0][1].running_mean == 0)
    assert int(model[0][1].num_batches_tracked) == 0


def test_load_state_dict_copies_the_arrays_in(tutorial):
    model = tutorial.copy()
    state = model.state_dict()
    model.load_state_dict(state)
    state["1.4.weight"][...] = 0
    assert np.all(model[1][4].weight != 0)


def assert_state_unchanged(model, before):
    after = model.state_dict()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def without_a_running_var(state):
    del state["0.7.running_var"]


def with_an_extra_weight(state):
    state["1.5.weight"] = np.zeros((1, 1), np.float32)


def with_a_transposed_weight(state):
    state["1.2.weight"] = state["1.2.weight"].T               # (256, 64) instead of (64, 256)


@pytest.mark.parametrize("spoil,message", [
    (without_a_running_var, r"missing key\(s\) \['0\.7\.running_var'\]"),
    (with_an_extra_weight, r"unexpected key\(s\) \['1\.5\.weight'\]"),
    (with_a_transposed_weight, r"key '1\.2\.weight' has shape \(256, 64\), the model expects \(64, 256\)"),
], ids=["missing key", "extra key", "shape mismatch"])
def test_load_state_dict_rejects_a_bad_key_naming_it_and_copies_nothing(tutorial, spoil, message):
    model = tutorial.copy()
    before = model.state_dict()
    state = tutorial_model(seed=9).state_dict()
    spoil(state)
    with pytest.raises(ValueError, match=message):
        model.load_state_dict(state)
    # Not even the keys before the bad one were copied in.
    assert_state_unchanged(model, before)


@waits_for(*TRAINING)       # every backward pass of the chapter at once: waits while one is a stub
def test_grad_dict_keys_are_the_trainable_state_dict_keys(tutorial):
    model = tutorial.copy()
    x = np.random.default_rng(8).random((2, 3, 32, 32)).astype(np.float32)
    model.backward(np.ones_like(model(x)))
    grads = model.grad_dict()
    state = model.state_dict()
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    trainable = [k for k in state if not k.endswith(buffers)]
    assert list(grads) == trainable
    assert len(grads) == 85
    for key, g in grads.items():
        assert g.shape == state[key].shape, key


def test_grad_dict_before_backward_names_the_missing_gradient():
    with pytest.raises(RuntimeError, match=r"no gradient for '0\.0\.weight'"):
        small_mobilenet().grad_dict()


# ---------------------------------------------------------------------------
# Bad arguments and bad input
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,error,message", [
    (dict(width_mult=0), ValueError, r"MobileNet: width_mult must be a finite number in \(0, inf\], got 0.0"),
    (dict(width_mult=-0.5), ValueError, r"MobileNet: width_mult must be a finite number in \(0, inf\], got -0.5"),
    (dict(width_mult=float("inf")), ValueError, r"MobileNet: width_mult must be a finite number in \(0, inf\], "
                                                r"got inf"),
    (dict(width_mult="0.25"), TypeError, r"MobileNet: width_mult must be a number, got '0.25'"),
    (dict(width_mult=0.01), ValueError, r"MobileNet: width_mult 0.01 leaves a layer with 32 channels at width 1 "
                                        r"with none"),
    (dict(fcsize=0), ValueError, r"MobileNet: fcsize must be an integer >= 1, got 0"),
    (dict(fcsize=64.0), TypeError, r"MobileNet: fcsize must be an integer >= 1, got 64.0"),
    (dict(nclasses=-1), ValueError, r"MobileNet: nclasses must be an integer >= 1, got -1"),
    (dict(nclasses=True), TypeError, r"MobileNet: nclasses must be an integer >= 1, got True"),
    (dict(inchannels=0), ValueError, r"MobileNet: inchannels must be an integer >= 1, got 0"),
    (dict(activation="swish"), ValueError, r"unknown activation 'swish'; expected one of slopehtanh, relu, "
                                           r"hardtanh, identity"),
    (dict(activation=None), ValueError, r"MobileNet: unknown activation None"),
    (dict(seed="a"), TypeError, r"MobileNet: seed must be None or an integer >= 0, got 'a'"),
    (dict(seed=-1), ValueError, r"MobileNet: seed must be None or an integer >= 0, got -1"),
    (dict(seed=1.5), TypeError, r"MobileNet: seed must be None or an integer >= 0, got 1.5"),
    (dict(rng=5), TypeError, r"MobileNet: rng must be a numpy.random.Generator, got int"),
    (dict(dtype=np.int32), ValueError, r"MobileNet: dtype must be float32 or float64, got int32"),
    (dict(dtype=np.float16), ValueError, r"MobileNet: dtype must be float32 or float64, got float16"),
    (dict(dtype="abc"), TypeError, r"MobileNet: dtype must be float32 or float64, got 'abc'"),
    (dict(init="torch"), ValueError, r"MobileNet: init must be 'calm' or 'flux', got 'torch'"),
    (dict(init=0.5), TypeError, r"MobileNet: init must be the string 'calm' or 'flux', got 0.5"),
    # Refused from the configuration alone, before a byte is allocated (a width of 1000 needs 12 TB).
    (dict(width_mult=1000), ValueError, r"MobileNet: this configuration has 3,139,695,040,064 conv and dense "
                                        r"weights, more than MAX_WEIGHTS = 268,435,456"),
    (dict(width_mult=1e308), ValueError, r"MobileNet: width_mult 1e\+308 gives a layer of inf channels"),
    # 224,048 weights less the first conv's 3*3*3*8, plus 3*3*10^9*8:
    (dict(inchannels=10 ** 9), ValueError, r"MobileNet: this configuration has 72,000,223,832 conv and dense"),
    # 224,048 less the head's 256*64 + 64*1, plus 256*10^9 + 10^9*1:
    (dict(fcsize=10 ** 9), ValueError, r"MobileNet: this configuration has 257,000,207,600 conv and dense"),
])
def test_bad_mobilenet_arguments_raise_naming_the_argument(kwargs, error, message):
    args = dict(activation=slopehtanh, width_mult=0.25, fcsize=64, nclasses=1)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        MobileNet(**args)


def test_numpy_numbers_are_accepted_as_the_width():
    # MobileNet("relu", np.float32(0.25)) was once refused as "not a positive number".
    by_numpy = MobileNet(slopehtanh, np.float32(0.25), fcsize=np.int64(64), nclasses=1, seed=0).state_dict()
    by_python = tutorial_model(seed=0).state_dict()
    assert by_numpy.keys() == by_python.keys()
    assert all(np.array_equal(by_numpy[key], by_python[key]) for key in by_python)


@pytest.mark.parametrize("shape,dtype,message", [
    ((1, 1, 96, 96), np.float32, r"model\[0\]\[0\]: Conv2d expects 3 input channels, got 1 "
                                 r"\(input shape \(1, 1, 96, 96\)\)"),
    ((3, 96, 96), np.float32, r"model\[0\]\[0\]: expected a rank-4 input \(N, C, H, W\), got shape \(3, 96, 96\)"),
    (TUTORIAL_INPUT, np.uint8, r"model: expected floating-point input, got uint8"),
    # Batch 1 at 32x32 reaches a 1x1 map at model[0][70]: one value per channel.
    ((1, 3, 32, 32), np.float32, r"model\[0\]\[70\]: train-mode BatchNorm2d needs more than one value per "
                                 r"channel, got input shape \(1, 128, 1, 1\)"),
])
def test_bad_input_to_the_model_names_the_layer_and_changes_nothing(tutorial, shape, dtype, message):
    model = tutorial.copy()
    before = model.state_dict()
    with pytest.raises(ValueError, match=message):
        model(np.zeros(shape, dtype))
    assert_state_unchanged(model, before)


def test_too_small_image_names_the_layer_that_cannot_fit_its_kernel():
    model = Chain(Conv2d(3, 4, 3, stride=2), Chain(BatchNorm2d(4), Conv2d(4, 4, 5)))
    with pytest.raises(ValueError, match=r"model\[1\]\[1\]: input of 3x3 pixels is too small for a 5x5 "
                                         r"kernel with padding 0; it needs at least 5x5"):
        model(np.zeros((2, 3, 7, 7), np.float32))


@waits_for(*TRAINING)       # every backward pass of the chapter at once: waits while one is a stub
def test_trained_mobilenet_float32_matches_float64_in_train_mode_to_1e_4():
    # At initialisation slopehtanh's folds make train mode chaotic, so float32
    # rounding is amplified (see the tests above); the trained checkpoint is
    # not chaotic and meets the 1e-4 end to end, forward and backward
    # (measured: output ~4e-7, input gradient ~4e-7, worst parameter ~4e-6).
    from tinyprune import pretrained
    from tinyprune.data import SyntheticVWW, to_float

    m32 = pretrained().train()
    m64 = m32.copy().to(np.float64)
    x = to_float(SyntheticVWW("val", seed=7, size=16).images[:2])
    y32, y64 = m32(x), m64(x.astype(np.float64))
    r = np.random.default_rng(0).standard_normal(y64.shape)
    dx32, dx64 = m32.backward(r.astype(np.float32)), m64.backward(r)

    def rel(a, b):
        return np.abs(a - b).max() / np.abs(b).max()

    assert y32.dtype == np.float32 and y64.dtype == np.float64
    assert rel(y32, y64) < 1e-4
    assert rel(dx32, dx64) < 1e-4
    g32, g64 = m32.grad_dict(), m64.grad_dict()
    for key in g64:
        assert rel(g32[key], g64[key]) < 1e-4, key
