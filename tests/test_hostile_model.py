"""Chapter 1, hostile input: every bad array given to a layer or a model gets a clear error.

Issue 12 ("Nothing silent"), the items about layers and models: integer and
float16 parameters (1), masked entries stored as NaN or infinity (2), a NaN
pixel in a train-mode batch (3), forward and backward called directly with
shapes the layer does not have (11), an empty batch and backward before
forward or with another batch size (15), and gradcheck given a function
(18).  Each test asserts the exception type, that the message names the
layer (``model[0][3]``, or the layer's type when it is called on its own) or
the argument, and that the model's parameters, statistics and masks are
unchanged after the refusal.  The fuzz test at the end feeds random arrays
(every dtype, rank and size, NaN, infinity, huge values) to a small model's
call, forward and backward in both modes and accepts nothing but those
errors.

The tests that run a layer's backward pass are also tests of that
exercise (``ex_layers_1`` ... ``ex_layers_5``, by case); the tests of a whole
model run exercises on the way (a train-mode forward pass unfolds with
im2col, a backward pass runs every layer's) and in a course copy wait
(are skipped) until those are written (``waits_for`` in tests/helpers.py).
"""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyprune.module import NonFiniteError
from tinyprune import (Activation, BatchNorm2d, Chain, Conv2d, Dense, DepthwiseConv2d, Flatten, GlobalMeanPool,
                       HardTanh, Identity, ReLU, SlopeHTanh, gradcheck, kernels)

from helpers import waits_for

pytestmark = pytest.mark.layers

LAYER_TYPES = ("Conv2d", "DepthwiseConv2d", "Dense", "BatchNorm2d", "SlopeHTanh", "ReLU", "HardTanh",
               "Identity", "GlobalMeanPool", "Flatten", "model")
NAMES_A_LAYER = "|".join(LAYER_TYPES)   # every message starts with "model[0][3]:", "model:" or a type name


def _type_of(case):
    """The layer type a case of SINGLE or MASKED is about ("direct Conv2d weight" -> "Conv2d")."""
    return next(word for word in case.split() if word in LAYER_TYPES)


def small_model(seed=0):
    """Every layer type in two levels of chains, with non-default BatchNorm statistics.

    The statistics are drawn, not made by a train-mode batch, so building the
    model runs no layer (none of the chapter's exercises).
    """
    rng = np.random.default_rng(seed)
    model = Chain(Conv2d(3, 4, 3, stride=2, pad=1, bias=True, rng=rng), BatchNorm2d(4), SlopeHTanh(),
                  Chain(DepthwiseConv2d(4, 3, pad=1, rng=rng), BatchNorm2d(4), ReLU()),
                  GlobalMeanPool(), Flatten(), Dense(4, 2, rng=rng), HardTanh(), Identity())
    for bn in (model[1], model[3][1]):
        bn.running_mean = rng.uniform(-0.5, 0.5, 4).astype(np.float32)
        bn.running_var = rng.uniform(0.5, 2.0, 4).astype(np.float32)
        bn.num_batches_tracked = np.array(1, np.int64)
    return model


def snapshot(model):
    """Every parameter, statistic and mask, by key, as copies (dtypes included)."""
    state = {key: value.copy() for key, value in model.state_dict().items()}
    return state, {key: mask.copy() for key, mask in model.mask_dict().items()}


def assert_unchanged(model, before):
    state, masks = snapshot(model)
    assert state.keys() == before[0].keys() and masks.keys() == before[1].keys()
    for key in state:
        assert state[key].dtype == before[0][key].dtype, key
        np.testing.assert_array_equal(state[key], before[0][key], err_msg=key)
    for key in masks:
        np.testing.assert_array_equal(masks[key], before[1][key], err_msg=key)


def refused(call, error, pattern, model):
    """``call()`` raises exactly ``error`` matching ``pattern`` and leaves ``model`` as it was."""
    before = snapshot(model)
    with pytest.raises(error, match=pattern) as caught:
        call()
    assert type(caught.value) is error
    assert_unchanged(model, before)
    return caught.value


def images(n=2, size=8, seed=1, dtype=np.float32):
    return np.random.default_rng(seed).random((n, 3, size, size)).astype(dtype)


# ---------------------------------------------------------------------------
# 1: parameters are float32 or float64, nothing else
# ---------------------------------------------------------------------------

MAKERS = {
    "Conv2d": lambda dtype: Conv2d(3, 4, 3, dtype=dtype),
    "DepthwiseConv2d": lambda dtype: DepthwiseConv2d(3, 3, dtype=dtype),
    "Dense": lambda dtype: Dense(3, 4, dtype=dtype),
    "BatchNorm2d": lambda dtype: BatchNorm2d(3, dtype=dtype),
}
NOT_PARAMETER_DTYPES = [np.int32, np.int64, np.uint8, np.bool_, np.float16, np.longdouble, np.complex64, object]


@pytest.mark.parametrize("dtype", NOT_PARAMETER_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layer", MAKERS)
def test_constructors_refuse_a_parameter_dtype_other_than_float32_and_float64(layer, dtype):
    with pytest.raises(ValueError, match=rf"^{layer}: dtype must be float32 or float64, a floating-point "
                                         rf"dtype, got {np.dtype(dtype)}$"):
        MAKERS[layer](dtype)


@pytest.mark.parametrize("layer", MAKERS)
def test_constructors_refuse_a_dtype_that_is_no_dtype_with_a_type_error(layer):
    with pytest.raises(TypeError, match=rf"^{layer}: dtype must be float32 or float64, got 'banana'"):
        MAKERS[layer]("banana")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer", MAKERS)
def test_constructors_accept_float32_and_float64(layer, dtype):
    assert all(value.dtype == dtype for value in MAKERS[layer](dtype).state_dict().values()
               if value.dtype.kind == "f")


@pytest.mark.parametrize("dtype", NOT_PARAMETER_DTYPES, ids=lambda d: np.dtype(d).name)
def test_to_refuses_a_dtype_other_than_float32_and_float64_and_changes_nothing(dtype):
    model = small_model()
    refused(lambda: model.to(dtype), ValueError, rf"^model\.to: dtype must be float32 or float64, .*"
                                                 rf"got {np.dtype(dtype)}$", model)


@pytest.mark.parametrize("value", [np.ones((4, 3, 3, 3), np.int32), np.ones((4, 3, 3, 3), np.float16),
                                   np.ones((4, 3, 3, 3), bool), np.ones((4, 3, 3, 3), np.complex64),
                                   np.full((4, 3, 3, 3), None)],
                         ids=["int32", "float16", "bool", "complex64", "object"])
def test_load_state_dict_refuses_a_parameter_that_is_not_float32_or_float64_naming_its_key(value):
    model = small_model()
    state = model.state_dict()
    state["0.weight"] = value
    refused(lambda: model.load_state_dict(state), ValueError,
            r"^load_state_dict: (array '0\.weight' must be float32 or float64|expected array '0\.weight' of real "
            r"numbers)", model)


def test_load_state_dict_refuses_a_fractional_batch_count_naming_its_key():
    model = small_model()
    state = model.state_dict()
    state["1.num_batches_tracked"] = np.array(1.5)
    refused(lambda: model.load_state_dict(state), ValueError,
            r"^load_state_dict: array '1\.num_batches_tracked' must hold integers, got float64", model)


def test_load_state_dict_refuses_what_is_not_a_dict():
    model = small_model()
    refused(lambda: model.load_state_dict([1, 2]), TypeError,
            r"^load_state_dict: state must be a dict of arrays, got list", model)


@pytest.mark.parametrize("dtype", [np.int32, np.float16])
def test_a_model_whose_parameter_was_set_to_another_dtype_by_hand_refuses_to_run(dtype):
    # Before, an int32 weight made every input an integer and the output zeros.
    model = small_model()
    model[0].weight = model[0].weight.astype(dtype)
    refused(lambda: model(images()), ValueError,
            rf"^model: parameter '0\.weight' must be float32 or float64, .*got {np.dtype(dtype)}$", model)
    refused(lambda: model[0].forward(images()), ValueError, r"^Conv2d: parameter 'weight' must be", model)


# ---------------------------------------------------------------------------
# 2: a masked entry reads exactly 0, whatever is stored there
# ---------------------------------------------------------------------------

MASKED = {   # a layer, the parameter whose entry [index] is masked, an input shape
    "Conv2d weight": (lambda: Conv2d(3, 4, 3, pad=1, bias=True, rng=np.random.default_rng(2)), "weight",
                      (1, 2, 0, 1), (2, 3, 5, 5)),
    "Conv2d bias": (lambda: Conv2d(3, 4, 3, pad=1, bias=True, rng=np.random.default_rng(2)), "bias",
                    (2,), (2, 3, 5, 5)),
    "direct Conv2d weight": (lambda: Conv2d(3, 2, 3, rng=np.random.default_rng(2)), "weight",
                             (0, 1, 1, 1), (2, 3, 5, 5)),
    "pointwise Conv2d weight": (lambda: Conv2d(3, 4, 1, rng=np.random.default_rng(2)), "weight",
                                (3, 2, 0, 0), (2, 3, 5, 5)),
    "DepthwiseConv2d weight": (lambda: DepthwiseConv2d(3, 3, pad=1, rng=np.random.default_rng(2)), "weight",
                               (1, 0, 2, 2), (2, 3, 5, 5)),
    "Dense weight": (lambda: Dense(5, 3, rng=np.random.default_rng(2)), "weight", (1, 4), (2, 5)),
    "Dense bias": (lambda: Dense(5, 3, rng=np.random.default_rng(2)), "bias", (0,), (2, 5)),
    "BatchNorm2d weight": (lambda: BatchNorm2d(3), "weight", (1,), (2, 3, 4, 4)),
    "BatchNorm2d bias": (lambda: BatchNorm2d(3), "bias", (2,), (2, 3, 4, 4)),
}


def masked_pass(make, name, index, shape, stored, mode):
    """Output, input gradient and gradients of a layer whose entry ``index`` is masked and holds ``stored``."""
    layer = make().train(mode == "train")
    mask = np.ones(getattr(layer, name).shape, bool)
    mask[index] = False
    layer.masks[name] = mask
    getattr(layer, name)[index] = stored
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    y = layer(x)
    dx = layer.backward(np.random.default_rng(4).standard_normal(y.shape).astype(np.float32))
    return layer, y, dx


# The exercise whose backward pass a layer type runs (BatchNorm's only in train mode).
EXERCISE = {"Conv2d": pytest.mark.ex_layers_4, "DepthwiseConv2d": pytest.mark.ex_layers_5,
            "Dense": pytest.mark.ex_layers_1, "SlopeHTanh": pytest.mark.ex_layers_2}


def by_exercise(cases, modes=None):
    """pytest.params of ``cases`` (and ``modes``), each marked with the exercise its layer's backward pass is."""
    def marks(case, mode):
        layer = _type_of(case)
        if layer == "BatchNorm2d":
            return [pytest.mark.ex_layers_3] if mode == "train" else []
        return [EXERCISE[layer]] if layer in EXERCISE else []
    if modes is None:
        return [pytest.param(case, marks=marks(case, cases[case][1]), id=case) for case in cases]
    return [pytest.param(case, mode, marks=marks(case, mode), id=f"{case}-{mode}") for case in cases for mode in modes]


@pytest.mark.parametrize("stored", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("case,mode", by_exercise(MASKED, ["train", "eval"]))
def test_a_masked_entry_stored_as_nan_or_inf_computes_as_if_it_were_zero(case, stored, mode):
    make, name, index, shape = MASKED[case]
    _, y0, dx0 = masked_pass(make, name, index, shape, 0.0, mode)
    layer, y, dx = masked_pass(make, name, index, shape, stored, mode)
    where = f"{layer!r}, {mode} mode, {name}{list(index)} masked and holding {stored}"
    assert np.isfinite(y).all() and np.isfinite(dx).all(), \
        f"{where}: not finite: output {np.isfinite(y).all()}, dx {np.isfinite(dx).all()} (use self.effective)"
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(dx, dx0, err_msg=f"{where}: dx differs from the one with 0 stored there")
    assert layer.effective(name)[index] == 0.0 and not np.signbit(layer.effective(name)[index])
    assert layer.grads[name][index] == 0.0 and np.isfinite(layer.grads[name]).all(), \
        f"{where}: its gradient is {layer.grads[name][index]} there (store gradients with self.set_grad)"


# ---------------------------------------------------------------------------
# 3: train mode refuses NaN and infinity before any statistic moves
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("entry", ["call", "forward"])
def test_one_bad_pixel_in_a_train_batch_is_refused_and_later_eval_outputs_stay_clean(entry, bad):
    model, reference = small_model(), small_model()
    x = images(4)
    x[2, 1, 5, 3] = bad
    run = model if entry == "call" else model.forward
    refused(lambda: run(x), ValueError, r"^model: the input holds 1 NaN or infinite value\(s\) "
                                        r"\(shape \(4, 3, 8, 8\)\); train mode refuses them", model)
    clean = images(3, seed=5)
    np.testing.assert_array_equal(model.eval()(clean), reference.eval()(clean))


def test_a_float64_input_that_overflows_a_float32_model_is_refused_in_train_mode():
    model = small_model()
    x = images(2, dtype=np.float64)
    x[0, 0, 0, 0] = 1e300          # finite in float64, inf once cast to the model's float32
    refused(lambda: model(x), ValueError, r"^model: the input holds 1 NaN or infinite value", model)


@pytest.mark.parametrize("entry", ["call", "forward"])
def test_a_batchnorm_called_on_its_own_refuses_a_nan_batch_and_keeps_its_statistics(entry):
    bn = small_model()[1]
    x = np.random.default_rng(6).standard_normal((2, 4, 3, 3)).astype(np.float32)
    x[1, 2, 0, 0] = np.nan
    run = bn if entry == "call" else bn.forward
    pattern = r"^BatchNorm2d: the input holds 1 NaN" if entry == "call" else \
        r"^BatchNorm2d\(4\): the batch's statistics are not finite in float32 .*left as they were"
    refused(lambda: run(x), ValueError if entry == "call" else NonFiniteError, pattern, Chain(bn))


def test_a_batchnorm_refuses_a_finite_batch_whose_variance_overflows_its_dtype():
    # 1e25 is a float32 number, its variance (1e50) is not: the running variance would become inf.
    model = small_model()
    x = np.full((2, 4, 3, 3), 1e25, np.float32)
    x[0] = -1e25
    refused(lambda: model[1](x), NonFiniteError, r"^BatchNorm2d\(4\): the batch's statistics are not finite", model)


@waits_for("kernels")
def test_a_nan_made_inside_the_model_is_refused_by_the_first_batchnorm_it_reaches():
    model = small_model()
    model[0].weight[0, 0, 1, 1] = np.inf       # finite input, infinite conv output
    refused(lambda: model(images()), NonFiniteError, r"^BatchNorm2d\(4\): the batch's statistics are not finite",
            model)
    with pytest.raises(RuntimeError, match=r"^model: backward called before forward \(or .*a failed forward"):
        model.backward(np.ones((2, 2), np.float32))


@waits_for("kernels")
def test_a_batchnorm_whose_stored_statistics_are_nan_says_so_instead_of_blaming_the_batch():
    model = small_model()
    model[1].running_var[2] = np.nan
    refused(lambda: model(images()), NonFiniteError, r"^BatchNorm2d\(4\): the batch's statistics are not finite in "
                                                 r"float32 \(its running statistics already hold NaN", model)


def test_eval_mode_moves_no_statistic_so_it_passes_nan_through():
    model = small_model().eval()
    x = images()
    x[0, 0, 0, 0] = np.nan
    y = model(x)
    assert np.isnan(y[0]).all() and np.isfinite(y[1]).all()    # image 1 is unharmed


# ---------------------------------------------------------------------------
# 11: forward and backward called directly check shapes: no kernel reads out of bounds
# ---------------------------------------------------------------------------

TWINS = ["depthwise_forward", "depthwise_backward", "im2col", "col2im", "conv_direct", "batchnorm_train_forward",
         "batchnorm_train_backward", "batchnorm_eval_forward", "slopehtanh_forward", "slopehtanh_backward"]


@pytest.fixture(params=["jitted", "plain"])
def twins(request, monkeypatch):
    """Run the test with the compiled kernels, then with the plain functions they were compiled from."""
    if request.param == "plain":
        for name in TWINS:
            monkeypatch.setattr(kernels, name, getattr(kernels, "_" + name))
    return request.param


SINGLE = {   # a layer, its mode, an input it accepts, inputs it must refuse, and what the message says
    "BatchNorm2d train": (lambda: BatchNorm2d(3), "train", (2, 3, 4, 4),
                          [(2, 5, 4, 4), (2, 2, 4, 4), (2, 3, 4), (1, 3, 1, 1)]),
    "BatchNorm2d eval": (lambda: BatchNorm2d(3), "eval", (2, 3, 4, 4), [(2, 5, 4, 4), (2, 2, 4, 4), (3, 4, 4)]),
    "DepthwiseConv2d": (lambda: DepthwiseConv2d(3, 3, stride=2, pad=1), "train", (2, 3, 5, 5),
                        [(2, 5, 5, 5), (2, 2, 5, 5), (2, 3, 5), (2, 3, 5, 5, 1)]),
    "Conv2d": (lambda: Conv2d(3, 4, 3, stride=2), "train", (2, 3, 5, 5),
               [(2, 5, 5, 5), (2, 2, 5, 5), (3, 5, 5), (2, 3, 2, 5)]),
    "direct Conv2d": (lambda: Conv2d(3, 4, 3), "eval", (2, 3, 5, 5), [(2, 5, 5, 5), (2, 3, 2, 2)]),
    "pointwise Conv2d": (lambda: Conv2d(3, 4, 1), "train", (2, 3, 5, 5), [(2, 6, 5, 5), (2, 3, 25)]),
    "Dense": (lambda: Dense(4, 2), "train", (3, 4), [(3, 5), (3, 3), (3, 4, 1), (12,)]),
    "SlopeHTanh": (SlopeHTanh, "train", (2, 3, 4, 4), [()]),
    "ReLU": (ReLU, "train", (2, 3), [()]),
    "GlobalMeanPool": (GlobalMeanPool, "train", (2, 3, 4, 4), [(2, 3, 4), (2, 3)]),
    "Flatten": (Flatten, "train", (2, 3, 4, 4), [(5,)]),
}


@pytest.mark.parametrize("case", SINGLE)
def test_forward_called_directly_refuses_a_shape_the_layer_does_not_have(case, twins):
    make, mode, _, bad_shapes = SINGLE[case]
    layer = make().train(mode == "train")
    for shape in bad_shapes:
        refused(lambda: layer.forward(np.ones(shape, np.float32)), ValueError, rf"^{_type_of(case)}: ",
                Chain(layer))


@pytest.mark.parametrize("case", by_exercise(SINGLE))
def test_backward_called_directly_refuses_a_dy_of_another_shape_naming_both_shapes(case, twins):
    make, mode, good, _ = SINGLE[case]
    layer = make().train(mode == "train")
    y = layer.forward(np.random.default_rng(7).standard_normal(good).astype(np.float32))
    wrong = [y.shape[:1] + (y.shape[1] + 2,) + y.shape[2:], (y.shape[0] + 1,) + y.shape[1:], y.shape + (1,),
             y.shape[1:]]
    for shape in wrong:
        shown = str(shape).replace("(", r"\(").replace(")", r"\)")
        refused(lambda: layer.backward(np.ones(shape, np.float32)), ValueError,
                rf"^{_type_of(case)}: dy has shape {shown}, the last forward produced", Chain(layer))
    assert layer.backward(np.ones(y.shape, np.float32)).shape == good       # and the right one still works


@pytest.mark.parametrize("case", SINGLE)
def test_backward_before_forward_is_a_runtime_error_naming_the_layer(case):
    make, mode, good, _ = SINGLE[case]
    layer = make().train(mode == "train")
    with pytest.raises(RuntimeError, match=rf"^{_type_of(case)}: backward called before forward"):
        layer.backward(np.ones(good, np.float32))


def test_forward_makes_a_non_contiguous_input_contiguous_instead_of_computing_garbage():
    # Before, SlopeHTanh wrote its output into a copy when the input was a transposed view.
    x = np.random.default_rng(8).uniform(-3, 3, (4, 6)).astype(np.float32)
    np.testing.assert_array_equal(SlopeHTanh().forward(x.T), SlopeHTanh().forward(np.ascontiguousarray(x.T)))


@pytest.mark.parametrize("dtype", [np.complex64, np.bool_, np.int16, object, "U3"], ids=str)
def test_forward_and_backward_called_directly_refuse_arrays_that_are_not_real_numbers(dtype):
    layer = DepthwiseConv2d(3, 3, pad=1)
    with pytest.raises(ValueError, match=r"^DepthwiseConv2d: expected (floating-point input|input of real numbers)"):
        layer.forward(np.ones((2, 3, 4, 4)).astype(dtype))
    y = layer.forward(np.ones((2, 3, 4, 4), np.float32))
    if np.dtype(dtype).kind not in "iu":      # integer dy is a gradient of whole numbers: accepted
        with pytest.raises(ValueError, match=r"^DepthwiseConv2d: expected dy of real numbers"):
            layer.backward(np.ones(y.shape).astype(dtype))


def test_a_float64_input_to_a_float32_layers_forward_is_computed_in_float32_and_moves_no_dtype():
    # Before, BatchNorm2d.forward on float64 input turned its running statistics into float64.
    bn = BatchNorm2d(3)
    y = bn.forward(np.random.default_rng(9).standard_normal((2, 3, 4, 4)))
    assert y.dtype == np.float32 and bn.running_mean.dtype == np.float32 and bn.running_var.dtype == np.float32


# ---------------------------------------------------------------------------
# 15: an empty batch, and backward before forward or with another batch size
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(0, 3, 8, 8), (2, 3, 0, 8), (2, 3, 8, 0), ()])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_an_empty_batch_is_refused_at_the_models_entry(shape, mode):
    model = small_model().train(mode == "train")
    shown = str(shape).replace("(", r"\(").replace(")", r"\)")
    refused(lambda: model(np.zeros(shape, np.float32)), ValueError,
            rf"^model: a batch needs at least one image with at least one value, got input shape {shown}$",
            model)


def test_model_backward_before_any_forward_is_a_runtime_error():
    model = small_model().copy()           # a copy keeps no forward
    refused(lambda: model.backward(np.ones((2, 2), np.float32)), RuntimeError,
            r"^model: backward called before forward", model)


@waits_for("kernels")
@pytest.mark.parametrize("drop", ["to", "copy"])
def test_backward_after_to_or_copy_is_a_runtime_error(drop):
    model = small_model()
    model(images())
    model = model.to(np.float64) if drop == "to" else model.copy()
    with pytest.raises(RuntimeError, match=r"^model: backward called before forward \(or after to\(\), copy\(\)"):
        model.backward(np.ones((2, 2)))


@waits_for("kernels")
@pytest.mark.parametrize("dy_shape", [(3, 2), (2, 3), (2,), (2, 2, 1), ()])
def test_model_backward_with_another_shape_names_both_shapes(dy_shape):
    model = small_model()
    model(images(2))
    shown = str(dy_shape).replace("(", r"\(").replace(")", r"\)")
    refused(lambda: model.backward(np.ones(dy_shape, np.float32)), ValueError,
            rf"^model: dy has shape {shown}, the last forward produced \(2, 2\)$", model)


@waits_for("kernels")
@pytest.mark.parametrize("dy", [np.ones((2, 2), np.complex64), np.full((2, 2), None), "ab"], ids=str)
def test_model_backward_refuses_a_dy_that_is_not_real_numbers(dy):
    model = small_model()
    model(images(2))
    refused(lambda: model.backward(dy), ValueError, r"^model: expected dy of real numbers", model)


# ---------------------------------------------------------------------------
# 18: gradcheck given a function, or bad settings
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [lambda z: z, np.tanh, "Dense", None], ids=["lambda", "ufunc", "str", "None"])
def test_gradcheck_refuses_what_is_not_a_layer_with_a_type_error_naming_the_argument(layer):
    with pytest.raises(TypeError, match=r"^gradcheck: layer must be a tinyprune Layer \(with forward and "
                                        r"backward\), got "):
        gradcheck(layer, np.ones((2, 3)))


@pytest.mark.parametrize("kwargs,error,pattern", [
    (dict(eps=0.0), ValueError, r"^gradcheck: eps must be a finite number in \(0\.0, inf\]"),
    (dict(eps="1e-6"), TypeError, r"^gradcheck: eps must be a number"),
    (dict(max_entries=0), ValueError, r"^gradcheck: max_entries must be an integer >= 1, got 0"),
    (dict(seed=-1), ValueError, r"^gradcheck: seed must be an integer >= 0, got -1"),
])
def test_gradcheck_refuses_bad_settings_naming_them(kwargs, error, pattern):
    dense = Dense(3, 2)
    before = dense.weight.copy()
    with pytest.raises(error, match=pattern):
        gradcheck(dense, np.ones((2, 3)), **kwargs)
    np.testing.assert_array_equal(dense.weight, before)


def test_gradcheck_refuses_an_input_the_layer_would_refuse_naming_the_layer():
    with pytest.raises(ValueError, match=r"^Dense: Dense expects 3 input features, got 4"):
        gradcheck(Dense(3, 2), np.ones((2, 4)))


def test_gradcheck_leaves_the_callers_input_alone():
    # tanh as a layer: a backward pass that is no exercise, so this runs in every student copy
    x = np.random.default_rng(10).standard_normal((2, 3))
    before = x.copy()
    gradcheck(Activation(np.tanh, lambda z: 1 - np.tanh(z) ** 2), x)
    np.testing.assert_array_equal(x, before)


# ---------------------------------------------------------------------------
# Fuzz: random arrays for a small model's call, forward and backward
# ---------------------------------------------------------------------------

DTYPES = [np.float32, np.float64, np.float16, np.int8, np.int64, np.uint8, np.bool_, np.complex64, object, "U2"]


@st.composite
def arrays(draw):
    """A random array: any dtype, rank 0-5, sizes 0-9 (a fair share of right ones), odd values."""
    rank = draw(st.integers(0, 5))
    right = (2, 3, 8, 8)[:rank]
    shape = tuple(draw(st.sampled_from([right[i] if i < len(right) else 1, 0, 1, 2, 3, 4, 9]))
                  for i in range(rank))
    dtype = draw(st.sampled_from(DTYPES))
    fill = draw(st.sampled_from(["random", "nan", "inf", "huge", "one nan", "zero"]))
    x = np.random.default_rng(draw(st.integers(0, 99))).standard_normal(shape)
    if fill == "nan":
        x[...] = np.nan
    elif fill == "inf":
        x[...] = -np.inf
    elif fill == "huge":
        x *= 1e300 if draw(st.booleans()) else 3e38
    elif fill == "one nan" and x.size:
        x.flat[x.size // 2] = np.nan
    elif fill == "zero":
        x[...] = 0
    with np.errstate(all="ignore"):
        x = x.astype(dtype)
    if draw(st.booleans()) and x.ndim >= 2:
        x = x.swapaxes(0, 1)                                 # a non-contiguous view
    return x


HUGE_VIEWS = [np.broadcast_to(np.float32(0.5), shape) for shape in
              [(10 ** 6, 5, 10 ** 4, 10 ** 4), (10 ** 9, 3, 10 ** 5), (2, 10 ** 9, 8, 8)]]   # never copied


FUZZ_MODEL = small_model(seed=11)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=st.one_of(arrays(), st.sampled_from(HUGE_VIEWS), st.sampled_from([None, "abc", [[1, 2], [3]], 3.5])),
       mode=st.sampled_from(["train", "eval"]), entry=st.sampled_from(["call", "forward", "backward"]))
def test_fuzz_a_model_refuses_every_bad_array_naming_the_layer_and_changes_nothing(x, mode, entry):
    model = FUZZ_MODEL.copy().train(mode == "train")
    if entry == "backward":
        with waits_for("kernels"):
            model(images(2))
    before = snapshot(model)
    run = {"call": model, "forward": model.forward, "backward": model.backward}[entry]
    try:
        with np.errstate(all="ignore"), waits_for("layers", "kernels"):   # huge values may overflow: no error
            out = run(x)
    except (TypeError, ValueError, RuntimeError) as error:
        assert type(error) in (TypeError, ValueError, RuntimeError)
        assert re.match(rf"({NAMES_A_LAYER})(\[\d+\])*(\(\d+\))?: ", str(error)), str(error)
        assert_unchanged(model, before)
        return
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    if entry == "call" and mode == "train":
        assert np.isfinite(x).all()                      # train mode let no NaN or infinity in
    if mode == "eval" or entry == "backward":
        assert_unchanged(model, before)                  # only a train-mode forward moves statistics
