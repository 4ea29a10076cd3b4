"""Turning one family's outputs into the other's: masks -> boxes and boxes -> masks.

``fashion-compare`` scores both families with both yardsticks. A segmenter gets detection
metrics through :func:`boxes_from_mask` (one box per connected component of each class, scored
by the mean class probability over the component) and a detector gets segmentation metrics
through :func:`mask_from_boxes` (boxes painted lowest score first, so the most confident box
wins where boxes overlap).

Boxes are in continuous pixel coordinates, as the detector predicts them and as datasets load
ground truth (pixel ``i`` covers ``[i, i + 1)``, so a component spanning columns 3..7 gets
``x1 = 3, x2 = 8``; the converted text format stores the inclusive ``x2 - 1``). A mask equal to
the ground truth therefore yields the ground-truth boxes, and painting a ground-truth box covers
exactly its pixels (a pixel is painted when its centre lies inside the box).

The segmentation classes (CCP: 59 labels, 0 = ``null``) and detection classes (CCP: 56 labels,
without ``null``, ``hair`` and ``skin``) differ, so the mapping between them is always explicit:
:func:`class_map_by_name` derives it by matching class names, never by position.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from fashionvision.errors import UserError


def class_map_by_name(source: Sequence[str], target: Sequence[str]) -> dict[int, int]:
    """Map ``source`` class indices to ``target`` indices by identical name.

    Names missing from ``target`` (e.g. CCP's ``null``, ``hair`` and ``skin`` when mapping
    segmentation labels to detection classes) are left out of the map.

    Raises:
        UserError: a name occurs twice in ``target`` (the mapping would be ambiguous) or no
            name is shared at all (the lists describe different datasets).
    """
    index: dict[str, int] = {}
    for i, name in enumerate(target):
        if name in index:
            raise UserError(f"class name '{name}' occurs twice in the target class list")
        index[name] = i
    mapping = {i: index[name] for i, name in enumerate(source) if name in index}
    if source and target and not mapping:
        raise UserError(
            f"no class name is shared between the lists (e.g. '{source[0]}' vs '{target[0]}'): "
            "they come from different datasets"
        )
    return mapping


def invert_class_map(mapping: dict[int, int]) -> dict[int, int]:
    """``{a: b}`` -> ``{b: a}``; the map must be one-to-one."""
    inverse = {b: a for a, b in mapping.items()}
    if len(inverse) != len(mapping):
        raise ValueError("class map is not one-to-one and cannot be inverted")
    return inverse


def boxes_from_mask(
    mask: np.ndarray,
    probs: np.ndarray | None = None,
    min_area: float = 1,
    class_map: dict[int, int] | None = None,
    ignore: Iterable[int] = (0,),
    connectivity: int = 8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes of the connected components of each class in a class-index mask.

    Args:
        mask: ``[H, W]`` integer class indices (segmentation classes).
        probs: optional ``[C, H, W]`` class probabilities, or the ``[H, W]`` probability of each
            pixel's own class (the segmenter's ``confidence``: the same numbers over a class's
            pixels, C times smaller); a box's score is the mean probability of its class over
            its component's pixels (1.0 when ``probs`` is None).
        min_area: components with fewer pixels are dropped (the converter's area rule).
        class_map: segmentation class -> detection class; classes not in it make no boxes.
            None keeps the segmentation indices.
        ignore: segmentation classes that never make boxes (background; ignore_index).
        connectivity: 8 (diagonal neighbours connect) or 4.

    Returns:
        ``boxes`` float32 ``[N, 4]`` (x1, y1, x2, y2, continuous pixel coordinates), ``labels``
        int64 ``[N]`` (detection classes), ``scores`` float32 ``[N]``; ordered by class, then
        by component label (row-major first pixel).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {mask.shape}")
    if probs is not None:
        probs = np.asarray(probs)
        if probs.shape[-2:] != mask.shape or probs.ndim not in (2, 3):
            raise ValueError(f"probs must be [C, {mask.shape[0]}, {mask.shape[1]}] or [{mask.shape[0]}, "
                             f"{mask.shape[1]}], got {probs.shape}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    skip = {int(v) for v in ignore}
    boxes: list[list[float]] = []
    labels: list[int] = []
    scores: list[float] = []
    for value in np.unique(mask):
        value = int(value)
        if value in skip:
            continue
        target = value if class_map is None else class_map.get(value)
        if target is None:
            continue
        components, count = ndimage.label(mask == value, structure=structure)
        if count == 0:
            continue
        index = np.arange(1, count + 1)
        areas = np.bincount(components.ravel(), minlength=count + 1)[1:]
        if probs is not None and probs.ndim == 2:
            means = np.asarray(ndimage.mean(probs, labels=components, index=index), dtype=np.float64)
        elif probs is not None and value < probs.shape[0]:
            means = np.asarray(ndimage.mean(probs[value], labels=components, index=index), dtype=np.float64)
        else:
            means = np.ones(count)
        for area, found, score in zip(areas, ndimage.find_objects(components), means):
            if found is None or area < min_area:
                continue
            rows, cols = found
            boxes.append([cols.start, rows.start, cols.stop, rows.stop])
            labels.append(target)
            scores.append(float(score))
    return (
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(labels, dtype=np.int64),
        np.asarray(scores, dtype=np.float32),
    )


def mask_from_boxes(
    boxes: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray | None,
    shape: tuple[int, int],
    class_map: dict[int, int] | None = None,
    background: int = 0,
) -> np.ndarray:
    """Paint boxes into a class-index mask, lowest score first (the best box ends on top).

    Args:
        boxes: ``[N, 4]`` x1, y1, x2, y2 in continuous pixel coordinates; a pixel is painted
            when its centre lies inside the box (clipped to the image).
        labels: ``[N]`` detection classes.
        scores: ``[N]`` confidences deciding the painting order (None: the given order).
        shape: ``(H, W)`` of the mask.
        class_map: detection class -> segmentation class; boxes of unmapped classes are not
            painted. None paints the detection indices as they are.
        background: value of unpainted pixels.

    Returns:
        int64 ``[H, W]`` mask.
    """
    height, width = int(shape[0]), int(shape[1])
    mask = np.full((height, width), background, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    if scores is None:
        order = np.arange(len(boxes))
    else:
        scores = np.asarray(scores).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
        order = np.argsort(scores, kind="stable")  # ascending; ties keep the given order
    for i in order:
        value = int(labels[i]) if class_map is None else class_map.get(int(labels[i]))
        if value is None:
            continue
        # pixel i's centre is i + 0.5: painted columns are ceil(x1 - 0.5) .. ceil(x2 - 0.5) - 1
        x1, y1, x2, y2 = np.ceil(boxes[i] - 0.5).astype(np.int64)
        x1, x2 = max(x1, 0), min(x2, width)
        y1, y2 = max(y1, 0), min(y2, height)
        if x2 <= x1 or y2 <= y1:
            continue  # empty or entirely outside the image
        mask[y1:y2, x1:x2] = value
    return mask
