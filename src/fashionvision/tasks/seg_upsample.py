"""Class labels at the original resolution in bounded memory, however large the photo.

Resizing all ``C`` logit maps to the original size before the argmax (what
:func:`~fashionvision.tasks.segmentation.logits_to_original` does) costs ``C x H x W`` float32:
8.5 GB for 59 classes on a 6000 x 6000 photo, whatever the model's resolution. The result
that matters is much smaller: the class of each pixel (and how sure the model is of it).

:func:`labels_at_original` computes the same bilinear interpolation (PyTorch's
``align_corners=False`` rule) in bands of output rows and keeps only the argmax and the
probability of the winning class (``confidence``: all the callers used of the probabilities,
a class's score being its mean over the class's pixels). Up to :data:`EXACT_PIXELS` output
pixels the labels are the evaluation's exact ones (its numbers do not change); above, they
are computed at that many pixels and resized to the photo with nearest neighbour, so work
and memory stay bounded: one band plus 12 bytes per output pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: output pixels handled at once (~40 bytes each while a band is worked on)
BAND_PIXELS = 1 << 20
#: output sizes up to this many pixels get the exact bilinear labels (CCP photos: 0.46 Mpx)
EXACT_PIXELS = 2_000_000
#: float32 bytes of one band of blended logits when the confidence is asked for
CONFIDENCE_BAND_BYTES = 16 << 20
#: class-border pixels whose C logits are blended at once (C x 4 bytes each)
BORDER_CHUNK = 1 << 14


def crop_letterbox(logits: torch.Tensor, meta: dict) -> torch.Tensor:
    """The part of letterboxed ``[C, H, W]`` logits that covers the image (padding cropped)."""
    h, w = (int(v) for v in meta["orig_size"])
    scale = float(meta.get("scale", 1.0))
    left, top = (int(v) for v in meta.get("pad", (0, 0)))
    height, width = logits.shape[-2:]
    content_h = min(height - top, max(1, round(h * scale)))
    content_w = min(width - left, max(1, round(w * scale)))
    return logits[:, top:top + content_h, left:left + content_w]


def _source_rows(out_size: int, in_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch's bilinear (align_corners=False) source rows and weights for each output row."""
    scale = in_size / out_size
    src = ((torch.arange(out_size, device=device, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_(min=0)
    low = src.floor().long().clamp_(max=in_size - 1)
    high = (low + 1).clamp_(max=in_size - 1)
    weight = (src - low).float()
    return low, high, weight


@torch.no_grad()
def labels_at_original(logits: torch.Tensor, meta: dict, confidence: bool = False,
                       band_pixels: int = BAND_PIXELS,
                       exact_pixels: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(labels int64 [h, w], confidence float32 [h, w] or None)`` at ``meta["orig_size"]``.

    Up to ``exact_pixels`` (default :data:`EXACT_PIXELS`) output pixels the labels equal (to float rounding at exact ties)
    ``logits_to_original(logits, meta).argmax(0)``: the evaluation's documented bilinear resize
    of the logits, so its numbers do not change. Larger images get those exact labels at the
    largest size of that many pixels (same aspect), then a nearest-neighbour resize of the
    label map: work stays bounded by ``C x exact_pixels`` and memory by one band plus the
    outputs (12 bytes per pixel), whatever the photo's size.
    """
    h, w = (int(v) for v in meta["orig_size"])
    region = crop_letterbox(logits, meta).float()
    exact_pixels = EXACT_PIXELS if exact_pixels is None else int(exact_pixels)
    if h * w <= exact_pixels:
        return _bilinear_labels(region, (h, w), confidence, band_pixels)
    shrink = (exact_pixels / (h * w)) ** 0.5
    mid_h, mid_w = max(1, int(h * shrink)), max(1, int(w * shrink))
    small, small_conf = _bilinear_labels(region, (mid_h, mid_w), confidence, band_pixels)
    rows = (torch.arange(h, device=region.device) * mid_h // h).clamp_(max=mid_h - 1)
    cols = (torch.arange(w, device=region.device) * mid_w // w).clamp_(max=mid_w - 1)
    labels = torch.empty((h, w), dtype=torch.int64, device=region.device)
    conf = torch.empty((h, w), dtype=torch.float32, device=region.device) if confidence else None
    step = max(1, band_pixels // max(w, 1))
    for start in range(0, h, step):
        picked = rows[start:start + step]
        labels[start:start + step] = small[picked][:, cols]
        if conf is not None:
            conf[start:start + step] = small_conf[picked][:, cols]
    return labels, conf


def _bilinear_labels(region: torch.Tensor, size: tuple[int, int], confidence: bool,
                     band_pixels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Exact labels (and confidence) of ``region`` resized bilinearly to ``size``, band by band.

    Where the four source pixels around an output pixel agree on a class, that class also wins
    every blend of them (a convex combination keeps the largest component), so only pixels on
    class borders need their C logits blended. With ``confidence`` (the softmax of the blended
    logits at each pixel's class) every class is needed everywhere, so whole bands of
    :data:`CONFIDENCE_BAND_BYTES` are blended instead.
    """
    h, w = size
    classes, in_h, in_w = region.shape
    src_labels = region.argmax(0)
    if (in_h, in_w) == (h, w):  # nothing to resize
        conf = region.softmax(0).gather(0, src_labels.unsqueeze(0)).squeeze(0) if confidence else None
        return src_labels, conf
    labels = torch.empty((h, w), dtype=torch.int64, device=region.device)
    r_low, r_high, r_weight = _source_rows(h, in_h, region.device)
    if confidence:  # the softmax needs every class at every pixel: blend whole bands
        conf = torch.empty((h, w), dtype=torch.float32, device=region.device)
        rows = max(1, CONFIDENCE_BAND_BYTES // max(1, classes * w * 4))
        for start in range(0, h, rows):
            stop = min(h, start + rows)
            band = torch.lerp(region[:, r_low[start:stop]], region[:, r_high[start:stop]],
                              r_weight[start:stop].view(1, -1, 1))
            if in_w != w:
                band = F.interpolate(band.unsqueeze(0), size=(stop - start, w), mode="bilinear",
                                     align_corners=False).squeeze(0)
            index = band.argmax(0)
            labels[start:stop] = index
            conf[start:stop] = band.softmax(0).gather(0, index.unsqueeze(0)).squeeze(0)
        return labels, conf
    c_low, c_high, c_weight = _source_rows(w, in_w, region.device)
    flat = region.reshape(classes, -1)
    rows = max(1, band_pixels // max(w, 1))
    for start in range(0, h, rows):
        stop = min(h, start + rows)
        top, bottom = r_low[start:stop, None] * in_w, r_high[start:stop, None] * in_w
        corners = (top + c_low, top + c_high, bottom + c_low, bottom + c_high)  # flat source indices
        wy, wx = r_weight[start:stop, None], c_weight[None, :]
        weights = ((1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx)
        corner_labels = [src_labels.view(-1)[index] for index in corners]
        band = corner_labels[0].clone()
        border = torch.zeros_like(band, dtype=torch.bool)
        for other in corner_labels[1:]:
            border |= other != band
        if bool(border.any()):
            where = border.view(-1).nonzero().squeeze(1)
            picked = [index.expand_as(border).reshape(-1)[where] for index in corners]
            factors = [weight.expand_as(border).reshape(-1)[where] for weight in weights]
            winners = torch.empty_like(where)
            for lo in range(0, len(where), BORDER_CHUNK):  # C values per pixel: a few MB at a time
                part = slice(lo, lo + BORDER_CHUNK)
                blended = sum(flat[:, index[part]] * factor[part] for index, factor in zip(picked, factors))
                winners[part] = blended.argmax(0)
            band.view(-1)[where] = winners
        labels[start:stop] = band
    return labels, None
