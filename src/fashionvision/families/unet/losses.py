"""Segmentation losses as named terms: cross-entropy, Dice, both (the default), or CE + Lovasz.

* **Cross-entropy** per pixel, optionally weighted per class from the training split's pixel
  frequencies (:func:`class_weights_from_frequencies`), so that rare garments are not drowned
  by background and skin.
* **Dice** (multi-class soft Dice): for each class present in the batch's ground truth,
  ``1 - 2|P∩G| / (|P| + |G|)`` over softmax probabilities, averaged over those classes.
  Each present class counts equally however few its pixels, which is what mIoU rewards.

* **Lovasz-softmax** (Berman et al., 2018; segmentation-models-pytorch's ``LovaszLoss``): a
  convex surrogate of each present class's Jaccard loss, i.e. of the IoU itself.
* **Logit adjustment** (Menon et al., 2021, "Long-tail learning via logit adjustment"): the
  cross-entropy sees ``logits + tau * log(prior)``, ``prior`` being each class's share of the
  training pixels (:func:`~fashionvision.tasks.class_prior.log_prior`). A common class then has
  to win by a wider margin than a rare one; predictions leave the shift out, so the network's own
  logits come out corrected for the prior (``model.logit_adjust_loss``; measured worse than the
  post-hoc rule of :meth:`~fashionvision.tasks.segmentation.SegmentationTask.decision_bias` on the
  CPU recipe, see ``benchmarks/HISTORY.md``).

All ignore pixels equal to ``ignore_index`` (letterbox padding) and are computed in float32
even under autocast. CE and Dice have no Python loops over classes or images (a handful of fused
tensor ops); the library's Lovasz term sorts each present class's errors in turn, so it sees a
random sample of the batch's pixels (:func:`sample_pixels`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fashionvision.errors import UserError

LOSS_TERMS = {"ce": ("ce",), "dice": ("dice",), "ce+dice": ("ce", "dice"), "ce+lovasz": ("ce", "lovasz")}


def pixels_by_class(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 logits and targets laid out for ``F.cross_entropy``, fastest layout first.

    Channels-last logits (``trainer.channels_last``) are already one row of C scores per
    pixel in memory, so they are handed over as a ``[pixels, C]`` view: the 4-D call would
    walk them with a stride of C, which costs about a third more on a CPU (8 x 59 x 128 x 128,
    two threads: 51 -> 39 ms for forward and backward). Contiguous ``[N, C, H, W]`` logits
    stay 4-D, where that is the fast path (36 ms; flattening them would copy, 50 ms).
    """
    logits = logits.float()
    if logits.dim() == 4 and not logits.is_contiguous() and logits.is_contiguous(
            memory_format=torch.channels_last):
        return logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1]), target.reshape(-1)
    return logits, target


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  ignore_index: int = 255, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean (class-weighted) cross-entropy over the pixels that are not ignored.

    Unlike ``F.cross_entropy(reduction="mean")`` this is 0, not NaN, when every pixel is
    ignored (an all-padding crop must not poison the run). ``label_smoothing`` mixes each
    target with the uniform distribution over the classes (PyTorch's rule; ignored pixels
    stay ignored).
    """
    logits, target = pixels_by_class(logits, target)
    total = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="sum",
                            label_smoothing=label_smoothing)
    valid = target != ignore_index
    if weight is None:
        denom = valid.sum()
    else:
        denom = (weight[target.clamp(0, weight.numel() - 1)] * valid).sum()
    return total / denom.clamp(min=1e-6)


def hardest_pixels_cross_entropy(logits: torch.Tensor, target: torch.Tensor, share: float,
                                 weight: torch.Tensor | None = None,
                                 ignore_index: int = 255) -> torch.Tensor:
    """Mean cross-entropy over the ``share`` of the valid pixels with the highest loss (OHEM).

    Most pixels of a fashion photo are background or skin the model already gets right after
    a few hundred steps; averaging only the hardest ones (garment borders, rare garments)
    keeps their gradient from being diluted. Without class weights, ``share=1`` is
    :func:`cross_entropy` (with them, the kept pixels' weighted losses are averaged plainly).
    """
    logits, target = pixels_by_class(logits, target)
    losses = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index,
                             reduction="none").flatten()
    valid = losses[(target != ignore_index).flatten()]
    if valid.numel() == 0:
        return losses.sum() * 0.0
    kept = max(1, int(round(share * valid.numel())))
    return valid.topk(kept, sorted=False).values.mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255,
              smooth: float = 1.0) -> torch.Tensor:
    """Multi-class soft Dice loss over the classes present in ``target`` (ignoring padding).

    Args:
        logits: ``[B, C, H, W]``.
        target: ``[B, H, W]`` int64 class indices or ``ignore_index``.
        smooth: added to numerator and denominator; keeps tiny classes' gradients sane.
    """
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1)
    valid = (target != ignore_index).unsqueeze(1)                       # [B,1,H,W]
    classes = torch.arange(num_classes, device=target.device).view(1, -1, 1, 1)
    onehot = target.unsqueeze(1) == classes                              # bool [B,C,H,W]; ignore matches nothing
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    gt_pixels = onehot.sum(dims).float()
    pred_pixels = (probs * valid).sum(dims)
    dice = (2 * intersection + smooth) / (gt_pixels + pred_pixels + smooth)
    present = (gt_pixels > 0).float()
    # A weighted mean instead of boolean indexing: no host-device synchronisation.
    return ((1 - dice) * present).sum() / present.sum().clamp(min=1)


def sample_pixels(logits: torch.Tensor, target: torch.Tensor, count: int | None,
                  ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random non-ignored pixels of a batch as ``[1, C, 1, count]`` logits and
    ``[1, 1, count]`` targets (all valid pixels when there are fewer, or ``count`` is None).

    Drawn from torch's global generator, so a seeded run draws the same pixels.
    """
    if count is None:
        return logits, target
    valid = (target != ignore_index).nonzero()                         # [N, 3]: image, row, column
    if valid.shape[0] > count:
        valid = valid[torch.randperm(valid.shape[0], device=valid.device)[:count]]
    image, row, column = valid.unbind(1)
    picked = logits[image, :, row, column]                               # [n, C], no full-size copy
    return picked.t().reshape(1, logits.shape[1], 1, -1), target[image, row, column].view(1, 1, -1)


class SegmentationLoss(nn.Module):
    """``ce``, ``dice``, ``ce+dice`` or ``ce+lovasz``: returns ``{"ce": ..., "dice": ...}`` (the engine sums).

    Args:
        kind: which terms.
        class_weights: optional ``[C]`` cross-entropy weights.
        ignore_index: target value of pixels that count for nothing.
        weights: optional multiplier per term, e.g. ``{"dice": 0.5}``.
        ohem: cross-entropy over only this share of the hardest pixels (None = all).
        logit_shift: optional ``[C]`` added to the logits of the cross-entropy term only
            (``tau * log(prior)``, see the module docstring).
        label_smoothing: share of each pixel's cross-entropy target spread evenly over the
            classes (0 = plain one-hot targets).
        lovasz_pixels: the Lovasz term sees this many random valid pixels of the batch (None =
            all). Measured on one CPU thread, forward and backward, 12 classes present: about
            0.58 s a step for all 8 x 128 x 128 pixels (more than the network), 0.09 s for 16,384.
    """

    def __init__(self, kind: str = "ce+dice", class_weights: torch.Tensor | None = None,
                 ignore_index: int = 255, weights: dict[str, float] | None = None,
                 ohem: float | None = None, lovasz_pixels: int | None = 16384,
                 logit_shift: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.ohem = ohem
        self.label_smoothing = float(label_smoothing)
        if self.label_smoothing and ohem is not None and ohem < 1:
            raise UserError("model.label_smoothing and model.ohem cannot be combined (the hardest "
                            "pixels are chosen by their one-hot loss)")
        self.lovasz_pixels = lovasz_pixels
        if kind not in LOSS_TERMS:
            raise UserError(f"model.loss={kind!r}: choose one of {', '.join(LOSS_TERMS)}")
        self.terms = LOSS_TERMS[kind]
        self.ignore_index = ignore_index
        self.term_weights = {t: float((weights or {}).get(t, 1.0)) for t in self.terms}
        if "lovasz" in self.terms:
            from segmentation_models_pytorch.losses import LovaszLoss

            # the library's Lovasz-softmax over the batch's present classes
            self.lovasz = LovaszLoss("multiclass", per_image=False, ignore_index=ignore_index)
        self.register_buffer("class_weights", None if class_weights is None
                             else torch.as_tensor(class_weights, dtype=torch.float32))
        self.register_buffer("logit_shift", None if logit_shift is None
                             else torch.as_tensor(logit_shift, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        # float32 whatever the autocast state: softmax sums over 59 classes and Dice's ratios
        # lose too much in bf16.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            out = {}
            if "ce" in self.terms:
                ce_logits = logits if self.logit_shift is None else logits.float() + self.logit_shift
                if self.ohem is not None and self.ohem < 1:
                    out["ce"] = hardest_pixels_cross_entropy(ce_logits, target, self.ohem, self.class_weights,
                                                             self.ignore_index)
                else:
                    out["ce"] = cross_entropy(ce_logits, target, self.class_weights, self.ignore_index,
                                              self.label_smoothing)
            if "dice" in self.terms:
                out["dice"] = dice_loss(logits, target, self.ignore_index)
            if "lovasz" in self.terms:
                out["lovasz"] = self.lovasz(*sample_pixels(logits.float(), target, self.lovasz_pixels,
                                                           self.ignore_index))
            return {k: v * self.term_weights[k] if self.term_weights[k] != 1.0 else v
                    for k, v in out.items()}


def class_weights_from_frequencies(counts: np.ndarray, c: float = 1.02) -> torch.Tensor:
    """Cross-entropy weights ``1 / ln(c + f)`` from pixel counts (ENet's scheme).

    Plain inverse frequency would weight a class seen on a few hundred pixels ten thousand
    times more than background and make training unstable; the logarithm bounds the ratio to
    about 50 while still lifting rare classes. Classes absent from the counts get the largest
    weight (they cannot affect the loss anyway). Weights are scaled so that their
    pixel-weighted mean is 1, keeping the loss on the same scale as unweighted CE.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise UserError("class weights: the training masks contain no labelled pixel")
    weights = 1.0 / np.log(c + counts / total)
    weights /= (weights * counts).sum() / total
    return torch.tensor(weights, dtype=torch.float32)
