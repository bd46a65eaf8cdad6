"""Data sets: the drawn stand-in, the real Visual Wake Words, and your own arrays.

Every data set here is a plain object with two arrays, which is all the rest
of tinyprune asks of one (``as_dataset`` accepts anything that has them):

    images: (N, 3, 96, 96) uint8, values 0..255 (ArrayDataset also takes
            other sizes, and float images in [0, 1]);
    labels: (N,) int64, 1 = a person is in the picture, 0 = not.

* ``SyntheticVWW`` draws the stand-in with ``synthetic.draw_example`` and
  keeps it in a cache file, so it is drawn once per machine;
* ``VisualWakeWords`` reads the real data set from its usual folder layout
  (the reading of its files, untrusted input, is in ``files.py``);
* ``ArrayDataset`` / ``as_dataset`` check and wrap arrays you already have;
* ``to_float`` turns stored bytes into model input (the validation transform;
  the training transform is ``augment.augment_batch``).
"""

import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..common import atomic_write, check_int, data_dir
from .files import image_paths, read_image, read_image_list
from .synthetic import IMAGE_SIZE, draw_example

__all__ = ["SyntheticVWW", "VisualWakeWords", "ArrayDataset", "as_dataset", "to_float"]

_SUBSETS = ("train", "val")


def _check_subset(subset, where):
    if not isinstance(subset, str) or subset not in _SUBSETS:
        raise ValueError(f"{where}: subset must be 'train' or 'val', got {subset!r}")
    return subset


def _check_folder(value, name, where):
    """``value`` as a Path, or an error naming the argument.

    An empty string is refused (it would silently mean the current folder,
    and usually comes from an unset variable), and so is a NUL character,
    which no file system accepts in a name.
    """
    try:
        text = os.fspath(value)
    except TypeError:
        text = None
    if not isinstance(text, str):
        raise TypeError(f"{where}: {name} must be a path (str or os.PathLike), got {value!r}")
    if text == "" or "\0" in text:
        raise ValueError(f"{where}: {name} must be a non-empty path without NUL characters, "
                         f"got {value!r}")
    return Path(text)


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
        if cache_dir is None:
            folder = data_dir() / "cache"
        else:
            folder = _check_folder(cache_dir, "cache_dir", "SyntheticVWW")
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
        where = "SyntheticVWW.generate"
        stream = _SUBSETS.index(_check_subset(subset, where))
        seed = check_int(seed, "seed", where, minimum=0)
        size = check_int(size, "size (the number of images)", where, minimum=1)
        if first is not None:
            first = check_int(first, "first (the number of images to draw)", where, minimum=0)
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

    The list files are UTF-8 text; a byte-order mark at the start (Windows
    editors write one) is skipped. Lines may end in \\n, \\r\\n or \\r; blank
    lines are ignored. A file name may go into a subfolder
    (``kitchen/0001.jpg``) but must stay inside ``root``: a name that climbs
    out with ``..``, an absolute name, or a symbolic link whose target lies
    outside is refused, so a list file (often downloaded) cannot make this
    read files elsewhere on the machine. Links that stay inside ``root`` are
    followed, and so are links inside ``<root>/<subset>`` when that folder
    is itself a link (to a larger disk, say).

    Every image is read with Pillow, converted to RGB and, if it is not
    already 96 x 96, resized bilinearly. Sixteen-bit pictures are scaled to
    8 bits, grey ones included, which Pillow alone would clip to white (see
    ``files._eight_bit``). A picture whose header declares more pixels
    than Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``)
    is refused before its pixels are decoded.

    Attributes:
        images: uint8 (N, 3, 96, 96), values 0..255, in list order.
        labels: int64 (N,), 1 = person.

    Everything that can be checked is checked before the first image is
    decoded: the list file, then every file it names. FileNotFoundError for
    a missing list file or image; ValueError for a list file that is not
    UTF-8, names no image, or has a line that is not "<file name> <label>"
    with label 0 or 1; for a name that leads outside ``root`` or to a folder;
    for a picture Pillow cannot read or that is too large. Every message
    names the file and, for anything the list file said, its line. The
    files are only read, never changed. Everything is loaded into memory:
    27,648 bytes per image.
    """

    def __init__(self, root, subset="train"):
        self.root = _check_folder(root, "root", "VisualWakeWords")
        self.subset = _check_subset(subset, "VisualWakeWords")
        list_path = self.root / f"{subset}.txt"
        entries = read_image_list(list_path)
        paths = image_paths(self.root, self.root / subset, entries)
        self.labels = np.array([label for _, _, label in entries], dtype=np.int64)
        self.images = np.empty((len(entries), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        for i, ((where, _, _), path) in enumerate(zip(entries, paths)):
            self.images[i] = read_image(path, where)

    def __len__(self):
        return len(self.labels)

    def __repr__(self):
        return f"VisualWakeWords({str(self.root)!r}, subset={self.subset!r})"


# ---------------------------------------------------------------------------
# Your own arrays
# ---------------------------------------------------------------------------

class ArrayDataset:
    """Arrays you already have, checked and wrapped as a data set.

    images: (N, C, H, W), uint8 in [0, 255] or float in [0, 1]; C, H and W
        at least 1.
    labels: (N,) of 0/1 (any integer, float or bool dtype); stored as int64.
    where: the name errors start with (``as_dataset`` passes its caller's).
    allow_empty: False refuses N = 0 (see ``as_dataset``).
    """

    def __init__(self, images, labels, where="ArrayDataset", allow_empty=True):
        self.images, self.labels = _checked_arrays(images, labels, where, allow_empty)

    def __len__(self):
        return len(self.labels)


def as_dataset(data, where="as_dataset", allow_empty=True):
    """Accept a data set object or an ``(images, labels)`` pair.

    A data set object is anything with ``.images`` and ``.labels``; it is
    checked and returned as it is. A pair is checked and wrapped in an
    ``ArrayDataset``. Raises ValueError naming what is wrong (rank, sizes,
    count, dtype, range, label values), TypeError for anything else; the
    messages start with ``where``, so a caller can put its own name (and
    argument) there.

    A set of 0 images is a valid value (a filter may leave nothing), so it
    is accepted unless the caller passes ``allow_empty=False``: a training
    loop or an evaluation, for which an empty set is always a mistake, asks
    for that and gets a ValueError instead of a loss or accuracy of 0/0.
    """
    if hasattr(data, "images") and hasattr(data, "labels"):
        _checked_arrays(data.images, data.labels, where, allow_empty)
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return ArrayDataset(*data, where=where, allow_empty=allow_empty)
    raise TypeError(f"{where}: expected a data set with .images and .labels or an (images, labels) "
                    f"pair, got {type(data).__name__}")


def _checked_arrays(images, labels, where, allow_empty=True):
    """(images, labels as int64), or a ValueError that starts with ``where``."""
    images, labels = as_pixels(images, where), _as_array(labels, "labels", where)
    if images.ndim != 4:
        raise ValueError(f"{where}: images must have rank 4, N x C x H x W; got shape {images.shape}")
    if 0 in images.shape[1:]:
        raise ValueError(f"{where}: images must have at least one channel, row and column; got shape "
                         f"{images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{where}: labels must have shape (N,); got shape {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{where}: {len(images)} images but {len(labels)} labels; expected one label "
                         "per image")
    if not allow_empty and len(labels) == 0:
        raise ValueError(f"{where}: the data set is empty (0 images); expected at least one")
    if labels.dtype.kind not in "biuf":  # bool, integer, float: no strings, objects or complex
        raise ValueError(f"{where}: labels must be numbers 0 or 1; got dtype {labels.dtype}")
    bad = np.unique(labels[(labels != 0) & (labels != 1)])
    if bad.size:
        raise ValueError(f"{where}: labels must be 0 or 1; found {bad[:5].tolist()}")
    return images, labels.astype(np.int64)


def _as_array(value, name, where):
    """``np.asarray(value)``, with NumPy's complaint about ragged nesting given a name."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where}: {name} cannot be made into one array: {error}") from None


def as_pixels(images, where):
    """``images`` as an array of pixels: uint8 (0..255) or float in [0, 1], any shape.

    Anything else raises a ValueError that starts with ``where``. Other
    integer types are refused rather than guessed at (int32 values might
    mean 0..255 or 0..65535); NaN and infinity are refused, as one would
    poison a whole batch.
    """
    images = _as_array(images, "images", where)
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind != "f":
        raise ValueError(f"{where}: images must be uint8 in [0, 255] or float in [0, 1]; "
                         f"got dtype {images.dtype}")
    if images.size and not (np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
        raise ValueError(f"{where}: float images must lie in [0, 1]; got values from "
                         f"{images.min()} to {images.max()}")
    return images


# ---------------------------------------------------------------------------
# From bytes to model input
# ---------------------------------------------------------------------------

def to_float(images):
    """The validation transform: uint8 (N, C, H, W) -> float32 in [0, 1].

    Float input must be in [0, 1] already and is only cast to float32; any
    other dtype, or floats outside [0, 1], raise ValueError.
    """
    images = as_pixels(images, "to_float")
    if images.dtype == np.uint8:
        return images.astype(np.float32) * np.float32(1 / 255)
    return images.astype(np.float32, copy=False)
