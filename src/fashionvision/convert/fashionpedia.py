"""Fashionpedia (COCO-style JSON) -> the project format.

Categories: the main apparel categories are kept and the parts are dropped by *supercategory*
(``garment parts``, ``closures``, ``decorations`` by default), never by id, because older files
such as the official ``sample.json`` number the categories differently. Kept categories are
renumbered 0..K-1 in id order.

Splits (recorded in ``metadata.json["split_rule"]``): Fashionpedia's test annotations are not
public, so with the two official files the *train* file is split (seeded) into train and val
using the ``split`` train/val fractions renormalised, and the *val* file becomes the test split.
A single file (for example ``files=[sample.json]``) is split train/val/test with ``split``.

Boxes come from ``bbox`` (``x, y, w, h`` floats -> inclusive ints ``floor(x), floor(y),
ceil(x + w) - 1, ceil(y + h) - 1`` clipped to the image) or, where ``bbox`` is missing, from the
segmentation through pycocotools. Masks: one class-index PNG per image (0 = background, class
k -> k + 1), instances painted larger-first so that small items stay on top.

Images are looked up under the source as ``train/<file_name>``, ``test/<file_name>`` and
``<file_name>``; a missing one is reported and skipped unless ``require_images`` is false (then
sizes come from the JSON and the path is where the image is expected).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from fashionvision.data.annotations import Record, check_relative_path, class_name_problem
from fashionvision.convert import masks as mask_ops
from fashionvision.convert.common import (
    ConversionSummary,
    Skip,
    check_split,
    progress,
    seeded_split,
    staged_output,
    write_converted,
)
from fashionvision.data.converted import SPLITS, mask_path_for
from fashionvision.data.image_io import ImageReadError, image_size
from fashionvision.errors import UserError

DEFAULT_DROP = ("garment parts", "closures", "decorations")
IMAGE_DIRS = ("train", "test", "")


def load_coco(path: Path) -> dict:
    """Load a COCO JSON once, with a clear error naming the file."""
    if not path.is_file():
        raise UserError(f"Fashionpedia annotation file '{path}' does not exist")
    try:
        # Text mode: json decodes as it reads instead of holding the bytes and a decoded copy.
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise UserError(f"{path}: not usable JSON (nested too deeply to be a COCO annotation file)") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a COCO annotation file (the top level is a JSON "
                        f"{type(data).__name__}, expected an object with images, annotations, categories)")
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(data.get(key), list)]
    if missing:
        raise UserError(f"{path}: not a COCO annotation file (no list {', '.join(missing)})")
    return data


def _scalar(value: object) -> bool:
    """An id COCO files use: a number or a string (a list or an object cannot be a key)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def clean_entries(data: dict, name: str, skipped: list[Skip]) -> int:
    """Drop, name and count the entries that are not objects or whose ids are not ids.

    Every later step may then use ``entry.get`` and ids as keys (issue 28, item 12: a string
    among the images, or a list as an id, ended in AttributeError or TypeError). Returns the
    number of annotations dropped.
    """
    checks = {"categories": ("category", ("id",)), "images": ("image", ("id",)),
              "annotations": ("annotation", ("id", "image_id", "category_id"))}
    dropped = 0
    for key, (what, ids) in checks.items():
        kept = []
        for index, entry in enumerate(data[key]):
            if not isinstance(entry, dict):
                skipped.append(Skip(f"{name}: {what} #{index} (not an object)", f"a JSON {type(entry).__name__}"))
            else:
                bad = next((field for field in ids if not _scalar(entry.get(field))), None)
                if bad is None and key == "categories" and not isinstance(entry.get("name"), str):
                    bad = "name"
                if bad is None:
                    kept.append(entry)
                    continue
                label = f"{what} id {entry['id']}" if _scalar(entry.get("id")) else f"{what} #{index}"
                skipped.append(Skip(f"{name}: {label}", f"'{bad}' is {entry.get(bad)!r}, not a number or string"))
            dropped += key == "annotations"
        data[key] = kept
    return dropped


def select_categories(categories: Sequence[dict], drop_supercategories: Iterable[str]) -> list[dict]:
    """The kept categories in id order (parts dropped by supercategory)."""
    drop = set(drop_supercategories)
    return sorted((c for c in categories if c.get("supercategory") not in drop), key=lambda c: c["id"])


def box_from_bbox(bbox: Sequence[float], width: int, height: int) -> tuple[int, int, int, int] | None:
    """COCO ``[x, y, w, h]`` -> inclusive integer box clipped to the image; None when empty/outside."""
    x, y, w, h = (float(v) for v in bbox)
    if not (w > 0 and h > 0) or not all(math.isfinite(v) for v in (x, y, w, h, x + w, y + h)):
        return None
    x1, y1 = max(0, math.floor(x)), max(0, math.floor(y))
    x2, y2 = min(width - 1, math.ceil(x + w) - 1), min(height - 1, math.ceil(y + h) - 1)
    if x1 > x2 or y1 > y2:
        return None
    return x1, y1, x2, y2


def _image_rel_path(source: Path, file_name: str, default_dir: str, require_images: bool) -> str | None:
    """Where the image lies under ``source`` (relative, forward slashes); None if not found."""
    for folder in IMAGE_DIRS:
        rel = f"{folder}/{file_name}" if folder else file_name
        if (source / rel).is_file():
            return rel
    if require_images:
        return None
    return f"{default_dir}/{file_name}" if default_dir else file_name


def _default_dir(file: str, count: int) -> str:
    """Where the official layout keeps a file's images (the val images unpack into ``test/``)."""
    if count == 1:
        return ""
    return "train" if "train" in Path(file).name else "test"


def convert(
    source: str | Path,
    output: str | Path,
    *,
    seed: int = 0,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    workers: int = 2,
    progress_bar: bool = True,
    limit: int | None = None,
    files: Sequence[str] = ("instances_attributes_train2020.json", "instances_attributes_val2020.json"),
    drop_supercategories: Sequence[str] = DEFAULT_DROP,
    masks: bool = True,
    require_images: bool = True,
) -> ConversionSummary:
    """Convert Fashionpedia JSON file(s) under ``source`` into ``output``.

    Args:
        files: one JSON (seeded train/val/test split) or two (train file -> train+val, second
            file -> test); relative names are looked up under ``source``.
        drop_supercategories: category supercategories left out (parts by default).
        masks: write one class-index PNG per image.
        require_images: skip images not found under ``source`` (else sizes come from the JSON).
        limit: convert only the first ``limit`` images of each file (quick checks).
    """
    started = time.perf_counter()
    source, output = Path(source), Path(output)
    fractions = check_split(split)
    files = list(files)
    if not 1 <= len(files) <= 2:
        raise UserError(f"fashionpedia.files takes one or two JSON files, got {files}")
    paths = [Path(f) if Path(f).is_absolute() else source / f for f in files]
    for path in paths:
        if not path.is_file():
            raise UserError(f"Fashionpedia annotation file '{path}' does not exist (fashionpedia.files={files})")

    # The mask pool starts before the (large) JSON is loaded so its workers stay small.
    with staged_output(source, output) as staging, mask_ops.MaskWriter(staging, workers if masks else 0) as writer:
        splits: dict[str, list[Record]] = {name: [] for name in SPLITS}
        skipped: list[Skip] = []
        stats = {"annotations_kept": 0, "annotations_dropped_parts": 0, "annotations_bad": 0, "annotations_orphan": 0}
        classes: list[str] | None = None
        category_ids: list[int] = []
        seen_paths: set[str] = set()
        for file_index, path in enumerate(paths):
            data = load_coco(path)
            stats["annotations_bad"] += clean_entries(data, path.name, skipped)
            kept = select_categories(data["categories"], drop_supercategories)
            for category in kept:
                problem = class_name_problem(category["name"])
                if problem:
                    raise UserError(f"{path.name}: category id {category['id']}: {problem}; fix the name in {path}")
            names = [str(c["name"]) for c in kept]
            if classes is None:
                classes, category_ids = names, [c["id"] for c in kept]
                if not classes:
                    raise UserError(f"{path}: no categories left after dropping {list(drop_supercategories)}")
            elif names != classes:
                raise UserError(f"{path}: its kept categories differ from those of {paths[0]}")
            class_of = {c["id"]: index for index, c in enumerate(kept)}
            known = {c["id"] for c in data["categories"]}
            images = data["images"][: int(limit)] if limit is not None else data["images"]
            by_image: dict[object, list[dict]] = {image.get("id"): [] for image in images}
            for ann in data["annotations"]:
                bucket = by_image.get(ann.get("image_id"))
                if bucket is None:
                    if limit is None:  # with a limit, most images are left out on purpose
                        stats["annotations_orphan"] += 1
                        skipped.append(Skip(f"{path.name}: annotation id {ann.get('id')}",
                                            f"unknown image_id {ann.get('image_id')!r} (no such image)"))
                    continue
                if ann.get("category_id") in class_of:
                    bucket.append(ann)
                elif ann.get("category_id") in known:
                    stats["annotations_dropped_parts"] += 1
                else:
                    stats["annotations_bad"] += 1
                    skipped.append(Skip(f"{path.name}: annotation id {ann.get('id')}",
                                        f"unknown category_id {ann.get('category_id')}"))
            del data  # free the parsed JSON except what the kept annotations reference

            if len(paths) == 1:
                assignment = seeded_split(len(images), fractions, seed)
            elif file_index == 0:
                assignment = seeded_split(len(images), fractions[:2], seed, names=("train", "val"))
            else:
                assignment = ["test"] * len(images)
            default_dir = _default_dir(str(path), len(paths))
            for image, split_name in zip(progress(images, len(images), path.name, progress_bar), assignment):
                record, reasons = _convert_image(image, by_image.get(image.get("id"), []), class_of, source,
                                                 default_dir, require_images, writer, stats)
                where = f"{path.name}: image {image.get('id')} ({image.get('file_name')})"
                skipped.extend(Skip(f"{path.name}: annotation id {subject}" if subject is not None else where, reason)
                               for subject, reason in reasons)
                if record is None:
                    continue
                if record.path in seen_paths:
                    skipped.append(Skip(where, f"image path '{record.path}' already used by another image"))
                    continue
                seen_paths.add(record.path)
                splits[split_name].append(record)
        for mask_file, problem in writer.finish():
            skipped.append(Skip(str(Path(mask_file).relative_to(staging)), problem))
        rule = (
            "seeded train/val/test split of the single file"
            if len(paths) == 1
            else f"{files[0]} -> seeded train/val split (train/val fractions renormalised); "
            f"{files[1]} -> test (Fashionpedia's test annotations are not public)"
        )
        options = {
            "split": list(fractions),
            "files": files,
            "drop_supercategories": list(drop_supercategories),
            "masks": bool(masks),
            "require_images": bool(require_images),
            "limit": limit,
        }
        assert classes is not None
        summary = write_converted(
            staging, output, name="fashionpedia", source=source, image_root=source, splits=splits,
            classes=classes, mask_classes=(["background", *classes] if masks else None), options=options,
            seed=seed, skipped=skipped,
            extra={"split_rule": rule, "category_ids": category_ids, "annotation_counts": stats},
            started=started,
        )
    summary.notes.append(
        f"annotations kept {stats['annotations_kept']}, parts dropped {stats['annotations_dropped_parts']}, "
        f"bad {stats['annotations_bad']}, without image {stats['annotations_orphan']}"
    )
    summary.seconds = time.perf_counter() - started
    return summary


def _convert_image(
    image: dict,
    anns: list[dict],
    class_of: dict,
    source: Path,
    default_dir: str,
    require_images: bool,
    writer: "mask_ops.MaskWriter",
    stats: dict,
) -> tuple[Record | None, list[tuple[object, str]]]:
    """One image -> its record (None when skipped) and ``(annotation id or None, reason)`` for what was left out."""
    file_name, width, height = image.get("file_name"), image.get("width"), image.get("height")
    if not isinstance(file_name, str) or not isinstance(width, int) or not isinstance(height, int) or width < 1 or height < 1:
        return None, [(None, f"image entry lacks file_name/width/height: "
                             f"{dict((k, image.get(k)) for k in ('file_name', 'width', 'height'))}")]
    problem = check_relative_path(file_name)
    if problem or " " in file_name:
        return None, [(None, problem or f"file_name '{file_name}' contains a space")]
    rel = _image_rel_path(source, file_name, default_dir, require_images)
    if rel is None:
        return None, [(None, f"image not found as "
                             f"{' or '.join(f'{d}/{file_name}' if d else file_name for d in IMAGE_DIRS)}")]
    if require_images:
        try:
            actual = image_size(source / rel)
        except ImageReadError as exc:
            return None, [(None, f"image unreadable: {exc.reason}")]
        if actual != (width, height):
            return None, [(None, f"image is {actual[0]}x{actual[1]} but the JSON says {width}x{height}")]
    reasons: list[tuple[object, str]] = []
    boxes: list[list[int]] = []
    paint: list[tuple[float, int, object]] = []
    for ann in anns:
        cls = class_of[ann["category_id"]]
        segmentation = ann.get("segmentation")
        box = None
        try:
            if ann.get("bbox") is not None:
                box = box_from_bbox(ann["bbox"], width, height)
            elif segmentation:
                box = box_from_bbox(mask_ops.segmentation_bbox(segmentation, height, width), width, height)
        except (ValueError, TypeError, OverflowError, KeyError) as exc:
            reasons.append((ann.get("id"), f"unusable bbox/segmentation ({type(exc).__name__}: {exc})"))
            stats["annotations_bad"] += 1
            continue
        if box is None:
            reasons.append((ann.get("id"), "box empty, not finite or outside the image"))
            stats["annotations_bad"] += 1
            continue
        boxes.append([*box, cls])
        stats["annotations_kept"] += 1
        if segmentation:
            area = ann.get("area") or (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
            paint.append((float(area), cls + 1, segmentation))
    if writer.enabled:
        writer.submit(mask_path_for(writer.folder, rel), height, width, paint)
    return Record(rel, np.array(boxes, dtype=np.int64).reshape(-1, 5)), reasons
