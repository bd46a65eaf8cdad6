"""Train the shipped checkpoint, or check it against the acceptance figures.

    tinyprune pretrain            # trains the shipped checkpoint again (its recipe is the default)
    tinyprune pretrain --check    # checks it against the finetuning bar

Training builds the tutorial's model, ``MobileNet(slopehtanh, 0.25,
fcsize=64, nclasses=1)``, with a fixed seed, and trains it with
``trainer`` on the default ``SyntheticVWW`` sets with Adam.  The defaults
are the shipped checkpoint's recipe, the one its metadata records: 26
epochs at lr 2e-3, no decay, BatchNorm gammas started at 0.5, seed 0 (the
README says why this recipe and not an annealed one).  After every epoch
the model is saved, so an interrupted run still leaves the latest whole
epoch; the metadata records the command, the history and the validation
accuracy.

``--check`` loads the checkpoint and prints what the project promises:

* its validation accuracy (at least 90 %);
* ChannelPrune(0.2) -> keepprune -> prune_propagate -> resize: the
  accuracy right after pruning, then after ``trainer(m, 1)`` (within 2
  points of the checkpoint's);
* seconds per epoch and images per second of that epoch on this machine.
"""

import argparse
import sys
import time
from pathlib import Path

from ..checkpoint import PRETRAINED_FILE, load, pretrained_path, save
from ..common import data_dir
from ..count import compute_dot_prods
from ..data import SyntheticVWW
from ..layers import BatchNorm2d
from ..pipeline import TUTORIAL_INPUT, check_tutorial_model, finetune, prune_and_resize, tutorial_model
from ..prune import ChannelPrune
from ..train import Adam, evaluate, trainer
from .args import (CommandParser, UsageError, existing_file, output_file, positive_number, whole_number,
                   writable_folder)

__all__ = []   # a script: nothing to import from here


def calm_start(model, bn_gamma):
    """Set every BatchNorm's gamma to ``bn_gamma`` before training (``--bn-gamma``).

    ``MobileNet`` already starts its gammas at 0.5 (``init="calm"``; its
    docstring says why Flux's 1 does not train); this sets any other value.
    """
    for _, layer in model.named_layers():
        if isinstance(layer, BatchNorm2d):
            layer.weight[:] = bn_gamma
    return model


def train_checkpoint(epochs=26, out=None, lr=2e-3, decay_epochs=0, seed=0, progress=True, bn_gamma=0.5,
                     decay_factor=10.0):
    """Train from scratch and save after every epoch; returns the model.

    The lr is ``lr`` for ``epochs - decay_epochs`` epochs, then
    ``lr / decay_factor``.
    Each epoch is one ``trainer`` call sharing one Adam (so its running
    averages carry over) with its own shuffling seed.  BatchNorm gammas
    start at ``bn_gamma`` (see :func:`calm_start`).
    """
    out = out or str(data_dir() / PRETRAINED_FILE)
    command = (f"tinyprune pretrain --epochs {epochs} --lr {lr} --decay-epochs {decay_epochs} "
               f"--decay-factor {decay_factor:g} --seed {seed} --bn-gamma {bn_gamma} --out {out}")
    train_set, val_set = SyntheticVWW("train"), SyntheticVWW("val")
    model = calm_start(tutorial_model(seed), bn_gamma)
    optimizer = Adam(model, lr=lr)
    for epoch in range(epochs):
        optimizer.lr = lr if epoch < epochs - decay_epochs else lr / decay_factor
        trainer(model, 1, optimizer=optimizer, data=(train_set, val_set),
                seed=seed * 1000 + epoch, progress=progress)
        history = model.history
        print(f"epoch {epoch + 1}/{epochs}: lr {optimizer.lr:g}, train loss {history.loss[-1]:.4f}, "
              f"train acc {history.train_accuracy[-1]:.4f}, val acc {history.val_accuracy[-1]:.4f}, "
              f"{history.seconds[-1]:.0f} s, {history.images_per_second[-1]:.0f} img/s", flush=True)
        if history.interrupted:
            break
        metadata = {
            "command": command,
            "model": "MobileNet(slopehtanh, 0.25, fcsize=64, nclasses=1)",
            "data": f"SyntheticVWW version {SyntheticVWW.VERSION}, train {len(train_set)} / "
                    f"val {len(val_set)} images, seed 0",
            "data_version": SyntheticVWW.VERSION,
            "epochs_trained": epoch + 1,
            "val_accuracy": history.val_accuracy[-1],
            "val_loss": history.val_loss[-1],
            "history": history.as_dict(),
        }
        save(model.eval(), out, metadata)   # saved in eval mode, ready for inference
        model.train()
    return model


def points_versus_checkpoint(drop):
    """``drop`` (checkpoint accuracy - finetuned accuracy) in words: "1.60 points below the checkpoint"."""
    points = f"{100 * abs(drop):.2f} points"
    if points == "0.00 points":
        return "level with the checkpoint"
    return f"{points} {'below' if drop > 0 else 'above'} the checkpoint"


def check(path=None, progress=True):
    """Print the acceptance figures for the checkpoint at ``path``; returns True if all hold."""
    path = path or pretrained_path()
    model = load(path)
    meta = model.metadata
    print(f"checkpoint: {path}")
    print(f"  made by: {meta.get('command')}")
    val_set = SyntheticVWW("val")
    start = time.perf_counter()
    loss, acc = evaluate(model, val_set)
    print(f"  validation accuracy {acc:.4f} (loss {loss:.4f}, stored {meta.get('val_accuracy')}); "
          f"evaluated {len(val_set):,} images in {time.perf_counter() - start:.1f} s")
    ok = acc >= 0.90

    mults, adds, _ = compute_dot_prods(model, TUTORIAL_INPUT)
    pruned = prune_and_resize(model, ChannelPrune(0.2)).resized
    p_mults, p_adds, _ = compute_dot_prods(pruned, TUTORIAL_INPUT)
    _, pruned_acc = evaluate(pruned, val_set)
    print(f"ChannelPrune(0.2) -> keepprune -> prune_propagate -> resize: "
          f"mults {mults:,} -> {p_mults:,}, adds {adds:,} -> {p_adds:,}")
    print(f"  accuracy right after pruning {pruned_acc:.4f}")
    tuned, _ = finetune(pruned, 1, (SyntheticVWW("train"), val_set), progress=progress)
    history = tuned.history
    tuned_acc = history.val_accuracy[-1]
    drop = acc - tuned_acc
    print(f"  after trainer(m, 1): accuracy {tuned_acc:.4f} ({points_versus_checkpoint(drop)}; "
          f"at most 2 below allowed)")
    print(f"  one epoch: {history.seconds[-1]:.0f} s, {history.images_per_second[-1]:.0f} images/s")
    ok = ok and drop <= 0.02
    print("acceptance:", "PASS" if ok else "FAIL")
    return ok


def build_parser():
    """The options; their defaults are the shipped checkpoint's recipe (a test holds them to it)."""
    parser = CommandParser(prog="tinyprune pretrain", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="--check exits with code 1 if a figure misses its bar, 2 if it "
                                  "cannot run\n(one line on stderr).")
    parser.add_argument("--epochs", type=whole_number(1), default=26, help="epochs to train (default 26)")
    parser.add_argument("--lr", type=positive_number, default=2e-3,
                        help="Adam's learning rate (default 2e-3)")
    parser.add_argument("--decay-epochs", type=whole_number(0), default=0,
                        help="train the last this many epochs at lr/decay-factor (default 0)")
    parser.add_argument("--decay-factor", type=positive_number, default=10.0,
                        help="divide the lr by this for the last --decay-epochs (default 10)")
    parser.add_argument("--seed", type=whole_number(0), default=0,
                        help="initialisation and shuffling seed (default 0)")
    parser.add_argument("--bn-gamma", type=positive_number, default=0.5,
                        help="starting BatchNorm gamma (default 0.5; Flux's 1 starts chaotic)")
    parser.add_argument("--out", default=None,
                        help=f"where to save; with --check, the checkpoint to check (default: "
                             f"the shipped checkpoint, data/{PRETRAINED_FILE} in a source checkout)")
    parser.add_argument("--check", action="store_true", help="check the checkpoint instead of training")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _checked_checkpoint(path):
    """``path`` once it is known to hold a checkpoint of the tutorial's shape; UsageError if not."""
    option = "--out" if path != pretrained_path() else "the pretrained checkpoint"
    path = existing_file(path, option)
    try:
        check_tutorial_model(load(path), f"{option} {str(path)!r}")
    except ValueError as error:           # CheckpointError is one
        raise UsageError(str(error)) from None
    return path


def main(argv=None):
    """Train the checkpoint, or check it with ``--check``; every argument is checked first."""
    args = build_parser().parse_args(argv)
    if args.check:
        path = _checked_checkpoint(Path(args.out) if args.out else pretrained_path())
        return 0 if check(path, progress=not args.no_progress) else 1
    out = output_file(args.out or data_dir() / PRETRAINED_FILE, "--out")
    writable_folder(out.parent, "--out", given=out)
    train_checkpoint(args.epochs, str(out), lr=args.lr, decay_epochs=args.decay_epochs, seed=args.seed,
                     progress=not args.no_progress, bn_gamma=args.bn_gamma, decay_factor=args.decay_factor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
