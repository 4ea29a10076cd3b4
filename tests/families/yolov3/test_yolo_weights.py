"""Darknet binary weights: round trip, backbone-only files, size checks; our checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fashionvision.errors import UserError
from fashionvision.families.yolov3.darknet_weights import read_darknet, write_darknet
from fashionvision.families.yolov3.model import YOLOv3


def _model(seed: int, num_classes: int = 5) -> YOLOv3:
    torch.manual_seed(seed)
    model = YOLOv3(num_classes, width=0.125)  # full depth: all 75 convs
    with torch.no_grad():  # random BN statistics too, so that every tensor is checked
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()
    return model


def test_full_round_trip_is_identical(tmp_path):
    src, dst = _model(0), _model(1)
    path = tmp_path / "yolov3.weights"
    write_darknet(src, path, seen=12345)
    # header (3 x int32 + int64) and every value of every conv, nothing else
    n_values = sum(t.numel() for c, b in src.darknet_convs()
                   for t in ([b.bias, b.weight, b.running_mean, b.running_var] if b is not None else [c.bias])
                   + [c.weight])
    assert path.stat().st_size == 20 + 4 * n_values
    report = read_darknet(dst, path)
    assert report == {"loaded_convs": 75, "total_convs": 75, "skipped": [], "file_classes": 5, "file_width": 0.125,
                      "backbone_only": False, "seen": 12345, "version": "0.2.0"}
    a, b = src.state_dict(), dst.state_dict()
    for key in a:
        if key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(a[key], b[key]), key
    x = torch.rand(1, 3, 64, 64)
    src.eval(), dst.eval()
    with torch.no_grad():
        assert all(torch.equal(p, q) for p, q in zip(src(x), dst(x)))


def test_file_order_is_darknet_cfg_order(tmp_path):
    # the first values after the header are conv 0's BN beta, then gamma, mean, var, then weights;
    # the last values are the stride-8 output conv's bias then weights (layer 105 of yolov3.cfg)
    model = _model(0)
    path = tmp_path / "w.weights"
    write_darknet(model, path)
    data = np.fromfile(path, dtype=np.float32, offset=20)
    stem = model.backbone.stem
    c = stem.bn.bias.numel()
    assert np.array_equal(data[:c], stem.bn.bias.detach().numpy())
    assert np.array_equal(data[c:2 * c], stem.bn.weight.detach().numpy())
    last = model.head3.out
    w = last.weight.detach().numpy().ravel()
    assert np.array_equal(data[-w.size:], w)
    assert np.array_equal(data[-w.size - last.bias.numel():-w.size], last.bias.detach().numpy())


def test_backbone_only_file_loads_into_full_model(tmp_path):
    src, dst = _model(0), _model(1)
    path = tmp_path / "darknet53.conv.74"
    write_darknet(src.backbone, path, num_convs=52)  # what darknet53.conv.74 holds
    head_before = dst.set1.convs[0].conv.weight.clone()
    report = dst.load_pretrained(path)
    assert report["loaded_convs"] == 52
    for key, value in src.backbone.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, dst.backbone.state_dict()[key]), key
    assert torch.equal(dst.set1.convs[0].conv.weight, head_before)  # neck untouched


def test_old_header_and_bad_sizes(tmp_path):
    src = _model(0)
    path = tmp_path / "old.weights"
    write_darknet(src, path)
    raw = path.read_bytes()
    old = np.array([0, 1, 0, 99], dtype=np.int32).tobytes() + raw[20:]  # v0.1: int32 "seen"
    (tmp_path / "v01.weights").write_bytes(old)
    assert read_darknet(_model(1), tmp_path / "v01.weights")["seen"] == 99
    (tmp_path / "cut.weights").write_bytes(raw[:-40])
    with pytest.raises(UserError, match="fits no YOLOv3 layout"):
        read_darknet(_model(1), tmp_path / "cut.weights")
    # heads for 5 classes into a 4-class model: everything else loads, the output convs start fresh
    report = read_darknet(_model(1, num_classes=4), path)
    assert report["loaded_convs"] == 72 and report["skipped"] == ["head1.out", "head2.out", "head3.out"]


def test_our_checkpoint_skips_mismatched_heads(tmp_path):
    src = _model(0, num_classes=5)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": src.state_dict()}, path)
    dst = _model(1, num_classes=3)
    dst_anchors = dst.anchors.clone()
    report = dst.load_pretrained(path)
    assert len(report["skipped_shape_mismatch"]) == 6  # weight + bias of the three output convs
    assert torch.equal(dst.backbone.stem.conv.weight, src.backbone.stem.conv.weight)
    assert not torch.equal(dst.head1.out.bias, src.head1.out.bias[:24])
    assert torch.equal(dst.anchors, dst_anchors)
