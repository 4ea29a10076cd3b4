"""A folder of images and class-index masks -> the project format (``fashion-convert masks``).

The layout::

    <source>/classes.txt              one label name per line; line i names pixel value i (0 = background)
    <source>/images/<path>.<jpg|png>  the photos (``images/train/``, ``images/val/``, ``images/test/``: those splits)
    <source>/masks/<path>.png         one single-channel PNG per photo, same relative path, same size

Boxes follow the CCP box rule (``docs/datasets.md``): every connected component of a label
other than the excluded ones (``background`` by default), covering at least
``min_area_fraction`` of the image, is one box with inclusive pixel extents; detection classes
are the labels left, in label order. The masks are kept whole (all labels; 255 = ignore). When
the images are not under ``train/``, ``val/`` and ``test/`` folders, the split is seeded.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from fashionvision.convert.ccp import component_boxes
from fashionvision.convert.common import (
    ConversionSummary,
    Skip,
    check_split,
    fail_on_skips,
    progress,
    seeded_split,
    staged_output,
    write_converted,
)
from fashionvision.data.annotations import Record, check_relative_path, read_classes
from fashionvision.data.converted import SPLITS, mask_path_for
from fashionvision.data.image_io import ImageReadError, image_size, list_images
from fashionvision.errors import UserError

IGNORE = 255


def convert(
    source: str | Path,
    output: str | Path,
    *,
    seed: int = 0,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    workers: int = 2,
    progress_bar: bool = True,
    limit: int | None = None,
    images: str = "images",
    masks: str = "masks",
    classes: str = "classes.txt",
    exclude: Sequence[str] = ("background",),
    min_area_fraction: float = 0.0005,
    connectivity: int = 8,
    strict: bool = True,
) -> ConversionSummary:
    """Convert ``source`` (images, masks, classes file) into ``output``.

    Args:
        images, masks, classes: the folders and the label file, relative to ``source``.
        exclude: label names that make no boxes (they stay in the masks).
        min_area_fraction, connectivity: the box rule.
        strict: any bad image or mask fails the run, all listed (false: skip and report).
    """
    started = time.perf_counter()
    source, output = Path(source), Path(output)
    fractions = check_split(split)
    if connectivity not in (4, 8):
        raise UserError(f"masks.connectivity must be 4 or 8, got {connectivity}")
    class_file, image_dir, mask_dir = source / classes, source / images, source / masks
    for path, what in ((class_file, "the classes file (masks.classes)"), (image_dir, "the image folder (masks.images)"),
                       (mask_dir, "the mask folder (masks.masks)")):
        if not path.exists():
            raise UserError(f"'{path}' does not exist: {what}")
    labels = read_classes(class_file)
    if not labels:
        raise UserError(f"{class_file} lists no labels")
    unknown = [name for name in exclude if name not in labels]
    if unknown:
        raise UserError(f"masks.exclude names {unknown} are not in {class_file}: {', '.join(labels)}")
    kept = [(value, name) for value, name in enumerate(labels) if name not in set(exclude)]
    class_of = {value: index for index, (value, _) in enumerate(kept)}
    photos = list_images(image_dir)
    if limit is not None:
        photos = photos[: int(limit)]
    if not photos:
        raise UserError(f"no images under {image_dir}")
    rels = [p.relative_to(image_dir).as_posix() for p in photos]
    folder_split = all(r.split("/", 1)[0] in SPLITS and "/" in r for r in rels)
    assignment = [r.split("/", 1)[0] for r in rels] if folder_split else seeded_split(len(rels), fractions, seed)
    skipped: list[Skip] = []
    splits: dict[str, list[Record]] = {s: [] for s in SPLITS}
    with staged_output(source, output) as staging:
        for photo, rel, split_name in zip(progress(photos, len(photos), "masks", progress_bar), rels, assignment):
            mask_file = mask_dir / Path(rel).with_suffix(".png")
            where = f"{Path(masks) / Path(rel).with_suffix('.png')}"
            problem = check_relative_path(rel) or (f"image path '{rel}' contains a space" if " " in rel else None)
            if problem:
                skipped.append(Skip(str(Path(images) / rel), problem))
                continue
            if not mask_file.is_file():
                skipped.append(Skip(where, f"no mask for {Path(images) / rel}"))
                continue
            mask = cv2.imread(str(mask_file), cv2.IMREAD_UNCHANGED)
            if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
                skipped.append(Skip(where, "not a single-channel 8-bit PNG of class indices"))
                continue
            try:
                width, height = image_size(photo)
            except ImageReadError as exc:
                skipped.append(Skip(str(Path(images) / rel), f"image unreadable: {exc.reason}"))
                continue
            if (width, height) != (mask.shape[1], mask.shape[0]):
                skipped.append(Skip(where, f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height}"))
                continue
            values = np.unique(mask)
            beyond = [int(v) for v in values if v >= len(labels) and v != IGNORE]
            if beyond:
                skipped.append(Skip(where, f"pixel values {beyond} beyond the {len(labels)} labels of {classes}"))
                continue
            boxes = component_boxes(mask, class_of, float(min_area_fraction) * width * height, int(connectivity))
            target = mask_path_for(staging, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(target), mask):
                raise OSError(f"could not write {target}")
            splits[split_name].append(Record(rel, boxes))
        if strict:
            fail_on_skips("masks", skipped)
        options = {"split": list(fractions), "images": images, "masks": masks, "classes": classes,
                   "exclude": list(exclude), "min_area_fraction": float(min_area_fraction),
                   "connectivity": int(connectivity), "limit": limit}
        rule = "the images/<train|val|test>/ folders" if folder_split else "seeded train/val/test split"
        summary = write_converted(
            staging, output, name="masks", source=source, image_root=image_dir, splits=splits,
            classes=[name for _, name in kept], mask_classes=labels, options=options,
            seed=None if folder_split else seed, skipped=skipped, extra={"split_rule": rule}, started=started)
    summary.seconds = time.perf_counter() - started
    return summary
