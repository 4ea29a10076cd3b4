"""Class priors of a segmentation training split: the classes of each mask, pixel counts per
class and their log shares.

Repeat-factor sampling (``trainer.repeat_threshold``) reads the classes of each mask; three
recipe options read the pixel counts (all off by default): class-weighted cross-entropy
(``model.class_weights``), the logit-adjusted loss (``model.logit_adjust_loss``) and the
logit-adjusted decision rule (``model.logit_adjust``, :meth:`SegmentationTask.decision_bias
<fashionvision.tasks.segmentation.SegmentationTask.decision_bias>`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import torch

from fashionvision.data.cache import read_mask
from fashionvision.data.image_io import ImageReadError
from fashionvision.errors import UserError


def mask_labels(path: str | os.PathLike, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """One training mask's class indices as a flat int64 array, padding and values >= C left out.

    Raises:
        UserError: the mask file is missing or unreadable (named).
    """
    try:
        values = read_mask(path).reshape(-1).astype(np.int64)
    except ImageReadError as exc:
        raise UserError(f"cannot read a training mask: {exc}") from None
    return values[(values != ignore_index) & (values < num_classes)]


def pixel_frequencies(mask_paths: Iterable[str | os.PathLike], num_classes: int,
                      ignore_index: int = 255) -> np.ndarray:
    """Pixel count per class over class-index mask PNGs (read once; values >= C are ignored).

    Raises:
        UserError: a mask file is missing or unreadable (named).
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    for path in mask_paths:
        counts += np.bincount(mask_labels(path, num_classes, ignore_index), minlength=num_classes)
    return counts


def log_prior(counts: np.ndarray) -> torch.Tensor:
    """``log`` of each class's share of the training pixels, add-one smoothed.

    The smoothing keeps a class that never occurs in the training masks finite (its log share
    is then the smallest, about ``-log(total pixels)``) instead of minus infinity.
    """
    counts = np.asarray(counts, dtype=np.float64) + 1.0
    return torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)
