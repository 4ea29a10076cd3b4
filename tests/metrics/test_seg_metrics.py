"""Segmentation metrics against a confusion matrix computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fashionvision.metrics.segmentation import ConfusionMatrix, metrics_from_confusion, write_report

NAMES = ["background", "shirt", "skirt", "dress", "hat"]

# 5 classes. "dress" (3) never occurs in the ground truth but is predicted once; "hat" (4)
# neither occurs nor is predicted; one pixel is ignored (255) and must count nowhere.
TARGET = torch.tensor([[0, 0, 1, 1],
                       [0, 2, 2, 255]])
PRED = torch.tensor([[0, 1, 1, 3],
                     [0, 0, 2, 1]])
# pairs (gt, pred): (0,0) (0,1) (1,1) (1,3) (0,0) (2,0) (2,2); (255,1) ignored
EXPECTED = np.array([[2, 1, 0, 0, 0],
                     [0, 1, 0, 1, 0],
                     [1, 0, 1, 0, 0],
                     [0, 0, 0, 0, 0],
                     [0, 0, 0, 0, 0]])


def test_confusion_matrix_matches_hand_count():
    cm = ConfusionMatrix(5, ignore_index=255)
    cm.update(PRED, TARGET)
    assert np.array_equal(cm.matrix.numpy(), EXPECTED)
    # accumulating image by image gives the same matrix
    cm2 = ConfusionMatrix(5, ignore_index=255)
    for i in range(2):
        cm2.update(PRED[i], TARGET[i])
    assert np.array_equal(cm2.matrix.numpy(), EXPECTED)


def test_metrics_match_hand_computation():
    m = metrics_from_confusion(EXPECTED, NAMES)
    # IoU per class: tp / (gt + pred - tp)
    #   background: 2/(3+3-2)=1/2, shirt 1/(2+2-1)=1/3, skirt 1/(2+1-1)=1/2,
    #   dress 0/(0+1-0)=0 (hallucinated), hat undefined (never seen, never predicted)
    ious = [r["iou"] for r in m["per_class"]]
    assert ious[:4] == pytest.approx([1 / 2, 1 / 3, 1 / 2, 0.0])
    assert ious[4] is None
    assert m["classes_present"] == 3 and m["classes_scored"] == 4
    # the standard mIoU (mmsegmentation, torchmetrics): classes in the GT or the predictions,
    # so the hallucinated dress counts with its 0; hat (never seen, never predicted) is left out
    assert m["miou"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2 + 0) / 4)
    assert m["miou_gt_classes"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)  # present in GT only
    assert m["miou_all"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2 + 0 + 0) / 5)
    assert m["pixel_acc"] == pytest.approx(4 / 7)
    assert m["mean_class_acc"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    assert m["fwiou"] == pytest.approx((3 * 1 / 2 + 2 * 1 / 3 + 2 * 1 / 2) / 7)
    assert m["pixels"] == 7
    dress = m["per_class"][3]
    assert (dress["gt_pixels"], dress["pred_pixels"], dress["present"], dress["acc"]) == (0, 1, False, None)
    assert [r["gt_pixels"] for r in m["per_class"]] == [3, 2, 2, 0, 0]


def test_pixel_accuracy_hides_what_miou_shows():
    # the study's failure: everything labelled background/dress, skirts never found
    cm = np.array([[90, 0, 0], [0, 0, 5], [0, 0, 5]])  # background, skirt, dress
    m = metrics_from_confusion(cm, ["background", "skirt", "dress"])
    assert m["pixel_acc"] == pytest.approx(0.95)
    assert m["per_class"][1]["iou"] == 0.0
    assert m["miou"] == pytest.approx((1.0 + 0.0 + 0.5) / 3)


def test_standard_miou_on_a_hand_made_matrix():
    """Rows ground truth, columns prediction: background, shirt, skirt, dress, hat, scarf."""
    cm = np.array([
        [50, 2, 0, 3, 0, 0],  # background: 3 pixels called dress
        [4, 10, 0, 0, 0, 0],  # shirt
        [0, 0, 6, 2, 0, 0],   # skirt: 2 pixels called dress
        [0, 0, 0, 0, 0, 0],   # dress: never in the ground truth, predicted on 5 pixels
        [0, 0, 0, 0, 0, 0],   # hat: never seen, never predicted
        [0, 1, 0, 0, 0, 3],   # scarf
    ])
    m = metrics_from_confusion(cm, ["background", "shirt", "skirt", "dress", "hat", "scarf"])
    iou = {"background": 50 / (55 + 54 - 50), "shirt": 10 / (14 + 13 - 10), "skirt": 6 / (8 + 6 - 6),
           "dress": 0.0, "scarf": 3 / (4 + 3 - 3)}
    assert [r["iou"] for r in m["per_class"]] == pytest.approx(
        [iou["background"], iou["shirt"], iou["skirt"], 0.0, None, iou["scarf"]])
    assert m["miou"] == pytest.approx(sum(iou.values()) / 5)
    assert m["miou_gt_classes"] == pytest.approx((sum(iou.values()) - iou["dress"]) / 4)
    assert m["miou"] < m["miou_gt_classes"]  # the false alarms of the absent class are charged
    assert m["miou_all"] == pytest.approx(sum(iou.values()) / 6)
    assert (m["classes_scored"], m["classes_present"]) == (5, 4)
    # nothing predicted outside the ground truth: both conventions agree
    clean = cm.copy()
    clean[:, 3] = 0
    clean = metrics_from_confusion(clean)
    assert clean["miou"] == pytest.approx(clean["miou_gt_classes"])


def test_out_of_range_values_are_not_counted():
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(torch.tensor([0, 1, 7, 2]), torch.tensor([0, 9, 1, 255]))
    assert cm.matrix.sum().item() == 1 and cm.matrix[0, 0].item() == 1


def test_report_files(tmp_path):
    metrics = write_report(EXPECTED, NAMES, tmp_path, extra={"images": 2})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["miou"] == pytest.approx(metrics["miou"]) and saved["images"] == 2
    assert [r["class"] for r in saved["per_class"]] == NAMES
    for name in ("confusion_matrix.png", "per_class_iou.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert np.array_equal(np.load(tmp_path / "confusion_matrix.npy"), EXPECTED)


def test_background_is_called_background_in_tables_and_figures(tmp_path):
    """CCP names class 0 'null'; every table and figure says 'background' (other names untouched)."""
    import json as _json

    import numpy as _np

    from fashionvision.metrics.segmentation import background_name, write_report

    matrix = _np.array([[50, 2, 0], [3, 40, 1], [0, 0, 9]])
    metrics = write_report(matrix, ["null", "shirt", "null-ish"], tmp_path)
    assert [r["class"] for r in metrics["per_class"]] == ["background", "shirt", "null-ish"]
    saved = _json.loads((tmp_path / "metrics.json").read_text())
    assert "null" not in [r["class"] for r in saved["per_class"]]
    assert background_name("null", 3) == "null"  # only class 0 is the background
