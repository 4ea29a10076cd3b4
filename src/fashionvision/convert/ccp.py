"""Clothing Co-Parsing (CCP) -> the project format.

Boxes follow the CCP box rule of ``docs/datasets.md``: for each label present in an image's
pixel annotation except the excluded ones (``null``, ``hair``, ``skin`` by default), every
connected component (8-connectivity by default) covering at least ``min_area_fraction`` of the
image becomes one box with inclusive pixel extents. Detection classes are the remaining labels
renumbered in label-list order (56 with the defaults); masks keep all 59 labels (0 = ``null``).

Only pixel-level images can be converted; the image-level-only photos (tags, no pixels) are
counted and reported. A pixel-level image whose photo is missing, unreadable or of another size
than its mask is reported, skipped and counted; it never stops the run.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import scipy.io
from scipy import ndimage

from fashionvision.data.annotations import Record
from fashionvision.convert.common import (
    mask_write_failed,
    ConversionSummary,
    Skip,
    check_split,
    progress,
    seeded_split,
    staged_output,
    write_converted,
)
from fashionvision.data.converted import SPLITS, mask_path_for
from fashionvision.data.image_io import IMAGE_SUFFIXES, ImageReadError, image_size
from fashionvision.errors import UserError

PIXEL_DIR = Path("annotations") / "pixel-level"
#: the largest mask decoded from a .mat (the photo limit of data/image_io.py)
MAX_MASK_PIXELS = 100_000_000
IMAGE_LEVEL_DIR = Path("annotations") / "image-level"
PHOTO_DIR = "photos"


def read_label_list(source: Path) -> list[str]:
    """The label names of ``label_list.mat`` (pixel value v means ``names[v]``)."""
    path = source / "label_list.mat"
    if not path.is_file():
        raise UserError(f"'{source}' is not a CCP folder: {path} is missing")
    try:
        cell = scipy.io.loadmat(str(path))["label_list"]
        names = [str(np.asarray(item).ravel()[0]) for item in np.asarray(cell).ravel()]
    except Exception as exc:  # scipy raises MatReadError, IndexError, OSError, ... on a damaged file
        raise UserError(f"{path}: cannot read the variable 'label_list' (truncated or not a CCP "
                        f"label list: {type(exc).__name__}: {exc})") from exc
    if not names:
        raise UserError(f"{path}: 'label_list' is empty")
    return names


def component_boxes(
    labels: np.ndarray, class_of: dict[int, int], min_area: float, connectivity: int = 8
) -> np.ndarray:
    """Boxes ``[N, 5]`` (x1, y1, x2, y2 inclusive, cls) of the connected components of a label map.

    Args:
        labels: HxW integer label map.
        class_of: label value -> detection class; values not in it make no boxes.
        min_area: smallest component area in pixels that becomes a box.
        connectivity: 8 (diagonal neighbours connect) or 4.
    """
    structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    boxes: list[list[int]] = []
    for value in np.unique(labels):
        cls = class_of.get(int(value))
        if cls is None:
            continue
        components, count = ndimage.label(labels == value, structure=structure)
        areas = np.bincount(components.ravel(), minlength=count + 1)[1:]
        for area, found in zip(areas, ndimage.find_objects(components)):
            if found is not None and area >= min_area:
                rows, cols = found
                boxes.append([cols.start, rows.start, cols.stop - 1, rows.stop - 1, cls])
    return np.array(boxes, dtype=np.int64).reshape(-1, 5)


def _find_photo(source: Path, stem: str) -> Path | None:
    for suffix in (".jpg",) + tuple(s for s in IMAGE_SUFFIXES if s != ".jpg"):
        candidate = source / PHOTO_DIR / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _check_decodes(photo: Path) -> None:
    """Decode ``photo`` (at 1/8 scale where the format allows: fast) to catch a truncated file.

    The header alone (:func:`image_size`) looks fine in a photo cut short by a failed copy;
    training would then meet it as unreadable. PIL refuses truncated data by default.
    """
    from PIL import Image

    try:
        with Image.open(photo) as image:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except Exception as exc:  # noqa: BLE001 - one reader error for every way a photo is bad
        raise ImageReadError(photo, f"corrupt or truncated image ({type(exc).__name__}: {exc})") from exc


def _convert_one(job: tuple) -> tuple[str, str, np.ndarray | None, str | None]:
    """Worker: one pixel-level annotation -> (stem, image rel path, boxes or None, skip reason)."""
    source, staging, stem, class_of, num_labels, min_area_fraction, connectivity, write_masks = job
    mat_path = source / PIXEL_DIR / f"{stem}.mat"
    photo = _find_photo(source, stem)
    rel = f"{PHOTO_DIR}/{photo.name}" if photo else f"{PHOTO_DIR}/{stem}.jpg"
    if photo is None:
        return stem, rel, None, f"photo {PHOTO_DIR}/{stem}.* not found"
    try:
        # the header first: a 389 KB .mat can decode to 400 MB, so its size is checked before decoding
        shapes = {name: shape for name, shape, _ in scipy.io.whosmat(str(mat_path))}
        pixels = int(np.prod(shapes.get("groundtruth", (0,)), dtype=np.float64))
        if pixels > MAX_MASK_PIXELS:
            return stem, rel, None, (f"'groundtruth' is {'x'.join(map(str, shapes['groundtruth']))} = {pixels} "
                                     f"pixels, above the limit of {MAX_MASK_PIXELS}; not decoded")
        groundtruth = scipy.io.loadmat(str(mat_path))["groundtruth"]
    except Exception as exc:  # scipy raises several types for corrupt files; one bad file must not stop the run
        return stem, rel, None, f"cannot read variable 'groundtruth' from {mat_path.name} ({type(exc).__name__}: {exc})"
    if groundtruth.ndim != 2 or groundtruth.size == 0:
        return stem, rel, None, f"'groundtruth' has shape {groundtruth.shape}, expected HxW"
    if groundtruth.max() >= num_labels or groundtruth.min() < 0:
        return stem, rel, None, f"'groundtruth' holds label {int(groundtruth.max())}, beyond the {num_labels} labels"
    height, width = groundtruth.shape
    try:
        photo_size = image_size(photo)
        _check_decodes(photo)
    except ImageReadError as exc:
        return stem, rel, None, f"photo unreadable: {exc.reason}"
    if photo_size != (width, height):
        return stem, rel, None, f"photo is {photo_size[0]}x{photo_size[1]} but its mask is {width}x{height}"
    groundtruth = groundtruth.astype(np.uint8)
    boxes = component_boxes(groundtruth, class_of, min_area_fraction * width * height, connectivity)
    if write_masks:
        mask_path = mask_path_for(staging, rel)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(mask_path), groundtruth):
            mask_path.unlink(missing_ok=True)
            raise UserError(mask_write_failed(mask_path))
    return stem, rel, boxes, None


def convert(
    source: str | Path,
    output: str | Path,
    *,
    seed: int = 0,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    workers: int = 2,
    progress_bar: bool = True,
    limit: int | None = None,
    exclude: Sequence[str] = ("null", "hair", "skin"),
    min_area_fraction: float = 0.0005,
    connectivity: int = 8,
    masks: bool = True,
) -> ConversionSummary:
    """Convert a CCP folder (``photos/``, ``annotations/``, ``label_list.mat``) into ``output``.

    Args:
        source: the CCP root; image paths in the split files are relative to it.
        output: the converted folder (written via a temporary folder, then renamed).
        seed, split: the seeded train/val/test split of the pixel-level images.
        workers: processes used for the per-image work (1 = in this process).
        limit: convert only the first ``limit`` pixel-level images (by id), for quick checks.
        exclude: label names that never become boxes (they stay in the masks).
        min_area_fraction: smallest component, as a fraction of the image area, that is a box.
        connectivity: 8 or 4.
        masks: write ``masks/photos/NNNN.png`` (value = CCP label id).
    """
    started = time.perf_counter()
    source, output = Path(source), Path(output)
    fractions = check_split(split)
    if connectivity not in (4, 8):
        raise UserError(f"ccp.connectivity must be 4 or 8, got {connectivity}")
    labels = read_label_list(source)
    unknown = [name for name in exclude if name not in labels]
    if unknown:
        raise UserError(f"ccp.exclude names {unknown} are not CCP labels; labels are: {', '.join(labels)}")
    kept = [(value, name) for value, name in enumerate(labels) if name not in set(exclude)]
    class_of = {value: index for index, (value, _) in enumerate(kept)}
    classes = [name for _, name in kept]

    pixel_dir = source / PIXEL_DIR
    if not pixel_dir.is_dir():
        raise UserError(f"'{source}' is not a CCP folder: {pixel_dir} is missing")
    stems = sorted(p.stem for p in pixel_dir.glob("*.mat"))
    if limit is not None:
        stems = stems[: int(limit)]
    if not stems:
        raise UserError(f"no pixel-level annotations (*.mat) in {pixel_dir}")
    image_level_only = sorted(
        p.stem for p in (source / IMAGE_LEVEL_DIR).glob("*.mat") if not (pixel_dir / p.name).exists()
    )
    # The split is drawn over every candidate, so one bad file does not reshuffle the others.
    assignment = dict(zip(stems, seeded_split(len(stems), fractions, seed)))

    splits: dict[str, list[Record]] = {name: [] for name in SPLITS}
    skipped: list[Skip] = []
    with staged_output(source, output) as staging:
        jobs = [
            (source, staging, stem, class_of, len(labels), float(min_area_fraction), int(connectivity), masks)
            for stem in stems
        ]
        if workers > 1 and len(jobs) > 1:
            with multiprocessing.get_context("fork").Pool(int(workers)) as pool:
                results = list(progress(pool.imap(_convert_one, jobs, chunksize=8), len(jobs), "ccp", progress_bar))
        else:
            results = [_convert_one(job) for job in progress(jobs, len(jobs), "ccp", progress_bar)]
        for stem, rel, boxes, reason in results:
            if reason is not None:
                skipped.append(Skip(str(PIXEL_DIR / f"{stem}.mat"), reason))
            else:
                splits[assignment[stem]].append(Record(rel, boxes))
        options = {
            "split": list(fractions),
            "limit": limit,
            "exclude": list(exclude),
            "min_area_fraction": float(min_area_fraction),
            "connectivity": int(connectivity),
            "masks": bool(masks),
        }
        summary = write_converted(
            staging,
            output,
            name="ccp",
            source=source,
            image_root=source,
            splits=splits,
            classes=classes,
            mask_classes=labels if masks else None,
            options=options,
            seed=seed,
            skipped=skipped,
            extra={
                "split_rule": "seeded random split of the pixel-level images",
                "image_level_only_skipped": len(image_level_only),
            },
            started=started,
        )
    summary.notes.append(f"image-level-only photos (tags, no pixels) not converted: {len(image_level_only)}")
    summary.seconds = time.perf_counter() - started
    return summary
