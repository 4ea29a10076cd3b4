"""YOLO anchors from k-means on the training boxes' shapes, with the ``1 - IoU`` distance.

Why ``1 - IoU`` and not Euclidean distance: anchors are matched to boxes by IoU, and a
Euclidean k-means lets large boxes dominate the error. Boxes and centres are compared as if
they shared a corner, so only width and height matter.

Choices (documented because they change the numbers):

* **Initialisation**: k-means++ from a seeded ``numpy.random.Generator`` (each next centre is
  drawn with probability proportional to the squared ``1 - IoU`` distance to the nearest
  chosen one), so the same seed gives identical anchors.
* **Update**: the per-cluster **median** width and height. Box shapes are heavy-tailed
  (a few full-body dresses among many belts and shoes); the median keeps a handful of
  outliers from dragging a centre away from the cluster's bulk, which raises mean IoU.
* **Speed**: the iterations run on a seeded random subsample (``max_points``, default 100k)
  in float32; the reported mean IoU is then computed exactly on every box.

Box shapes are measured the way training sees them: each image is letterboxed so that its
long side becomes ``image_size`` (``scale = image_size / max(w, h)``), and a box of inclusive
extents ``x1..x2`` is ``x2 - x1 + 1`` pixels wide before scaling.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from fashionvision.annotations import Record, atomic_write_text
from fashionvision.errors import UserError

log = logging.getLogger(__name__)

#: The published YOLOv3 anchors (pixels at 416x416), small to large, three per scale.
COCO_ANCHORS = np.array(
    [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198], [373, 326]],
    dtype=np.float32,
)

#: Output strides of the three YOLOv3 scales, matched to anchors sorted small to large.
STRIDES = (8, 16, 32)

SIZE_CACHE = "image_sizes.json"


def iou_wh(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU ``[N, K]`` of box shapes ``[N, 2]`` and anchor shapes ``[K, 2]`` sharing a corner."""
    wh = np.asarray(wh, dtype=np.float32)
    anchors = np.asarray(anchors, dtype=np.float32)
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    union = (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    return inter / np.maximum(union, 1e-12)


def mean_best_iou(wh: np.ndarray, anchors: np.ndarray, chunk: int = 262_144) -> float:
    """Mean over boxes of the IoU with their best-matching anchor (chunked to bound memory)."""
    wh = np.asarray(wh, dtype=np.float32).reshape(-1, 2)
    if len(wh) == 0:
        return float("nan")
    total = 0.0
    for start in range(0, len(wh), chunk):
        total += float(iou_wh(wh[start : start + chunk], anchors).max(axis=1).sum(dtype=np.float64))
    return total / len(wh)


def sort_by_area(anchors: np.ndarray) -> np.ndarray:
    """Anchors ordered small to large (ties broken by width), the order YOLO scales expect."""
    anchors = np.asarray(anchors)
    order = np.lexsort((anchors[:, 0], anchors[:, 0] * anchors[:, 1]))
    return anchors[order]


def _kmeans_pp_init(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [wh[rng.integers(len(wh))]]
    best = iou_wh(wh, np.array(centres))[:, 0]
    for _ in range(1, k):
        weights = (1.0 - best).astype(np.float64) ** 2
        total = weights.sum()
        # all remaining boxes identical to a centre: any choice is as good as another
        index = rng.choice(len(wh), p=weights / total) if total > 0 else rng.integers(len(wh))
        centres.append(wh[index])
        best = np.maximum(best, iou_wh(wh, wh[index][None])[:, 0])
    return np.array(centres, dtype=np.float32)


def kmeans_anchors(
    wh: np.ndarray, k: int = 9, seed: int = 0, iters: int = 300, max_points: int | None = 100_000
) -> np.ndarray:
    """Cluster box shapes ``[N, 2]`` into ``k`` anchors ``[k, 2]`` (float32, sorted by area).

    Deterministic for a given ``seed``. Boxes with a zero or negative side are ignored.

    Raises:
        ValueError: fewer usable boxes than ``k``.
    """
    wh = np.asarray(wh, dtype=np.float32).reshape(-1, 2)
    wh = wh[(wh[:, 0] > 0) & (wh[:, 1] > 0)]
    if len(wh) < k:
        raise ValueError(f"k-means needs at least k={k} boxes, got {len(wh)}")
    rng = np.random.default_rng(seed)
    if max_points is not None and len(wh) > max_points:
        wh = wh[rng.choice(len(wh), size=max_points, replace=False)]
    centres = _kmeans_pp_init(wh, k, rng)
    assign = np.full(len(wh), -1)
    for _ in range(iters):
        iou = iou_wh(wh, centres)
        new_assign = iou.argmax(axis=1)
        if np.array_equal(new_assign, assign):
            break
        assign = new_assign
        best = iou[np.arange(len(wh)), assign]
        for j in range(k):
            members = wh[assign == j]
            if len(members):
                centres[j] = np.median(members, axis=0)
            else:
                # empty cluster: restart it on the box the current centres fit worst
                worst = int(best.argmin())
                centres[j] = wh[worst]
                best[worst] = 1.0
    return sort_by_area(centres).astype(np.float32)


def box_shapes_for_training(
    records: Sequence[Record], image_sizes: Mapping[str, tuple[int, int]], image_size: int,
    source: str = "",
) -> np.ndarray:
    """Box widths/heights ``[N, 2]`` (float32) as training sees them after letterboxing.

    Args:
        records: annotation records (``boxes`` hold inclusive ``x1, y1, x2, y2, cls``).
        image_sizes: ``(width, height)`` of each record's image, keyed by ``record.path``.
        image_size: the training size; each image's long side is scaled to it.
        source: the split file, named in the warnings.

    Boxes reaching past their image are clipped to it and boxes outside it dropped, as the
    dataset does when training (:mod:`fashionvision.data.box_bounds`), each with a
    ``FILE:LINE`` warning: one broken box must not pull an anchor to its size.
    """
    from fashionvision.data.box_bounds import fit_boxes

    parts = []
    warned = 0
    for record in records:
        if len(record.boxes) == 0:
            continue
        width, height = image_sizes[record.path]
        scale = image_size / max(width, height)
        b, issues = fit_boxes(record, width, height, source)
        for issue in issues:
            warned += 1
            if warned <= 20:
                log.warning("%s", issue)
        if len(b) == 0:
            continue
        parts.append(np.stack([b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1], axis=1) * scale)
    if warned > 20:
        log.warning("... %d box warnings in all (fashion-validate check_images=true lists every one)", warned)
    if not parts:
        return np.zeros((0, 2), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32)


def read_image_sizes(
    records: Sequence[Record], image_root: str | os.PathLike, known: Mapping[str, Sequence[int]] | None = None,
    cache_file: str | os.PathLike | None = None,
) -> dict[str, tuple[int, int]]:
    """``(width, height)`` of every record's image that has boxes, reading headers only.

    Sizes come from ``known`` (e.g. ``metadata.json["image_sizes"]``) first, then from
    ``cache_file`` (a JSON written here on a previous run for the same image root), then from
    the image headers; new header reads are saved back to ``cache_file``.

    Raises:
        UserError: an image is missing or unreadable (the first few are named).
    """
    from fashionvision.data.image_io import ImageReadError, image_size

    image_root = Path(image_root)
    sizes: dict[str, tuple[int, int]] = {p: (int(s[0]), int(s[1])) for p, s in (known or {}).items()}
    cached: dict[str, list[int]] = {}
    if cache_file is not None and Path(cache_file).is_file():
        try:
            data = json.loads(Path(cache_file).read_text(encoding="utf-8"))
            if data.get("image_root") == str(image_root.resolve()):
                cached = data.get("sizes", {})
        except (OSError, ValueError, AttributeError):
            cached = {}  # a damaged cache is only a lost speed-up
    fresh: dict[str, list[int]] = {}
    problems = []
    for record in records:
        if len(record.boxes) == 0 or record.path in sizes:
            continue
        if record.path in cached:
            sizes[record.path] = tuple(cached[record.path])  # type: ignore[assignment]
            continue
        try:
            width, height = image_size(image_root / record.path)
        except ImageReadError as exc:
            problems.append(str(exc))
            continue
        sizes[record.path] = (width, height)
        fresh[record.path] = [width, height]
    if problems:
        shown = "; ".join(problems[:3]) + (f"; ... {len(problems) - 3} more" if len(problems) > 3 else "")
        raise UserError(f"{len(problems)} image(s) needed for anchors are unreadable: {shown}")
    if fresh and cache_file is not None:
        merged = {**cached, **fresh}
        payload = {"image_root": str(image_root.resolve()), "sizes": merged}
        try:
            atomic_write_text(cache_file, json.dumps(payload) + "\n")
        except OSError as exc:  # read-only dataset folder: still fine, just slower next time
            log.warning("could not write image size cache %s: %s", cache_file, exc)
    return sizes


def dataset_box_shapes(dataset_folder: str | os.PathLike, image_size: int, split: str = "train") -> np.ndarray:
    """Training-scaled box shapes of one split of a converted folder."""
    from fashionvision.data.converted import ConvertedDataset

    data = ConvertedDataset.open(dataset_folder)
    records = data.records(split)
    sizes = read_image_sizes(
        records, data.image_root, data.metadata.get("image_sizes"), data.folder / SIZE_CACHE
    )
    return box_shapes_for_training(records, sizes, image_size, str(data.split_file(split)))


def compute_anchors(
    dataset_folder: str | os.PathLike, k: int = 9, image_size: int = 416, seed: int = 0, split: str = "train"
) -> tuple[np.ndarray, dict]:
    """Anchors for a converted folder plus the ``info`` that :func:`save_anchors` records."""
    wh = dataset_box_shapes(dataset_folder, image_size, split)
    try:
        anchors = kmeans_anchors(wh, k=k, seed=seed)
    except ValueError as exc:
        raise UserError(f"cannot compute anchors for '{dataset_folder}' ({split} split): {exc}") from exc
    info = {
        "k": int(k),
        "image_size": int(image_size),
        "seed": int(seed),
        "split": split,
        "dataset": str(Path(dataset_folder).resolve()),
        "num_boxes": int(len(wh)),
        "mean_iou": round(mean_best_iou(wh, anchors), 4),
        "coco_mean_iou": round(mean_best_iou(wh, COCO_ANCHORS), 4),
    }
    return anchors, info


def save_anchors(path: str | os.PathLike, anchors: np.ndarray, info: dict | None = None) -> None:
    """Write a small JSON: ``anchors`` (sorted by area, pixels at ``image_size``) plus ``info``."""
    anchors = sort_by_area(np.asarray(anchors, dtype=np.float64).reshape(-1, 2))
    pairs = [[round(float(w), 2), round(float(h), 2)] for w, h in anchors]
    rest = {key: value for key, value in (info or {}).items() if key != "anchors"}
    # anchors on one line each pair, readable in a diff; the rest as ordinary indented JSON
    body = json.dumps(rest, indent=2)[1:].lstrip("\n")
    text = '{\n  "anchors": [' + ", ".join(json.dumps(p) for p in pairs) + "]" + (",\n" + body if rest else "\n}")
    atomic_write_text(path, text + "\n")


def load_anchors(path: str | os.PathLike) -> np.ndarray:
    """Read anchors written by :func:`save_anchors` as float32 ``[k, 2]`` sorted by area."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        anchors = np.asarray(payload["anchors"], dtype=np.float32)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read anchors file '{path}': {exc}") from exc
    if anchors.ndim != 2 or anchors.shape[1] != 2 or len(anchors) == 0 or (anchors <= 0).any():
        raise UserError(f"anchors file '{path}' must hold a list of positive [w, h] pairs")
    return sort_by_area(anchors)


def ensure_anchors(
    dataset_folder: str | os.PathLike, k: int, image_size: int, seed: int, file: str | os.PathLike
) -> np.ndarray:
    """Load ``file``, or compute anchors from the train split and save them there first.

    Concurrent callers (e.g. DDP ranks) are safe: the result is deterministic and the file
    is written atomically.
    """
    file = Path(file)
    if not file.is_file():
        anchors, info = compute_anchors(dataset_folder, k=k, image_size=image_size, seed=seed)
        save_anchors(file, anchors, info)
        log.info("k-means anchors (mean IoU %.3f, COCO %.3f) written to %s", info["mean_iou"],
                 info["coco_mean_iou"], file)
    anchors = load_anchors(file)
    if len(anchors) != k:
        raise UserError(f"anchors file '{file}' holds {len(anchors)} anchors but k={k}; delete it to recompute")
    return anchors


def format_anchors(anchors: np.ndarray) -> list[str]:
    """Lines showing anchors grouped per output stride (three per scale when k is a multiple of 3)."""
    anchors = sort_by_area(np.asarray(anchors))
    groups = np.array_split(anchors, len(STRIDES)) if len(anchors) % len(STRIDES) == 0 else [anchors]
    lines = []
    for index, group in enumerate(groups):
        label = f"stride {STRIDES[index]:>2}" if len(groups) == len(STRIDES) else "anchors"
        lines.append(f"  {label}: " + "  ".join(f"{w:.0f}x{h:.0f}" for w, h in group))
    return lines
