"""Published Darknet files: ``yolov3.weights`` (COCO, 80 classes) and ``darknet53.conv.74``.

Files are written in Darknet's exact layout by ``tests/fixtures/darknet_files.py`` (its own
walk of ``yolov3.cfg``, not the loader's), at width 0.25 so they stay small; the published
full-width sizes are checked arithmetically.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from fashionvision.engine.checkpoint import load_pretrained
from fashionvision.errors import UserError
from fashionvision.families.yolov3.darknet_layout import backbone_layout, full_layout, infer_layout
from fashionvision.families.yolov3.model import YOLOv3
from fixtures.darknet_files import count_values, darknet_values, randomise_batch_norm, write_weights

pytestmark = pytest.mark.usefixtures("two_torch_threads")

WIDTH = 0.25
YOLOV3_WEIGHTS_VALUES = 62_001_757     # yolov3.weights: 248,007,048 bytes = 20-byte header + 4 x this
DARKNET53_CONV74_VALUES = 40_620_640   # darknet53.conv.74: 162,482,580 bytes


def _coco_model(width: float = WIDTH) -> YOLOv3:
    torch.manual_seed(0)
    return randomise_batch_norm(YOLOv3(80, width=width), seed=1)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_published_sizes_follow_from_the_layer_layout():
    with torch.device("meta"):  # the published network, counted without allocating it
        published = YOLOv3(80)
    assert count_values(published) == YOLOV3_WEIGHTS_VALUES
    assert count_values(published, 52) == DARKNET53_CONV74_VALUES
    assert full_layout(1.0, 1.0, 80).num_values == YOLOV3_WEIGHTS_VALUES
    assert backbone_layout(1.0, 1.0).num_values == DARKNET53_CONV74_VALUES
    coco = infer_layout(YOLOV3_WEIGHTS_VALUES, width=WIDTH)
    assert (coco.width, coco.num_classes, len(coco.convs)) == (1.0, 80, 75)
    backbone = infer_layout(DARKNET53_CONV74_VALUES)
    assert (backbone.width, backbone.backbone_only, len(backbone.convs)) == (1.0, True, 52)


@pytest.mark.parametrize("width,classes", [(0.25, 80), (0.5, 56), (0.125, 1), (0.75, 13)])
def test_width_and_class_count_are_inferred_from_the_size(width, classes):
    with torch.device("meta"):
        model = YOLOv3(classes, width=width)
    layout = infer_layout(count_values(model), width=1.0)
    assert (layout.width, layout.num_classes) == (width, classes)


def test_coco_file_into_a_56_class_model(tmp_path, caplog):
    source = _coco_model()
    path = write_weights(tmp_path / "yolov3.weights", source)
    values = np.fromfile(path, dtype="<f4", offset=20)
    assert values.size == count_values(source)
    model = YOLOv3(56, width=WIDTH)
    outputs_before = {i: getattr(model, f"head{i}").out.weight.clone() for i in (1, 2, 3)}
    with caplog.at_level(logging.INFO):
        load_pretrained(model, path, classes=[f"c{i}" for i in range(56)])  # what fashion-train calls
    assert ("loaded 72 of 75 convolutions; skipped head1.out, head2.out, head3.out "
            "(80 classes in the file, 56 in the model)") in caplog.text
    # the backbone is bit-identical to the file's first values, in cfg order
    backbone = darknet_values(model.backbone)
    assert np.array_equal(backbone, values[:backbone.size])
    # every class-independent tensor equals the source's, the output convs are the model's own
    theirs = source.state_dict()
    for key, value in model.state_dict().items():
        if ".out." in key or key == "anchors" or key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(value, theirs[key]), key
    for i in (1, 2, 3):
        assert torch.equal(getattr(model, f"head{i}").out.weight, outputs_before[i])
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 64, 64))[0].shape == (1, 3 * (5 + 56), 8, 8)


def test_report_of_a_coco_file(tmp_path):
    path = write_weights(tmp_path / "yolov3.weights", _coco_model(), seen=64_000)
    report = YOLOv3(56, width=WIDTH).load_pretrained(path)
    assert report["loaded_convs"] == 72 and report["total_convs"] == 75
    assert report["skipped"] == ["head1.out", "head2.out", "head3.out"]
    assert (report["file_classes"], report["file_width"], report["seen"], report["version"]) == (80, WIDTH, 64_000,
                                                                                                  "0.2.5")


def test_backbone_only_file_loads_the_backbone(tmp_path, caplog):
    source = _coco_model()
    path = write_weights(tmp_path / "darknet53.conv.74", source, num_sections=52)
    assert (path.stat().st_size - 20) // 4 == count_values(source, 52)
    model = YOLOv3(56, width=WIDTH)
    neck_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    with caplog.at_level(logging.INFO):
        report = model.load_pretrained(path)
    assert report["loaded_convs"] == 52 and report["backbone_only"]
    assert "loaded the backbone: 52 of 75 convolutions" in caplog.text
    values = np.fromfile(path, dtype="<f4", offset=20)
    assert np.array_equal(darknet_values(model.backbone), values)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in neck_before.items())


def _one_line_error(model: torch.nn.Module, path, match: str) -> str:
    before = _snapshot(model)
    with pytest.raises(UserError, match=match) as info:
        model.load_pretrained(path)
    message = str(info.value)
    assert "\n" not in message
    assert _unchanged(model, before)  # planned and refused before any tensor was written
    return message


def test_truncated_file_is_refused_and_the_model_untouched(tmp_path):
    full = write_weights(tmp_path / "yolov3.weights", _coco_model())
    cut = tmp_path / "cut.weights"
    cut.write_bytes(full.read_bytes()[:-4000])
    found = (cut.stat().st_size - 20) // 4
    message = _one_line_error(YOLOv3(56, width=WIDTH), cut, "fits no YOLOv3 layout")
    assert f"{found:,} float32 values" in message
    assert f"{full_layout(WIDTH, 1.0, 56).num_values:,} (the full network, 56 classes)" in message
    assert f"{backbone_layout(WIDTH, 1.0).num_values:,} (the backbone" in message


def test_file_of_another_width_is_refused_and_the_model_untouched(tmp_path):
    path = write_weights(tmp_path / "yolov3.weights", _coco_model(WIDTH))
    message = _one_line_error(YOLOv3(56, width=0.125), path, "at width 0.25")
    assert "80 classes" in message and "set model.width=0.25" in message


@pytest.mark.parametrize("size", [40_000, 40_002, 10])
def test_random_bytes_are_refused_and_the_model_untouched(tmp_path, size):
    path = tmp_path / "random.weights"
    path.write_bytes(np.random.default_rng(size).integers(1, 127, size, dtype=np.uint8).tobytes())
    _one_line_error(YOLOv3(56, width=WIDTH), path, "Darknet weights file")


def test_old_header_with_int32_seen(tmp_path):
    source = _coco_model()
    path = write_weights(tmp_path / "old.weights", source, version=(0, 1, 0), seen=99)
    assert path.stat().st_size == 16 + 4 * count_values(source)
    model = YOLOv3(80, width=WIDTH)
    report = model.load_pretrained(path)
    assert (report["seen"], report["loaded_convs"], report["skipped"]) == (99, 75, [])
    assert np.array_equal(darknet_values(model), darknet_values(source))


def test_published_depth_into_a_shallower_model_names_the_setting(tmp_path):
    path = write_weights(tmp_path / "yolov3.weights", _coco_model(0.125))
    message = _one_line_error(YOLOv3(56, width=0.125, depth=0.5), path, "at width 0.125, depth 1")
    assert "set model.depth=1 to load it" in message
