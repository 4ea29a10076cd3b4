"""The YOLO loss without host syncs gives the values and gradients of the implementation it
replaced (kept below verbatim as the reference) on random targets, every option combined.

The reference selected positives with ``nonzero``/boolean indexing and sized the padded ground
truths with ``int(counts.max())``, each a device-to-host copy on a GPU; the new one computes
masks over fixed-size candidates, sized from ``targets.shape`` and the collate's ``max_targets``.
Sums over masked candidates add zeros in other places, so values agree to float32 rounding.
"""

from __future__ import annotations

from typing import Sequence

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import complete_box_iou_loss

from fashionvision.families.yolov3.decode import decode_xywh, make_grid, split_output, xywh_to_xyxy
from fashionvision.families.yolov3.loss import YOLOLoss, batched_box_iou, shape_iou
from fashionvision.families.yolov3.model import COCO_ANCHORS_PX


# ---------------------------------------------------------------- the reference (before the change)
def valid_targets(targets: torch.Tensor) -> torch.Tensor:
    """The rows of ``targets [M, 6]`` whose box has a finite, positive width and height."""
    wh = targets[:, 4:6] - targets[:, 2:4]
    return targets[torch.isfinite(targets).all(1) & (wh > 0).all(1)]


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
    scale's ``[B, A, H, W]`` predictions), ``box`` (xyxy target) and ``cls``.
    """
    num_scales, num_anchors = anchors.shape[:2]
    wh = (targets[:, 4:6] - targets[:, 2:4]).clamp(min=1e-3)
    ious = shape_iou(wh, anchors.reshape(-1, 2))  # [M, S*A]
    positive = ious == ious.max(1, keepdim=True).values
    if multi_anchor_iou is not None:
        positive |= ious > multi_anchor_iou
    t_idx, anchor_idx = positive.nonzero(as_tuple=True)
    centre = (targets[t_idx, 2:4] + targets[t_idx, 4:6]) / 2
    result = []
    for s, (stride, (h, w)) in enumerate(zip(strides, shapes)):
        sel = (anchor_idx // num_anchors) == s
        ti, c = t_idx[sel], centre[sel]
        ai = anchor_idx[sel] % num_anchors
        fx, fy = c[:, 0] / stride, c[:, 1] / stride
        gx = fx.long().clamp(0, w - 1)
        gy = fy.long().clamp(0, h - 1)
        if neighbor_cells and len(ti):
            # the neighbour on the side of the centre within its cell (x: left/right, y: up/down)
            nx = torch.where(fx - gx < 0.5, gx - 1, gx + 1)
            ny = torch.where(fy - gy < 0.5, gy - 1, gy + 1)
            okx, oky = (nx >= 0) & (nx < w), (ny >= 0) & (ny < h)
            ti = torch.cat([ti, ti[okx], ti[oky]])
            ai = torch.cat([ai, ai[okx], ai[oky]])
            gx, gy = torch.cat([gx, nx[okx], gx[oky]]), torch.cat([gy, gy[okx], ny[oky]])
        result.append({"b": targets[ti, 0].long(), "a": ai,
                       "gy": gy, "gx": gx, "box": targets[ti, 2:6], "cls": targets[ti, 1].long()})
    return result


def reference_forward(self, outputs, targets, anchors, strides):
    batch = outputs[0].shape[0]
    preds = [split_output(p, anchors.shape[1]) for p in outputs]  # [B, A, H, W, 5+C]
    shapes = [p.shape[2:4] for p in preds]
    targets = valid_targets(targets)
    assigned = assign_targets(targets, anchors, strides, shapes, self.multi_anchor_iou,
                              self.neighbor_cells)
    # ground truths per image, padded, for the ignore rule
    counts = torch.bincount(targets[:, 0].long(), minlength=batch) if len(targets) else \
        torch.zeros(batch, dtype=torch.long, device=targets.device)
    max_gt = int(counts.max()) if batch else 0
    gt = torch.zeros(batch, max(max_gt, 1), 4, device=targets.device)
    if len(targets):
        order = torch.argsort(targets[:, 0], stable=True)
        t_sorted = targets[order]
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(t_sorted), device=targets.device) - starts[t_sorted[:, 0].long()]
        gt[t_sorted[:, 0].long(), slot] = t_sorted[:, 2:6]

    zero = outputs[0].sum() * 0.0
    box_loss, cls_loss, obj_loss = zero.clone(), zero.clone(), zero.clone()
    n_pos = 0
    smooth = self.label_smoothing
    for s, (p, asg, stride) in enumerate(zip(preds, assigned, strides)):
        _, a, h, w, _ = p.shape
        grid = make_grid(h, w, p.device, p.dtype)
        anc = anchors[s].view(a, 1, 1, 2)
        tobj = torch.zeros(p.shape[:4], device=p.device)
        with torch.no_grad():
            decoded = xywh_to_xyxy(decode_xywh(p[..., :4], grid, anc, stride, self.xy_scale))
            ignore = torch.zeros_like(tobj, dtype=torch.bool)
            if max_gt:
                best = batched_box_iou(decoded.view(batch, -1, 4), gt).max(-1).values
                ignore = (best > self.ignore_iou).view_as(tobj)
        if len(asg["b"]):
            b, ai, gy, gx = asg["b"], asg["a"], asg["gy"], asg["gx"]
            ps = p[b, ai, gy, gx]  # [P, 5+C]
            pbox = xywh_to_xyxy(decode_xywh(ps[:, :4], grid[gy, gx], anchors[s][ai], stride,
                                            self.xy_scale))
            ciou_loss = complete_box_iou_loss(pbox, asg["box"], reduction="none")
            scale_div = len(b) if self.reduction == "scale" else 1
            box_loss = box_loss + ciou_loss.sum() / scale_div
            n_pos += len(b)
            r = self.iou_aware_obj
            iou = torch.nan_to_num(1.0 - ciou_loss.detach(), nan=0.0).clamp(min=0)
            tobj[b, ai, gy, gx] = (1.0 - r) + r * iou
            ignore[b, ai, gy, gx] = False
            tcls = torch.full_like(ps[:, 5:], smooth / 2)
            tcls[torch.arange(len(b), device=p.device), asg["cls"]] = 1.0 - smooth / 2
            cls_loss = cls_loss + F.binary_cross_entropy_with_logits(
                ps[:, 5:], tcls, reduction="sum") / self.num_classes / scale_div
        bce = F.binary_cross_entropy_with_logits(p[..., 4], tobj, reduction="none")
        obj_loss = obj_loss + self.balance[s] * (bce * (~ignore)).mean()
    denom = max(n_pos, 1) if self.reduction == "global" else 1
    raw = {"box": box_loss / denom, "obj": obj_loss, "cls": cls_loss / denom}
    return {**{k: self.weights[k] * v for k, v in raw.items()},
            **{f"raw_{k}": v.detach() for k, v in raw.items()}}


# ---------------------------------------------------------------- the comparison
ANCHORS = torch.tensor(COCO_ANCHORS_PX, dtype=torch.float32).view(3, 3, 2) / 6.5  # for 64 px inputs
STRIDES = (8, 16, 32)
SIZE, CLASSES = 64, 5


def random_batch(seed: int, batch: int, per_image: Sequence[int], degenerate: int = 0):
    """Raw head outputs ``[B, 3*(5+C), H, W]`` per scale and targets with random boxes (some
    overlapping, some duplicated, some off the image edge), plus ``degenerate`` bad rows."""
    g = torch.Generator().manual_seed(seed)
    outputs = [torch.randn(batch, 3 * (5 + CLASSES), SIZE // s, SIZE // s, generator=g).requires_grad_()
               for s in STRIDES]
    rows = []
    for image, n in enumerate(per_image):
        for _ in range(n):
            cx, cy = (torch.rand(2, generator=g) * 1.2 - 0.1) * SIZE
            w, h = torch.rand(2, generator=g) * SIZE * 0.6 + 1
            rows.append([image, int(torch.randint(CLASSES, (1,), generator=g)), cx - w / 2, cy - h / 2,
                         cx + w / 2, cy + h / 2])
    if rows:
        rows.append(list(rows[0]))  # a duplicate ground truth: two writes on one prediction
    bad = [[0, 1, 10.0, 10.0, 10.0, 30.0], [0, 2, 5.0, float("nan"), 20.0, 30.0],
           [1, 0, 40.0, 40.0, 30.0, 50.0], [0, 3, float("inf"), 0.0, 10.0, 10.0]]
    rows += bad[:degenerate]
    targets = torch.tensor(rows, dtype=torch.float32).view(-1, 6)
    return outputs, targets[torch.randperm(len(targets), generator=g)]  # rows in any order


OPTIONS = {
    "default": {},
    "multi_anchor": {"multi_anchor_iou": 0.2},
    "neighbors": {"multi_anchor_iou": 0.25, "neighbor_cells": True, "xy_scale": 2.0},
    "scale_reduction": {"reduction": "scale", "neighbor_cells": True, "xy_scale": 2.0},
    "iou_aware_smooth": {"iou_aware_obj": 0.5, "label_smoothing": 0.1, "multi_anchor_iou": 0.2},
    "ignore_strict": {"ignore_iou": 0.3, "neighbor_cells": True, "xy_scale": 2.0},
}
BATCHES = {
    "crowded": (0, 4, [12, 0, 3, 7], 0),
    "degenerate_rows": (1, 3, [2, 5, 1], 4),
    "one_image": (2, 1, [9], 0),
    "no_targets": (3, 2, [0, 0], 0),
    "only_degenerate": (4, 2, [0, 0], 3),
}


def _run(fn, outputs, *args):
    for o in outputs:
        o.grad = None
    losses = fn([o for o in outputs], *args)
    total = losses["box"] + losses["obj"] + losses["cls"]
    total.backward()
    return {k: v.detach() for k, v in losses.items()}, [o.grad.clone() for o in outputs]


@pytest.mark.parametrize("batch_name", list(BATCHES))
@pytest.mark.parametrize("option", list(OPTIONS))
def test_sync_free_loss_equals_the_previous_implementation(option: str, batch_name: str) -> None:
    seed, batch, per_image, degenerate = BATCHES[batch_name]
    outputs, targets = random_batch(seed, batch, per_image, degenerate)
    crit = YOLOLoss(CLASSES, **OPTIONS[option])
    max_targets = max(per_image) + 1 + degenerate  # an upper bound, as the collate's count is

    def reference(outs, t):
        return reference_forward(crit, [o.float() for o in outs], t, ANCHORS, STRIDES)

    want, want_grads = _run(reference, outputs, targets)
    for hint in (None, max_targets):  # counted here, or the collate's host-side bound
        got, got_grads = _run(lambda outs, t: crit(outs, t, ANCHORS, STRIDES, max_targets=hint), outputs, targets)
        assert set(got) == set(want)
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-6, atol=1e-7, msg=f"{key} (hint {hint})")
        for g, w in zip(got_grads, want_grads):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-8)
            assert torch.isfinite(g).all()


def test_the_collate_bound_sizes_the_ignore_rule_like_the_exact_count() -> None:
    """A looser bound than the exact per-image count pads with boxes of IoU 0: same loss."""
    outputs, targets = random_batch(5, 3, [4, 1, 6])
    crit = YOLOLoss(CLASSES, ignore_iou=0.2)
    exact = crit(outputs, targets, ANCHORS, STRIDES)
    loose = crit(outputs, targets, ANCHORS, STRIDES, max_targets=40)
    for key in exact:
        torch.testing.assert_close(loose[key], exact[key], rtol=1e-6, atol=1e-7)


def test_the_collate_counts_max_targets_and_the_task_hands_it_to_the_loss(hand_converted_ccp, monkeypatch) -> None:
    """The bound comes from the host (the collate), so the training step never asks the GPU."""
    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.families.yolov3.task import YOLOv3Task

    task = YOLOv3Task({"name": "yolo", "width": 0.0625, "depth": 0.34, "image_size": 64, "rect_eval": False},
                      ConvertedDataset.open(hand_converted_ccp), None, {"name": "coco"})
    items = [task.build_dataset("train", train=False)[i] for i in range(3)]
    batch = task.collate(items)
    assert batch["max_targets"] == max(len(it["labels"]) for it in items) > 0
    assert isinstance(batch["max_targets"], int)
    seen: dict = {}
    forward = task.criterion.forward
    monkeypatch.setattr(task.criterion, "forward", lambda *a, **k: seen.update(k) or forward(*a, **k))
    torch.manual_seed(0)
    model = task.build_model()
    losses = task.compute_losses(model, batch)
    assert seen["max_targets"] == batch["max_targets"]
    counted = forward(model(batch["images"].float() / 255.0), batch["targets"], model.anchors, model.strides)
    for key in counted:
        torch.testing.assert_close(losses[key], counted[key], rtol=1e-6, atol=1e-7)
