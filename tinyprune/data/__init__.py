"""Images and labels for the pruning tutorial, from disk to batches.

The course trains MobileNet v1 (width 0.25) on Visual Wake Words: 96 x 96 RGB
images with one binary label, 1 when a person is in the picture. This
package brings that data to the training loop; its modules, in reading
order:

1. ``synthetic.py`` draws a stand-in data set (the machines this runs on
   have no internet): stick-and-block people versus the same parts jumbled;
   ``shapes.py`` holds the shapes it draws with and their painting kernel.
2. ``datasets.py``: ``SyntheticVWW`` keeps the drawn set in a cache file,
   ``VisualWakeWords`` reads the real data set from its usual folder layout
   (``files.py`` reads its list files and pictures, refusing hostile ones),
   ``as_dataset`` lets you bring your own arrays instead, and ``to_float``
   turns stored bytes into model input (the validation transform).
3. ``augment.py``: ``augment_batch``, the training transform (a random
   rotation, shift, zoom and mirror per image).
4. ``loader.py``: ``DataLoader`` cuts a data set into shuffled batches.

Where the data folder is (``data_dir``) is decided in ``tinyprune.common``
and re-exported here.

Conventions used everywhere below: images are NCHW. Stored images are uint8
(N, 3, 96, 96) with values 0..255; model input is float32 in [0, 1]. Stored
labels are int64 0/1 of shape (N,); batches carry them as float32 (B,), ready
for a binary cross-entropy. Pixel coordinates are (row, column) = (y, x) with
y pointing down, as in the arrays themselves.
"""

from ..common import data_dir
from .augment import augment_batch
from .datasets import ArrayDataset, SyntheticVWW, VisualWakeWords, as_dataset, to_float
from .loader import DataLoader
from .synthetic import IMAGE_SIZE

__all__ = [
    "IMAGE_SIZE",
    "data_dir",
    "SyntheticVWW",
    "VisualWakeWords",
    "ArrayDataset",
    "as_dataset",
    "to_float",
    "augment_batch",
    "DataLoader",
]
