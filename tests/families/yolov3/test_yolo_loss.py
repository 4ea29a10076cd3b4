"""Target assignment on hand-computed boxes and the YOLOv3 criterion's behaviour."""

from __future__ import annotations

import math

import torch

from fashionvision.families.yolov3.loss import YOLOLoss, assign_targets, shape_iou
from fashionvision.families.yolov3.model import COCO_ANCHORS_PX, YOLOv3

ANCHORS = torch.tensor(COCO_ANCHORS_PX, dtype=torch.float32).view(3, 3, 2)
SHAPES = [(52, 52), (26, 26), (13, 13)]  # 416 x 416 input


def _where(assigned):
    """{(scale, anchor, gy, gx, batch)} of every positive."""
    out = set()
    for s, a in enumerate(assigned):
        for b, ai, gy, gx in zip(a["b"].tolist(), a["a"].tolist(), a["gy"].tolist(), a["gx"].tolist()):
            out.add((s, ai, gy, gx, b))
    return out


def test_best_anchor_scale_and_cell():
    targets = torch.tensor([
        # 16x30 box centred at (100, 50): exactly anchor 1 (16x30), stride 8 -> cell (12, 6)
        [0, 3, 92, 35, 108, 65],
        # 120x90 centred at (300, 200): closest to 116x90 (anchor 0 of the stride-32 head) -> cell (9, 6)
        [1, 0, 240, 155, 360, 245],
        # 60x45 centred at (20, 410): 62x45 (anchor 1 of the stride-16 head) -> cell (1, 25)
        [1, 5, -10, 387.5, 50, 432.5],
    ])
    assigned = assign_targets(targets, ANCHORS, (8, 16, 32), SHAPES)
    assert _where(assigned) == {(0, 1, 6, 12, 0), (2, 0, 6, 9, 1), (1, 1, 25, 1, 1)}
    assert assigned[0]["cls"].tolist() == [3]
    assert assigned[2]["box"].tolist() == [[240, 155, 360, 245]]


def test_shape_iou_by_hand():
    iou = shape_iou(torch.tensor([[10.0, 20.0]]), torch.tensor([[20.0, 10.0], [10.0, 20.0]]))
    assert torch.allclose(iou, torch.tensor([[100 / 300, 1.0]]))


def test_multi_anchor_assignment_adds_similar_anchors():
    targets = torch.tensor([[0, 0, 0, 0, 33, 23]])  # equals anchor (33, 23)
    single = assign_targets(targets, ANCHORS, (8, 16, 32), SHAPES)
    assert sum(len(a["b"]) for a in single) == 1
    multi = assign_targets(targets, ANCHORS, (8, 16, 32), SHAPES, multi_anchor_iou=0.3)
    ious = shape_iou(torch.tensor([[33.0, 23.0]]), ANCHORS.view(-1, 2))[0]
    assert sum(len(a["b"]) for a in multi) == int((ious > 0.3).sum()) > 1


def _tiny():
    torch.manual_seed(0)
    return YOLOv3(4, width=0.125, depth=0.34)


def test_loss_terms_finite_and_backprop_with_and_without_targets():
    model = _tiny()
    crit = YOLOLoss(4)
    x = torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 1, 5, 5, 40, 50], [1, 3, 10, 20, 30, 60]], dtype=torch.float32)
    losses = crit(model(x), targets, model.anchors, model.strides)
    assert set(losses) == {"box", "obj", "cls", "raw_box", "raw_obj", "raw_cls"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    assert torch.isclose(losses["box"], 0.05 * losses["raw_box"]) and not losses["raw_box"].requires_grad
    sum(losses.values()).backward()
    assert model.head3.out.weight.grad.abs().sum() > 0
    empty = crit(model(x), torch.zeros(0, 6), model.anchors, model.strides)
    assert empty["box"].item() == 0 and empty["cls"].item() == 0 and empty["obj"].item() > 0
    sum(empty.values()).backward()


def test_ignore_threshold_removes_background_penalty():
    # a prediction decoding exactly onto a ground truth but not responsible for it: only punished
    # as background when its IoU is below ignore_iou
    anchors = torch.tensor([[[8.0, 8.0], [16.0, 16.0], [24.0, 24.0]], [[32.0, 32.0]] * 3, [[64.0, 64.0]] * 3])
    outputs = [torch.full((1, 3 * 6, s, s), -8.0) for s in (4, 2, 1)]
    p = outputs[0].view(1, 3, 6, 4, 4)
    p[0, 0, :4, 1, 1] = torch.tensor([0.0, 0.0, math.log(2.0), math.log(2.0)])  # 16x16 box at (12, 12)
    p[0, 0, 4, 1, 1] = 5.0  # confident
    targets = torch.tensor([[0, 0, 4.0, 4.0, 20.0, 20.0]])  # 16x16 at (12, 12): anchor 1 is responsible
    strict = YOLOLoss(1, ignore_iou=1.01)(outputs, targets, anchors, (8, 16, 32))["obj"]
    lenient = YOLOLoss(1, ignore_iou=0.5)(outputs, targets, anchors, (8, 16, 32))["obj"]
    assert strict > lenient + 0.1  # the confident duplicate costs ~5 nats/cells only when not ignored


def test_loss_under_autocast_is_float32():
    model = _tiny()
    targets = torch.tensor([[0, 1, 5, 5, 40, 50]], dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(torch.rand(1, 3, 64, 64))
        losses = YOLOLoss(4)(outputs, targets, model.anchors, model.strides)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
