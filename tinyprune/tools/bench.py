"""How fast is tinyprune?  ``tinyprune bench`` (or ``python -m tinyprune.tools.bench``).

Times the tutorial's model, ``MobileNet(slopehtanh, 0.25, fcsize=64,
nclasses=1)`` on 96x96 images, and prints:

1. a training step at batch 32 (forward, binary cross-entropy, backward,
   Adam update): seconds per step and images per second;
2. inference in eval mode at batch 64 (images per second) and at batch 1
   (milliseconds);
3. the same inference for the model after ``ChannelPrune(0.5)``, keepprune,
   ``prune_propagate`` and ``resize``, next to the ratio of the two models'
   "dense" multiply counts: resizing should save time in proportion to the
   multiplies it removes (the time ratio at batch 64 from the two models
   timed in turns);
4. start-up: a fresh interpreter's ``import tinyprune`` plus the first
   forward and backward pass, with an empty Numba cache (every kernel is
   compiled) and with a filled one (the compiled kernels are loaded);
5. the peak resident memory of a process running training steps;
6. unstructured sparsity: the pointwise convolutions of the model computed
   by a kernel that skips zero weights (CSR, see ``sparse.csr_pointwise``)
   against the dense BLAS product, at weight sparsity 0 to 99%, both on the
   BLAS thread count.

Every figure is the median of repeated runs after warm-up runs.  The
measurements run in child processes whose thread counts are set before
NumPy and Numba start: ``--threads`` Numba threads for tinyprune's kernels
and ``--blas-threads`` for the matrix products NumPy hands to BLAS (default
1: a BLAS library splitting MobileNet's small per-image products over
threads gains little, and its spinning threads collapse the speed when other
programs share the cores).  The load average is recorded with the figures:
on a busy machine they mean less.

``--json PATH`` writes the same figures as JSON; ``--quick`` is a smoke run
(one repetition, no cold start) for tests: its figures are rough.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from ..common import atomic_write, format_table
from ..pipeline import TUTORIAL_INPUT, layer_labels_by_path, prune_and_resize, tutorial_model
from .args import DEBUG_VARIABLE, CommandParser, output_file, whole_number, writable_folder

__all__ = ["main", "time_sparse_pointwise"]

BATCH_TRAIN = 32
BATCH_INFER = 64
SPARSITIES = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)
IMAGE = TUTORIAL_INPUT[1:]


# ---------------------------------------------------------------------------
# Timing helpers (run inside the child process)
# ---------------------------------------------------------------------------

def _median_seconds(fn, repeats, warmup):
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls."""
    import numpy as np
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _paired_medians(fns, rounds, warm_up=None, seconds_per_sample=0.05):
    """Median wall-clock seconds of a call of each of ``fns``, timed in turns.

    Each of ``rounds`` rounds takes one sample of every function, the first
    place rotating: ``warm_up`` seconds of untimed calls (at least one;
    default ``bench_inference.WARM_UP``), then about ``seconds_per_sample``
    seconds of timed ones, sized from one call of each at the start.  For a
    ratio of two times.  Timed one after the other, a change in the
    machine's load between the two runs went straight into the ratio.
    Timed call by call, each call found the caches full of the other's
    numbers: the resized model's time ratio to the full one came out 0.24
    instead of 0.20.
    """
    import numpy as np
    from tinyprune.tools.bench_inference import WARM_UP
    warm_up = WARM_UP if warm_up is None else warm_up
    calls = []
    for fn in fns:                                 # one call each, to size the samples
        start = time.perf_counter()
        fn()
        calls.append(max(1, int(seconds_per_sample / max(time.perf_counter() - start, 1e-6))))
    times = [[] for _ in fns]
    for r in range(rounds):
        for i in range(len(fns)):
            k = (i + r) % len(fns)                 # each takes the first place in turn
            start = time.perf_counter()
            fns[k]()
            while time.perf_counter() - start < warm_up:
                fns[k]()
            start = time.perf_counter()
            for _ in range(calls[k]):
                fns[k]()
            times[k].append((time.perf_counter() - start) / calls[k])
    return [float(np.median(t)) for t in times]


def _images(batch, seed):
    import numpy as np
    return np.random.default_rng(seed).random((batch,) + IMAGE, dtype=np.float32)


def _train_step_fn(model, batch, seed=0):
    """One training step on a fixed random batch: forward, loss, backward, Adam."""
    import numpy as np
    from tinyprune.train import Adam, bce_with_logits
    x = _images(batch, seed)
    labels = (np.random.default_rng(seed + 1).random(batch) > 0.5).astype(np.float32)
    optimizer = Adam(model, lr=1e-3)
    model.train()

    def step():
        logits = model(x)
        _, dlogits = bce_with_logits(logits, labels)
        model.backward(dlogits)
        optimizer.step()
    return step


def _inference_figures(model, repeats, warmup):
    model.eval()
    x64, x1 = _images(BATCH_INFER, 2), _images(1, 3)
    s64 = _median_seconds(lambda: model(x64), repeats, warmup)
    s1 = _median_seconds(lambda: model(x1), repeats * 10, warmup * 10)
    return {"batch64_s": s64, "batch64_images_per_s": BATCH_INFER / s64, "batch1_ms": s1 * 1e3}


def time_sparse_pointwise(model, sparsities=SPARSITIES, batch=BATCH_TRAIN, repeats=5, warmup=1,
                          csr_threads=None):
    """Dense BLAS against a zero-skipping CSR kernel on every pointwise conv of ``model``.

    At each sparsity, every pointwise weight is pruned by magnitude
    (unstructured) to that fraction of zeros and multiplied with a random
    input of the layer's shape at ``batch`` images, once by the dense matrix
    product (zeros included) and once by ``sparse.csr_pointwise``, which
    only visits the weights left.  Returns one dict per sparsity: the
    median seconds of each, summed over the layers, and their ratio
    ``csr_speedup`` = dense / CSR (above 1: skipping zeros pays).
    ``csr_threads`` caps the Numba threads of the CSR kernel (to match the
    BLAS thread count, core for core); None leaves them as they are.
    """
    import numba
    import numpy as np
    from tinyprune.layers import Conv2d
    from tinyprune.sparse import csr_pointwise, to_csr
    from tinyprune.prune import LevelPrune
    shape = (batch,) + IMAGE
    layers = []
    for _, layer in model.named_layers():
        if isinstance(layer, Conv2d) and layer.pointwise:
            x = np.random.default_rng(len(layers)).random((batch, layer.c_in, shape[2] * shape[3]),
                                                         dtype=np.float32)
            layers.append((layer.weight.reshape(layer.c_out, layer.c_in), x))
        shape = layer.output_shape(shape)
    rows = []
    for sparsity in sparsities:
        work = []
        for w, x in layers:
            w = (w * LevelPrune(sparsity)(w)).astype(np.float32)   # the library's magnitude pruning
            out = np.empty((batch, w.shape[0], x.shape[2]), np.float32)
            work.append((w, to_csr(w), x, out))

        def dense():
            for w, _, x, out in work:
                np.matmul(w, x, out=out)

        def sparse():
            for _, csr, x, out in work:
                csr_pointwise(*csr, x, out)
        d = _median_seconds(dense, repeats, warmup)
        all_threads = numba.get_num_threads()
        if csr_threads is not None:
            numba.set_num_threads(min(csr_threads, all_threads))
        try:
            s = _median_seconds(sparse, repeats, warmup)
        finally:
            numba.set_num_threads(all_threads)
        rows.append({"sparsity": sparsity, "dense_s": d, "csr_s": s, "csr_speedup": d / s})
    return rows


def _sparse_figures(repeats, warmup, threads):
    """Section 6 on the tutorial's model at batch 32; the CSR kernel gets the BLAS thread count."""
    return time_sparse_pointwise(tutorial_model(), SPARSITIES, BATCH_TRAIN, repeats, warmup,
                                 csr_threads=threads)


def _conv_channels(full, resized):
    """Output channels of every full and pointwise conv, before and after resizing, with their labels."""
    from tinyprune import Conv2d
    labels = layer_labels_by_path(full)
    paths = [path for path, layer in full.named_layers() if isinstance(layer, Conv2d)]
    return {"channel_labels": [labels[path] for path in paths],
            "channels_full": [layer.c_out for _, layer in full.named_layers() if isinstance(layer, Conv2d)],
            "channels": [layer.c_out for _, layer in resized.named_layers() if isinstance(layer, Conv2d)]}


def _measure(quick, blas_threads):
    """Sections 1, 2, 3, 6 and 7, in this process; returns a dict of figures."""
    import numba
    import tinyprune as tp
    repeats, warmup = (1, 1) if quick else (10, 3)
    figures = {}

    model = tutorial_model()
    step = _train_step_fn(model, BATCH_TRAIN)
    s = _median_seconds(step, repeats, warmup)
    figures["train_step"] = {"batch": BATCH_TRAIN, "seconds": s, "images_per_s": BATCH_TRAIN / s,
                             "optimizer": "Adam(lr=1e-3)"}

    model = tutorial_model()
    figures["inference"] = _inference_figures(model, repeats, warmup)

    resized = prune_and_resize(tutorial_model(), tp.ChannelPrune(0.5)).resized
    full_mults = tp.compute_dot_prods(model, TUTORIAL_INPUT, "dense")[0]
    resized_mults = tp.compute_dot_prods(resized, TUTORIAL_INPUT, "dense")[0]
    r = _inference_figures(resized, repeats, warmup)
    # Batch 64 from the two models timed in turns (section 2's time was taken a while before).
    x64 = _images(BATCH_INFER, 2)
    sampling = dict(warm_up=0.0, seconds_per_sample=0.0) if quick else {}
    full_s, resized_s = _paired_medians([lambda: model(x64), lambda: resized(x64)], repeats, **sampling)
    mult_saving = 1 - resized_mults / full_mults
    time_saving = 1 - resized_s / full_s
    r.update({"batch64_s": resized_s, "batch64_images_per_s": BATCH_INFER / resized_s, "full_batch64_s": full_s})
    r.update({"dense_mults_full": int(full_mults), "dense_mults_resized": int(resized_mults),
              "mult_ratio": resized_mults / full_mults,
              "time_ratio_batch64": resized_s / full_s,
              "saving_efficiency": time_saving / mult_saving,
              **_conv_channels(model, resized)})
    figures["resized"] = r

    figures["sparse"] = _sparse_figures(repeats, warmup, blas_threads)
    from tinyprune.tools import bench_inference
    figures["engines"] = bench_inference.inference_figures(rounds=1 if quick else 7,
                                                           seconds_per_round=0.01 if quick else 0.2,
                                                           warm_up=0.0 if quick else bench_inference.WARM_UP)
    figures["numba_threading_layer"] = numba.threading_layer()
    return figures


# ---------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------

_STARTUP = """
import time
start = time.perf_counter()
import numpy as np
import tinyprune
from tinyprune.pipeline import tutorial_model
m = tutorial_model()
x = np.random.default_rng(0).random((32, 3, 96, 96), dtype=np.float32)
y = m(x)
m.backward(np.ones_like(y) / y.size)
print(time.perf_counter() - start)
"""

_PEAK = """
import resource
from tinyprune.tools import bench
from tinyprune.pipeline import tutorial_model
step = bench._train_step_fn(tutorial_model(), {batch})
for _ in range({steps}):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

_MEASURE = """
import json
from tinyprune.tools import bench
print(json.dumps(bench._measure({quick}, {blas_threads})))
"""


def _child_env(threads, blas_threads, cache_dir=None):
    env = dict(os.environ)
    # The folder holding the tinyprune package (tinyprune/tools/bench.py is two levels down).
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["NUMBA_NUM_THREADS"] = str(threads)
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
        env[name] = str(blas_threads)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    return env


def _run_child(code, env):
    """Run ``code`` in a fresh interpreter; returns (wall seconds, last line of its output)."""
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        if os.environ.get(DEBUG_VARIABLE):
            sys.stderr.write(run.stderr)
        last = (run.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"bench: a measuring process failed (exit code {run.returncode}): {last}")
    return seconds, run.stdout.strip().splitlines()[-1]


def _startup(threads, blas_threads, quick):
    """Wall seconds of a fresh interpreter's import + first forward and backward at batch 32.

    Cold: an empty temporary Numba cache, so every kernel is compiled.  Warm:
    the same cache again, now filled.  ``quick`` skips the cold run and times
    one run against the usual cache (warm if anything ran before).
    """
    if quick:
        seconds, _ = _run_child(_STARTUP, _child_env(threads, blas_threads))
        return {"warm_s": seconds, "cold_s": None}
    with tempfile.TemporaryDirectory(prefix="tinyprune-numba-cache-") as cache:
        env = _child_env(threads, blas_threads, cache)
        cold, _ = _run_child(_STARTUP, env)
        warm = sorted(_run_child(_STARTUP, env)[0] for _ in range(3))[1]
    return {"warm_s": warm, "cold_s": cold}


def _peak_memory(threads, blas_threads, quick):
    """Peak resident memory (bytes) of a process that builds the model and trains a few steps."""
    code = _PEAK.format(batch=BATCH_TRAIN, steps=1 if quick else 3)
    _, kib = _run_child(code, _child_env(threads, blas_threads))
    return int(kib) * 1024                       # ru_maxrss is in KiB on Linux


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def _report(fig):
    t = fig["threads"]
    lines = [f"tinyprune bench: MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1), {IMAGE[1]}x{IMAGE[2]} images",
             f"threads: {t['numba']} Numba ({fig['numba_threading_layer']}), {t['blas']} BLAS; "
             f"{fig['machine']['cpu_count']} cores, load average {fig['machine']['loadavg_before']:.2f} "
             f"before, {fig['machine']['loadavg_after']:.2f} after"
             + ("   [--quick: one repetition, figures are rough]" if fig["quick"] else ""),
             "",
             "1. training step, batch 32 (forward, BCE, backward, Adam)",
             f"   {fig['train_step']['seconds']:.3f} s/step   {fig['train_step']['images_per_s']:.0f} images/s",
             "2. inference, eval mode",
             f"   batch 64: {fig['inference']['batch64_s'] * 1e3:.1f} ms   "
             f"{fig['inference']['batch64_images_per_s']:.0f} images/s",
             f"   batch 1:  {fig['inference']['batch1_ms']:.2f} ms"]
    r = fig["resized"]
    channels = format_table(["channels"] + r["channel_labels"],
                            [["full"] + r["channels_full"], ["resized"] + r["channels"]])
    lines += ["3. ChannelPrune(0.5) + keepprune + prune_propagate + resize",
              *("   " + line for line in channels.splitlines()),
              f"   dense multiplies {r['dense_mults_resized']:,} of {r['dense_mults_full']:,} "
              f"(ratio {r['mult_ratio']:.3f})",
              f"   batch 64: {r['batch64_s'] * 1e3:.2f} ms   {r['batch64_images_per_s']:.0f} images/s   "
              f"time ratio {r['time_ratio_batch64']:.3f} (timed in turns with the full model, "
              f"{r['full_batch64_s'] * 1e3:.2f} ms)",
              f"   batch 1:  {r['batch1_ms']:.2f} ms",
              f"   time saved / multiplies saved = {r['saving_efficiency']:.2f}"]
    s = fig["startup"]
    cold = "skipped (--quick)" if s["cold_s"] is None else f"{s['cold_s']:.1f} s"
    lines += ["4. start-up: new interpreter, import, first forward + backward at batch 32",
              f"   warm Numba cache: {s['warm_s']:.1f} s   empty cache (compiling): {cold}",
              "5. peak resident memory, process training at batch 32",
              f"   {fig['peak_memory']['bytes'] / 2**20:.0f} MiB",
              f"6. pointwise convs of the model at batch 32, unstructured sparsity: CSR kernel vs dense BLAS "
              f"({t['blas']} thread{'s' if t['blas'] > 1 else ''} each)"]
    table = format_table(["sparsity", "dense ms", "CSR ms", "CSR speed-up"],
                         [[f"{row['sparsity']:.0%}", f"{row['dense_s'] * 1e3:.2f}",
                           f"{row['csr_s'] * 1e3:.2f}", f"{row['csr_speedup']:.2f}x"]
                          for row in fig["sparse"]], left=0)
    lines += ["   " + line for line in table.splitlines()]
    from tinyprune.tools import bench_inference
    lines += ["7. inference engines: the fused fast path, the plain layers, ONNX Runtime (if installed)",
              *("   " + line for line in bench_inference.report(fig["engines"]).splitlines())]
    return "\n".join(lines)


def build_parser():
    parser = CommandParser(
        prog="tinyprune bench",
        description="Time the tutorial's MobileNet: a training step, inference, the resized model, "
                    "start-up, peak memory, and a sparse (CSR) kernel against dense BLAS. "
                    "Measurements run in child processes with the thread counts below.")
    parser.add_argument("--threads", type=whole_number(1), default=None,
                        help="Numba threads for tinyprune's kernels (default: NUMBA_NUM_THREADS or all cores)")
    parser.add_argument("--blas-threads", type=whole_number(1), default=1,
                        help="threads for NumPy's BLAS matrix products (default 1)")
    parser.add_argument("--quick", action="store_true", help="a rough smoke run: one repetition, no cold start")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    return parser


def run_benchmark(quick, threads, blas_threads):
    """Every measurement, in child processes (the long part); returns the figures as a dict."""
    load_before = os.getloadavg()[0]
    env = _child_env(threads, blas_threads)
    _, line = _run_child(_MEASURE.format(quick=quick, blas_threads=blas_threads), env)
    figures = {"quick": quick,
               "threads": {"numba": threads, "blas": blas_threads},
               "machine": {"cpu_count": os.cpu_count(), "loadavg_before": load_before}}
    figures.update(json.loads(line))
    figures["startup"] = _startup(threads, blas_threads, quick)
    figures["peak_memory"] = {"bytes": _peak_memory(threads, blas_threads, quick)}
    figures["machine"]["loadavg_after"] = os.getloadavg()[0]
    return figures


def main(argv=None):
    """Run the benchmark; ``argv`` as for ``python -m tinyprune.tools.bench`` (see ``--help``).

    ``--json``'s file is checked (not a folder, its folder writable) before
    any measurement, so a typo does not cost the whole run.
    """
    args = build_parser().parse_args(argv)
    threads = args.threads
    if threads is None:
        import numba
        threads = numba.config.NUMBA_NUM_THREADS
    if args.json:
        path = output_file(args.json, "--json", example="bench.json")
        writable_folder(path.parent, "--json", given=path)
    figures = run_benchmark(args.quick, threads, args.blas_threads)
    print(_report(figures))
    if args.json:
        atomic_write(args.json, lambda stream: json.dump(figures, stream, indent=1), binary=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
