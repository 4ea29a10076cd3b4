"""COCO segmentations -> boxes and class-index mask PNGs (pycocotools does the rasterising).

Polygons are rasterised by pycocotools inside a window around the polygon rather than on the
whole image: the result is the same pixels (the window is shifted by whole pixels), but the
cost follows the object's size instead of the photo's, which is what makes masks for tens of
thousands of photos affordable. Masks are written by a small process pool fed in bounded
batches, so memory stays flat however many images there are.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections import deque
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from fashionvision.convert.common import mask_write_failed
from fashionvision.errors import UserError

BATCH = 32  # images per task sent to a worker
MAX_IN_FLIGHT = 16  # batches queued at once: bounds the memory held by pending work
UPSAMPLE = 5.0  # pycocotools rasterises polygons on a 5x grid (maskApi.c rleFrPoly)


def _polygons(segmentation: list) -> list[list[float]]:
    polygons = [list(p) for p in segmentation if len(p) >= 6]
    if any(len(p) % 2 for p in polygons):
        raise ValueError("a polygon has an odd number of coordinates")
    if not polygons:
        raise ValueError("no polygon with at least 3 points")
    return polygons


def segmentation_rle(segmentation: list | dict, height: int, width: int) -> dict:
    """One (merged) compressed RLE for a polygon list or an RLE (compressed or uncompressed)."""
    if isinstance(segmentation, list):
        return coco_mask.merge(coco_mask.frPyObjects(_polygons(segmentation), height, width))
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = [int(v) for v in segmentation["size"]]
        if size != [height, width]:
            raise ValueError(f"RLE size {size} differs from the image size [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                raise ValueError("RLE counts must be non-negative integers")
            if sum(counts) != height * width:
                raise ValueError(f"RLE counts add up to {sum(counts)} pixels, the image has {height * width}")
            return coco_mask.frPyObjects(segmentation, height, width)
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        return {"size": size, "counts": counts}
    raise ValueError(f"segmentation is neither a polygon list nor an RLE ({type(segmentation).__name__})")


def rle_string_counts(counts: str | bytes) -> list[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``, vectorised).

    Each run is 5-bit groups, low first, 0x20 meaning "more follows" and 0x10 in the last group
    the sign; from the third run on, a run is stored as the difference to the one two before.
    """
    raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    if not raw:
        return []
    chars = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if ((chars < 0) | (chars >= 64)).any():
        raise ValueError("RLE counts string holds a character outside '0'..'o'")
    more = (chars & 0x20) != 0
    if more[-1]:
        raise ValueError("RLE counts string ends in the middle of a number")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 12:
        raise ValueError("RLE counts string holds a number too large for any image")
    position = np.arange(len(chars)) - np.repeat(starts, lengths)
    values = np.add.reduceat((chars & 0x1F) << (5 * position), starts)
    negative = (chars[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * lengths[negative])
    values[1::2] = np.cumsum(values[1::2])
    if len(values) > 2:
        values[2::2] = np.cumsum(values[2::2])
    return values.tolist()


def check_segmentation(segmentation: list | dict, height: int, width: int) -> None:
    """Raise ``ValueError`` saying why a segmentation cannot be painted on an HxW image.

    pycocotools trusts its input: RLE counts that do not add up to the image make it read or
    write past the mask, so they are checked here, before anything is decoded.
    """
    if isinstance(segmentation, list):
        # structure only, in O(polygons): a per-coordinate check would cost as much as the
        # whole box conversion of a Fashionpedia-sized file; pycocotools refuses non-numbers
        # when it paints, and that is reported with the mask
        usable = 0
        for polygon in segmentation:
            if not isinstance(polygon, list) or (polygon and not isinstance(polygon[0], (int, float))):
                raise ValueError("a polygon is not a list of numbers")
            if len(polygon) >= 6:
                if len(polygon) % 2:
                    raise ValueError("a polygon has an odd number of coordinates")
                usable += 1
        if not usable:
            raise ValueError("no polygon with at least 3 points")
        return
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        raise ValueError(f"segmentation is neither a polygon list nor an RLE ({type(segmentation).__name__})")
    size = segmentation["size"]
    if not isinstance(size, list) or len(size) != 2 or [int(v) for v in size] != [height, width]:
        raise ValueError(f"RLE size {size} differs from the image size [{height}, {width}]")
    counts = segmentation["counts"]
    if isinstance(counts, (str, bytes)):
        runs = rle_string_counts(counts)
    elif isinstance(counts, list):
        runs = np.asarray(counts)
        if runs.ndim != 1 or (len(runs) and runs.dtype.kind not in "iu"):
            raise ValueError("RLE counts are neither a string nor a list of integers")
    else:
        raise ValueError("RLE counts are neither a string nor a list of integers")
    runs = np.asarray(runs, dtype=np.int64)
    if (runs < 0).any():
        raise ValueError("RLE counts hold a negative run")
    total = int(runs.sum())
    if total != height * width:
        raise ValueError(f"RLE counts sum to {total}, not to the image's {height}x{width} = {height * width} pixels")


def segmentation_bbox(segmentation: list | dict, height: int, width: int) -> list[float]:
    """COCO ``[x, y, w, h]`` of the pixels a segmentation covers (as pycocotools rasterises it)."""
    return [float(v) for v in coco_mask.toBbox(segmentation_rle(segmentation, height, width))]


def paint_instance(canvas: np.ndarray, segmentation: list | dict, value: int) -> None:
    """Set the pixels of one instance to ``value`` in an HxW uint8 canvas.

    A polygon inside the image is rasterised by pycocotools in a window around it; the
    coordinates are first quantised exactly as pycocotools does (``(int)(5 * v + 0.5)``) and
    shifted by whole pixels, so the window gives the same pixels as the whole image would.
    pycocotools clips a polygon that leaves the image point by point rather than geometrically,
    so such polygons are rasterised on the whole image.
    """
    height, width = canvas.shape
    if isinstance(segmentation, list):
        polygons = _polygons(segmentation)
        flat = np.concatenate([np.asarray(p, dtype=np.float64) for p in polygons])
        xs, ys = flat[0::2], flat[1::2]
        if xs.min() < 0 or ys.min() < 0 or xs.max() > width - 1 or ys.max() > height - 1:
            pixels = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygons, height, width)))
            np.copyto(canvas, value, where=pixels.view(bool))
            return
        # 2 px margin keeps the window's edges off the polygon
        x0, y0 = max(0, math.floor(xs.min()) - 2), max(0, math.floor(ys.min()) - 2)
        x1, y1 = min(width, math.ceil(xs.max()) + 3), min(height, math.ceil(ys.max()) + 3)
        shift = np.array([x0, y0], dtype=np.float64) * UPSAMPLE
        local = [
            ((np.trunc(UPSAMPLE * np.asarray(p, dtype=np.float64) + 0.5).reshape(-1, 2) - shift) / UPSAMPLE).ravel().tolist()
            for p in polygons
        ]
        pixels = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(local, y1 - y0, x1 - x0)))
        # copyto with a bool view: no temporary copy of the (column-major) decoded mask
        np.copyto(canvas[y0:y1, x0:x1], value, where=pixels.view(bool))
    else:
        pixels = coco_mask.decode(segmentation_rle(segmentation, height, width))
        np.copyto(canvas, value, where=pixels.view(bool))


def paint_mask(height: int, width: int, instances: Sequence[tuple[float, int, object]]) -> tuple[np.ndarray, list[str]]:
    """Paint ``(area, value, segmentation)`` instances larger-first; return the mask and problems."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    problems: list[str] = []
    for area, value, segmentation in sorted(instances, key=lambda item: -item[0]):
        try:
            paint_instance(canvas, segmentation, value)
        except (ValueError, TypeError, OverflowError) as exc:
            problems.append(f"instance of class value {value} not painted: {exc}")
    return canvas, problems


def _write_batch(batch: list[tuple[str, int, int, list]]) -> list[tuple[str, str]]:
    """Worker: paint and write a batch of masks; return ``(path, problem)`` pairs."""
    problems: list[tuple[str, str]] = []
    for path, height, width, instances in batch:
        canvas, found = paint_mask(height, width, instances)
        problems.extend((path, p) for p in found)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not cv2.imwrite(path, canvas):
            Path(path).unlink(missing_ok=True)
            raise UserError(mask_write_failed(path))
    return problems


class MaskWriter:
    """Writes mask PNGs, in a process pool when ``workers > 1`` (``workers == 0``: disabled).

    Use as a context manager; start it before loading large data so the forked workers stay small.
    """

    def __init__(self, folder: Path, workers: int):
        self.folder = Path(folder)
        self.enabled = workers > 0
        self.workers = workers
        self.pool = None
        self.batch: list[tuple[str, int, int, list]] = []
        self.pending: deque = deque()
        self.problems: list[tuple[str, str]] = []

    def __enter__(self) -> "MaskWriter":
        if self.workers > 1:
            self.pool = multiprocessing.get_context("fork").Pool(self.workers)
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.terminate() if exc[0] is not None else self.pool.close()
            self.pool.join()

    def submit(self, path: Path, height: int, width: int, instances: list) -> None:
        self.batch.append((str(path), height, width, instances))
        if len(self.batch) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        batch, self.batch = self.batch, []
        if not batch:
            return
        if self.pool is None:
            self.problems.extend(_write_batch(batch))
            return
        self.pending.append(self.pool.apply_async(_write_batch, (batch,)))
        while len(self.pending) > MAX_IN_FLIGHT:
            self.problems.extend(self.pending.popleft().get())

    def finish(self) -> list[tuple[str, str]]:
        """Wait for every mask; return ``(mask path, problem)`` for instances that could not be painted."""
        self._flush()
        while self.pending:
            self.problems.extend(self.pending.popleft().get())
        return self.problems
