"""Box labels stay readable: on a crowded real CCP image no two labels overlap and all lie inside."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import ccp_boxes_from_mat, ccp_label_names, CCP_EXCLUDED
from fashionvision.data.image_io import read_image
from fashionvision.tasks.label_layout import place_labels
from fashionvision.tasks.visualize import class_colors, draw_boxes, label_rects, label_texts

CROWDED = "0100"  # 16 boxes by the CCP box rule: the most of the first 200 pixel-level images


def overlapping_pairs(rects: np.ndarray) -> list[tuple[int, int]]:
    pairs = []
    for i in range(len(rects)):
        for j in range(i + 1, len(rects)):
            a, b = rects[i], rects[j]
            if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                pairs.append((i, j))
    return pairs


def assert_readable(rects: np.ndarray, shape: tuple[int, ...]) -> None:
    assert not overlapping_pairs(rects), overlapping_pairs(rects)
    assert (rects[:, :2] >= 0).all() and (rects[:, 2] <= shape[1]).all() and (rects[:, 3] <= shape[0]).all()


@pytest.fixture(scope="module")
def crowded(shared_data: Path):
    ccp = shared_data / "ccp"
    image = read_image(ccp / "photos" / f"{CROWDED}.jpg")
    _, gt = ccp_boxes_from_mat(ccp / "annotations" / "pixel-level" / f"{CROWDED}.mat")
    names = [n for i, n in enumerate(ccp_label_names(ccp)) if i not in CCP_EXCLUDED]
    return image, gt, names


def test_ground_truth_labels_of_a_crowded_image(crowded):
    image, gt, names = crowded
    assert len(gt) >= 12
    texts = label_texts(gt[:, 4], names, None)
    rects = label_rects(image.shape, gt[:, :4], texts)
    assert_readable(rects, image.shape)
    for rect, box in zip(rects, gt):  # each label touches its box's columns: it reads as that box's
        assert rect[0] <= box[2] and rect[2] > box[0]


def test_predictions_with_scores_on_a_crowded_image(crowded):
    """A detector's view: every box twice more, jittered, with scores ("shoes 0.88")."""
    image, gt, names = crowded
    rng = np.random.default_rng(0)
    boxes = np.concatenate([gt[:, :4], gt[:, :4] + rng.integers(-6, 7, (len(gt), 4)),
                            gt[:, :4] + rng.integers(-6, 7, (len(gt), 4))]).clip(0, None)
    labels = np.concatenate([gt[:, 4]] * 3)
    scores = rng.uniform(0.3, 1.0, len(boxes))
    texts = label_texts(labels, names, scores)
    rects = label_rects(image.shape, boxes, texts)
    assert_readable(rects, image.shape)
    drawn = draw_boxes(image, boxes, labels, names, scores=scores)
    assert drawn.shape == image.shape and (drawn != image).any()
    palette = class_colors(len(names))
    for rect, cls in zip(rects, labels):  # each label is drawn whole where the layout put it: nothing covers it
        for x, y in ((rect[0], rect[1]), (rect[2] - 1, rect[1]), (rect[0], rect[3] - 1), (rect[2] - 1, rect[3] - 1)):
            assert (drawn[y, x] == palette[cls]).all(), (names[cls], rect)


def test_labels_at_the_edges_stay_whole():
    """A box at the top edge gets its label inside; one at the right edge is not cut off."""
    shape = (200, 300, 3)
    boxes = np.array([[0, 0, 120, 80], [250, 100, 299, 199], [5, 2, 60, 40]])
    rects = place_labels(boxes, [(90, 20), (90, 20), (90, 20)], shape)
    assert_readable(rects, shape)
    assert rects[0][1] >= 0 and rects[0][1] < 80  # inside the box, not above the image
    assert rects[1][2] <= 300


def test_an_image_too_full_still_gives_in_image_rectangles():
    shape = (40, 60, 3)
    rects = place_labels(np.tile([[10, 10, 30, 30]], (30, 1)), [(50, 12)] * 30, shape)
    assert (rects[:, :2] >= 0).all() and (rects[:, 2] <= 60).all() and (rects[:, 3] <= 40).all()
