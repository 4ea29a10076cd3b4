"""Mask -> box and box -> mask conversions on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from fashionvision.compare.convert_outputs import (
    boxes_from_mask,
    class_map_by_name,
    invert_class_map,
    mask_from_boxes,
)
from fashionvision.errors import UserError

SEG = ["null", "bag", "hair", "shirt", "skin"]
DET = ["bag", "shirt"]


def test_class_map_by_name_skips_unshared_names():
    seg_to_det = class_map_by_name(SEG, DET)
    assert seg_to_det == {1: 0, 3: 1}
    assert invert_class_map(seg_to_det) == {0: 1, 1: 3}
    with pytest.raises(UserError, match="different datasets"):
        class_map_by_name(["a", "b"], ["c"])
    with pytest.raises(UserError, match="twice"):
        class_map_by_name(["a"], ["a", "a"])


def test_boxes_from_mask_components_extents_and_scores():
    mask = np.zeros((8, 10), dtype=np.int64)
    mask[1:3, 1:4] = 1  # bag: rows 1-2, cols 1-3 -> continuous box (1,1,4,3), 6 px
    mask[5:7, 6:10] = 1  # second bag component: (6,5,10,7), 8 px
    mask[4, 0] = 3  # a lone shirt pixel (1 px)
    mask[0:2, 7:9] = 2  # hair: not a detection class
    mask[6:8, 0:2] = 4  # skin: not a detection class
    probs = np.zeros((5, 8, 10), dtype=np.float32)
    probs[1, 1:3, 1:4] = 0.5
    probs[1, 1, 1] = 0.8  # mean over the 6 px: (5 * 0.5 + 0.8) / 6
    probs[1, 5:7, 6:10] = 0.9
    probs[3, 4, 0] = 0.7

    boxes, labels, scores = boxes_from_mask(mask, probs, min_area=1, class_map=class_map_by_name(SEG, DET))
    assert boxes.dtype == np.float32 and labels.dtype == np.int64
    assert boxes.tolist() == [[1, 1, 4, 3], [6, 5, 10, 7], [0, 4, 1, 5]]
    assert labels.tolist() == [0, 0, 1]
    np.testing.assert_allclose(scores, [(5 * 0.5 + 0.8) / 6, 0.9, 0.7], rtol=1e-6)

    # the area rule drops the lone pixel and the 6 px component; without probs scores are 1
    boxes, labels, scores = boxes_from_mask(mask, None, min_area=7, class_map=class_map_by_name(SEG, DET))
    assert boxes.tolist() == [[6, 5, 10, 7]] and labels.tolist() == [0] and scores.tolist() == [1.0]


def test_boxes_from_mask_connectivity_and_ignore():
    mask = np.zeros((4, 4), dtype=np.int64)
    mask[0, 0] = mask[1, 1] = 2  # diagonal neighbours
    mask[3, 3] = 255  # ignore_index
    boxes8, labels8, _ = boxes_from_mask(mask, ignore=(0, 255))
    assert boxes8.tolist() == [[0, 0, 2, 2]] and labels8.tolist() == [2]
    boxes4, _, _ = boxes_from_mask(mask, connectivity=4, ignore=(0, 255))
    assert boxes4.tolist() == [[0, 0, 1, 1], [1, 1, 2, 2]]
    empty = boxes_from_mask(np.zeros((3, 3), dtype=np.int64))
    assert empty[0].shape == (0, 4) and empty[1].shape == (0,) and empty[2].shape == (0,)


def test_mask_from_boxes_paints_in_ascending_score_order():
    det_to_seg = invert_class_map(class_map_by_name(SEG, DET))  # bag -> 1, shirt -> 3
    # continuous coordinates: [0, 5) covers pixels 0..4; 6.2 -> from pixel 6 (centre 6.5 inside)
    boxes = np.array([[0, 0, 5, 5], [2, 2, 7, 6], [-3, 6.2, 100, 9]], dtype=np.float32)
    labels = np.array([0, 1, 1])
    scores = np.array([0.9, 0.3, 0.5])
    mask = mask_from_boxes(boxes, labels, scores, (8, 8), det_to_seg)
    assert mask.dtype == np.int64 and mask.shape == (8, 8)
    expected = np.zeros((8, 8), dtype=np.int64)
    expected[2:6, 2:7] = 3  # the weaker shirt first...
    expected[0:5, 0:5] = 1  # ...then the confident bag on top of it
    expected[6:8, 0:8] = 3  # clipped to the image
    np.testing.assert_array_equal(mask, expected)

    # reversed scores: the shirt now covers the bag where they overlap
    mask = mask_from_boxes(boxes, labels, np.array([0.3, 0.9, 0.5]), (8, 8), det_to_seg)
    assert mask[3, 3] == 3 and mask[0, 0] == 1
    # unmapped detection classes are not painted; boxes outside the image are skipped
    mask = mask_from_boxes(np.array([[1, 1, 2, 2], [20, 20, 30, 30]]), np.array([5, 0]), None, (4, 4), det_to_seg)
    assert mask.sum() == 0
    # a box narrower than a pixel centre paints nothing; one covering a centre paints that pixel
    assert mask_from_boxes(np.array([[1.6, 1, 2.4, 3]]), np.array([0]), None, (4, 4), det_to_seg).sum() == 0
    assert mask_from_boxes(np.array([[1.4, 1, 1.6, 2]]), np.array([0]), None, (4, 4), det_to_seg)[1, 1] == 1


def test_round_trip_mask_boxes_mask():
    """A mask of disjoint rectangles survives mask -> boxes -> mask unchanged."""
    mask = np.zeros((12, 12), dtype=np.int64)
    mask[1:4, 2:9] = 3
    mask[6:11, 0:5] = 1
    mask[7:9, 8:12] = 3
    seg_to_det = class_map_by_name(SEG, DET)
    boxes, labels, scores = boxes_from_mask(mask, min_area=1, class_map=seg_to_det)
    assert len(boxes) == 3
    rebuilt = mask_from_boxes(boxes, labels, scores, mask.shape, invert_class_map(seg_to_det))
    np.testing.assert_array_equal(rebuilt, mask)
