"""YOLOv3 / Darknet-53: shapes, published parameter count, multipliers, registry."""

from __future__ import annotations

import torch

from fashionvision.families import build_model
from fashionvision.families.yolov3.darknet import Darknet53
from fashionvision.families.yolov3.model import YOLOv3, build_yolov3


def test_published_parameter_count_and_layer_count():
    # the published YOLOv3 at 80 classes: 61,949,149 parameters, 75 convolutions, 52 in Darknet-53
    model = YOLOv3(80)
    assert sum(p.numel() for p in model.parameters()) == 61_949_149
    assert len(model.darknet_convs()) == 75
    assert len(model.backbone.darknet_convs()) == 52
    assert sum(p.numel() for p in model.backbone.parameters()) == 40_584_928  # Darknet-53 without its classifier


def test_output_shapes_per_stride():
    torch.manual_seed(0)
    model = build_yolov3({"width": 0.125, "depth": 0.34}, num_classes=7).eval()
    with torch.no_grad():
        outputs = model(torch.rand(2, 3, 96, 128))
    assert [tuple(o.shape) for o in outputs] == [(2, 3 * 12, 12, 16), (2, 36, 6, 8), (2, 36, 3, 4)]
    assert model.strides == (8, 16, 32)


def test_width_and_depth_multipliers():
    net = Darknet53(width=0.25, depth=0.34)
    assert net.out_channels == (64, 128, 256)
    assert [len(s) - 1 for s in net.stages] == [1, 1, 3, 3, 1]  # residual blocks per stage
    assert Darknet53(width=0.01).out_channels == (8, 8, 10)  # never below 8 channels


def test_anchors_sorted_small_to_large_and_registry():
    anchors = [[373, 326], [10, 13], [156, 198], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90]]
    model = build_model({"name": "yolo", "width": 0.125, "depth": 0.34, "anchors": anchors}, 3)
    areas = model.anchors.reshape(-1, 2).prod(1)
    assert torch.all(areas[1:] >= areas[:-1])
    assert model.anchors[0, 0].tolist() == [10, 13]  # smallest on the stride-8 head
    assert "anchors" in model.state_dict()  # travels with checkpoints
