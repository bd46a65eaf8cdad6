"""The ``tinyprune`` command with no subcommand: the tutorial's pipeline from checkpoint to figures.

Two halves, so that a typo costs seconds, not a training run:

* :func:`check_main_job` makes every check that can be made before the
  first long step (the checkpoint loads and fits the pipeline, no output
  file is a folder or the input, the output folder is writable) and returns
  a :class:`MainJob`;
* :func:`run_main_job` does the work: count and prune (the course lines),
  load the data, evaluate, finetune, and write the finetuned checkpoint, the
  summary and the figures.

The figures come last, after the checkpoint is safe: matplotlib, imported
before training, would add about 100 MB to the run's peak memory.
"""

import json
import time
from collections import namedtuple

from ..common import atomic_write, format_table
from ..count import RULES
from ..pipeline import (TUTORIAL_INPUT, check_tutorial_model, count_rules, finetune,
                        layer_labels_by_path, tutorial_stages)
from .args import UsageError, existing_file, folder_path, output_file, writable_folder

__all__ = ["MainJob", "check_main_job", "run_main_job", "seed_line", "stage_table", "COURSE_LINES"]

QUICK_TRAIN, QUICK_VAL = 64, 32   # images per set under --quick: two training batches
HISTOGRAM_LAYER = "pw7"           # the layer whose weights the histogram shows, if the model has it

# The course text's five lines, in order: the stage each counts, and the word before "MobileNet".
COURSE_LINES = (("baseline", ""), ("level", ""), ("channel", ""),
                ("propagated", "Propagated"), ("resized", "Resized"))

MainJob = namedtuple("MainJob", "args model source out histogram_layer")
MainJob.__doc__ = """A checked main job: the parsed ``args``, the loaded ``model`` and its ``source``
path, the output folder ``out`` (created, writable) and the label of the
layer whose weights get a histogram."""


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

def _start_model(args):
    """The model to start from, ``--model`` or the shipped checkpoint, and its path."""
    from .. import checkpoint
    if args.model is not None:
        path, option = existing_file(args.model, "--model"), "--model"
    else:
        path, option = checkpoint.pretrained_path(), "the pretrained checkpoint"
        if not path.is_file():
            raise UsageError(
                f"the pretrained checkpoint {path} is missing. It ships with the source "
                "checkout; rebuild it with `tinyprune pretrain`, or pass "
                "--model MODEL.npz (set TINYPRUNE_DATA to use another data folder)")
    try:
        model = checkpoint.load(path).eval()
        check_tutorial_model(model, f"{option} {str(path)!r}")
    except ValueError as error:          # CheckpointError is one
        raise UsageError(str(error)) from None
    return model, path


def _output_names(histogram_layer):
    return ["macs.png", "sparsity-level.png", "sparsity-propagated.png", "channels.png",
            f"weights-{histogram_layer}.png", "history.png",
            "finetuned.npz", "summary.txt", "stages.json"]


def check_main_job(args):
    """Every check the main job can make before its first long step; returns a :class:`MainJob`.

    The output folder is created last, once everything else has passed, so a
    refused run leaves nothing behind.
    """
    model, source = _start_model(args)
    labels = list(layer_labels_by_path(model).values())
    if not any(label.startswith(("conv", "dw", "pw")) for label in labels):
        raise UsageError(f"{str(source)!r} has no convolution, so ChannelPrune has nothing to prune; "
                         "the main job needs a model such as the tutorial's MobileNet")
    histogram_layer = HISTOGRAM_LAYER if HISTOGRAM_LAYER in labels else labels[len(labels) // 2]
    out = folder_path(args.out, "--out")
    for name in _output_names(histogram_layer):
        output_file(out / name, "--out", inputs=[("--model", source)])
    writable_folder(out, "--out")
    return MainJob(args, model, source, out, histogram_layer)


# ---------------------------------------------------------------------------
# What the main job prints
# ---------------------------------------------------------------------------

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
# The run
# ---------------------------------------------------------------------------

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
    # The trainer itself writes one line per epoch when stderr is a log, not a terminal.
    return finetune(resized, args.epochs, (train_set, val_set), seed=args.seed, progress=not args.no_progress)


def run_main_job(job):
    """The tutorial from checkpoint to finetuned model (``job`` from :func:`check_main_job`); exit code."""
    args, out = job.args, job.out
    started = time.perf_counter()
    stages = tutorial_stages(job.model, args.level, args.channel_level)
    for key, label in COURSE_LINES:
        print(seed_line(label, stages[key].counts[args.rule]), flush=True)
    # The course lines above come first, so they can be compared with the text line by line.
    print(f"\nstarted from {job.source}; results go to {out.resolve()}", flush=True)
    train_set, val_set = _data(args.quick)
    accuracy = _evaluate(stages, val_set)
    finetuned, batch_losses = _finetune(args, stages["resized"].model, train_set, val_set)
    tuned_accuracy = finetuned.history.val_accuracy[-1] if args.epochs > 0 else accuracy["resized"]

    rows = [(stage.label, stage.counts, accuracy[key]) for key, stage in stages.items()]
    tuned_name = f"finetuned ({args.epochs} epoch{'s' if args.epochs != 1 else ''})"
    rows.append((tuned_name, count_rules(finetuned), tuned_accuracy))
    table = stage_table(rows, len(val_set))
    print("\n" + table, flush=True)

    # The checkpoint and the records first: a figure that fails then costs no training.
    records = _write_records(out, finetuned, table, _metadata(args, job.source, rows, finetuned))
    written = _draw_figures(out, stages, args.rule, job.histogram_layer, finetuned, batch_losses,
                            accuracy["resized"]) + records
    print(f"\nwrote {len(written)} files to {out.resolve()} in {time.perf_counter() - started:.0f} s:")
    for path in written:
        print(f"  {path.name}")
    return 0


def _draw_figures(out, stages, rule, histogram_layer, finetuned, batch_losses, start_accuracy):
    """The PNG figures of a run, each drawn and saved in turn; returns their paths.

    The multiplies come as the tables already counted, so nothing is counted
    twice; the sparsity figures take the models, whose weights tell dead
    output channels, dead input channels and scattered zeros apart.  The
    finetuning curve starts at ``start_accuracy``, the resized model's before
    finetuning, so the figure shows what finetuning won back.
    """
    from .. import plots
    labels = plots.layer_labels(stages["baseline"].model)
    level, channel = stages["level"], stages["channel"]
    figures = {
        "macs.png": lambda: plots.plot_macs([(s.label, s.counts[rule]) for s in stages.values()],
                                            rule=rule, labels=labels),
        "sparsity-level.png": lambda: plots.plot_sparsity(
            level.model, labels=labels,
            title=f"After {level.label}: weight sparsity per layer"),
        "sparsity-propagated.png": lambda: plots.plot_sparsity(
            stages["propagated"].model, labels=labels,
            title=f"After {channel.label} and propagation: weight sparsity per layer"),
        "channels.png": lambda: plots.plot_channels(stages["propagated"].model, stages["resized"].model),
        f"weights-{histogram_layer}.png": lambda: plots.plot_weight_histogram(
            stages["baseline"].model, histogram_layer, after=level.model),
    }
    if hasattr(finetuned, "history"):
        figures["history.png"] = lambda: plots.plot_history(
            finetuned.history, batch_losses, title="Finetuning the resized model", start=start_accuracy)
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
