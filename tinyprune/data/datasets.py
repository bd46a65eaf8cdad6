"""Data sets: the drawn stand-in, the real Visual Wake Words, and your own arrays.

Every data set here is a plain object with two arrays, which is all the rest
of tinyprune asks of one (``as_dataset`` accepts anything that has them):

    images: (N, 3, 96, 96) uint8, values 0..255 (ArrayDataset also takes
            other sizes, and float images in [0, 1]);
    labels: (N,) int64, 1 = a person is in the picture, 0 = not.

* ``SyntheticVWW`` draws the stand-in with ``synthetic.draw_example`` and
  keeps it in a cache file, so it is drawn once per machine;
* ``VisualWakeWords`` reads the real data set from its usual folder layout;
* ``ArrayDataset`` / ``as_dataset`` check and wrap arrays you already have;
* ``to_float`` turns stored bytes into model input (the validation transform;
  the training transform is ``augment.augment_batch``).
"""

import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..common import atomic_write, check_int, data_dir
from .synthetic import IMAGE_SIZE, draw_example

__all__ = ["SyntheticVWW", "VisualWakeWords", "ArrayDataset", "as_dataset", "to_float"]

_SUBSETS = ("train", "val")


def _check_subset(subset, where):
    if subset not in _SUBSETS:
        raise ValueError(f"{where}: subset must be 'train' or 'val', got {subset!r}")
    return subset


# ---------------------------------------------------------------------------
# The synthetic data set
# ---------------------------------------------------------------------------

class SyntheticVWW:
    """A drawn stand-in for Visual Wake Words: is there a person-like figure?

    Attributes:
        images: uint8 (N, 3, 96, 96), C-contiguous, values 0..255.
        labels: int64 (N,), 1 = a person-like figure is present.

    Every image has the same ingredients: a textured or gradient backdrop,
    random distractor shapes, and one set of figure parts -- a disc, a
    rounded bar and four two-segment limbs -- of the same sizes and colour
    distributions in both classes.  In a positive the parts form a person:
    head on top of the torso, arms at the shoulders, legs at the hips, a
    random pose, 30-90 % of the image tall, anywhere, sometimes cut by the
    frame's sides or bottom or under an occluder.  In a negative the same
    parts are arranged wrongly: 30 % are near-misses (head below or beside
    the body, limbs lying loose, limbs growing out of the head, a
    four-legged "table"), the rest are the parts thrown down as clutter.  So
    the label is carried by arrangement alone, which is what makes it a
    (small) vision task rather than a colour or size test.  Every part
    stands out from the backdrop in colour and brightness, in both classes.
    The drawing is in ``synthetic.py``; its knobs (FIGURE_HEIGHT,
    NEAR_MISS_RATE, ...) are constants there.

    The classes are exactly balanced for an even size (half each, shuffled).
    The images depend only on (subset, seed, size): train and val come from
    two independent random streams spawned from ``seed``, so val never
    repeats train.

    Default sizes, train 8,000 and val 2,000, and why:

    - Learning: the 0.25-width MobileNet has about 224k parameters. 8,000
      images, each seen under fresh random augmentation, are far more
      distinct inputs than it can memorise in the few epochs a lesson runs,
      and enough that every pose and near-miss kind appears hundreds of
      times, so it does not underfit for lack of examples.
    - Time: an epoch of 8,000 images (250 batches of 32) stays short enough
      on a laptop CPU to retrain after each pruning step in class (the
      README gives the time it takes).
    - Measurement: with 2,000 validation images the standard error of an
      accuracy near 90 % is sqrt(0.9 * 0.1 / 2000), about 0.7 points: fine
      enough to see the few points a pruning step costs.
    - Memory and disk: 8,000 x 27,648 bytes is about 220 MB as uint8, small
      enough to hold in memory on any laptop.

    Generated sets are cached as
    ``<cache_dir>/synthetic-vww-v{VERSION}-{subset}-seed{seed}-n{size}.npz``
    (``cache_dir`` defaults to ``data_dir() / "cache"``); a damaged cache
    file, or one whose first images this code does not draw the same way,
    is regenerated with a warning.
    """

    VERSION = 4  # bump whenever generation changes, so old caches are not reused
    DEFAULT_SIZES = {"train": 8000, "val": 2000}

    def __init__(self, subset="train", seed=0, size=None, cache_dir=None):
        _check_subset(subset, "SyntheticVWW")
        if size is None:
            size = self.DEFAULT_SIZES[subset]
        self.subset = subset
        self.size = check_int(size, "size (the number of images)", "SyntheticVWW", minimum=1)
        self.seed = check_int(seed, "seed", "SyntheticVWW", minimum=0)
        folder = Path(cache_dir) if cache_dir is not None else data_dir() / "cache"
        name = f"synthetic-vww-v{self.VERSION}-{subset}-seed{self.seed}-n{self.size}.npz"
        self.cache_path = folder / name
        self.images, self.labels = self._load_or_generate()

    def __len__(self):
        return len(self.labels)

    def __repr__(self):
        return f"SyntheticVWW(subset={self.subset!r}, seed={self.seed}, size={self.size})"

    @staticmethod
    def generate(subset, seed, size, first=None):
        """Draw a set without touching the cache.

        Returns (images uint8 (size, 3, 96, 96), labels int64 (size,)), with
        exactly size // 2 labels equal to 1, in a random order.  With
        ``first``, only the first ``first`` images are drawn (the labels are
        all there): enough to check that a cached set came from this code.
        """
        stream = _SUBSETS.index(subset)
        # spawn_key gives train and val independent child streams of one seed.
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))
        labels = np.zeros(size, dtype=np.int64)
        labels[: size // 2] = 1
        labels = rng.permutation(labels)
        count = size if first is None else min(first, size)
        images = np.empty((count, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        for i in range(count):
            images[i] = draw_example(rng, int(labels[i]))
        return images, labels

    def _load_or_generate(self):
        if self.cache_path.is_file():
            try:
                images, labels = self._load(self.cache_path)
                # A cache written by other drawing code (changed without a VERSION
                # bump) would silently be another data set: redraw two images and
                # compare, which is cheap next to drawing the whole set.
                fresh, fresh_labels = self.generate(self.subset, self.seed, self.size, first=2)
                if np.array_equal(labels, fresh_labels) and np.array_equal(images[:2], fresh):
                    return images, labels
                warnings.warn(f"SyntheticVWW: regenerating {self.cache_path}: it was drawn by a different "
                              "version of the generator", stacklevel=3)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
                warnings.warn(f"SyntheticVWW: regenerating damaged cache file {self.cache_path}: {error}",
                              stacklevel=3)
        images, labels = self.generate(self.subset, self.seed, self.size)
        try:
            atomic_write(self.cache_path, lambda file: np.savez(file, images=images, labels=labels))
        except OSError as error:  # a read-only disk should not stop a lesson
            warnings.warn(f"SyntheticVWW: could not cache {self.cache_path}: {error}", stacklevel=3)
        return images, labels

    def _load(self, path):
        with np.load(path, allow_pickle=False) as stored:
            images, labels = stored["images"], stored["labels"]
        want = (self.size, 3, IMAGE_SIZE, IMAGE_SIZE)
        if images.shape != want or images.dtype != np.uint8:
            raise ValueError(f"images are {images.dtype} {images.shape}, expected uint8 {want}")
        if labels.shape != (self.size,) or labels.dtype != np.int64:
            raise ValueError(f"labels are {labels.dtype} {labels.shape}, expected int64 ({self.size},)")
        return np.ascontiguousarray(images), labels


# ---------------------------------------------------------------------------
# The real Visual Wake Words layout
# ---------------------------------------------------------------------------

class VisualWakeWords:
    """Visual Wake Words read from disk, in the layout the course uses::

        <root>/train.txt   lines "<file name> <label>", label 0 or 1
        <root>/val.txt
        <root>/train/<file name>
        <root>/val/<file name>

    Blank lines in the lists are ignored. Every image is read with Pillow,
    converted to RGB and, if it is not already 96 x 96, resized bilinearly.

    Attributes:
        images: uint8 (N, 3, 96, 96), values 0..255, in list order.
        labels: int64 (N,), 1 = person.

    Raises FileNotFoundError for a missing list file or image, ValueError for
    a malformed list line, a label other than 0/1, or an image Pillow cannot
    read; messages name the file and, for list problems, the line number.
    Everything is loaded into memory: 27,648 bytes per image.
    """

    def __init__(self, root, subset="train"):
        self.root, self.subset = Path(root), _check_subset(subset, "VisualWakeWords")
        list_path = self.root / f"{subset}.txt"
        if not list_path.is_file():
            raise FileNotFoundError(f"VisualWakeWords: list file {list_path} not found; expected "
                                    f"lines '<file name> <label>' there")
        entries = _read_image_list(list_path)
        self.images = np.empty((len(entries), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        self.labels = np.array([label for _, _, label in entries], dtype=np.int64)
        for i, (line_number, name, _) in enumerate(entries):
            where = f"listed in {list_path}, line {line_number}"
            self.images[i] = _read_image(self.root / subset / name, where)

    def __len__(self):
        return len(self.labels)

    def __repr__(self):
        return f"VisualWakeWords({str(self.root)!r}, subset={self.subset!r})"


def _read_image_list(list_path):
    """Parse "<file name> <label>" lines into (line number, name, label)."""
    entries = []
    for line_number, line in enumerate(list_path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"VisualWakeWords: list file {list_path}, line {line_number}"
        if len(fields) != 2:
            raise ValueError(f"{where}: expected '<file name> <label>' (two fields, no spaces in the "
                             f"name), got {line.strip()!r}")
        name, label = fields
        if label not in ("0", "1"):
            raise ValueError(f"{where}: label must be 0 or 1, got {label!r}")
        entries.append((line_number, name, int(label)))
    return entries


def _read_image(path, where):
    """One image file as uint8 (3, 96, 96) RGB; ``where`` says which list line named it."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"VisualWakeWords: image {path} ({where}) not found")
    try:
        with Image.open(path) as picture:
            picture = picture.convert("RGB")
            if picture.size != (IMAGE_SIZE, IMAGE_SIZE):
                picture = picture.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            pixels = np.asarray(picture, dtype=np.uint8)  # (H, W, 3)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"VisualWakeWords: cannot read image {path} ({where}) as a picture: "
                         f"{error}") from error
    return pixels.transpose(2, 0, 1)


# ---------------------------------------------------------------------------
# Your own arrays
# ---------------------------------------------------------------------------

class ArrayDataset:
    """Arrays you already have, checked and wrapped as a data set.

    images: (N, C, H, W), uint8 in [0, 255] or float in [0, 1].
    labels: (N,) of 0/1 (any numeric or bool dtype); stored as int64.
    where: the name errors start with (``as_dataset`` passes its caller's).
    """

    def __init__(self, images, labels, where="ArrayDataset"):
        self.images, self.labels = _checked_arrays(images, labels, where)

    def __len__(self):
        return len(self.labels)


def as_dataset(data, where="as_dataset"):
    """Accept a data set object or an ``(images, labels)`` pair.

    A data set object is anything with ``.images`` and ``.labels``; it is
    checked and returned as it is. A pair is checked and wrapped in an
    ``ArrayDataset``. Raises ValueError naming what is wrong (rank, count,
    dtype, range, label values), TypeError for anything else; the messages
    start with ``where``, so a caller can put its own name (and argument) there.
    """
    if hasattr(data, "images") and hasattr(data, "labels"):
        _checked_arrays(data.images, data.labels, where)
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return ArrayDataset(*data, where=where)
    raise TypeError(f"{where}: expected a data set with .images and .labels or an (images, labels) "
                    f"pair, got {type(data).__name__}")


def _checked_arrays(images, labels, where):
    """(images, labels as int64), or a ValueError that starts with ``where``."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4:
        raise ValueError(f"{where}: images must have rank 4, N x C x H x W; got shape {images.shape}")
    if images.dtype == np.uint8:
        pass
    elif np.issubdtype(images.dtype, np.floating):
        if images.size and not (np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
            raise ValueError(f"{where}: float images must lie in [0, 1]; got values from "
                             f"{images.min()} to {images.max()}")
    else:
        raise ValueError(f"{where}: images must be uint8 in [0, 255] or float in [0, 1]; "
                         f"got dtype {images.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"{where}: labels must have shape (N,); got shape {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{where}: {len(images)} images but {len(labels)} labels; expected one label "
                         "per image")
    if not (np.issubdtype(labels.dtype, np.number) or labels.dtype == bool):
        raise ValueError(f"{where}: labels must be numbers 0 or 1; got dtype {labels.dtype}")
    bad = np.unique(labels[(labels != 0) & (labels != 1)])
    if bad.size:
        raise ValueError(f"{where}: labels must be 0 or 1; found {bad[:5].tolist()}")
    return images, labels.astype(np.int64)


# ---------------------------------------------------------------------------
# From bytes to model input
# ---------------------------------------------------------------------------

def to_float(images):
    """The validation transform: uint8 (N, C, H, W) -> float32 in [0, 1].

    Float input is taken to be in [0, 1] already and only cast to float32.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) * np.float32(1 / 255)
    return images.astype(np.float32, copy=False)
