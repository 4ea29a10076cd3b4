"""Turning YOLOv3 head outputs into boxes, and non-maximum suppression.

Decoding of one prediction ``(tx, ty, tw, th)`` at cell ``(cx, cy)`` of a stride-``s`` map with
anchor ``(aw, ah)`` pixels::

    x = (xy_scale * sigmoid(tx) - (xy_scale - 1) / 2 + cx) * s        (same for y)
    w = aw * exp(tw)                                                   (same for h)

``xy_scale = 1`` is the published YOLOv3 decode. A value slightly above 1 (YOLOv4's "grid
sensitive" decode, e.g. 1.05 to 2) lets centres reach the cell borders without infinite logits;
it is a config value (``model.xy_scale``) and the loss uses the same decode. ``tw`` is clamped
at :data:`MAX_LOG_WH` before ``exp`` so that an early, wild logit cannot overflow.

Scores are ``sigmoid(objectness) * sigmoid(class)``; every (box, class) pair above the score
threshold is a candidate (multi-label, as COCO evaluation expects), then per-class NMS with
``torchvision.ops.batched_nms``.
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import batched_nms

MAX_LOG_WH = math.log(1000.0 / 16)  # widest box ~60x its anchor
MAX_CANDIDATES = 30000


def split_output(p: torch.Tensor, num_anchors: int = 3) -> torch.Tensor:
    """``[B, A*(5+C), H, W]`` -> ``[B, A, H, W, 5+C]``."""
    b, _, h, w = p.shape
    return p.view(b, num_anchors, -1, h, w).permute(0, 1, 3, 4, 2)


def make_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[H, W, 2]`` cell coordinates (x, y)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                            torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys], -1)


#: The one default of the detector's drawn outputs (score threshold, NMS IoU): ``model.conf``
#: and ``model.iou`` in configs/model/yolo.yaml, and the fallback for checkpoints without them.
DRAW_CONF = 0.25
DRAW_IOU = 0.45


def decode_xywh(t: torch.Tensor, grid: torch.Tensor, anchors: torch.Tensor, stride: float,
                xy_scale: float = 1.0) -> torch.Tensor:
    """Raw ``t`` [..., 4] (broadcast with ``grid`` [..., 2] and ``anchors`` [..., 2]) -> cx, cy, w, h px."""
    xy = (t[..., :2].sigmoid() * xy_scale - (xy_scale - 1) / 2 + grid) * stride
    wh = t[..., 2:4].clamp(max=MAX_LOG_WH).exp() * anchors
    return torch.cat([xy, wh], -1)


def encode_xywh(box: torch.Tensor, grid: torch.Tensor, anchors: torch.Tensor, stride: float,
                xy_scale: float = 1.0) -> torch.Tensor:
    """Inverse of :func:`decode_xywh` (cx, cy, w, h px -> raw t); for tests and analysis."""
    offset = (box[..., :2] / stride - grid + (xy_scale - 1) / 2) / xy_scale
    return torch.cat([torch.logit(offset), torch.log(box[..., 2:4] / anchors)], -1)


def xywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    half = b[..., 2:4] / 2
    return torch.cat([b[..., :2] - half, b[..., :2] + half], -1)


def decode_outputs(outputs: list[torch.Tensor], anchors: torch.Tensor, strides: tuple[int, ...],
                   xy_scale: float = 1.0) -> torch.Tensor:
    """All scales -> ``[B, N, 5 + C]``: x1, y1, x2, y2 (pixels), objectness prob, class probs."""
    results = []
    for p, anc, s in zip(outputs, anchors, strides):
        p = split_output(p.float(), anc.shape[0])
        _, a, h, w, _ = p.shape
        grid = make_grid(h, w, p.device, p.dtype)
        box = xywh_to_xyxy(decode_xywh(p[..., :4], grid, anc.view(a, 1, 1, 2).to(p), s, xy_scale))
        results.append(torch.cat([box, p[..., 4:].sigmoid()], -1).flatten(1, 3))
    return torch.cat(results, 1)


def nms(decoded: torch.Tensor, conf: float, iou: float, max_det: int = 300,
        max_candidates: int = MAX_CANDIDATES) -> list[dict[str, torch.Tensor]]:
    """Per-image, per-class NMS over :func:`decode_outputs`' result.

    Returns per image ``{"boxes": [K, 4], "scores": [K], "labels": [K]}`` sorted by score,
    at most ``max_det`` detections, in the network input's pixel coordinates.
    """
    out = []
    for det in decoded:
        obj = det[:, 4]
        det = det[obj > conf]  # score = obj * cls <= obj: a cheap first filter
        scores = det[:, 4:5] * det[:, 5:]
        idx, labels = (scores > conf).nonzero(as_tuple=True)
        s = scores[idx, labels]
        if s.numel() > max_candidates:
            top = s.topk(max_candidates).indices
            idx, labels, s = idx[top], labels[top], s[top]
        boxes = det[idx, :4]
        keep = batched_nms(boxes, s, labels, iou)[:max_det]
        out.append({"boxes": boxes[keep], "scores": s[keep], "labels": labels[keep]})
    return out
