"""AP per ground-truth subset (DeepFashion2's occlusion / zoom_in / viewpoint / scale)."""

from __future__ import annotations

import numpy as np

from fashionvision.metrics.detection import gt_to_coco, predictions_to_coco, subset_metrics

FIELDS = ["item", "occlusion", "zoom_in", "viewpoint", "scale", "style"]


def test_each_subset_scores_only_its_boxes():
    # image 0: a slightly occluded top found exactly; image 1: a heavily occluded top missed
    images = [{"id": 0, "height": 100, "width": 100, "boxes": np.array([[10, 10, 49, 49, 0]])},
              {"id": 1, "height": 100, "width": 100, "boxes": np.array([[20, 20, 59, 79, 0]])}]
    labels = [[1, 1, 1, 2, 2, 1], [1, 3, 1, 2, 2, 1]]
    gt = gt_to_coco(images, ["top"])
    results = predictions_to_coco(0, np.array([[10, 10, 50, 50]]), np.array([0.9]), np.array([0]))
    results += predictions_to_coco(1, np.array([[70, 0, 90, 10]]), np.array([0.8]), np.array([0]))  # a false alarm
    subsets = subset_metrics(gt, results, FIELDS, labels)
    assert set(subsets) == {"scale", "occlusion", "zoom_in", "viewpoint"}
    assert subsets["occlusion"]["1"]["instances"] == 1 and subsets["occlusion"]["3"]["instances"] == 1
    assert subsets["occlusion"]["3"]["map50"] == 0.0  # the heavy one was missed
    assert subsets["occlusion"]["1"]["map50"] > 0.9 > subsets["zoom_in"]["1"]["map50"]  # both boxes in zoom_in 1
    assert subsets["zoom_in"]["1"]["instances"] == 2
    unknown = subset_metrics(gt, results, FIELDS, [None, labels[1]])
    assert unknown["occlusion"] == {"3": {"map": 0.0, "map50": 0.0, "instances": 1}}
