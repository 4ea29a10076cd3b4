"""Where box labels go so that every one stays readable.

Drawn one by one at each box's top-left corner, labels of neighbouring boxes cover each other
("shoes 0.88" read "hoes 0.88" under its neighbour's label) and labels at the top edge were
pushed onto other boxes. :func:`place_labels` gives each label a rectangle that lies wholly
inside the image and overlaps no other label, as close to its box as it can:

1. above the box's top edge (the usual place), then just inside the box's top edge;
2. stacked: further above, or further down inside the box, one label height at a time;
3. below the box, then just inside its bottom edge;
4. anywhere else in the image, nearest to the box's top first.

Each of those is tried at the box's left edge and then right-aligned with its right edge.
Small boxes are placed first: they have the fewest good spots.
"""

from __future__ import annotations

import numpy as np


def _free(candidates: np.ndarray, placed: np.ndarray) -> np.ndarray:
    """Mask of candidate rectangles ``[C, 4]`` overlapping none of ``placed`` ``[M, 4]`` (x0, y0, x1, y1, end-exclusive)."""
    if len(placed) == 0:
        return np.ones(len(candidates), dtype=bool)
    c, p = candidates[:, None, :], placed[None, :, :]
    overlap = (c[..., 0] < p[..., 2]) & (p[..., 0] < c[..., 2]) & (c[..., 1] < p[..., 3]) & (p[..., 1] < c[..., 3])
    return ~overlap.any(axis=1)


def _candidates(box: np.ndarray, w: int, h: int, width: int, height: int) -> np.ndarray:
    """Top-left corners in order of preference (see the module docstring), inside the image."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    xs = list(dict.fromkeys(int(min(max(x, 0), width - w)) for x in (x1, x2 - w + 1)))
    steps = max(1, height // max(h, 1))
    ys = [y1 - h, y1]
    for k in range(1, steps + 1):
        ys += [y1 - h - k * h, y1 + k * h]
    ys += [y2 + 1, y2 - h + 1]
    ys += sorted(range(0, height - h + 1, max(1, h // 2)), key=lambda y: abs(y - (y1 - h)))
    corners = [(x, y) for y in dict.fromkeys(ys) if 0 <= y <= height - h for x in xs]
    if not corners:
        corners = [(xs[0], 0)]
    return np.array([(x, y, x + w, y + h) for x, y in corners], dtype=np.int64)


def _grid(box: np.ndarray, w: int, h: int, width: int, height: int) -> np.ndarray:
    """Every half-label step of the image, nearest to the box's top-left corner first."""
    xs = np.arange(0, width - w + 1, max(1, w // 2))
    ys = np.arange(0, height - h + 1, max(1, h // 2))
    gx, gy = (a.ravel() for a in np.meshgrid(xs, ys))
    order = np.argsort(np.hypot(gx - box[0], gy - (box[1] - h)), kind="stable")
    gx, gy = gx[order], gy[order]
    return np.stack([gx, gy, gx + w, gy + h], axis=1).astype(np.int64)


def place_labels(boxes: np.ndarray, sizes: list[tuple[int, int]], image_shape: tuple[int, ...]) -> np.ndarray:
    """Label rectangles ``[N, 4]`` (x0, y0, x1, y1; end-exclusive) for ``boxes`` ``[N, 4]``.

    ``sizes`` are the labels' ``(width, height)`` in pixels (text plus its padding). Labels
    wider or taller than the image are clipped to it. When the image is too full for a free
    spot (hundreds of labels), the spot overlapping the fewest labels is used.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    rects = np.zeros((len(boxes), 4), dtype=np.int64)
    placed = np.zeros((0, 4), dtype=np.int64)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in np.argsort(areas, kind="stable"):
        w, h = min(int(sizes[i][0]), width), min(int(sizes[i][1]), height)
        candidates = _candidates(boxes[i], w, h, width, height)
        free = _free(candidates, placed)
        if not free.any():  # the box's column is full: anywhere in the image, nearest first
            candidates = _grid(boxes[i], w, h, width, height)
            free = _free(candidates, placed)
        if free.any():
            choice = candidates[int(np.argmax(free))]
        else:
            c, p = candidates[:, None, :], placed[None, :, :]
            counts = ((c[..., 0] < p[..., 2]) & (p[..., 0] < c[..., 2]) & (c[..., 1] < p[..., 3])
                      & (p[..., 1] < c[..., 3])).sum(axis=1)
            choice = candidates[int(np.argmin(counts))]
        rects[i] = choice
        placed = np.vstack([placed, choice[None]])
    return rects
