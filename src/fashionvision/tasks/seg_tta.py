"""Multi-scale test-time augmentation of a segmenter (``model.tta_scales``).

mmsegmentation's ``aug_test`` with ``img_ratios``: the photo is also resized so its long side is
``ratio x model.image_size`` for each ratio, each version goes through the network (with the
flip too when ``model.tta_flip`` is set), and the logits are averaged. Views at several scales
err differently on garments whose size is far from the training crops', so the average is
steadier than any one of them.

Each extra scale is prepared from the ORIGINAL photo with the evaluation's own preprocessing
(:func:`~fashionvision.data.prepare.prepare_batch` at another long side), not by
resizing the already-letterboxed batch: upsampling a 256-px input adds no detail, and on the
CCP val split it gave half the gain (0.0751 -> 0.0757 against 0.0763, 8 checkpoints). The
original comes from the meta (``meta["source"]``, set by ``prepare_image``) or is read again
from ``meta["path"]`` (the evaluation dataset's images).

The logits of each scale are cropped to the photo inside their letterbox, resized (bilinear)
to the photo's region in the base batch and added there; the sum is divided by the number of
scales. Everything after (logit adjustment, the resize to the original size, the argmax) is
unchanged, so every front end (``fashion-eval``, ``fashion-predict``, the app, ONNX files)
decodes the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fashionvision.errors import UserError

if TYPE_CHECKING:  # the base class: segmentation.py imports this module (no cycle)
    from fashionvision.tasks.base import Task

#: ratios outside this range are refused: below, a 416-px model would see ~100-px photos
SCALE_RANGE = (0.25, 4.0)


def check_scales(key: str, scales: list[float] | None) -> list[float] | None:
    """``scales`` as floats, or a one-line refusal of what cannot mean anything: not a list of
    numbers, empty, duplicated, out of range, or without 1. The model config and the
    ``fashion-eval`` / ``fashion-predict`` override both come through here."""
    if scales is None:
        return None
    if not isinstance(scales, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in scales):
        raise UserError(f"{key} must be a list of ratios such as [0.875,1,1.125], got {scales!r}")
    values = [float(s) for s in scales]
    low, high = SCALE_RANGE
    if not values or any(not low <= s <= high for s in values):
        raise UserError(f"{key} must be null or a list of ratios in [{low:g}, {high:g}], got {list(scales)!r}")
    if len(set(values)) != len(values):
        raise UserError(f"{key} lists a ratio twice: {list(scales)!r}")
    if 1.0 not in values:
        raise UserError(f"{key} must contain 1 (the model's own image_size, the batch every "
                        f"other scale is averaged into), got {list(scales)!r}")
    return values


def source_image(meta: dict) -> np.ndarray:
    """The original RGB photo of one prepared image: kept in its meta, else read from its path."""
    source = meta.get("source")
    if source is not None:
        return source
    path = meta.get("path")
    if not path:
        raise UserError("multi-scale test-time augmentation (model.tta_scales) needs the original "
                        "photo, and this image has neither its pixels nor a path")
    from fashionvision.data.image_io import read_image

    try:
        return read_image(path)
    except OSError as exc:
        raise UserError(f"model.tta_scales needs the original photo: {exc}") from None


def multiscale_logits(task: Task, model: nn.Module, logits: torch.Tensor,
                      metas: list[dict], scales: list[float]) -> torch.Tensor:
    """``logits`` (the base batch's, ``[B, C, H, W]``) averaged with those of the other scales.

    Each scale's logits are resized into the photo's region of the base batch; the padding of
    the base batch keeps the base logits (nothing reads it: decoding crops the letterbox).
    """
    from fashionvision.data.prepare import prepare_batch
    from fashionvision.tasks.seg_upsample import crop_letterbox

    total = logits.float().clone()
    others = [float(s) for s in scales if float(s) != 1.0]
    if not others:
        return total
    sources = [source_image(meta) for meta in metas]
    for ratio in others:
        size = max(1, round(task.image_size * ratio))
        batch, scaled_metas = prepare_batch(sources, size, task.rect_input)
        scaled = task.forward_logits(model, task._input(batch.to(logits.device))).float()
        for i, (meta, scaled_meta) in enumerate(zip(metas, scaled_metas)):
            left, top = (int(v) for v in meta.get("pad", (0, 0)))
            height, width = crop_letterbox(total[i], meta).shape[-2:]
            region = crop_letterbox(scaled[i], scaled_meta)
            region = F.interpolate(region.unsqueeze(0), size=(height, width), mode="bilinear",
                                   align_corners=False).squeeze(0)
            total[i, :, top:top + height, left:left + width] += region
    return total / (1 + len(others))
