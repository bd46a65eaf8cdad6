"""The ``tinyprune`` command: the tutorial's whole pipeline in one run, and five tools.

    tinyprune [--out DIR] [--epochs N] [--level P] [--channel-level P] [--rule R] [--quick] [--seed S]
    tinyprune count MODEL.npz [--rule R] [--input-shape N,C,H,W]
    tinyprune prune MODEL.npz [--level P] [--channel-level P] [--propagate] [--resize] --out OUT.npz
    tinyprune evaluate MODEL.npz [--vww ROOT] [--subset S] [--quick]
    tinyprune bench [ARGS...]
    tinyprune pretrain [ARGS...]
    tinyprune assignment --out DIR [--exercises ID ...] [--chapters NAME ...] [--solutions] [--list]
    tinyprune grade [DIR] [--json results.json]

Every command checks its arguments, its input files and its output files
before doing any long work, so a typo costs seconds, not a training run.
Every failure is one line on stderr, ``tinyprune: error: ...``, and exit
code 2 (``TINYPRUNE_DEBUG=1`` shows the traceback instead); files are
written under a temporary name and renamed, never left half done, and an
input is never overwritten.  matplotlib is imported only when figures are
drawn.  The main job lives in :mod:`tinyprune.tools.main_job`, the shared
checks in :mod:`tinyprune.tools.args`.
"""

import argparse
import sys
from importlib import import_module

from ..common import format_table, output_dir
from ..count import RULES
from ..pipeline import (TUTORIAL_INPUT, bake_and_propagate, check_tutorial_model,
                        layer_labels_by_path)
from . import main_job
from .args import (DEBUG_VARIABLE, CommandParser, UsageError, existing_file, existing_folder,
                   fraction_below_one, input_shape, output_file, report_failures, whole_number,
                   writable_folder)

__all__ = ["main", "build_parser"]

COMMANDS = ("count", "prune", "evaluate", "bench", "pretrain", "assignment", "grade")
TOOLS = ("bench", "pretrain", "assignment", "grade")   # own parsers: the rest of the line goes to them

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
With the default levels the first three printed lines are the course
text's, number for number (they depend only on the architecture):
  MobileNet Mults 7505600 Adds 7273983
  MobileNet Mults 7460806 Adds 7273983
  MobileNet Mults 6105200 Adds 5915181
The next two, "Propagated MobileNet ..." and "Resized MobileNet ...", have
the text's form, but their numbers depend on the trained weights (which
channels die with the pruned ones), so they differ from the text's.

counting rules (--rule):
  reference  the original tutorial's rule (reproduces its numbers)
  sparse     an ideal machine that skips every zero weight
  dense      a dense kernel: zeros cost as much as any weight
"""

EPILOG = f"""\
commands (each has its own --help; the command comes first, its options after it):
  count MODEL.npz     print the per-layer dot-product table of a checkpoint
  prune MODEL.npz     prune / propagate / resize a checkpoint into --out OUT.npz
  evaluate MODEL.npz  accuracy and loss on the validation set (or a Visual Wake Words folder)
  bench [ARGS...]     time the kernels (see: tinyprune bench --help)
  pretrain [ARGS...]  train or check the shipped checkpoint (see: tinyprune pretrain --help)
  assignment [ARGS...] cut a student copy of the repository (see: tinyprune assignment --help)
  grade [ARGS...]     run a course copy's tests and score each exercise (see: tinyprune grade --help)

examples:
  tinyprune --quick --out /tmp/tp          # a smoke run on small data subsets
  tinyprune --channel-level 0.4 --epochs 2
  tinyprune count tinyprune-out/main/finetuned.npz --rule sparse
  tinyprune prune model.npz --channel-level 0.3 --resize --out small.npz
  tinyprune evaluate tinyprune-out/main/finetuned.npz --quick

errors: every failure is one line on stderr and exit code 2, found before any
long work; nothing is written by a refused command. Set {DEBUG_VARIABLE}=1 to
see the traceback of a failure instead (for reporting a bug).

environment: TINYPRUNE_DATA (data and checkpoint folder), TINYPRUNE_OUT (the
folder whose subfolder main/ is the default --out), {DEBUG_VARIABLE}.
"""


# ---------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------

def _add_main_options(parser):
    parser.add_argument("--out", default=str(output_dir("main")), metavar="DIR",
                        help="folder for the figures, summary and checkpoint (default "
                             "./tinyprune-out/main, or $TINYPRUNE_OUT/main when TINYPRUNE_OUT is set)")
    parser.add_argument("--epochs", type=whole_number(0), default=1, metavar="N",
                        help="finetuning epochs for the resized model (default 1; 0 skips finetuning)")
    parser.add_argument("--level", type=fraction_below_one, default=0.2, metavar="P",
                        help="LevelPrune fraction: zero this share of each layer's weights (default 0.2)")
    parser.add_argument("--channel-level", type=fraction_below_one, default=0.2, metavar="P",
                        help="ChannelPrune fraction: zero this share of each conv's output "
                             "channels (default 0.2)")
    parser.add_argument("--rule", choices=RULES, default="reference",
                        help="counting rule of the course-style lines and the figure (default reference)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run on small data subsets (for CI): {main_job.QUICK_TRAIN} "
                             f"training and {main_job.QUICK_VAL} validation images")
    parser.add_argument("--seed", type=whole_number(0), default=0,
                        help="seed of the batch order and augmentation (default 0)")
    parser.add_argument("--model", metavar="MODEL.npz", default=None,
                        help="start from this checkpoint instead of the shipped pretrained one")
    parser.add_argument("--no-progress", action="store_true",
                        help="hide the training progress bar (when stderr is not a terminal, "
                             "the bar prints one line per epoch)")


def _add_count(commands):
    count = commands.add_parser("count", help="print the dot-product table of a checkpoint",
                                description="Print the per-layer multiplies and adds of a saved model; "
                                            "layers are named by path ([0][3]) and by the figures' "
                                            "label (dw1).")
    count.add_argument("model", metavar="MODEL.npz", help="a checkpoint written by tinyprune")
    count.add_argument("--rule", choices=RULES + ("all",), default="reference",
                       help="counting rule, or 'all' for one table per rule (default reference)")
    _add_input_shape(count, "input batch shape, NCHW (default 1,3,96,96)")


def _add_input_shape(parser, help_text):
    parser.add_argument("--input-shape", type=input_shape, default=TUTORIAL_INPUT, metavar="N,C,H,W",
                        help=help_text)


def _add_prune(commands):
    prune = commands.add_parser(
        "prune", help="prune, propagate and resize a checkpoint",
        description="Prune a saved model and save the result. Steps run in this order: "
                    "LevelPrune, ChannelPrune, then keepprune + prune_propagate, then resize.")
    prune.add_argument("model", metavar="MODEL.npz",
                       help="the checkpoint to prune (left unchanged: --out may not name it)")
    prune.add_argument("--level", type=fraction_below_one, default=None, metavar="P",
                       help="LevelPrune(P): zero this share of each conv/dense layer's weights")
    prune.add_argument("--channel-level", type=fraction_below_one, default=None, metavar="P",
                       help="ChannelPrune(P): zero this share of each conv's output channels")
    prune.add_argument("--propagate", action="store_true",
                       help="bake the masks in (keepprune) and propagate the zeros (prune_propagate)")
    prune.add_argument("--resize", action="store_true",
                       help="cut the dead channels out (implies --propagate)")
    prune.add_argument("--out", required=True, metavar="OUT.npz", help="where to save the result")
    _add_input_shape(prune, "input shape for the printed counts (default 1,3,96,96)")


def _add_evaluate(commands):
    evaluate = commands.add_parser(
        "evaluate", help="accuracy and loss of a checkpoint on the validation set",
        description="Score a saved model: accuracy and mean binary cross-entropy on the synthetic "
                    "validation set, or on a Visual Wake Words folder (--vww). The model must take "
                    "96 x 96 RGB images and give one logit per image.")
    evaluate.add_argument("model", metavar="MODEL.npz", help="a checkpoint written by tinyprune")
    evaluate.add_argument("--vww", metavar="ROOT", default=None,
                          help="a Visual Wake Words folder (ROOT/val.txt and ROOT/val/...) "
                               "instead of the synthetic set")
    evaluate.add_argument("--subset", choices=("val", "train"), default="val",
                          help="which part of the data set (default val)")
    evaluate.add_argument("--quick", action="store_true",
                          help=f"a smoke test on {main_job.QUICK_VAL} images: a small synthetic set "
                               "drawn on its own, or the first of --vww's list")
    evaluate.add_argument("--batch-size", type=whole_number(1), default=64, metavar="N",
                          help="images per forward pass (default 64; memory grows with it)")


def build_parser():
    parser = CommandParser(prog="tinyprune", description=DESCRIPTION, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_main_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="command")
    _add_count(commands)
    _add_prune(commands)
    _add_evaluate(commands)
    commands.add_parser("bench", help="time the kernels; arguments go to the benchmark",
                        add_help=False)
    commands.add_parser("pretrain", help="train or check the shipped checkpoint; arguments go to it",
                        add_help=False)
    commands.add_parser("assignment", help="cut a student copy of the repository; arguments go to it",
                        add_help=False)
    commands.add_parser("grade", help="run a course copy's tests and score each exercise; arguments go to it",
                        add_help=False)
    return parser


def command_position(parser, argv):
    """Where the command is in ``argv``: 0, or None for the main job; UsageError if it comes late.

    The command is the first word that is neither an option nor an option's
    value.  Options before a command are the main job's, so
    ``tinyprune --quick bench`` would silently drop ``--quick`` (or run the
    main job): it is refused, naming the command and the options.
    """
    argv = parser.keep_negative_values(argv)
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":                  # the next word is positional, whatever it looks like
            i += 1
            break
        if not token.startswith("-") or token == "-":
            break
        i += 2 if parser.option_takes_value(token) and "=" not in token else 1
    else:
        return None
    if i == len(argv):
        return None
    if i == 0 or argv[i] not in COMMANDS or {"-h", "--help"} & set(argv[:i]):
        return i                   # argparse reports an unknown word, or shows the help
    raise UsageError(f"the command {argv[i]!r} must come first: {' '.join(argv[:i])} before it "
                     f"are options of the main job; write: tinyprune {argv[i]} [its options] "
                     f"(see tinyprune {argv[i]} --help)")


# ---------------------------------------------------------------------------
# count, prune and evaluate
# ---------------------------------------------------------------------------

def _load_checkpoint(path, option="MODEL.npz"):
    from ..checkpoint import load
    path = existing_file(path, option)
    try:
        return load(path)
    except ValueError as error:              # CheckpointError is one
        raise UsageError(str(error)) from None


def _check_shape(model, shape):
    try:
        model.output_shape(shape)
    except ValueError as error:
        raise UsageError(f"--input-shape {','.join(map(str, shape))} does not fit the model: "
                         f"{error}") from None


def labelled_table(model, shape, rule):
    """``dot_prod_table`` as text, with the figures' label (``pw7``) beside each layer's path."""
    from ..count import dot_prod_table
    table = dot_prod_table(model, shape, rule)
    labels = layer_labels_by_path(model)
    rows = [(path, labels.get(path, ""), kind, str(out), f"{mults:,}", f"{adds:,}")
            for path, kind, out, mults, adds in table]
    return format_table(("layer", "label", "type", "output shape", "mults", "adds"), rows, left=4,
                        total=("total", "", "", "", f"{table.mults:,}", f"{table.adds:,}"),
                        title=f"dot products, rule {rule!r}")


def run_count(args):
    model = _load_checkpoint(args.model)
    _check_shape(model, args.input_shape)
    rules = RULES if args.rule == "all" else (args.rule,)
    for k, rule in enumerate(rules):
        if k:
            print()
        print(labelled_table(model, args.input_shape, rule))
    return 0


def run_prune(args):
    if args.level is None and args.channel_level is None and not (args.propagate or args.resize):
        raise UsageError("prune: nothing to do; give --level, --channel-level, --propagate or --resize")
    out = output_file(args.out, "--out", inputs=[("MODEL.npz", args.model)])
    model = _load_checkpoint(args.model)
    _check_shape(model, args.input_shape)
    writable_folder(out.parent, "--out", given=out)       # last check: creates the folder
    _prune_steps(args, model, out)
    print(f"saved {out}")
    return 0


def _prune_steps(args, model, out):
    from ..checkpoint import save
    from ..count import compute_dot_prods
    from ..prune import ChannelPrune, LevelPrune, prune
    from ..resize import resize

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
    save(model, out, metadata={"command": args.command_line, "pruned_from": str(args.model)})


def check_evaluate(args):
    """The loaded model, once it and the data folder are known to fit; nothing is read before."""
    model = _load_checkpoint(args.model)
    try:
        check_tutorial_model(model, f"MODEL.npz {args.model!r}")
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.vww is not None:
        root = existing_folder(args.vww, "--vww")
        listing = root / f"{args.subset}.txt"
        if not listing.is_file():
            raise UsageError(f"--vww {args.vww!r}: no list file {str(listing)!r} (lines '<file name> "
                             f"<label>') for --subset {args.subset}")
        if not (root / args.subset).is_dir():
            raise UsageError(f"--vww {args.vww!r}: no image folder {str(root / args.subset)!r}")
    return model.eval()


def evaluation_data(args):
    """The data set ``evaluate`` scores on, and its name; the long step (reads or draws images)."""
    from ..data import ArrayDataset, SyntheticVWW, VisualWakeWords
    if args.vww is None:
        size = main_job.QUICK_VAL if args.quick else None
        data = SyntheticVWW(args.subset, size=size)
        return data, f"SyntheticVWW {args.subset!r}"
    data = VisualWakeWords(args.vww, args.subset)
    if args.quick:
        data = ArrayDataset(data.images[:main_job.QUICK_VAL], data.labels[:main_job.QUICK_VAL])
    return data, f"Visual Wake Words {args.subset!r} in {args.vww}"


def run_evaluate(args):
    from ..train import evaluate
    model = check_evaluate(args)
    data, name = evaluation_data(args)
    loss, accuracy = evaluate(model, data, batch_size=args.batch_size)
    images = len(data.labels)
    print(f"{args.model} on {name} ({images:,} images):")
    print(f"  accuracy {100 * accuracy:.2f}% ({round(accuracy * images):,} of {images:,} correct)")
    print(f"  loss     {loss:.4f} (mean binary cross-entropy, nats)")
    return 0


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------

def _dispatch(argv):
    parser = build_parser()
    if command_position(parser, argv) == 0 and argv[0] in TOOLS:
        # The tools have their own options and --help: hand them everything after their name.
        return import_module(f"tinyprune.tools.{argv[0]}").main(argv[1:]) or 0
    args = parser.parse_args(argv)
    args.command_line = " ".join(["tinyprune"] + argv)   # recorded in the checkpoints written
    if args.command == "count":
        return run_count(args)
    if args.command == "prune":
        return run_prune(args)
    if args.command == "evaluate":
        return run_evaluate(args)
    if args.command in TOOLS:              # only reachable through odd spellings such as "-- bench"
        raise UsageError(f"the command {args.command!r} must be the first word: tinyprune {args.command} ...")
    return main_job.run_main_job(main_job.check_main_job(args))


def main(argv=None):
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    0 on success; 2 and one line on stderr for any failure (bad arguments,
    files or checkpoints, and anything unexpected); 130 after Ctrl-C.
    """
    argv = [str(token) for token in (sys.argv[1:] if argv is None else argv)]
    return report_failures("tinyprune", _dispatch, argv)
