"""Inference speed: the fused fast path, the plain layers and ONNX Runtime, side by side.

``python -m tinyprune.tools.bench_inference`` times eval-mode inference at
batch 64 and batch 1 (96x96 images) for three models:

* ``tutorial``: the tutorial's ``MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1)``;
* ``relu``: the same network with ReLU, an activation ONNX Runtime fuses
  into its convolutions (so it is ONNX Runtime's best case);
* ``resized``: the tutorial's model after ``ChannelPrune(0.5)``,
  keepprune, ``prune_propagate`` and ``resize``, with its "dense" multiply
  count beside the full model's: the wall-clock saving of the fast path
  should follow the multiplies saved.

Each model is timed three ways: tinyprune's fast path (``model(x)`` in
eval mode), its plain layers (``fast_eval = False``) and, when
``onnxruntime`` is installed, ONNX Runtime running the same model exported
with :func:`tinyprune.onnx_export.export_onnx`, given as many threads as
Numba has (``intra_op_num_threads``; ``inter_op_num_threads = 1``).

On a shared machine single timings mean little, so the measurements are
interleaved: each round times every (model, engine, batch) once, each
sample after a tenth of a second of untimed calls (``WARM_UP``: after a
pause the cores take a while to come back to speed), and the figures are
medians over the rounds, with the load average before and after.
:func:`inference_figures` returns them as a dict (the benchmark command
prints them), :func:`step_profile` gives the fast path's time per step,
which is where to look when a ratio falls short, and
:func:`step_comparison` puts a resized model's steps beside the full
model's, against their multiplies and outputs (``--profile resized
--against tutorial``).
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

__all__ = ["inference_figures", "step_profile", "step_comparison", "time_fit", "comparison_report", "report", "main"]

IMAGE = (3, 96, 96)
BATCHES = (64, 1)
ENGINES = ("fused", "plain", "onnxruntime")


def _models():
    """The three models of the module docstring, in eval mode."""
    import tinyprune as tp
    tutorial = tp.MobileNet(tp.slopehtanh, 0.25, fcsize=64, nclasses=1, seed=0)
    relu = tp.MobileNet("relu", 0.25, fcsize=64, nclasses=1, seed=0)
    resized = tp.resize(tp.prune_propagate(tp.keepprune(tp.prune(tp.ChannelPrune(0.5), tutorial))))
    return {"tutorial": tutorial.eval(), "relu": relu.eval(), "resized": resized.eval()}


def _onnx_session(model, folder, name, threads):
    """An ONNX Runtime session for ``model`` with ``threads`` threads, or None without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return None
    from tinyprune.onnx_export import export_onnx
    path = export_onnx(model, os.path.join(folder, name + ".onnx"))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _runner(model, engine, session):
    if engine == "onnxruntime":
        return None if session is None else (lambda x: session.run(None, {"input": x}))
    copy = model.copy().eval()
    copy.fast_eval = engine == "fused"
    return copy


WARM_UP = 0.1     # seconds of untimed calls before each timed sample


def _seconds_per_call(fn, x, calls, warm_up=WARM_UP):
    """Seconds per call of ``fn(x)`` over ``calls`` calls, after ``warm_up`` seconds of untimed calls.

    The untimed calls (at least one) let the engine's threads and the cores
    come back to speed after the pause between samples
    (``inference_figures``), for every engine alike.  On the test machine
    one call was not enough: after a pause the calls of the next 30 to
    100 ms ran up to 1.5 times slower, for ONNX Runtime as for tinyprune,
    and a sample of a short call (1 ms) fell entirely within that time.
    """
    start = time.perf_counter()
    fn(x)
    while time.perf_counter() - start < warm_up:
        fn(x)
    start = time.perf_counter()
    for _ in range(calls):
        fn(x)
    return (time.perf_counter() - start) / calls


def inference_figures(rounds=7, seconds_per_round=0.2, threads=None, warm_up=WARM_UP):
    """Median seconds per call for every (model, engine, batch), interleaved over ``rounds``.

    Returns ``{"seconds": {model: {engine: {batch: s}}}, "ratios": ...,
    "resized": {...}, "threads": n, "loadavg_before"/"loadavg_after": ...}``;
    engines missing (no onnxruntime) are left out.  ``threads`` defaults
    to Numba's thread count.  ``warm_up``: seconds of untimed calls before
    each sample (``_seconds_per_call``).
    """
    import numba
    import tinyprune as tp
    threads = threads or numba.get_num_threads()
    load_before = os.getloadavg()[0]
    models = _models()
    rng = np.random.default_rng(0)
    inputs = {batch: rng.random((batch,) + IMAGE, dtype=np.float32) for batch in BATCHES}
    with tempfile.TemporaryDirectory(prefix="tinyprune-bench-") as folder:
        runners = {}
        for name, model in models.items():
            session = _onnx_session(model, folder, name, threads)
            for engine in ENGINES:
                fn = _runner(model, engine, session)
                if fn is not None:
                    runners[name, engine] = fn
        calls = {}
        for (name, engine), fn in runners.items():        # warm up; size each round's work
            for batch, x in inputs.items():
                fn(x)
                once = _seconds_per_call(fn, x, 3, warm_up)
                calls[name, engine, batch] = max(1, int(seconds_per_round / max(once, 1e-6) / 4))
        samples = {key: [] for key in calls}
        keys = list(calls)
        for r in range(rounds):
            # Each round starts one key later: on the test machine the first sample of a
            # round came out about a quarter slower, whichever engine it was, so no key
            # may take that place more than once (its median then ignores it).
            for name, engine, batch in keys[r % len(keys):] + keys[:r % len(keys)]:
                samples[name, engine, batch].append(
                    _seconds_per_call(runners[name, engine], inputs[batch], calls[name, engine, batch],
                                      warm_up))
                time.sleep(0.05)      # let spinning threads (ONNX Runtime's) go to sleep first
    seconds = {}
    for (name, engine, batch), values in samples.items():
        seconds.setdefault(name, {}).setdefault(engine, {})[batch] = float(np.median(values))
    return {"seconds": seconds, "ratios": _ratios(seconds), "resized": _resized(models, seconds),
            "threads": threads, "rounds": rounds,
            "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0],
            "numba_threading_layer": numba.threading_layer(), "tinyprune": tp.__version__}


def _ratios(seconds):
    """fused / onnxruntime and fused / plain, per model and batch."""
    ratios = {}
    for name, engines in seconds.items():
        for other in ("onnxruntime", "plain"):
            if other in engines:
                for batch in BATCHES:
                    ratios.setdefault(name, {})[f"fused/{other} batch {batch}"] = (
                        engines["fused"][batch] / engines[other][batch])
    return ratios


def _resized(models, seconds):
    """Multiply saving of the resized model and the fast path's wall-clock saving at batch 64."""
    import tinyprune as tp
    shape = (1,) + IMAGE
    full = tp.compute_dot_prods(models["tutorial"], shape, "dense")[0]
    resized = tp.compute_dot_prods(models["resized"], shape, "dense")[0]
    mult_saving = 1 - resized / full
    out = {"dense_mults_full": int(full), "dense_mults_resized": int(resized), "mult_saving": mult_saving}
    for engine in seconds["tutorial"]:
        time_saving = 1 - seconds["resized"][engine][64] / seconds["tutorial"][engine][64]
        out[f"time_saving_{engine}"] = time_saving
        out[f"saving_efficiency_{engine}"] = time_saving / mult_saving
    return out


def step_profile(model, batch=64, repeats=20):
    """The fast path's time per step for one tile of ``model``'s plan, on one thread.

    Returns the tile size and rows ``(step, kind, layout, c_in, c_out, size
    in, images, microseconds, GMAC/s, multiplies per image, outputs per
    image)`` for the tiles a batch of ``batch`` would use (a part of them
    before the plan's split, see ``fused.tiling``), and the layout
    conversions between steps as rows of their own.  CPU time of this
    thread, so other programs on the machine disturb it less.

    GMAC/s counts the multiplies the step does: its real outputs (the
    channels padded to a multiple of 4 are zeroed, not computed) times its
    inputs, padded ones included.  The multiplies and outputs per image are
    the model's own, its real channels only; the outputs are the numbers
    the step writes (and activates) for one image.  When every BatchNorm
    follows a convolution (as in MobileNet) the multiplies add up to
    ``compute_dot_prods(model, (1,) + IMAGE, "dense")``; a BatchNorm or
    activation on its own is a step here (a multiply per output) and no
    multiply there.
    """
    from tinyprune import fused
    from tinyprune import fused_program as program
    plan = fused.build_plan(model.copy().eval())
    steps, params = plan.steps, plan.params
    shapes, (split, part, whole) = plan.sizes(IMAGE[1], IMAGE[2])
    whole = min(whole, batch)
    part = min(part, whole) if split else whole
    T = whole

    def images(s):
        """The images in a tile at step s: a part before the split, the whole tile after it."""
        return part if s < split else whole

    size = program.scratch_size(shapes, 0, len(steps), T)
    a = np.random.default_rng(0).random(size).astype(params.dtype)
    b = np.empty_like(a)

    def cpu_seconds(fn):
        fn()
        start = time.thread_time()
        for _ in range(repeats):
            fn()
        return (time.thread_time() - start) / repeats

    kinds = {program.CONV: "conv", program.DEPTHWISE: "depthwise", program.POINTWISE: "pointwise",
             program.POOL: "pool"}
    rows = []
    C, H, W = (int(n) for n in shapes[0])
    first = next(layer for _, layer in model.named_layers())        # its real input channels: the plan
    real_in = getattr(first, "c_in", getattr(first, "channels", C))   # pads a leading 1x1 product's to 4
    current = program.PLANES
    for s, step in enumerate(steps):
        if s == split and split:
            current = program.PLANES          # a part goes into the whole tile as planes
        t = images(s)
        wanted = program.layout(step, C, t, H, W, current)
        if wanted != current:
            seconds = cpu_seconds(lambda: program.convert(a, C, t, H, W, wanted, b, 0, 1))
            rows.append((s, "convert", "pixels" if wanted else "planes", C, C, f"{H}x{W}", t, seconds * 1e6,
                         0.0, 0, 0))
            current = wanted
        O, HO, WO = (int(n) for n in shapes[s + 1])
        seconds = cpu_seconds(lambda: program.run_step(step, params, current, a, t, H, W, b, HO, WO, 0, 1))
        kh, kw = int(step[program.KH]), int(step[program.KW])
        real = int(step[program.REAL])      # outputs real..O are padding: zeroed, not computed
        macs = {program.CONV: real * C * kh * kw, program.DEPTHWISE: real * kh * kw, program.POINTWISE: real * C,
                program.POOL: 0}[int(step[program.KIND])] * HO * WO * t
        model_mults = {program.CONV: real * real_in * kh * kw, program.DEPTHWISE: real * kh * kw,
                       program.POINTWISE: real * real_in, program.POOL: 0}[int(step[program.KIND])] * HO * WO
        rows.append((s, kinds[int(step[program.KIND])], "pixels" if current else "planes", C, O,
                     f"{H}x{W}", t, seconds * 1e6, macs / seconds / 1e9, model_mults, real * HO * WO))
        C, H, W, real_in = O, HO, WO, real
    return T, rows


def step_comparison(small, large, batch=64, repeats=20):
    """Where a pruned model's time goes, step by step, against the model it was cut from.

    ``small`` and ``large`` must have fast-path plans with the same kinds
    of step in the same order (``small`` resized from ``large``), checked
    before anything is timed.  Returns rows ``(step, kind, small us, large
    us, small multiplies, large multiplies, small outputs, large outputs,
    small converts, large converts)``, all per image and from
    ``step_profile`` (one thread, each model in its own tiles); the time of
    a layout conversion before a step is counted with the step, and the
    last two fields say whether there was one (the two models may change
    layout at different steps).  If every step took time in proportion to
    its multiplies, the small model would take ``large us * small
    multiplies / large multiplies`` at each step; what it takes beyond that
    is where its saving falls short of the multiplies'.  A step's outputs
    (each written, biased and activated once) shrink with its output
    channels only, its multiplies with its input channels too: that is
    most of the difference.
    """
    from tinyprune import fused
    from tinyprune import fused_program as program
    kinds = []
    for model in (small, large):
        plan = fused.build_plan(model.copy().eval())
        kinds.append([] if plan is None else [int(k) for k in plan.steps[:, program.KIND]])
    if kinds[0] != kinds[1]:
        differ = next((s for s, (a, b) in enumerate(zip(*kinds)) if a != b), min(map(len, kinds)))
        raise ValueError(f"step_comparison: the two models' fast-path plans differ: {len(kinds[0])} and "
                         f"{len(kinds[1])} steps, the first difference at step {differ}")
    per_step = []
    for model in (small, large):
        steps = {}
        for row in step_profile(model, batch, repeats)[1]:
            kind, seconds, mults, outputs, converts = steps.get(row[0], (row[1], 0.0, 0, 0, False))
            if row[1] == "convert":
                converts = True
            else:
                kind = row[1]
            steps[row[0]] = (kind, seconds + row[7] / row[6], mults + row[9], outputs + row[10], converts)
        per_step.append(steps)
    large_steps = per_step[1]
    return [(s, kind, us, large_steps[s][1], mults, large_steps[s][2], outputs, large_steps[s][3],
             converts, large_steps[s][4])
            for s, (kind, us, mults, outputs, converts) in per_step[0].items()]


def time_fit(rows):
    """(us per multiply, us per output): the least-squares fit of every step's time, both models'.

    ``rows`` from ``step_comparison``.  A step writes, biases and activates
    each of its outputs once, however many inputs each one sums; the fit
    says what that costs against a multiply, and so how much of a model's
    time goes with its outputs rather than its multiplies.  It has no
    constant term: what a step costs whatever its size (loop set-up, a
    layout conversion) lands in the two figures too.
    """
    counts = np.array([(row[4], row[6]) for row in rows] + [(row[5], row[7]) for row in rows], float)
    times = np.array([row[2] for row in rows] + [row[3] for row in rows])
    (per_mult, per_output), *_ = np.linalg.lstsq(counts, times, rcond=None)
    return float(per_mult), float(per_output)


def _ratio(a, b, width):
    """a / b right-aligned in ``width`` characters, or "-" when b is 0."""
    return f"{a / b:{width}.3f}" if b else f"{'-':>{width}s}"


def comparison_report(rows, small_name, large_name, share=0.9):
    """``step_comparison``'s rows as text, in microseconds per image (one thread).

    Per step: the two times; the ratios small / large of the times, of the
    multiplies and of the outputs; and "beyond", the small model's time
    over its multiplies' share of the large model's step (``*`` marks a
    step that includes a layout conversion in one model only).  Then the
    totals (the total "beyond" is the sum over the steps), the saving
    against the multiplies', the time the small model may take to save
    ``share`` of the multiplies' saving, the steps furthest beyond, and
    ``time_fit``.
    """
    lines = [f"{small_name} against {large_name}: one thread, CPU microseconds per image; "
             f"ratios {small_name} / {large_name}",
             f"   {'step':>4s} {'kind':11s} {small_name:>9s} {large_name:>9s} {'time':>6s} {'mults':>6s}"
             f" {'outputs':>7s} {'beyond':>7s}"]
    beyond = []
    for s, kind, us, us_large, mults, mults_large, outputs, outputs_large, converts, converts_large in rows:
        fair = us_large * mults / mults_large if mults_large else 0.0
        beyond.append((us - fair, s, kind))
        mark = "*" if converts != converts_large else " "
        lines.append(f"   {s:4d} {kind:10s}{mark} {us:9.2f} {us_large:9.2f} {_ratio(us, us_large, 6)}"
                     f" {_ratio(mults, mults_large, 6)} {_ratio(outputs, outputs_large, 7)} {us - fair:+7.2f}")
    total, total_large = sum(r[2] for r in rows), sum(r[3] for r in rows)
    mults, mults_large = sum(r[4] for r in rows), sum(r[5] for r in rows)
    outputs, outputs_large = sum(r[6] for r in rows), sum(r[7] for r in rows)
    lines.append(f"   {'':4s} {'total':11s} {total:9.2f} {total_large:9.2f} {_ratio(total, total_large, 6)}"
                 f" {_ratio(mults, mults_large, 6)} {_ratio(outputs, outputs_large, 7)}"
                 f" {sum(b[0] for b in beyond):+7.2f}")
    if mults_large and mults < mults_large:
        mult_saving = 1 - mults / mults_large
        allowed = 1 - share * mult_saving
        lines.append(f"   time saved / multiplies saved: {(1 - total / total_large) / mult_saving:.3f}; {share} "
                     f"of the multiplies' saving needs at most {allowed:.3f} of {large_name}'s time, "
                     f"{allowed * total_large:.2f} us here")
    else:
        lines.append(f"   {small_name} saves no multiplies against {large_name}")
    lines.append("   most time beyond the multiplies: " + ", ".join(
        f"step {s} ({kind}) {extra:+.2f} us" for extra, s, kind in sorted(beyond, reverse=True)[:5]))
    per_mult, per_output = time_fit(rows)
    if per_mult > 0 and per_output > 0:
        lines.append(f"   fit over both models' steps: {per_mult * 1e6:.2f} us per million multiplies + "
                     f"{per_output * 1e3:.3f} us per thousand outputs (an output costs "
                     f"{per_output / per_mult:.0f} multiplies); outputs take {per_output * outputs / total:.0%} "
                     f"of {small_name}'s time, {per_output * outputs_large / total_large:.0%} of {large_name}'s")
    else:
        lines.append(f"   fit over both models' steps: {per_mult * 1e6:.2f} us per million multiplies + "
                     f"{per_output * 1e3:.3f} us per thousand outputs (not both positive: no split to give)")
    return "\n".join(lines)


def report(figures):
    """The figures as text: one table of milliseconds per model, the ratios, the resized model."""
    lines = [f"inference, eval mode, {IMAGE[1]}x{IMAGE[2]} images, {figures['threads']} threads "
             f"({figures['numba_threading_layer']}); medians of {figures['rounds']} interleaved rounds; "
             f"load average {figures['loadavg_before']:.2f} before, {figures['loadavg_after']:.2f} after",
             f"   {'model':9s} {'engine':12s} {'batch 64 ms':>12s} {'batch 1 ms':>11s}"]
    for name, engines in figures["seconds"].items():
        for engine, by_batch in engines.items():
            by_batch = {int(batch): seconds for batch, seconds in by_batch.items()}   # JSON makes keys text
            lines.append(f"   {name:9s} {engine:12s} {by_batch[64] * 1e3:12.2f} {by_batch[1] * 1e3:11.3f}")
    for name, ratios in figures["ratios"].items():
        lines.append(f"   {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    r = figures["resized"]
    lines.append(f"   resized: dense multiplies {r['dense_mults_resized']:,} of {r['dense_mults_full']:,} "
                 f"(saving {r['mult_saving']:.3f}); time saved / multiplies saved at batch 64: "
                 + ", ".join(f"{e} {r['saving_efficiency_' + e]:.2f}"
                             for e in ENGINES if "saving_efficiency_" + e in r))
    return "\n".join(lines)


def main(argv=None):
    """``python -m tinyprune.tools.bench_inference [--rounds N] [--profile MODEL [--against MODEL]]``."""
    parser = argparse.ArgumentParser(prog="python -m tinyprune.tools.bench_inference",
                                     description="Time the fast path, the plain layers and ONNX Runtime.")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--profile", choices=("tutorial", "relu", "resized"),
                        help="instead, print the fast path's time per step for this model")
    parser.add_argument("--against", choices=("tutorial", "relu", "resized"),
                        help="with --profile: each step's time beside this model's, and beside its multiplies")
    parser.add_argument("--batch", type=int, default=64, help="batch size for --profile (default 64)")
    args = parser.parse_args(argv)
    if args.against and not args.profile:
        parser.error("--against needs --profile")
    if args.against:
        models = _models()
        rows = step_comparison(models[args.profile], models[args.against], args.batch)
        print(comparison_report(rows, args.profile, args.against))
        return 0
    if args.profile:
        T, rows = step_profile(_models()[args.profile], args.batch)
        print(f"{args.profile}: tiles of {T} images, one thread, CPU microseconds per step")
        for row in rows:
            print("   {:3d} {:10s} {:6s} {:4d} -> {:4d}  {:>7s} {:3d} images {:9.1f} us {:6.1f} GMAC/s"
                  .format(*row[:9]))
        print(f"   total {sum(r[7] / r[6] for r in rows):.1f} us per image")
        return 0
    print(report(inference_figures(rounds=args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
