"""The YOLOv3 criterion: named box, objectness and class losses.

Target assignment (:func:`assign_targets`): every ground-truth box goes to the anchor, among
all nine, whose shape best matches it (IoU of the two boxes placed at a common centre), at
the cell of that anchor's scale containing the box centre. With ``multi_anchor_iou`` set,
every other anchor whose shape IoU exceeds it is also made responsible (more positives per
box, which helps short from-scratch runs); ``None`` is the published one-anchor rule. With
``neighbor_cells`` (YOLOv5) each such anchor is also made responsible in the two neighbouring
cells nearest to the box centre (left or right, above or below): about three times the
positives. Their predictions can only reach the centre when the centre decode spans more
than one cell, so use it with ``xy_scale: 2.0`` (YOLOv5's ``2 * sigmoid - 0.5``).
Degenerate ground truths (zero or negative width or height, non-finite coordinates) are
dropped before assignment: their CIoU is NaN and would poison the objectness targets.

Terms (each multiplied by ``loss_weights``):

* **box**: ``1 - CIoU`` (``torchvision.ops.complete_box_iou_loss``) between the decoded box of
  each positive and its ground truth, averaged over positives. CIoU rather than the
  published squared error on raw offsets because it optimises overlap directly, is
  scale-invariant (small and large garments weigh the same) and adds centre-distance and
  aspect-ratio terms that keep gradients alive for non-overlapping boxes.
* **obj**: binary cross-entropy over every prediction; positives aim at 1 (or, with
  ``iou_aware_obj = r``, at ``(1 - r) + r * IoU`` so scores rank well-localised boxes first),
  background at 0, and predictions whose decoded box overlaps any ground truth of the
  image by more than ``ignore_iou`` are left out (the study's "IoU loss threshold"). Each
  scale's mean is weighted by ``balance`` (4, 1, 0.4 for strides 8, 16, 32 as in YOLOv5:
  the fine scale has 16x the cells and would otherwise be under-weighted per object).
* **cls**: binary cross-entropy (one independent sigmoid per class, as in YOLOv3) on positives.

``reduction="scale"`` averages the box and class terms per scale and adds the three means (as
YOLOv5 does); ``"global"`` divides the sums over all scales once by the number of positives,
which makes the box and class terms about three times weaker next to objectness. The
returned dict also holds ``raw_box``, ``raw_obj`` and ``raw_cls``, the unweighted terms (the
engine logs ``raw_*`` keys without adding them to the optimised total).

All of it runs in float32 with autocast disabled, so mixed-precision training stays stable.
Everything is vectorised over targets; the only Python loop is over the three scales. No step
reads the device: the positives are masks over every (target, anchor, cell) candidate
(:func:`candidate_targets`) rather than a selection whose size must be known on the host, and
the ignore rule's padded ground truths are sized by the host-side ``max_targets`` the collate
counted (:func:`padded_boxes`).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import complete_box_iou_loss

from fashionvision.families.yolov3.decode import decode_xywh, make_grid, split_output, xywh_to_xyxy


def shape_iou(wh: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """IoU of boxes ``[M, 2]`` and anchors ``[K, 2]`` sharing a centre -> ``[M, K]``."""
    inter = torch.minimum(wh[:, None], anchors[None]).prod(-1)
    return inter / (wh.prod(-1)[:, None] + anchors.prod(-1)[None] - inter)


def batched_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of ``[B, N, 4]`` and ``[B, M, 4]`` xyxy boxes -> ``[B, N, M]``."""
    lt = torch.maximum(a[:, :, None, :2], b[:, None, :, :2])
    rb = torch.minimum(a[:, :, None, 2:], b[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, :, None] + area_b[:, None, :] - inter + 1e-9)


def valid_mask(targets: torch.Tensor) -> torch.Tensor:
    """``[M]``: True where the row of ``targets [M, 6]`` is finite with a positive width and height."""
    wh = targets[:, 4:6] - targets[:, 2:4]
    return torch.isfinite(targets).all(1) & (wh > 0).all(1)


def valid_targets(targets: torch.Tensor) -> torch.Tensor:
    """The rows of ``targets [M, 6]`` whose box has a finite, positive width and height."""
    return targets[valid_mask(targets)]


def candidate_targets(targets: torch.Tensor, anchors: torch.Tensor, strides: Sequence[int],
                      shapes: Sequence[tuple[int, int]], multi_anchor_iou: float | None = None,
                      neighbor_cells: bool = False,
                      valid: torch.Tensor | None = None) -> list[dict[str, torch.Tensor]]:
    """The assignment of :func:`assign_targets` in shapes known before the data: no host sync.

    Per scale every (target, anchor of the scale) pair is a candidate, three times over with
    ``neighbor_cells`` (the own cell, then the x and the y neighbour), and ``mask`` says which
    candidates are positives. The positives come in the same order as :func:`assign_targets`
    lists them (target, then anchor; own cells before neighbours), so writes that land on the
    same prediction resolve alike. Rows that ``valid`` (default :func:`valid_mask`) leaves out
    are never positive; they are replaced by a finite 1x1 box in image 0 before any arithmetic,
    so that masked-out candidates index inside the predictions and compute finite values (a NaN
    there would reach the gradients through ``0 * NaN``).

    Returns per scale ``b, a, gy, gx, box, cls`` (``[M * A * (3 if neighbor_cells else 1)]``,
    indices always inside the scale's predictions) and the boolean ``mask``.
    """
    m = targets.shape[0]
    num_scales, num_anchors = anchors.shape[:2]
    if valid is None:
        valid = valid_mask(targets)
    safe_row = torch.zeros(6, dtype=targets.dtype, device=targets.device)  # no host-to-device copy
    safe_row[4:] = 1.0
    safe = torch.where(valid[:, None], targets, safe_row)
    wh = (safe[:, 4:6] - safe[:, 2:4]).clamp(min=1e-3)
    ious = shape_iou(wh, anchors.reshape(-1, 2))  # [M, S*A]
    positive = ious == ious.max(1, keepdim=True).values
    if multi_anchor_iou is not None:
        positive |= ious > multi_anchor_iou
    positive = (positive & valid[:, None]).view(m, num_scales, num_anchors)
    centre = (safe[:, 2:4] + safe[:, 4:6]) / 2
    pairs = torch.arange(m * num_anchors, device=targets.device)  # (target, anchor) in row-major order
    t_all, a_all = pairs // num_anchors, pairs % num_anchors
    result = []
    for s, (stride, (h, w)) in enumerate(zip(strides, shapes)):
        mask = positive[:, s].reshape(-1)
        ti, ai, c = t_all, a_all, centre[t_all]
        fx, fy = c[:, 0] / stride, c[:, 1] / stride
        gx = fx.long().clamp(0, w - 1)
        gy = fy.long().clamp(0, h - 1)
        if neighbor_cells:
            # the neighbour on the side of the centre within its cell (x: left/right, y: up/down)
            nx = torch.where(fx - gx < 0.5, gx - 1, gx + 1)
            ny = torch.where(fy - gy < 0.5, gy - 1, gy + 1)
            okx, oky = (nx >= 0) & (nx < w), (ny >= 0) & (ny < h)
            mask = torch.cat([mask, mask & okx, mask & oky])
            ti, ai = ti.repeat(3), ai.repeat(3)
            gx = torch.cat([gx, nx.clamp(0, w - 1), gx])
            gy = torch.cat([gy, gy, ny.clamp(0, h - 1)])
        result.append({"b": safe[ti, 0].long(), "a": ai, "gy": gy, "gx": gx,
                       "box": safe[ti, 2:6], "cls": safe[ti, 1].long(), "mask": mask})
    return result


def assign_targets(targets: torch.Tensor, anchors: torch.Tensor, strides: Sequence[int],
                   shapes: Sequence[tuple[int, int]], multi_anchor_iou: float | None = None,
                   neighbor_cells: bool = False) -> list[dict[str, torch.Tensor]]:
    """Which prediction is responsible for which ground truth.

    Args:
        targets: ``[M, 6]`` rows ``(batch_index, cls, x1, y1, x2, y2)`` in input pixels.
        anchors: ``[S, A, 2]`` anchors (pixels) per scale, scales in ``strides`` order.
        shapes: ``(H, W)`` of each scale's output map.
        multi_anchor_iou: also every anchor whose shape IoU with the box exceeds this.
        neighbor_cells: also the nearest horizontal and vertical neighbour cells (YOLOv5).

    Returns per scale a dict of equally long tensors: ``b, a, gy, gx`` (indices into the
    scale's ``[B, A, H, W]`` predictions), ``box`` (xyxy target) and ``cls``: the positives of
    :func:`candidate_targets` (which the loss uses as they are, to avoid this selection's sync).
    """
    return [{k: v[c["mask"]] for k, v in c.items() if k != "mask"}
            for c in candidate_targets(targets, anchors, strides, shapes, multi_anchor_iou, neighbor_cells)]


def padded_boxes(targets: torch.Tensor, valid: torch.Tensor, batch: int, slots: int) -> torch.Tensor:
    """``[batch, slots, 4]``: each image's valid boxes in row order, then zeros (an IoU of 0).

    ``slots`` must be at least the number of rows of any one image; no host sync.
    """
    m = targets.shape[0]
    image = torch.where(valid, targets[:, 0], float(batch)).long()  # left-out rows: a scratch image
    counts = torch.zeros(batch + 1, dtype=torch.long, device=targets.device).index_add_(
        0, image, torch.ones(m, dtype=torch.long, device=targets.device))
    order = torch.argsort(image, stable=True)
    image_sorted = image[order]
    starts = torch.cumsum(counts, 0) - counts
    slot = (torch.arange(m, device=targets.device) - starts[image_sorted]).clamp(max=slots - 1)
    gt = torch.zeros(batch + 1, slots, 4, device=targets.device)
    gt[image_sorted, slot] = targets[order, 2:6]
    return gt[:batch]


def max_targets_per_image(targets: torch.Tensor, batch: int) -> int:
    """The most rows any image has in ``targets [M, 6]`` (reads the device when they are on one)."""
    if not len(targets) or not batch:
        return 0
    image = targets[:, 0].nan_to_num(-1).long()
    image = image[(image >= 0) & (image < batch)]
    return int(torch.bincount(image, minlength=batch).max()) if len(image) else 0


class YOLOLoss(nn.Module):
    """Criterion for :class:`~fashionvision.families.yolov3.model.YOLOv3` outputs (see module docstring).

    Args:
        num_classes: C.
        ignore_iou: background predictions overlapping a ground truth above this are ignored.
        loss_weights: ``{"box", "obj", "cls"}`` multipliers.
        xy_scale: centre decode scale, the same as used for inference.
        multi_anchor_iou: extra positives for anchors with shape IoU above this (None = off).
        iou_aware_obj: 0 = objectness target 1; r in (0, 1] mixes in the box's IoU.
        balance: objectness weight per scale (stride order).
        neighbor_cells: YOLOv5 neighbour-cell positives (use with ``xy_scale=2``).
        reduction: "scale" (mean per scale, then summed) or "global" (one division).
    """

    def __init__(self, num_classes: int, ignore_iou: float = 0.5,
                 loss_weights: dict | None = None, xy_scale: float = 1.0,
                 multi_anchor_iou: float | None = None, iou_aware_obj: float = 0.0,
                 balance: Sequence[float] = (4.0, 1.0, 0.4), label_smoothing: float = 0.0,
                 neighbor_cells: bool = False, reduction: str = "global"):
        super().__init__()
        self.num_classes = num_classes
        self.ignore_iou = ignore_iou
        self.weights = {"box": 0.05, "obj": 1.0, "cls": 0.5, **(loss_weights or {})}
        self.xy_scale = xy_scale
        self.multi_anchor_iou = multi_anchor_iou
        self.iou_aware_obj = iou_aware_obj
        self.balance = tuple(balance)
        self.label_smoothing = label_smoothing
        self.neighbor_cells = bool(neighbor_cells)
        if reduction not in ("scale", "global"):
            raise ValueError(f"YOLO loss reduction must be 'scale' or 'global', not {reduction!r}")
        self.reduction = reduction

    def forward(self, outputs: list[torch.Tensor], targets: torch.Tensor, anchors: torch.Tensor,
                strides: Sequence[int], max_targets: int | None = None) -> dict[str, torch.Tensor]:
        """``outputs`` from the model, ``targets [M, 6]``, ``anchors [S, A, 2]`` pixels.

        ``max_targets``: the most target rows of any one image, as the collate counted them on
        the host (``batch["max_targets"]``). It sizes the padded ground truths of the ignore
        rule; without it the count is read from ``targets``, a device-to-host sync when they
        are on a GPU. Every other shape follows from ``targets.shape``, so the loss then runs
        without waiting for the device.
        """
        if max_targets is None:
            max_targets = max_targets_per_image(targets, outputs[0].shape[0])  # free on a CPU
        with torch.autocast(outputs[0].device.type, enabled=False):
            return self._forward([o.float() for o in outputs], targets.float().to(outputs[0].device),
                                 anchors.float().to(outputs[0].device), strides, int(max_targets))

    def _forward(self, outputs, targets, anchors, strides, max_targets):
        batch = outputs[0].shape[0]
        preds = [split_output(p, anchors.shape[1]) for p in outputs]  # [B, A, H, W, 5+C]
        shapes = [p.shape[2:4] for p in preds]
        valid = valid_mask(targets)
        candidates = candidate_targets(targets, anchors, strides, shapes, self.multi_anchor_iou,
                                       self.neighbor_cells, valid)
        # ground truths per image, padded, for the ignore rule (padding has an IoU of 0)
        gt = padded_boxes(targets, valid, batch, max_targets) if len(targets) and batch and max_targets else None

        zero = outputs[0].sum() * 0.0
        box_loss, cls_loss, obj_loss = zero.clone(), zero.clone(), zero.clone()
        n_pos = torch.zeros((), dtype=torch.long, device=zero.device)
        smooth = self.label_smoothing
        for s, (p, cand, stride) in enumerate(zip(preds, candidates, strides)):
            _, a, h, w, _ = p.shape
            cells = batch * a * h * w
            grid = make_grid(h, w, p.device, p.dtype)
            anc = anchors[s].view(a, 1, 1, 2)
            # one scratch element past the predictions: where the masked-out candidates write
            tobj = torch.zeros(cells + 1, device=p.device)
            with torch.no_grad():
                decoded = xywh_to_xyxy(decode_xywh(p[..., :4], grid, anc, stride, self.xy_scale))
                ignore = torch.zeros(cells + 1, dtype=torch.bool, device=p.device)
                if gt is not None:
                    best = batched_box_iou(decoded.view(batch, -1, 4), gt).max(-1).values
                    ignore[:cells] = (best > self.ignore_iou).view(-1)
            if len(cand["mask"]):
                mask, b, ai, gy, gx = cand["mask"], cand["b"], cand["a"], cand["gy"], cand["gx"]
                count = mask.sum()
                ps = p[b, ai, gy, gx]  # [P, 5+C]
                pbox = xywh_to_xyxy(decode_xywh(ps[:, :4], grid[gy, gx], anchors[s][ai], stride,
                                                self.xy_scale))
                ciou_loss = complete_box_iou_loss(pbox, cand["box"], reduction="none")
                scale_div = count.clamp(min=1) if self.reduction == "scale" else 1
                box_loss = box_loss + torch.where(mask, ciou_loss, 0.0).sum() / scale_div
                n_pos = n_pos + count
                r = self.iou_aware_obj
                iou = torch.nan_to_num(1.0 - ciou_loss.detach(), nan=0.0).clamp(min=0)
                flat = torch.where(mask, ((b * a + ai) * h + gy) * w + gx, cells)
                tobj[flat] = (1.0 - r) + r * iou
                ignore[flat] = False
                tcls = torch.full_like(ps[:, 5:], smooth / 2)
                tcls[torch.arange(len(b), device=p.device), cand["cls"]] = 1.0 - smooth / 2
                bce_cls = F.binary_cross_entropy_with_logits(ps[:, 5:], tcls, reduction="none")
                cls_loss = cls_loss + torch.where(mask[:, None], bce_cls, 0.0).sum() / self.num_classes / scale_div
            tobj, ignore = tobj[:cells].view(p.shape[:4]), ignore[:cells].view(p.shape[:4])
            bce = F.binary_cross_entropy_with_logits(p[..., 4], tobj, reduction="none")
            obj_loss = obj_loss + self.balance[s] * (bce * (~ignore)).mean()
        denom = n_pos.clamp(min=1) if self.reduction == "global" else 1
        raw = {"box": box_loss / denom, "obj": obj_loss, "cls": cls_loss / denom}
        return {**{k: self.weights[k] * v for k, v in raw.items()},
                **{f"raw_{k}": v.detach() for k, v in raw.items()}}
