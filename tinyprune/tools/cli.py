"""The ``tinyprune`` command: the tutorial's whole pipeline in one run, and three tools.

    tinyprune [--out DIR] [--epochs N] [--level P] [--channel-level P] [--rule R] [--quick] [--seed S]
    tinyprune count MODEL.npz [--rule R] [--input-shape N,C,H,W]
    tinyprune prune MODEL.npz [--level P] [--channel-level P] [--propagate] [--resize] --out OUT.npz
    tinyprune bench [ARGS...]
    tinyprune pretrain [ARGS...]

Every command checks its arguments, its input files and its output folder
before doing any long work, so a typo costs seconds, not a training run.
Errors go to stderr as one line ``tinyprune: error: ...`` with exit code 2;
files are written under a temporary name and renamed, never left half done.
matplotlib is imported only when figures are drawn.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main"]

SEED_INPUT = (1, 3, 96, 96)      # the tutorial counts one 96 x 96 RGB image
QUICK_TRAIN, QUICK_VAL = 64, 32   # images per set under --quick: two training batches


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit code 2."""


DESCRIPTION = """\
Prune, propagate, resize, count and finetune the tutorial's MobileNet
(width 0.25, 96 x 96 input, one logit) on the synthetic Visual Wake Words set.

With no command, runs the tutorial from the shipped pretrained checkpoint:
  1. count the multiplies and adds of the model,
  2. LevelPrune(--level) it (unstructured, for comparison),
  3. ChannelPrune(--channel-level) it, then keepprune + prune_propagate,
     then resize (cut the dead channels out),
  4. print every stage's multiplies and adds under the three counting
     rules and its validation accuracy,
  5. finetune the resized model for --epochs epochs,
  6. write the figures (PNG), a summary and the finetuned checkpoint
     into --out.
The first five printed lines are the course text's, e.g.
  MobileNet Mults 7505600 Adds 7273983

counting rules (--rule):
  reference  the original tutorial's rule (reproduces its numbers)
  sparse     an ideal machine that skips every zero weight
  dense      a dense kernel: zeros cost as much as any weight
"""

EPILOG = """\
commands:
  count MODEL.npz    print the per-layer dot-product table of a checkpoint
  prune MODEL.npz    prune / propagate / resize a checkpoint into --out OUT.npz
  bench [ARGS...]    time the kernels (see: tinyprune bench --help)
  pretrain [ARGS...] train or check the shipped checkpoint (see: tinyprune pretrain --help)

examples:
  tinyprune --quick --out /tmp/tp          # a few seconds, small data subsets
  tinyprune --channel-level 0.4 --epochs 2
  tinyprune count tinyprune-out/finetuned.npz --rule sparse
  tinyprune prune model.npz --channel-level 0.3 --resize --out small.npz
"""


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------

def _level(text):
    """argparse type: a pruning level, a fraction in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a fraction in [0, 1) (0.2 prunes 20%), got {text!r}")
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _input_shape(text):
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected N,C,H,W (e.g. 1,3,96,96), got {text!r}")
    return shape


def _writable_folder(folder):
    """Create ``folder`` if needed and prove it writable by writing a file; UsageError if not.

    ``os.access`` is not enough: it says yes to root for a read-only mount,
    and no folder exists yet on a first run.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".tinyprune-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise UsageError(f"cannot write to the output folder {str(folder)!r}: "
                         f"{error.strerror or error}") from None
    return folder


def _existing_file(path, what):
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} {str(path)!r} does not exist")
    return path


def _write_text(path, text):
    """Write ``text`` to ``path`` through a temporary file renamed into place."""
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes the file private; give it the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog="tinyprune", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="tinyprune-out", metavar="DIR",
                        help="folder for the figures, summary and checkpoint (default ./tinyprune-out)")
    parser.add_argument("--epochs", type=_positive_int, default=1, metavar="N",
                        help="finetuning epochs for the resized model (default 1; 0 skips finetuning)")
    parser.add_argument("--level", type=_level, default=0.2, metavar="P",
                        help="LevelPrune fraction: zero this share of each layer's weights (default 0.2)")
    parser.add_argument("--channel-level", type=_level, default=0.2, metavar="P",
                        help="ChannelPrune fraction: zero this share of each conv's output "
                             "channels (default 0.2)")
    parser.add_argument("--rule", choices=("reference", "sparse", "dense"), default="reference",
                        help="counting rule of the course-style lines and the figure (default reference)")
    parser.add_argument("--quick", action="store_true",
                        help=f"seconds instead of minutes, for CI: {QUICK_TRAIN} training and "
                             f"{QUICK_VAL} validation images")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the batch order and augmentation (default 0)")
    parser.add_argument("--model", metavar="MODEL.npz", default=None,
                        help="start from this checkpoint instead of the shipped pretrained one")
    parser.add_argument("--no-progress", action="store_true", help="hide the training progress bar")

    commands = parser.add_subparsers(dest="command", metavar="command")
    count = commands.add_parser("count", help="print the dot-product table of a checkpoint",
                                description="Print the per-layer multiplies and adds of a saved model.")
    count.add_argument("model", metavar="MODEL.npz", help="a checkpoint written by tinyprune")
    count.add_argument("--rule", choices=("reference", "sparse", "dense", "all"), default="reference",
                       help="counting rule, or 'all' for one table per rule (default reference)")
    count.add_argument("--input-shape", type=_input_shape, default=SEED_INPUT, metavar="N,C,H,W",
                       help="input batch shape, NCHW (default 1,3,96,96)")

    prune = commands.add_parser(
        "prune", help="prune, propagate and resize a checkpoint",
        description="Prune a saved model and save the result. Steps run in this order: "
                    "LevelPrune, ChannelPrune, then keepprune + prune_propagate, then resize.")
    prune.add_argument("model", metavar="MODEL.npz", help="the checkpoint to prune (left unchanged)")
    prune.add_argument("--level", type=_level, default=None, metavar="P",
                       help="LevelPrune(P): zero this share of each conv/dense layer's weights")
    prune.add_argument("--channel-level", type=_level, default=None, metavar="P",
                       help="ChannelPrune(P): zero this share of each conv's output channels")
    prune.add_argument("--propagate", action="store_true",
                       help="bake the masks in (keepprune) and propagate the zeros (prune_propagate)")
    prune.add_argument("--resize", action="store_true",
                       help="cut the dead channels out (implies --propagate)")
    prune.add_argument("--out", required=True, metavar="OUT.npz", help="where to save the result")
    prune.add_argument("--input-shape", type=_input_shape, default=SEED_INPUT, metavar="N,C,H,W",
                       help="input shape for the printed counts (default 1,3,96,96)")

    commands.add_parser("bench", help="time the kernels; arguments go to the benchmark",
                        add_help=False)
    commands.add_parser("pretrain", help="train or check the shipped checkpoint; arguments go to it",
                        add_help=False)
    return parser


# ---------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------

RULES = ("reference", "sparse", "dense")


def _counts(model, shape=SEED_INPUT):
    """``{rule: (mults, adds)}`` for all three counting rules."""
    from ..count import compute_dot_prods
    return {rule: compute_dot_prods(model, shape, rule)[:2] for rule in RULES}


def seed_line(label, counts):
    """The course text's line: ``MobileNet Mults 7505600 Adds 7273983`` (label first if any)."""
    mults, adds = counts
    return f"{label + ' ' if label else ''}MobileNet Mults {mults} Adds {adds}"


def stage_table(rows, images):
    """Aligned text: one row per stage, mults and adds under each rule, and the accuracy.

    ``rows``: ``[(stage, {rule: (mults, adds)}, accuracy or None)]``.
    """
    header = ["stage"] + ["mults", "adds"] * len(RULES) + ["val acc"]
    body = []
    for stage, counts, acc in rows:
        cells = [stage]
        for rule in RULES:
            cells += [f"{counts[rule][0]:,}", f"{counts[rule][1]:,}"]
        cells.append("-" if acc is None else f"{100 * acc:.1f}%")
        body.append(cells)
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    # Each rule's name is centred over its pair of columns.
    spans = [widths[1 + 2 * k] + 2 + widths[2 + 2 * k] for k in range(len(RULES))]
    lines = [" " * widths[0] + "  " + "  ".join(f"{rule} rule".center(w) for rule, w in zip(RULES, spans)),
             line(header),
             "  ".join("-" * w for w in widths)]
    lines += [line(cells) for cells in body]
    lines.append(f"(multiplies and adds per {SEED_INPUT[2]}x{SEED_INPUT[3]} image; "
                 f"accuracy on {images:,} validation images)")
    return "\n".join(text.rstrip() for text in lines)


# ---------------------------------------------------------------------------
# The main job
# ---------------------------------------------------------------------------

def _load_start_model(args):
    """The model to start from: ``--model`` or the shipped checkpoint; UsageError if missing."""
    from .. import checkpoint
    if args.model is not None:
        path = _existing_file(args.model, "the checkpoint")
    else:
        path = checkpoint.pretrained_path()
        if not path.is_file():
            raise UsageError(
                f"the pretrained checkpoint {path} is missing. It ships with the source "
                "checkout; rebuild it with `tinyprune pretrain`, or pass "
                "--model MODEL.npz (set TINYPRUNE_DATA to use another data folder)")
    try:
        return checkpoint.load(path).eval(), path
    except checkpoint.CheckpointError as error:
        raise UsageError(str(error)) from None


def _data(quick):
    from ..data import SyntheticVWW
    print("loading the synthetic data set (drawn on first use, then cached)", flush=True)
    if quick:
        # Small sets drawn on their own (a few seconds, cached), not slices of the full ones.
        return SyntheticVWW("train", size=QUICK_TRAIN), SyntheticVWW("val", size=QUICK_VAL)
    return SyntheticVWW("train"), SyntheticVWW("val")


def run_pipeline(args):
    """The tutorial from checkpoint to finetuned model; returns the exit code."""
    out = Path(args.out)
    model, source = _load_start_model(args)
    _writable_folder(out)                       # last check, so a failed run writes nothing

    from ..prune import ChannelPrune, LevelPrune, keepprune, prune
    from ..propagate import prune_propagate
    from ..resize import resize
    from ..train import evaluate, trainer

    started = time.perf_counter()
    stages = [("baseline", model)]
    stages.append((f"LevelPrune({args.level})", prune(LevelPrune(args.level), model)))
    channel = prune(ChannelPrune(args.channel_level), model)
    stages.append((f"ChannelPrune({args.channel_level})", channel))
    propagated = prune_propagate(keepprune(channel))
    stages.append(("propagated", propagated))
    resized = resize(propagated)
    stages.append(("resized", resized))

    counts = {name: _counts(m) for name, m in stages}
    labels = ["", "", "", "Propagated", "Resized"]
    for label, (name, _) in zip(labels, stages):
        print(seed_line(label, counts[name][args.rule]), flush=True)

    # The course lines above come first, so they can be compared with the text line by line.
    print(f"\nstarted from {source}; results go to {out.resolve()}", flush=True)
    train_set, val_set = _data(args.quick)
    print(f"validation accuracy on {len(val_set):,} images:", flush=True)
    accuracy = {}
    for name, m in stages:
        accuracy[name] = evaluate(m, val_set)[1]
        print(f"  {name:<20} {100 * accuracy[name]:5.1f}%", flush=True)

    finetuned = resized.copy()
    batch_losses = []
    if args.epochs > 0:
        print(f"\nfinetuning the resized model for {args.epochs} epoch(s) on "
              f"{len(train_set):,} images", flush=True)
        trainer(finetuned, args.epochs, data=(train_set, val_set), seed=args.seed,
                progress=not args.no_progress,
                callback=lambda epoch, batch, loss: batch_losses.append(float(loss)))
        accuracy["finetuned"] = finetuned.history.val_accuracy[-1]
    else:
        accuracy["finetuned"] = accuracy["resized"]
    tuned_name = f"finetuned ({args.epochs} epoch{'s' if args.epochs != 1 else ''})"
    rows = [(name, counts[name], accuracy[name]) for name, _ in stages]
    rows.append((tuned_name, _counts(finetuned), accuracy["finetuned"]))
    table = stage_table(rows, len(val_set))
    print("\n" + table, flush=True)

    written = _write_outputs(out, args, stages, finetuned, batch_losses, table, rows, source)
    print(f"\nwrote {len(written)} files to {out.resolve()} in {time.perf_counter() - started:.0f} s:")
    for path in written:
        print(f"  {path.name}")
    return 0


def _write_outputs(out, args, stages, finetuned, batch_losses, table, rows, source):
    """Figures, summary and checkpoint, each written whole or not at all; returns the paths."""
    from .. import plots
    from ..checkpoint import save
    baseline, level, propagated, resized = (stages[i][1] for i in (0, 1, 3, 4))
    figures = {
        "macs.png": lambda: plots.plot_macs(stages, SEED_INPUT, rule=args.rule),
        "sparsity-level.png": lambda: plots.plot_sparsity(
            level, title=f"After {stages[1][0]}: weight sparsity per layer"),
        "sparsity-propagated.png": lambda: plots.plot_sparsity(
            propagated, title=f"After {stages[2][0]} and propagation: weight sparsity per layer"),
        "channels.png": lambda: plots.plot_channels(propagated, resized),
        "weights-pw7.png": lambda: plots.plot_weight_histogram(baseline, "pw7", after=level),
    }
    if args.epochs > 0:
        figures["history.png"] = lambda: plots.plot_history(
            finetuned.history, batch_losses, title="Finetuning the resized model")
    written = []
    for name, draw in figures.items():
        written.append(plots.save_figure(draw(), out / name))

    metadata = {
        "command": args.command_line, "started_from": str(source),
        "level": args.level, "channel_level": args.channel_level, "epochs": args.epochs,
        "quick": args.quick, "seed": args.seed,
        "stages": [{"stage": stage, "counts": {r: list(c[r]) for r in RULES}, "val_accuracy": acc}
                   for stage, c, acc in rows],
    }
    if args.epochs > 0:
        metadata["history"] = finetuned.history.as_dict()
    written.append(save(finetuned, out / "finetuned.npz", metadata=metadata))
    _write_text(out / "summary.txt", table + "\n")
    written.append(out / "summary.txt")
    _write_text(out / "stages.json", json.dumps(metadata, indent=2) + "\n")
    written.append(out / "stages.json")
    return written


# ---------------------------------------------------------------------------
# count and prune
# ---------------------------------------------------------------------------

def _load_checkpoint(path):
    from ..checkpoint import CheckpointError, load
    path = _existing_file(path, "the checkpoint")
    try:
        return load(path)
    except CheckpointError as error:
        raise UsageError(str(error)) from None


def _check_shape(model, shape):
    try:
        model.output_shape(shape)
    except ValueError as error:
        raise UsageError(f"--input-shape {','.join(map(str, shape))} does not fit the model: {error}") from None


def run_count(args):
    from ..count import dot_prod_table
    model = _load_checkpoint(args.model)
    _check_shape(model, args.input_shape)
    rules = RULES if args.rule == "all" else (args.rule,)
    for k, rule in enumerate(rules):
        if k:
            print()
        print(dot_prod_table(model, args.input_shape, rule))
    return 0


def run_prune(args):
    from ..checkpoint import save
    from ..count import compute_dot_prods
    from ..prune import ChannelPrune, LevelPrune, keepprune, prune
    from ..propagate import prune_propagate
    from ..resize import resize
    if args.level is None and args.channel_level is None and not (args.propagate or args.resize):
        raise UsageError("prune: nothing to do; give --level, --channel-level, --propagate or --resize")
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a folder; expected a file name such as pruned.npz")
    model = _load_checkpoint(args.model)
    _check_shape(model, args.input_shape)
    _writable_folder(out.parent if str(out.parent) else Path("."))

    def report(label, m):
        mults, adds, _ = compute_dot_prods(m, args.input_shape)
        print(f"{label:<28} Mults {mults} Adds {adds}", flush=True)

    report("loaded", model)
    if args.level is not None:
        model = prune(LevelPrune(args.level), model)
        report(f"LevelPrune({args.level})", model)
    if args.channel_level is not None:
        model = prune(ChannelPrune(args.channel_level), model)
        report(f"ChannelPrune({args.channel_level})", model)
    if args.propagate or args.resize:
        model = prune_propagate(keepprune(model))
        report("keepprune + prune_propagate", model)
    if args.resize:
        model = resize(model)
        report("resize", model)
    metadata = {"command": args.command_line, "pruned_from": str(args.model)}
    save(model, out, metadata=metadata)
    print(f"saved {out}")
    return 0


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------

def main(argv=None):
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["bench"], ["pretrain"]):
        # The two tools have their own options and --help: hand them everything after their name.
        from importlib import import_module
        return import_module(f"tinyprune.tools.{argv[0]}").main(argv[1:]) or 0
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = " ".join(["tinyprune"] + argv)   # recorded in the checkpoints written
    try:
        if args.command == "count":
            return run_count(args)
        if args.command == "prune":
            return run_prune(args)
        return run_pipeline(args)
    except UsageError as error:
        print(f"tinyprune: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (``tinyprune count m.npz | head``): stop quietly.  Point
        # stdout at /dev/null so Python's own flush at exit does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
