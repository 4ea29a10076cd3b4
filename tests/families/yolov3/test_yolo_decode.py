"""Decoding (encode -> decode round trip on hand-computed boxes) and NMS behaviour."""

from __future__ import annotations

import math

import pytest
import torch

from fashionvision.families.yolov3.decode import decode_outputs, decode_xywh, encode_xywh, nms


@pytest.mark.parametrize("xy_scale", [1.0, 1.1, 2.0])
def test_encode_then_decode_comes_back(xy_scale):
    # a 50x80 box centred at (123.4, 77.7) on the stride-16 map lives in cell (7, 4)
    box = torch.tensor([123.4, 77.7, 50.0, 80.0])
    grid, anchor, stride = torch.tensor([7.0, 4.0]), torch.tensor([30.0, 61.0]), 16
    t = encode_xywh(box, grid, anchor, stride, xy_scale)
    if xy_scale == 1.0:  # hand-computed: offsets 0.7125, 0.85625; log size ratios
        expected = [math.log(0.7125 / 0.2875), math.log(0.85625 / 0.14375), math.log(50 / 30), math.log(80 / 61)]
        assert torch.allclose(t, torch.tensor(expected), atol=1e-5)
    assert torch.allclose(decode_xywh(t, grid, anchor, stride, xy_scale), box, atol=1e-4)


def test_decode_outputs_places_a_box_at_its_cell():
    # one class, 32x32 input: stride-8 map 4x4; put a confident prediction at anchor 1, cell (x=2, y=1)
    anchors = torch.tensor([[[4.0, 4.0], [8.0, 8.0], [12.0, 12.0]], [[16.0, 16.0]] * 3, [[32.0, 32.0]] * 3])
    outputs = [torch.full((1, 3 * 6, s, s), -10.0) for s in (4, 2, 1)]
    p = outputs[0].view(1, 3, 6, 4, 4)
    p[0, 1, :, 1, 2] = torch.tensor([0.0, 0.0, math.log(2.0), 0.0, 10.0, 10.0])
    decoded = decode_outputs(outputs, anchors, (8, 16, 32))
    assert decoded.shape == (1, 3 * 16 + 3 * 4 + 3, 6)
    best = decoded[0, decoded[0, :, 4].argmax()]
    # centre (2.5, 1.5) * 8 = (20, 12); size (16, 8)
    assert torch.allclose(best[:4], torch.tensor([12.0, 8.0, 28.0, 16.0]), atol=1e-4)


def _decoded(rows):
    """rows of (x1, y1, x2, y2, obj, cls0, cls1)."""
    return torch.tensor([rows], dtype=torch.float32)


def test_nms_suppresses_same_class_overlaps_only():
    rows = [
        (0, 0, 100, 100, 0.9, 0.9, 0.0),    # class 0, best
        (5, 5, 105, 105, 0.8, 0.9, 0.0),    # class 0, IoU 0.82 with the first: suppressed
        (5, 5, 105, 105, 0.8, 0.0, 0.9),    # same box but class 1: kept
        (200, 200, 250, 250, 0.7, 0.9, 0.0),  # class 0 elsewhere: kept
        (0, 0, 100, 100, 0.05, 0.9, 0.0),   # below the score threshold
    ]
    out = nms(_decoded(rows), conf=0.1, iou=0.5)[0]
    assert out["labels"].tolist() == [0, 1, 0]
    assert torch.allclose(out["scores"], torch.tensor([0.81, 0.72, 0.63]))
    assert out["boxes"][1].tolist() == [5, 5, 105, 105]
    # a looser NMS keeps the overlapping same-class box too
    assert len(nms(_decoded(rows), conf=0.1, iou=0.9)[0]["boxes"]) == 4
    # max_det caps the count, best first
    assert nms(_decoded(rows), conf=0.1, iou=0.9, max_det=2)[0]["scores"].tolist() == pytest.approx([0.81, 0.72])


def test_nms_with_nothing_above_threshold():
    out = nms(_decoded([(0, 0, 10, 10, 0.2, 0.2, 0.2)]), conf=0.6, iou=0.3)[0]
    assert out["boxes"].shape == (0, 4) and out["labels"].numel() == 0
