"""Ultralytics' YOLO layout -> the project format (``fashion-convert yolo``).

The layout (ultralytics' dataset docs)::

    <source>/data.yaml            path (optional), train / val / test, names (list or {id: name})
    <source>/images/<split>/...   the images (train/val/test: a folder, a list of folders, or a .txt list)
    <source>/labels/<split>/...   one .txt per image (the last ``/images/`` of its path -> ``/labels/``)

A label line is ``cls cx cy w h`` (normalised to 0..1) for a box, or ``cls x1 y1 x2 y2 ...``
(three points or more, normalised) for a segmentation polygon; an image without a label file
has no objects. Boxes: the continuous span times the image size, rounded to whole pixels
(``x1 = round(cx W - w W / 2)``, ``x2 = round(cx W + w W / 2) - 1``); a polygon's box is that of
its pixels as pycocotools rasterises it. Masks: polygons painted as class-index PNGs (class
k -> k + 1, larger first); a folder written by ``fashion-convert export format=yolo`` carries
its masks as ``masks/<split>/<stem>.png`` with ``mask_names`` in ``data.yaml``, and those are
taken as they are.

Bad lines (4 fields, a class id out of range, a coordinate outside 0..1, a polygon of one
point) are reported as ``FILE:LINE: reason``, all of them.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import yaml

from fashionvision.convert import masks as mask_ops
from fashionvision.convert.coco import box_from_bbox
from fashionvision.convert.common import (
    ConversionSummary,
    Skip,
    check_split,
    fail_on_skips,
    progress,
    staged_output,
    write_converted,
)
from fashionvision.data.annotations import Record, check_relative_path
from fashionvision.data.converted import SPLITS, mask_path_for
from fashionvision.data.image_io import IMAGE_SUFFIXES, ImageReadError, image_size
from fashionvision.errors import UserError

FORMAT = "yolo"  # the converter's name: fashion-convert yolo
TOLERANCE = 1e-6  # normalised coordinates a hair outside 0..1 (float printing) are clipped


def read_data_yaml(path: Path) -> dict:
    """``data.yaml`` as a dict with ``names`` as a list, with one-line errors."""
    if not path.is_file():
        raise UserError(f"'{path}' does not exist: a YOLO dataset needs its data.yaml (yolo.data=FILE)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level is a YAML {type(data).__name__}, expected a mapping with train, val, names")
    names = data.get("names")
    if isinstance(names, dict):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise UserError(f"{path}: names must be numbered 0..N-1, got ids {keys}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise UserError(f"{path}: no names (a list of class names, or {{0: name, ...}})")
    data["names"] = [str(n) for n in names]
    return data


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``/images/`` of the path becomes ``/labels/``, the suffix ``.txt``."""
    text = str(image)
    marker = f"{os.sep}images{os.sep}"
    if marker not in text:
        return image.with_suffix(".txt")
    head, tail = text.rsplit(marker, 1)
    return Path(f"{head}{os.sep}labels{os.sep}{tail}").with_suffix(".txt")


def _split_images(root: Path, entry, yaml_path: Path) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    found: list[Path] = []
    for item in entries:
        where = Path(str(item)) if Path(str(item)).is_absolute() else root / str(item)
        if where.is_dir():
            found.extend(sorted(p for p in where.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
        elif where.is_file() and where.suffix == ".txt":
            for line in where.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    path = Path(line.strip())
                    found.append(path if path.is_absolute() else (root / path))
        else:
            raise UserError(f"{yaml_path}: '{item}' is neither an image folder nor a .txt list under {root}")
    return found


def parse_label_line(text: str, num_classes: int) -> tuple[int, list[float]]:
    """``(cls, values)`` of one label line (4 values: a box, else a polygon); ValueError says why."""
    tokens = text.split()
    if len(tokens) != 5 and (len(tokens) < 7 or len(tokens) % 2 == 0):
        raise ValueError(f"has {len(tokens)} fields, expected 5 (cls cx cy w h) or an odd number of 7 or more "
                         "(cls x1 y1 x2 y2 x3 y3 ...: a polygon of 3 points or more)")
    try:
        cls = int(tokens[0])
        values = [float(v) for v in tokens[1:]]
    except ValueError:
        raise ValueError(f"'{text.strip()}' is not numbers (an integer class, then coordinates)") from None
    if not 0 <= cls < num_classes:
        raise ValueError(f"class id {cls} out of range 0..{num_classes - 1} (data.yaml names)")
    if not all(math.isfinite(v) and -TOLERANCE <= v <= 1 + TOLERANCE for v in values):
        raise ValueError("a coordinate is outside 0..1 (YOLO labels are normalised to the image size)")
    values = [min(1.0, max(0.0, v)) for v in values]
    if len(values) == 4 and not (values[2] > 0 and values[3] > 0):
        raise ValueError("the box has no width or height")
    return cls, values


def box_from_yolo(values: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Inclusive pixel box of a normalised ``cx cy w h`` (at least one pixel, inside the image)."""
    cx, cy, w, h = values
    x1 = min(width - 1, max(0, round(cx * width - w * width / 2)))
    y1 = min(height - 1, max(0, round(cy * height - h * height / 2)))
    x2 = min(width - 1, max(x1, round(cx * width + w * width / 2) - 1))
    y2 = min(height - 1, max(y1, round(cy * height + h * height / 2) - 1))
    return x1, y1, x2, y2


def convert(
    source: str | Path,
    output: str | Path,
    *,
    seed: int = 0,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    workers: int = 2,
    progress_bar: bool = True,
    limit: int | None = None,
    data: str = "data.yaml",
    masks: bool = True,
    strict: bool = True,
) -> ConversionSummary:
    """Convert an ultralytics dataset under ``source`` into ``output``.

    Args:
        data: the dataset YAML, relative to ``source``.
        masks: write class-index PNGs from polygon labels (or the exported ``masks/``).
        strict: any bad line fails the run, all of them listed (false: skip and report).
        limit: the first ``limit`` images of each split.
    """
    started = time.perf_counter()
    source, output = Path(source), Path(output)
    check_split(split)  # splits come from data.yaml; the fractions are only checked
    yaml_path = source / data
    config = read_data_yaml(yaml_path)
    names: list[str] = config["names"]
    root = source
    if config.get("path"):
        given = Path(str(config["path"]))
        candidate = given if given.is_absolute() else source / given
        root = candidate if candidate.is_dir() else source  # a moved export: its folder is the root
    mask_names = config.get("mask_names") if isinstance(config.get("mask_names"), list) else None
    split_images = {s: _split_images(root, config[s], yaml_path)[: limit] if limit is not None
                    else _split_images(root, config[s], yaml_path) for s in SPLITS if config.get(s)}
    if not split_images:
        raise UserError(f"{yaml_path}: no train/val/test entries")
    skipped: list[Skip] = []
    splits: dict[str, list[Record]] = {s: [] for s in SPLITS}
    stats = {"boxes": 0, "polygons": 0, "images_without_labels": 0}
    with staged_output(source, output, also_inputs=[root] if root != source else []) as staging, \
            mask_ops.MaskWriter(staging, workers if masks else 0) as writer:
        polygon_masks: list[tuple[Path, int, int, list]] = []
        copied_masks = 0
        for split_name, images in split_images.items():
            for image in progress(images, len(images), f"yolo {split_name}", progress_bar):
                rel = Path(os.path.relpath(image, root)).as_posix()
                problem = check_relative_path(rel)
                if problem or " " in rel:
                    skipped.append(Skip(str(image), problem or "image path contains a space"))
                    continue
                try:
                    width, height = image_size(image)
                except ImageReadError as exc:
                    skipped.append(Skip(str(image), f"image unreadable: {exc.reason}"))
                    continue
                boxes, paint, bad = _read_labels(label_path(image), names, width, height, stats)
                skipped.extend(bad)
                record = Record(rel, np.array(boxes, dtype=np.int64).reshape(-1, 5))
                splits[split_name].append(record)
                exported = source / "masks" / split_name / Path(os.path.relpath(image, root / "images" / split_name)).with_suffix(".png")
                if masks and mask_names is not None and exported.is_file():
                    target = mask_path_for(staging, rel)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(exported, target)
                    copied_masks += 1
                elif writer.enabled:
                    polygon_masks.append((mask_path_for(writer.folder, rel), height, width, paint))
        has_masks = masks and (copied_masks > 0 or stats["polygons"] > 0)
        if has_masks and copied_masks == 0:
            for target, height, width, paint in polygon_masks:
                writer.submit(target, height, width, paint)
        for mask_file, problem in writer.finish():
            skipped.append(Skip(str(Path(mask_file).relative_to(staging)), problem))
        if strict:
            fail_on_skips("yolo", skipped)
        mask_classes = None
        if has_masks:
            mask_classes = [str(n) for n in mask_names] if copied_masks else ["background", *names]
        options = {"data": data, "masks": bool(masks), "limit": limit}
        summary = write_converted(
            staging, output, name="yolo", source=source, image_root=root, splits=splits, classes=names,
            mask_classes=mask_classes, options=options, seed=None, skipped=skipped,
            extra={"split_rule": f"the splits of {data}", "label_counts": stats}, started=started)
    summary.notes.append(f"label lines: boxes {stats['boxes']}, polygons {stats['polygons']}; "
                         f"images without a label file {stats['images_without_labels']}")
    summary.seconds = time.perf_counter() - started
    return summary


def _read_labels(path: Path, names: list[str], width: int, height: int, stats: dict):
    """Boxes, polygon paint jobs and bad-line skips of one label file."""
    boxes: list[list[int]] = []
    paint: list[tuple[float, int, object]] = []
    bad: list[Skip] = []
    if not path.is_file():
        stats["images_without_labels"] += 1
        return boxes, paint, bad
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return boxes, paint, [Skip(str(path), "not UTF-8 text")]
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            cls, values = parse_label_line(line, len(names))
            if len(values) == 4:
                boxes.append([*box_from_yolo(values, width, height), cls])
                stats["boxes"] += 1
                continue
            polygon = [v * (width if i % 2 == 0 else height) for i, v in enumerate(values)]
            box = box_from_bbox(mask_ops.segmentation_bbox([polygon], height, width), width, height)
            if box is None:
                raise ValueError("the polygon covers no pixel")
        except ValueError as exc:
            bad.append(Skip(f"{path}:{line_no}", str(exc)))
            continue
        boxes.append([*box, cls])
        paint.append((float((box[2] - box[0] + 1) * (box[3] - box[1] + 1)), cls + 1, [polygon]))
        stats["polygons"] += 1
    return boxes, paint, bad
