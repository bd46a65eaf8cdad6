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

from ..common import atomic_write, check_int, check_number, format_table
from ..count import RULES
from ..pipeline import TUTORIAL_INPUT, bake_and_propagate, count_rules, finetune, tutorial_stages

__all__ = ["main"]

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
  tinyprune --quick --out /tmp/tp          # a smoke run on small data subsets
  tinyprune --channel-level 0.4 --epochs 2
  tinyprune count tinyprune-out/finetuned.npz --rule sparse
  tinyprune prune model.npz --channel-level 0.3 --resize --out small.npz
"""


# ---------------------------------------------------------------------------
# Argument types (bench and pretrain use them too)
# ---------------------------------------------------------------------------

def fraction_below_one(text):
    """argparse type: a pruning level, a fraction in [0, 1); 1 would prune everything."""
    try:
        return check_number(float(text), "the level", "tinyprune", 0.0, 1.0, high_open=True)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a fraction in [0, 1) (0.2 prunes 20%), got {text!r}") from None


def whole_number(minimum):
    """An argparse type that accepts a whole number >= ``minimum``: ``type=whole_number(0)``."""
    def parse(text):
        try:
            return check_int(int(text), "the value", "tinyprune", minimum)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number >= {minimum}, got {text!r}") from None
    return parse


def positive_number(text):
    """argparse type: a finite number > 0, such as a learning rate or a factor."""
    try:
        return check_number(float(text), "the value", "tinyprune", low=0.0, low_open=True)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None


def _input_shape(text):
    try:
        shape = tuple(check_int(int(part), "a size", "--input-shape") for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4:
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


# ---------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog="tinyprune", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="tinyprune-out", metavar="DIR",
                        help="folder for the figures, summary and checkpoint (default ./tinyprune-out)")
    parser.add_argument("--epochs", type=whole_number(0), default=1, metavar="N",
                        help="finetuning epochs for the resized model (default 1; 0 skips finetuning)")
    parser.add_argument("--level", type=fraction_below_one, default=0.2, metavar="P",
                        help="LevelPrune fraction: zero this share of each layer's weights (default 0.2)")
    parser.add_argument("--channel-level", type=fraction_below_one, default=0.2, metavar="P",
                        help="ChannelPrune fraction: zero this share of each conv's output "
                             "channels (default 0.2)")
    parser.add_argument("--rule", choices=("reference", "sparse", "dense"), default="reference",
                        help="counting rule of the course-style lines and the figure (default reference)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run on small data subsets (for CI): {QUICK_TRAIN} training "
                             f"and {QUICK_VAL} validation images")
    parser.add_argument("--seed", type=whole_number(0), default=0,
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
    count.add_argument("--input-shape", type=_input_shape, default=TUTORIAL_INPUT, metavar="N,C,H,W",
                       help="input batch shape, NCHW (default 1,3,96,96)")

    prune = commands.add_parser(
        "prune", help="prune, propagate and resize a checkpoint",
        description="Prune a saved model and save the result. Steps run in this order: "
                    "LevelPrune, ChannelPrune, then keepprune + prune_propagate, then resize.")
    prune.add_argument("model", metavar="MODEL.npz", help="the checkpoint to prune (left unchanged)")
    prune.add_argument("--level", type=fraction_below_one, default=None, metavar="P",
                       help="LevelPrune(P): zero this share of each conv/dense layer's weights")
    prune.add_argument("--channel-level", type=fraction_below_one, default=None, metavar="P",
                       help="ChannelPrune(P): zero this share of each conv's output channels")
    prune.add_argument("--propagate", action="store_true",
                       help="bake the masks in (keepprune) and propagate the zeros (prune_propagate)")
    prune.add_argument("--resize", action="store_true",
                       help="cut the dead channels out (implies --propagate)")
    prune.add_argument("--out", required=True, metavar="OUT.npz", help="where to save the result")
    prune.add_argument("--input-shape", type=_input_shape, default=TUTORIAL_INPUT, metavar="N,C,H,W",
                       help="input shape for the printed counts (default 1,3,96,96)")

    commands.add_parser("bench", help="time the kernels; arguments go to the benchmark",
                        add_help=False)
    commands.add_parser("pretrain", help="train or check the shipped checkpoint; arguments go to it",
                        add_help=False)
    return parser


# ---------------------------------------------------------------------------
# What the main job prints
# ---------------------------------------------------------------------------

# The course text's five lines, in order: the stage each counts, and the word before "MobileNet".
COURSE_LINES = (("baseline", ""), ("level", ""), ("channel", ""),
                ("propagated", "Propagated"), ("resized", "Resized"))


def seed_line(label, table):
    """The course text's line: ``MobileNet Mults 7505600 Adds 7273983`` (label first if any).

    ``table``: the model's ``DotProdTable`` under the chosen rule.
    """
    return f"{label + ' ' if label else ''}MobileNet Mults {table.mults} Adds {table.adds}"


def stage_table(rows, images):
    """Aligned text: one row per stage, mults and adds under each rule, and the accuracy.

    ``rows``: ``[(stage, {rule: DotProdTable}, accuracy or None)]``.
    """
    header = ["stage"] + ["mults", "adds"] * len(RULES) + ["val acc"]
    body = []
    for stage, counts, acc in rows:
        cells = [stage]
        for rule in RULES:
            cells += [f"{counts[rule].mults:,}", f"{counts[rule].adds:,}"]
        cells.append("-" if acc is None else f"{100 * acc:.1f}%")
        body.append(cells)
    table = format_table(header, body)
    # Each counting rule is named over its pair of columns; the dashes under the header give the widths.
    widths = [len(dashes) for dashes in table.splitlines()[1].split("  ")]
    spans = [widths[1 + 2 * k] + 2 + widths[2 + 2 * k] for k in range(len(RULES))]
    over = " " * widths[0] + "  " + "  ".join(f"{rule} rule".center(w) for rule, w in zip(RULES, spans))
    note = (f"(multiplies and adds per {TUTORIAL_INPUT[2]}x{TUTORIAL_INPUT[3]} image; "
            f"accuracy on {images:,} validation images)")
    return "\n".join([over.rstrip(), table, note])


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
        # Small sets drawn on their own (cached), not slices of the full ones.
        return SyntheticVWW("train", size=QUICK_TRAIN), SyntheticVWW("val", size=QUICK_VAL)
    return SyntheticVWW("train"), SyntheticVWW("val")


def _evaluate(stages, val_set):
    """``{stage key: validation accuracy}``, printed one stage at a time as it is measured."""
    from ..train import evaluate
    print(f"validation accuracy on {len(val_set):,} images:", flush=True)
    accuracy = {}
    for key, stage in stages.items():
        accuracy[key] = evaluate(stage.model, val_set)[1]
        print(f"  {stage.label:<20} {100 * accuracy[key]:5.1f}%", flush=True)
    return accuracy


def _finetune(args, resized, train_set, val_set):
    """The finetuned copy of the resized model and the loss of every batch (none for --epochs 0)."""
    if args.epochs == 0:
        return resized.copy(), []
    print(f"\nfinetuning the resized model for {args.epochs} epoch(s) on "
          f"{len(train_set):,} images", flush=True)
    return finetune(resized, args.epochs, (train_set, val_set), seed=args.seed,
                    progress=not args.no_progress)


def run_pipeline(args):
    """The tutorial from checkpoint to finetuned model; returns the exit code."""
    out = Path(args.out)
    model, source = _load_start_model(args)
    _writable_folder(out)                       # last check, so a failed run writes nothing

    started = time.perf_counter()
    stages = tutorial_stages(model, args.level, args.channel_level)
    for key, label in COURSE_LINES:
        print(seed_line(label, stages[key].counts[args.rule]), flush=True)
    # The course lines above come first, so they can be compared with the text line by line.
    print(f"\nstarted from {source}; results go to {out.resolve()}", flush=True)
    train_set, val_set = _data(args.quick)
    accuracy = _evaluate(stages, val_set)
    finetuned, batch_losses = _finetune(args, stages["resized"].model, train_set, val_set)
    tuned_accuracy = finetuned.history.val_accuracy[-1] if args.epochs > 0 else accuracy["resized"]

    rows = [(stage.label, stage.counts, accuracy[key]) for key, stage in stages.items()]
    tuned_name = f"finetuned ({args.epochs} epoch{'s' if args.epochs != 1 else ''})"
    rows.append((tuned_name, count_rules(finetuned), tuned_accuracy))
    table = stage_table(rows, len(val_set))
    print("\n" + table, flush=True)

    written = _draw_figures(out, stages, args.rule, finetuned, batch_losses)
    written += _write_records(out, finetuned, table, _metadata(args, source, rows, finetuned))
    print(f"\nwrote {len(written)} files to {out.resolve()} in {time.perf_counter() - started:.0f} s:")
    for path in written:
        print(f"  {path.name}")
    return 0


def _draw_figures(out, stages, rule, finetuned, batch_losses):
    """The PNG figures of a run, each drawn and saved in turn; returns their paths.

    The plots get the counts and sparsities as tables, so nothing is counted twice.
    """
    from .. import plots
    from ..prune import sparsity
    labels = plots.layer_labels(stages["baseline"].model)
    level, channel = stages["level"], stages["channel"]
    figures = {
        "macs.png": lambda: plots.plot_macs([(s.label, s.counts[rule]) for s in stages.values()],
                                            rule=rule, labels=labels),
        "sparsity-level.png": lambda: plots.plot_sparsity(
            sparsity(level.model), labels=labels,
            title=f"After {level.label}: weight sparsity per layer"),
        "sparsity-propagated.png": lambda: plots.plot_sparsity(
            sparsity(stages["propagated"].model), labels=labels,
            title=f"After {channel.label} and propagation: weight sparsity per layer"),
        "channels.png": lambda: plots.plot_channels(stages["propagated"].model, stages["resized"].model),
        "weights-pw7.png": lambda: plots.plot_weight_histogram(stages["baseline"].model, "pw7",
                                                               after=level.model),
    }
    if hasattr(finetuned, "history"):
        figures["history.png"] = lambda: plots.plot_history(
            finetuned.history, batch_losses, title="Finetuning the resized model")
    return [plots.save_figure(draw(), out / name) for name, draw in figures.items()]


def _metadata(args, source, rows, finetuned):
    """What the run did, for ``stages.json`` and the finetuned checkpoint."""
    metadata = {
        "command": args.command_line, "started_from": str(source),
        "level": args.level, "channel_level": args.channel_level, "epochs": args.epochs,
        "quick": args.quick, "seed": args.seed,
        "stages": [{"stage": stage, "counts": {r: [c[r].mults, c[r].adds] for r in RULES},
                    "val_accuracy": acc}
                   for stage, c, acc in rows],
    }
    if hasattr(finetuned, "history"):
        metadata["history"] = finetuned.history.as_dict()
    return metadata


def _write_records(out, finetuned, table, metadata):
    """The finetuned checkpoint, the summary table and the stages as JSON; returns the paths."""
    from ..checkpoint import save
    return [save(finetuned, out / "finetuned.npz", metadata=metadata),
            atomic_write(out / "summary.txt", lambda f: f.write(table + "\n"), binary=False),
            atomic_write(out / "stages.json", lambda f: f.write(json.dumps(metadata, indent=2) + "\n"),
                         binary=False)]


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
    from ..prune import ChannelPrune, LevelPrune, prune
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
        model = bake_and_propagate(model)
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
