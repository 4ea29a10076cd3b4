"""COCO detection metrics: ground-truth conversion, hand-checked cases, operating point, report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fashionvision.metrics.detection import (gt_to_coco, match_operating_point, predictions_to_coco,
                                             summarize, write_report)

CLASSES = ["shirt", "shoes", "bag"]


def _gt():
    return gt_to_coco([
        {"id": 0, "height": 100, "width": 80, "boxes": [[10, 10, 29, 49, 0], [50, 60, 59, 69, 1]]},
        {"id": 1, "height": 100, "width": 80, "boxes": [[0, 0, 79, 99, 0]]},
        {"id": 2, "height": 50, "width": 50, "boxes": np.zeros((0, 5))},  # a negative image
    ], CLASSES)


def test_gt_uses_inclusive_extents():
    gt = _gt()
    assert [a["bbox"] for a in gt["annotations"]] == [[10, 10, 20, 40], [50, 60, 10, 10], [0, 0, 80, 100]]
    assert gt["annotations"][0]["area"] == 800
    assert [c["id"] for c in gt["categories"]] == [0, 1, 2]
    assert len(gt["images"]) == 3


def test_perfect_predictions_score_one_and_a_miss_costs_recall():
    gt = _gt()
    # continuous boxes: inclusive x2 = 29 covers up to 30
    perfect = (predictions_to_coco(0, [[10, 10, 30, 50], [50, 60, 60, 70]], [0.9, 0.8], [0, 1])
               + predictions_to_coco(1, [[0, 0, 80, 100]], [0.95], [0]))
    m = summarize(gt, perfect, CLASSES)
    assert m["map"] == pytest.approx(1.0) and m["map50"] == pytest.approx(1.0) and m["ar100"] == pytest.approx(1.0)
    assert [r["instances"] for r in m["per_class"]] == [2, 1, 0]
    assert m["per_class"][0]["ap50"] == pytest.approx(1.0)
    # drop the shoes: class 1 AP 0 -> mean over the two classes with ground truth = 0.5
    m = summarize(gt, perfect[:1] + perfect[2:], CLASSES)
    assert m["map50"] == pytest.approx(0.5)
    assert m["per_class"][1]["ap50"] == 0.0


def test_operating_point_precision_recall_and_confusion():
    gt = _gt()
    results = (predictions_to_coco(0, [[10, 10, 30, 50], [50, 60, 60, 70], [0, 0, 5, 5]], [0.9, 0.7, 0.8], [0, 0, 2])
               + predictions_to_coco(1, [[0, 0, 80, 100], [1, 1, 80, 100]], [0.95, 0.3], [0, 0]))
    op, cm = match_operating_point(gt, results, conf=0.6, iou=0.5)
    # above 0.6: shirt hit, shoes box labelled shirt (FP), bag on nothing (FP), shirt hit on image 1
    assert (op["tp"], op["fp"], op["num_gt"]) == (2, 2, 3)
    assert op["precision"] == pytest.approx(0.5) and op["recall"] == pytest.approx(2 / 3)
    bg = len(CLASSES)
    assert cm[0, 0] == 2 and cm[1, 0] == 1 and cm[bg, 2] == 1 and cm.sum() == 4


def test_empty_predictions_report(tmp_path):
    m = write_report(tmp_path, _gt(), [], CLASSES, conf=0.6)
    assert m["map"] == 0 and m["map50"] == 0 and m["recall"] == 0
    assert json.loads((tmp_path / "predictions.json").read_text()) == []
    for name in ("metrics.json", "pr_curve.png", "confusion_matrix.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_report_matches_direct_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    gt = _gt()
    results = []
    for image_id, (w, h) in enumerate([(80, 100), (80, 100), (50, 50)]):
        xy = rng.uniform(0, [w - 10, h - 10], size=(20, 2))
        wh = rng.uniform(5, 60, size=(20, 2))
        boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1)
        results += predictions_to_coco(image_id, boxes, rng.uniform(0, 1, 20), rng.integers(0, 3, 20))
    results += predictions_to_coco(0, [[11, 9, 31, 50]], [0.99], [0])
    m = write_report(tmp_path, gt, results, CLASSES, conf=0.6)
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(gt))
    coco = COCO(str(gt_file))
    ev = COCOeval(coco, coco.loadRes(str(tmp_path / "predictions.json")), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert m["map"] == pytest.approx(ev.stats[0]) and m["map50"] == pytest.approx(ev.stats[1])
    assert m["map75"] == pytest.approx(ev.stats[2]) and m["ar100"] == pytest.approx(ev.stats[8])
    assert m["map50"] > 0.1


def test_confusion_plot_names_its_threshold_and_leaves_out_absent_classes(tmp_path):
    from fashionvision.metrics.detection import confusion_view, plot_confusion_matrix

    gt = _gt()  # shirt and shoes have boxes, bag has none
    results = (predictions_to_coco(0, [[10, 10, 30, 50], [50, 60, 60, 70], [0, 0, 5, 5]], [0.9, 0.7, 0.8], [0, 0, 2])
               + predictions_to_coco(1, [[0, 0, 80, 100]], [0.95], [0]))
    _, cm = match_operating_point(gt, results, conf=0.6, iou=0.5)
    view, names = confusion_view(cm, CLASSES)
    assert names == ["shirt", "shoes", "background", "not in split"]  # the bag prediction is kept apart
    assert view.sum() == cm.sum() and view[2, 3] == 1
    drawn = plot_confusion_matrix(cm, CLASSES, tmp_path / "cm.png", conf=0.6, iou=0.5)
    assert "score >= 0.6" in drawn["title"] and "IoU >= 0.5" in drawn["title"]
    assert drawn["rows"] == ["shirt", "shoes", "background"] and "bag" not in drawn["columns"]
    assert drawn["annotated"]
    from PIL import Image

    with Image.open(tmp_path / "cm.png") as image:  # a colour bar widens the figure beyond a square
        assert image.width > image.height
    many = [f"c{i}" for i in range(40)]
    big = np.eye(41, dtype=np.int64)
    assert not plot_confusion_matrix(big, many, tmp_path / "big.png", conf=0.6)["annotated"]
