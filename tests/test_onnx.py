"""Exporting to ONNX: the file ONNX Runtime runs computes what tinyprune computes.

float32 models are run by ONNX Runtime and compared with tinyprune's eval
output to 1e-5 relative: the shipped checkpoint, a ReLU MobileNet, and the
checkpoint pruned, propagated, resized and folded.  ONNX Runtime has no
float64 convolution, so a float64 model's file is run by ``onnx.reference``
(the ONNX package's own NumPy evaluator) and compared to 1e-10.
"""

import os

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx.reference import ReferenceEvaluator

from helpers import give_statistics, relative_error
from tinyprune import (Activation, ChannelPrune, Chain, Conv2d, MobileNet, ReLU, pretrained, prune,
                       prune_propagate, resize)
from tinyprune.fold import fold_batchnorm
from tinyprune.onnx_export import export_onnx

pytestmark = [pytest.mark.inference, pytest.mark.integration]   # on pruned, propagated and resized models


def plain_eval(model, x):
    model = model.copy().eval()
    model.fast_eval = False
    return model(x)


def run_onnx_runtime(path, x):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def node_types(path):
    return [node.op_type for node in onnx.load(str(path)).graph.node]


@pytest.fixture(scope="module")
def checkpoint_stages():
    model = pretrained()
    pruned = prune(ChannelPrune(0.5), model)
    resized = resize(prune_propagate(pruned))
    return {"checkpoint": model, "pruned": pruned, "resized": resized,
            "folded": fold_batchnorm(model), "resized and folded": fold_batchnorm(resized)}


@pytest.mark.parametrize("stage", ["checkpoint", "pruned", "resized", "folded", "resized and folded"])
def test_onnx_runtime_computes_what_tinyprune_computes(checkpoint_stages, stage, tmp_path):
    model = checkpoint_stages[stage]
    x = np.random.default_rng(0).random((5, 3, 96, 96), dtype=np.float32)
    path = export_onnx(model, tmp_path / "model.onnx")
    assert relative_error(run_onnx_runtime(path, x), plain_eval(model, x)) < 1e-5


def test_a_relu_mobilenet_runs_in_onnx_runtime_at_any_batch_size(tmp_path):
    # The checkpoint's weights in a ReLU MobileNet: a well-conditioned float32 model.
    model = MobileNet("relu", 0.25, fcsize=64, nclasses=1)
    model.load_state_dict(pretrained().state_dict())
    path = export_onnx(model, tmp_path / "relu.onnx", input_shape=(None, 3, 64, 64))
    assert node_types(path).count("Relu") == 28
    for batch in (1, 3):
        x = np.random.default_rng(batch).random((batch, 3, 64, 64), dtype=np.float32)
        assert relative_error(run_onnx_runtime(path, x), plain_eval(model, x)) < 1e-5


@pytest.mark.parametrize("activation", ["slopehtanh", "hardtanh", "identity"])
def test_a_float64_model_runs_in_the_onnx_reference_evaluator(activation, tmp_path):
    rng = np.random.default_rng(3)
    model = give_statistics(MobileNet(activation, 0.125, fcsize=8, nclasses=2, seed=4, dtype=np.float64),
                            rng, rng.random((3, 3, 32, 32)))
    x = rng.random((2, 3, 32, 32))
    path = export_onnx(model, tmp_path / "model64.onnx", input_shape=(None, 3, 32, 32))
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    (y,) = ReferenceEvaluator(str(path)).run(None, {"input": x})
    assert relative_error(y, plain_eval(model, x)) < 1e-10


def test_slopehtanh_becomes_a_four_node_subgraph(tmp_path):
    path = export_onnx(Chain(Conv2d(3, 2, 1), MobileNet().layers[0][2]), tmp_path / "slope.onnx")
    assert node_types(path) == ["Conv", "Clip", "Sub", "Mul", "Sub", "Identity"]


def test_a_folded_model_has_no_batchnormalization_nodes(checkpoint_stages, tmp_path):
    full = node_types(export_onnx(checkpoint_stages["checkpoint"], tmp_path / "full.onnx"))
    folded = node_types(export_onnx(checkpoint_stages["folded"], tmp_path / "folded.onnx"))
    assert full.count("BatchNormalization") == 27 and "BatchNormalization" not in folded
    assert folded.count("Conv") == full.count("Conv") == 27


def test_export_replaces_an_existing_file_and_leaves_no_temporary(checkpoint_stages, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"an older file")
    export_onnx(checkpoint_stages["resized"], path)
    assert onnx.load(str(path)).graph.output[0].name == "output"
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_a_custom_activation_is_refused_with_its_place(tmp_path):
    model = Chain(Conv2d(3, 2, 1), Activation(np.tanh, lambda x: 1 - np.tanh(x) ** 2))
    with pytest.raises(ValueError, match=r"model\[1\] is an activation with a custom function \(tanh\)"):
        export_onnx(model, tmp_path / "tanh.onnx")
    assert not (tmp_path / "tanh.onnx").exists()


def test_the_inference_benchmark_times_every_engine_side_by_side():
    from tinyprune.tools import bench_inference
    figures = bench_inference.inference_figures(rounds=1, seconds_per_round=0.001, warm_up=0)
    assert set(figures["seconds"]) == {"tutorial", "relu", "resized"}
    for engines in figures["seconds"].values():
        assert set(engines) == {"fused", "plain", "onnxruntime"}
        assert all(s > 0 for by_batch in engines.values() for s in by_batch.values())
    assert "fused/onnxruntime batch 64" in figures["ratios"]["relu"]
    assert figures["resized"]["mult_saving"] == pytest.approx(1 - 880_077 / 7_505_600)
    assert "onnxruntime" in bench_inference.report(figures)


def test_the_step_profile_has_a_row_for_every_step_of_the_plan():
    from tinyprune import fused
    from tinyprune.tools import bench_inference
    model = pretrained()
    T, rows = bench_inference.step_profile(model, batch=2, repeats=1)
    steps = [row for row in rows if row[1] != "convert"]
    assert T == 2 and len(steps) == len(fused.build_plan(model).steps) == 30
    assert all(row[7] > 0 for row in rows)                  # microseconds
    assert {row[6] for row in rows} == {2}                  # a batch of 2 is one tile of 2 images


@pytest.mark.parametrize("stage", ["checkpoint", "resized"])
def test_the_step_profile_counts_the_models_own_multiplies_and_outputs(checkpoint_stages, stage):
    # Its plan pads channels to 4 (the resized model has 3, 9, 15, 31, ... of them);
    # the profile's multiplies are the model's, as compute_dot_prods counts them.
    from tinyprune import compute_dot_prods
    from tinyprune.tools import bench_inference
    model = checkpoint_stages[stage]
    rows = bench_inference.step_profile(model, batch=2, repeats=1)[1]
    assert sum(row[9] for row in rows) == compute_dot_prods(model, (1, 3, 96, 96), "dense")[0]
    conv = next(layer for _, layer in model.named_layers() if isinstance(layer, Conv2d))
    first = rows[0]                                   # 3x3 stride 2 on 96x96: one output per 48x48 pixel
    assert first[1] == "conv" and first[10] == conv.c_out * 48 * 48
    assert first[9] == first[10] * 3 * 3 * 3


def test_the_step_comparison_puts_a_resized_model_beside_its_full_one(checkpoint_stages):
    from tinyprune import compute_dot_prods, fused
    from tinyprune.fused_program import KIND
    from tinyprune.tools import bench_inference
    full, resized = checkpoint_stages["checkpoint"], checkpoint_stages["resized"]
    rows = bench_inference.step_comparison(resized, full, batch=2, repeats=1)
    names = {0: "conv", 1: "depthwise", 2: "pointwise", 3: "pool"}
    assert [row[1] for row in rows] == [names[int(k)] for k in fused.build_plan(full).steps[:, KIND]]
    assert [row[0] for row in rows] == list(range(30))        # one row per step, conversions folded in
    assert all(row[2] > 0 and row[3] > 0 for row in rows)
    assert any(row[8] for row in rows) and any(row[9] for row in rows)   # both change layout somewhere
    shape = (1, 3, 96, 96)
    assert sum(row[4] for row in rows) == compute_dot_prods(resized, shape, "dense")[0]
    assert sum(row[5] for row in rows) == compute_dot_prods(full, shape, "dense")[0] == 7_505_600
    assert sum(row[6] for row in rows) < sum(row[7] for row in rows)      # fewer outputs
    text = bench_inference.comparison_report(rows, "resized", "checkpoint")
    assert len(text.splitlines()) == 2 + 30 + 4 and "time saved / multiplies saved" in text


def test_the_comparison_of_models_with_the_same_multiplies_says_so_and_divides_by_nothing():
    from tinyprune.tools import bench_inference
    rows = [(0, "conv", 2.0, 1.0, 100, 100, 10, 10, False, False),
            (1, "pool", 0.5, 0.25, 0, 0, 1, 1, False, True)]
    text = bench_inference.comparison_report(rows, "relu", "tutorial")
    assert "relu saves no multiplies against tutorial" in text
    assert "   1 pool      * " in text                      # a layout change in one model only
    assert "     -" in text                                  # the pool's multiply ratio: nothing to divide by


def test_the_time_fit_recovers_the_cost_of_a_multiply_and_of_an_output():
    from tinyprune.tools import bench_inference
    per_mult, per_output = 1e-5, 2e-4          # us: an output costs 20 multiplies
    counts = [(27_648, 9_216, 110_592, 18_432), (4_608, 2_304, 18_432, 4_608), (13_824, 1_536, 55_296, 3_072)]
    rows = [(s, "pointwise", per_mult * m + per_output * o, per_mult * ml + per_output * ol, m, ml, o, ol)
            for s, (m, o, ml, ol) in enumerate(counts)]
    assert bench_inference.time_fit(rows) == pytest.approx((per_mult, per_output), rel=1e-9)
    rows = [row + (False, False) for row in rows]
    assert bench_inference.time_fit(rows) == pytest.approx((per_mult, per_output), rel=1e-9)
    text = bench_inference.comparison_report(rows, "small", "large")
    assert "an output costs 20 multiplies" in text


def test_the_step_comparison_refuses_models_with_different_steps(checkpoint_stages, monkeypatch):
    from tinyprune.tools import bench_inference
    monkeypatch.setattr(bench_inference, "step_profile", None)   # refused before anything is timed
    full = checkpoint_stages["checkpoint"]
    shorter = Chain(*full.layers[0].layers[:6])          # its first two steps
    with pytest.raises(ValueError, match="plans differ: 2 and 30 steps, the first difference at step 2"):
        bench_inference.step_comparison(shorter, full, batch=1, repeats=1)
    strided, pointwise = Chain(Conv2d(3, 8, 3, 2, 1), ReLU()), Chain(Conv2d(3, 8, 1), ReLU())
    with pytest.raises(ValueError, match="plans differ: 1 and 1 steps, the first difference at step 0"):
        bench_inference.step_comparison(strided, pointwise, batch=1, repeats=1)


def test_against_needs_a_profile_to_stand_beside(capsys):
    from tinyprune.tools import bench_inference
    with pytest.raises(SystemExit):
        bench_inference.main(["--against", "tutorial"])
    assert "--against needs --profile" in capsys.readouterr().err
