"""Repeat-factor sampling: training images with rare classes are seen more often.

The scheme of LVIS (Gupta et al., 2019; detectron2's ``RepeatFactorTrainingSampler``): with
``f(c)`` the share of training images that contain class ``c`` and a threshold ``t``, the class
repeat factor is ``r(c) = max(1, sqrt(t / f(c)))`` and an image is repeated ``r(i) = max over
its classes of r(c)`` times per epoch. Classes in at least a share ``t`` of the images are left
alone; a class in a quarter of that share is seen twice as often. Fractional factors are
rounded once, at random but from the seed, so an epoch always has the same length (the
resumable sampler and the learning-rate schedule rely on it).

Why for fashion: of CCP's 59 classes, a dozen garments (blazer, romper, vest, ...) are each in a
few percent of the photos; in a short budget the model never predicts them, and each one
absent costs 1/47 of the test mIoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from fashionvision.errors import UserError


def repeat_factors(image_classes: Sequence[np.ndarray], threshold: float) -> np.ndarray:
    """``r(i)`` per image (float, >= 1) from the classes each image contains.

    Args:
        image_classes: per training image, the class indices it contains (any order, repeats
            allowed; an image without classes gets 1).
        threshold: ``t``; classes in a share of the images below it are oversampled.
    """
    if not 0 < threshold <= 1:
        raise UserError(f"repeat threshold {threshold}: must be in (0, 1]")
    per_image = [np.unique(np.asarray(c, dtype=np.int64)) for c in image_classes]
    if not per_image:
        return np.ones(0)
    share = np.bincount(np.concatenate(per_image)).astype(np.float64) / len(per_image)
    class_factor = np.ones_like(share)
    present = share > 0
    class_factor[present] = np.maximum(1.0, np.sqrt(threshold / share[present]))
    return np.array([class_factor[c].max() if len(c) else 1.0 for c in per_image])


def repeat_counts(factors: np.ndarray, seed: int) -> np.ndarray:
    """Whole repeats per image: ``floor(r)`` plus one with probability ``r - floor(r)``."""
    factors = np.asarray(factors, dtype=np.float64)
    whole = np.floor(factors)
    extra = np.random.default_rng([int(seed), 0x5EED]).random(len(factors)) < factors - whole
    return (whole + extra).astype(np.int64)


class RepeatedDataset(Dataset):
    """A training dataset in which image ``i`` appears ``counts[i]`` times.

    Each copy draws its own augmentation: copy ``k`` of image ``i`` uses the augmentation
    stream ``i + k * len(dataset)`` of the wrapped dataset (copy 0 is the unrepeated item, so
    counts of all ones change nothing; a dataset without an ``item(index, stream)`` method
    gives its copies the same augmentation). Other attributes (``set_epoch``, ``bad_images``, ...)
    are the wrapped dataset's.
    """

    def __init__(self, dataset: Any, counts: np.ndarray):
        counts = np.asarray(counts, dtype=np.int64)
        if len(counts) != len(dataset):
            raise ValueError(f"{len(counts)} repeat counts for {len(dataset)} images")
        if (counts < 1).any():
            raise ValueError("every image must appear at least once")
        self.dataset = dataset
        self.counts = counts
        self.base = np.repeat(np.arange(len(counts)), counts)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.copy = np.arange(len(self.base)) - np.repeat(first, counts)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Any:
        base = int(self.base[index])
        if not hasattr(self.dataset, "item"):  # a dataset without streams: copies augment alike
            return self.dataset[base]
        return self.dataset.item(base, stream=base + int(self.copy[index]) * len(self.dataset))

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)
