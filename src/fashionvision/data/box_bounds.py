"""Boxes against the size of their image: clip the ones slightly outside, drop the ones outside.

The annotation reader (:mod:`fashionvision.annotations`) refuses values no image can hold
(above ``MAX_VALUE``) but cannot know an image's size: that is known only where an image
(or its header) is opened, i.e. in the dataset at load time, in the anchor statistics and in
``fashion-show``. Those three call :func:`fit_boxes`, so that every consumer sees the same
boxes and reports the same ``FILE:LINE: warning: ...`` that ``fashion-validate`` would.
"""

from __future__ import annotations

import numpy as np

from fashionvision.annotations import Issue, Record


def fit_boxes(record: Record, width: int, height: int, file: str = "") -> tuple[np.ndarray, list[Issue]]:
    """``record.boxes`` inside a ``width`` x ``height`` image, and a warning per changed box.

    A box reaching past the image is clipped to its last pixel (inclusive extents); a box with
    no pixel inside the image is dropped. ``file`` (the split file) and ``record.line`` locate
    the warnings. The record itself is left untouched.
    """
    boxes = record.boxes
    if len(boxes) == 0 or (boxes[:, 2].max() < width and boxes[:, 3].max() < height):
        return boxes, []  # the common case: nothing to do, no copy
    where = file or record.path
    issues: list[Issue] = []
    keep = np.ones(len(boxes), dtype=bool)
    out = boxes.copy()
    for index, (x1, y1, x2, y2, _) in enumerate(boxes.tolist()):
        if x2 < width and y2 < height:
            continue
        shown = f"box {index + 1} ({x1},{y1},{x2},{y2})"
        if x1 >= width or y1 >= height:
            keep[index] = False
            issues.append(Issue(where, record.line, f"{shown} lies outside the image '{record.path}' "
                                                     f"({width}x{height}); dropped", "warning"))
            continue
        out[index, 2] = min(x2, width - 1)
        out[index, 3] = min(y2, height - 1)
        issues.append(Issue(where, record.line, f"{shown} extends past the image '{record.path}' "
                                                 f"({width}x{height}); clipped", "warning"))
    return out[keep], issues


def fitted_record(record: Record, width: int, height: int, file: str = "") -> tuple[Record, list[Issue]]:
    """:func:`fit_boxes` as a new :class:`Record` (the same record when nothing changed)."""
    boxes, issues = fit_boxes(record, width, height, file)
    if not issues:
        return record, []
    return Record(record.path, boxes, record.line), issues
