"""Batches: a data set cut into shuffled, transformed batches of model input."""

import numpy as np

from ..common import check_bool, check_int
from .augment import augment_batch
from .datasets import as_dataset, to_float

__all__ = ["DataLoader"]


class DataLoader:
    """Iterate over a data set in batches of model input.

    Each iteration is one epoch and yields ``(x, y)``: x float32
    (B, C, H, W) in [0, 1] (the stored size, or min(H, W, 96) a side when augmenting),
    y float32 (B,) of 0/1. Iteration k (counting from 0; ``loader.epoch``
    is the next one and may be set to resume) uses a fresh permutation and
    augmentation stream drawn from (seed, k), so two epochs differ while the
    whole sequence repeats for the same seed.

    data: anything ``as_dataset`` accepts.
    batch_size: images per batch, an integer >= 1.
    shuffle: False keeps the stored order.
    seed: an integer >= 0 that fixes every epoch's order and augmentation.
    drop_last: drop a final batch smaller than batch_size.
    augment: True applies ``augment_batch``, else ``to_float``.

    The three switches must be True or False: a string such as "no" would
    otherwise count as True. Every argument is checked here, and
    ``epoch`` when an epoch starts, each error naming the argument.
    """

    def __init__(self, data, batch_size=32, shuffle=True, seed=0, drop_last=False, augment=False):
        self.batch_size = check_int(batch_size, "batch_size", "DataLoader", minimum=1)
        self.seed = check_int(seed, "seed", "DataLoader", minimum=0)
        self.shuffle = check_bool(shuffle, "shuffle", "DataLoader")
        self.drop_last = check_bool(drop_last, "drop_last", "DataLoader")
        self.augment = check_bool(augment, "augment", "DataLoader")
        self.data = as_dataset(data, "DataLoader")
        self.epoch = 0

    def __len__(self):
        n = len(self.data.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        epoch = check_int(self.epoch, "epoch", "DataLoader", minimum=0)
        self.epoch = epoch + 1
        # Two independent streams per epoch: the order, and the augmentation.
        order_seed, augment_seed = np.random.SeedSequence([self.seed, epoch]).spawn(2)
        n = len(self.data.labels)
        order = np.random.default_rng(order_seed).permutation(n) if self.shuffle else np.arange(n)
        return self._batches(order, np.random.default_rng(augment_seed))

    def _batches(self, order, rng):
        images, labels = np.asarray(self.data.images), np.asarray(self.data.labels)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            chosen = order[start:start + self.batch_size]
            x = augment_batch(images[chosen], rng) if self.augment else to_float(images[chosen])
            yield x, labels[chosen].astype(np.float32)
