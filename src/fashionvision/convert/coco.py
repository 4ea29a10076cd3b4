"""Any COCO instances file -> the project format (``fashion-convert coco``).

What a labelling tool (CVAT, Label Studio, Labelbox) exports and what Fashionpedia and ModaNet
ship: ``images``, ``annotations`` and ``categories``. The rules, shared by the presets
(:mod:`fashionvision.convert.fashionpedia`, :mod:`fashionvision.convert.modanet`):

* Categories: all, or those named in ``keep`` (a name or a supercategory), less those in
  ``drop`` (names) and ``drop_supercategories``; kept ones are renumbered 0..K-1 in id order.
* Boxes: from ``bbox`` (``x, y, w, h`` -> inclusive ints ``floor(x), floor(y), ceil(x + w) - 1,
  ceil(y + h) - 1`` clipped to the image), or from the segmentation (polygons, compressed or
  uncompressed RLE) through pycocotools where ``bbox`` is missing.
* ``iscrowd: 1`` regions (``crowd="ignore"``, the default) make no box and are painted as
  :data:`IGNORE` pixels in the masks, under the instances; ``crowd="object"`` treats them as
  ordinary instances (what the Fashionpedia converter has always done).
* Splits: each file goes to one split (``train``, ``val``, ``test``) or is split, seeded, over
  several (``train+val``: the ``split`` fractions of those splits, renormalised). One file:
  ``train+val+test``; two: ``train``, ``val``; three: ``train``, ``val``, ``test``.
* Masks: one class-index PNG per image (0 = background, class k -> k + 1), larger instances
  first so that small items stay on top. A file written by ``fashion-convert export
  format=coco`` carries its mask classes in ``info.fashionvision``; its mask-only categories
  (supercategory :data:`MASK_ONLY`) and crowd regions then paint their own class, so that the
  round trip gives the very masks it started from.

A bad record (an annotation whose polygon has one point, RLE counts that do not add up to the
image, a box that is not finite, an unknown category or image, an image listed twice, a missing
image, an entry that is not a JSON object or whose id is a list) is reported as ``FILE:
annotation id N: reason`` (``image N (file)``; ``annotation #i``, ``image #i``, ``category #i``
by position where the entry has no usable id, see :mod:`fashionvision.convert.coco_json`); with
``strict`` every one of them is reported in one error and nothing is written, otherwise they are
skipped and listed in the summary and metadata. A file that cannot be read at all (not JSON,
nested too deeply, no category left, a category name that would break ``classes.txt``) is one
line naming the file, whatever ``strict`` says.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from fashionvision.convert import masks as mask_ops
from fashionvision.convert.coco_json import clean_entries, load_coco
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
from fashionvision.data.annotations import Record, check_relative_path, class_name_problem
from fashionvision.data.converted import SPLITS, mask_path_for
from fashionvision.data.image_io import ImageReadError, image_size
from fashionvision.errors import UserError

IGNORE = 255  # mask value of crowd regions (the segmentation task's default ignore_index)
MASK_ONLY = "mask only"  # supercategory of export's categories that are in the masks only
CROWD_MODES = ("ignore", "object")


def select_categories(categories: Sequence[dict], drop_supercategories: Iterable[str] = (),
                      keep: Iterable[str] = (), drop: Iterable[str] = ()) -> list[dict]:
    """The kept categories in id order: those in ``keep`` (name or supercategory; empty = all)
    less those named in ``drop`` or under a supercategory in ``drop_supercategories``."""
    keep, drop, drop_super = set(keep), set(drop), set(drop_supercategories)
    return sorted((c for c in categories
                   if (not keep or c.get("name") in keep or c.get("supercategory") in keep)
                   and c.get("name") not in drop and c.get("supercategory") not in drop_super),
                  key=lambda c: (isinstance(c["id"], str), c["id"]))  # numbers, then strings


def box_from_bbox(bbox: Sequence[float], width: int, height: int) -> tuple[int, int, int, int] | None:
    """COCO ``[x, y, w, h]`` -> inclusive integer box clipped to the image; None when empty/outside."""
    x, y, w, h = (float(v) for v in bbox)
    # x + w as well: 1e308 + 1e308 is inf, and ceil(inf) an OverflowError
    if not (w > 0 and h > 0) or not all(math.isfinite(v) for v in (x, y, w, h, x + w, y + h)):
        return None
    x1, y1 = max(0, math.floor(x)), max(0, math.floor(y))
    x2, y2 = min(width - 1, math.ceil(x + w) - 1), min(height - 1, math.ceil(y + h) - 1)
    if x1 > x2 or y1 > y2:
        return None
    return x1, y1, x2, y2


def file_split_names(spec: str) -> tuple[str, ...]:
    """``"train+val"`` -> ``("train", "val")``, with a clear error for anything else."""
    names = tuple(part.strip() for part in str(spec).split("+"))
    if not names or any(n not in SPLITS for n in names) or len(set(names)) != len(names):
        raise UserError(f"a file's split must be one of {', '.join(SPLITS)} or several joined by '+' "
                        f"(e.g. train+val), got '{spec}'")
    return names


def default_file_splits(count: int) -> list[str]:
    return {1: ["train+val+test"], 2: ["train", "val"], 3: ["train", "val", "test"]}[count]


@dataclass
class Layout:
    """Where a file's images are: ``root`` is the image root, ``dirs`` the subfolders tried in turn."""

    root: Path
    dirs: Sequence[str] = ("",)
    default_dir: str = ""  # where a missing image is expected (require_images=False)

    def find(self, file_name: str, require: bool) -> str | None:
        for folder in self.dirs:
            rel = f"{folder}/{file_name}" if folder else file_name
            if (self.root / rel).is_file():
                return rel
        if require:
            return None
        return f"{self.default_dir}/{file_name}" if self.default_dir else file_name

    def tried(self, file_name: str) -> str:
        return " or ".join(f"{d}/{file_name}" if d else file_name for d in self.dirs)


@dataclass
class CocoRun:
    """The state of one conversion over one or more COCO files."""

    crowd: str
    require_images: bool
    writer: "mask_ops.MaskWriter"
    stats: dict = field(default_factory=lambda: {"annotations_kept": 0, "annotations_dropped": 0,
                                                 "annotations_bad": 0, "annotations_orphan": 0})
    skipped: list[Skip] = field(default_factory=list)
    class_of: dict = field(default_factory=dict)  # category id -> class (the current file)
    mask_value: dict = field(default_factory=dict)  # category id -> mask value (the current file)


def convert_files(
    source: Path,
    output: Path,
    *,
    name: str,
    files: Sequence[Path],
    file_splits: Sequence[str],
    layouts: Sequence[Layout],
    seed: int,
    split: Sequence[float],
    workers: int,
    progress_bar: bool,
    limit: int | None,
    keep: Sequence[str] = (),
    drop: Sequence[str] = (),
    drop_supercategories: Sequence[str] = (),
    crowd: str = "ignore",
    masks: bool = True,
    require_images: bool = True,
    strict: bool = False,
    options: dict | None = None,
    split_rule: str = "",
    stats_names: dict[str, str] | None = None,
) -> tuple[ConversionSummary, dict]:
    """The conversion every COCO-based converter runs; returns the summary and the annotation counts."""
    started = time.perf_counter()
    fractions = check_split(split)
    if crowd not in CROWD_MODES:
        raise UserError(f"crowd must be one of {', '.join(CROWD_MODES)}, got '{crowd}'")
    if len(file_splits) != len(files):
        raise UserError(f"{len(files)} annotation file(s) but {len(file_splits)} split name(s) {list(file_splits)}")
    split_names = [file_split_names(spec) for spec in file_splits]
    for path in files:
        if not path.is_file():
            raise UserError(f"{name} annotation file '{path}' does not exist")
    image_root = layouts[0].root
    # The mask pool starts before the (large) JSON is loaded so its workers stay small.
    outside = sorted({layout.root for layout in layouts if layout.root.is_dir()} - {source})
    with staged_output(source, output, also_inputs=outside) as staging, \
            mask_ops.MaskWriter(staging, workers if masks else 0) as writer:
        run = CocoRun(crowd, require_images, writer)
        splits: dict[str, list[Record]] = {s: [] for s in SPLITS}
        classes: list[str] | None = None
        category_ids: list = []
        mask_classes: list[str] | None = None
        seen_paths: set[str] = set()
        notes: list[str] = []
        for path, names, layout in zip(files, split_names, layouts):
            data = load_coco(path, name)
            run.stats["annotations_bad"] += clean_entries(data, path.name, run.skipped)
            categories, mask_value, file_mask_classes = _categories(path, data, keep, drop, drop_supercategories)
            _check_class_names(path, categories, file_mask_classes)
            labels = [str(c["name"]) for c in categories]
            if classes is None:
                classes, category_ids, mask_classes = labels, [c["id"] for c in categories], file_mask_classes
                if writer.enabled and not any(isinstance(a, dict) and a.get("segmentation") for a in data["annotations"]):
                    writer.enabled = masks = False  # boxes only: all-background masks would teach a segmenter nothing
                    notes.append(f"no segmentation in {path.name}: boxes only, no masks written")
                if not classes:
                    raise UserError(f"{path}: no categories left after keep={list(keep)}, drop={list(drop)}, "
                                    f"drop_supercategories={list(drop_supercategories)}")
            elif labels != classes:
                raise UserError(f"{path}: its kept categories differ from those of {files[0]}")
            run.class_of, run.mask_value = {c["id"]: i for i, c in enumerate(categories)}, mask_value
            images, by_image = _group(path, data, limit, run)
            del data  # free the parsed JSON except what the kept annotations reference
            wanted = [fractions[SPLITS.index(s)] for s in names]
            if len(names) > 1 and sum(wanted) <= 0:
                raise UserError(f"{path}: the split fractions of {'+'.join(names)} are all 0 (split={list(fractions)})")
            assignment = seeded_split(len(images), wanted, seed, names=names) if len(names) > 1 else [names[0]] * len(images)
            for image, split_name in zip(progress(images, len(images), path.name, progress_bar), assignment):
                where = f"{path.name}: image {image.get('id')} ({image.get('file_name')})"
                record, reasons = _convert_image(image, by_image.get(image.get("id"), []), layout, run,
                                                 crowd_value=None if file_mask_classes is None else "class")
                run.skipped.extend(Skip(f"{path.name}: annotation id {subject}" if subject is not None else where,
                                        reason) for subject, reason in reasons)
                if record is None:
                    continue
                if record.path in seen_paths:
                    run.skipped.append(Skip(where, f"image path '{record.path}' already used by another image"))
                    continue
                seen_paths.add(record.path)
                splits[split_name].append(record)
        for mask_file, problem in writer.finish():
            run.skipped.append(Skip(str(Path(mask_file).relative_to(staging)), problem))
        if strict:
            fail_on_skips(name, run.skipped)
        assert classes is not None
        if masks and mask_classes is None:
            mask_classes = ["background", *classes]
        stats = {(stats_names or {}).get(k, k): v for k, v in run.stats.items()}
        summary = write_converted(
            staging, output, name=name, source=source, image_root=image_root, splits=splits, classes=classes,
            mask_classes=mask_classes if masks else None, options=options or {}, seed=seed, skipped=run.skipped,
            extra={"split_rule": split_rule, "category_ids": category_ids, "annotation_counts": stats},
            started=started,
        )
    summary.notes.extend(notes)
    return summary, stats


def _check_class_names(path: Path, categories: Sequence[dict], mask_classes: Sequence[str] | None) -> None:
    """A class name must be one clean line of ``classes.txt``: a line break would shift every later class."""
    for category in categories:
        problem = class_name_problem(category["name"])
        if problem:
            raise UserError(f"{path.name}: category id {category['id']}: {problem}; fix the name in {path}")
    for index, mask_class in enumerate(mask_classes or ()):
        problem = class_name_problem(mask_class)
        if problem:
            raise UserError(f"{path.name}: info.fashionvision.mask_classes[{index}]: {problem}; fix the name in {path}")


def _categories(path: Path, data: dict, keep, drop, drop_supercategories):
    """Kept detection categories, the mask value of every painted category id, and the mask
    classes when the file says them (our own export), else None (class k -> k + 1)."""
    names = {str(c["name"]) for c in data["categories"]} | {str(c.get("supercategory")) for c in data["categories"]}
    unknown = sorted(set(keep) - names) + sorted(set(drop) - names)
    if unknown:
        raise UserError(f"{path}: keep/drop name(s) {unknown} are neither a category nor a supercategory; "
                        f"categories: {', '.join(sorted(str(c['name']) for c in data['categories']))}")
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    ours = info.get("fashionvision") if isinstance(info.get("fashionvision"), dict) else None
    if ours and isinstance(ours.get("mask_classes"), list):
        mask_classes = [str(n) for n in ours["mask_classes"]]
        painted = select_categories(data["categories"], drop_supercategories, keep, drop)
        kept = [c for c in painted if c.get("supercategory") != MASK_ONLY]
        value = {c["id"]: mask_classes.index(str(c["name"])) for c in painted if str(c["name"]) in mask_classes}
        return kept, value, mask_classes
    kept = select_categories(data["categories"], drop_supercategories, keep, drop)
    return kept, {c["id"]: i + 1 for i, c in enumerate(kept)}, None


def _group(path: Path, data: dict, limit, run: CocoRun):
    """The (first ``limit``) images and their usable annotations, by image id."""
    images, seen_ids = [], set()
    for image in data["images"][: int(limit)] if limit is not None else data["images"]:
        image_id = image["id"]  # an id: clean_entries dropped the rest
        if image_id in seen_ids:
            run.skipped.append(Skip(f"{path.name}: image {image_id}",
                                    "image id listed twice (the second entry is left out)"))
            continue
        seen_ids.add(image_id)
        images.append(image)
    by_image: dict[object, list[dict]] = {image.get("id"): [] for image in images}
    known = {c["id"] for c in data["categories"]}
    for ann in data["annotations"]:
        bucket = by_image.get(ann["image_id"])
        if bucket is None:
            if limit is None:  # with a limit, most images are left out on purpose
                run.stats["annotations_orphan"] += 1
                run.skipped.append(Skip(f"{path.name}: annotation id {ann['id']}",
                                        f"unknown image_id {ann['image_id']!r} (no such image)"))
            continue
        category = ann.get("category_id")
        if category in run.class_of or category in run.mask_value:
            bucket.append(ann)
        elif category in known:
            run.stats["annotations_dropped"] += 1
        else:
            run.stats["annotations_bad"] += 1
            run.skipped.append(Skip(f"{path.name}: annotation id {ann['id']}", f"unknown category_id {category!r}"))
    return images, by_image


def _convert_image(image: dict, anns: list[dict], layout: Layout, run: CocoRun,
                   crowd_value: str | None) -> tuple[Record | None, list[tuple[object, str]]]:
    """One image -> its record (None when skipped) and ``(annotation id or None, reason)`` for what
    was left out (None: the whole image)."""
    file_name, width, height = image.get("file_name"), image.get("width"), image.get("height")
    if not isinstance(file_name, str) or not isinstance(width, int) or not isinstance(height, int) or width < 1 or height < 1:
        return None, [(None, f"image entry lacks file_name/width/height: "
                             f"{dict((k, image.get(k)) for k in ('file_name', 'width', 'height'))}")]
    problem = check_relative_path(file_name)
    if problem or " " in file_name:
        return None, [(None, problem or f"file_name '{file_name}' contains a space")]
    rel = layout.find(file_name, run.require_images)
    if rel is None:
        return None, [(None, f"image not found as {layout.tried(file_name)}")]
    if run.require_images:
        try:
            actual = image_size(layout.root / rel)
        except ImageReadError as exc:
            return None, [(None, f"image unreadable: {exc.reason}")]
        if actual != (width, height):
            return None, [(None, f"image is {actual[0]}x{actual[1]} but the JSON says {width}x{height}")]
    reasons: list[tuple[object, str]] = []
    boxes: list[list[int]] = []
    paint: list[tuple[float, int, object]] = []
    class_of, mask_value = run.class_of, run.mask_value
    for ann in anns:
        category = ann["category_id"]
        segmentation = ann.get("segmentation")
        crowd = bool(ann.get("iscrowd")) and run.crowd == "ignore"
        try:
            if segmentation:
                mask_ops.check_segmentation(segmentation, height, width)
            box = None
            if ann.get("bbox") is not None:
                box = box_from_bbox(ann["bbox"], width, height)
            elif segmentation:
                box = box_from_bbox(mask_ops.segmentation_bbox(segmentation, height, width), width, height)
        except (ValueError, TypeError, OverflowError, KeyError) as exc:
            reasons.append((ann["id"], f"unusable bbox/segmentation ({exc})"))
            run.stats["annotations_bad"] += 1
            continue
        is_box = category in class_of and not crowd
        if is_box and box is None:
            reasons.append((ann["id"], "box empty, not finite or outside the image"))
            run.stats["annotations_bad"] += 1
            continue
        if is_box:
            boxes.append([*box, class_of[category]])
            run.stats["annotations_kept"] += 1
        elif crowd:
            run.stats["annotations_crowd"] = run.stats.get("annotations_crowd", 0) + 1
        if segmentation and category in mask_value:
            value = IGNORE if crowd and crowd_value is None else mask_value[category]
            if crowd:
                area = math.inf  # crowd regions go under the instances
            else:
                area = _area(ann.get("area")) or ((box[2] - box[0] + 1) * (box[3] - box[1] + 1) if box else 0)
            paint.append((float(area), value, segmentation))
    if run.writer.enabled:
        run.writer.submit(mask_path_for(run.writer.folder, rel), height, width, paint)
    return Record(rel, np.array(boxes, dtype=np.int64).reshape(-1, 5)), reasons


def _area(value: object) -> float:
    """An annotation's ``area`` (only the painting order uses it); 0 when it is not a finite number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return 0.0


def convert(
    source: str | Path,
    output: str | Path,
    *,
    seed: int = 0,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    workers: int = 2,
    progress_bar: bool = True,
    limit: int | None = None,
    annotations: str | Sequence[str] | None = None,
    images: str | None = None,
    splits: Sequence[str] | None = None,
    keep: Sequence[str] = (),
    drop: Sequence[str] = (),
    drop_supercategories: Sequence[str] = (),
    crowd: str = "ignore",
    masks: bool = True,
    require_images: bool = True,
    strict: bool = True,
) -> ConversionSummary:
    """Convert COCO instances file(s) into ``output``.

    Args:
        source: the dataset folder; relative ``annotations`` and ``images`` are under it.
        annotations: one file, or a list of one to three (``splits`` says where each goes).
        images: the image folder ``file_name`` is relative to (default: ``source``).
        splits: per file, ``train``/``val``/``test`` or several joined by ``+`` (seeded split).
        keep, drop, drop_supercategories: which categories become classes (see the module).
        crowd: ``ignore`` (no box, ignore pixels) or ``object`` (an ordinary instance).
        masks: write one class-index PNG per image.
        require_images: skip images not found (false: sizes from the JSON, images need not exist).
        strict: any bad record fails the conversion, listing them all (false: skip and report).
    """
    return convert_named("coco", source, output, seed=seed, split=split, workers=workers, progress_bar=progress_bar,
                         limit=limit, annotations=annotations, images=images, splits=splits, keep=keep, drop=drop,
                         drop_supercategories=drop_supercategories, crowd=crowd, masks=masks,
                         require_images=require_images, strict=strict)


def convert_named(name: str, source: str | Path, output: str | Path, *, seed: int, split: Sequence[float],
                  workers: int, progress_bar: bool, limit: int | None, annotations, images: str | None,
                  splits: Sequence[str] | None, keep: Sequence[str] = (), drop: Sequence[str] = (),
                  drop_supercategories: Sequence[str] = (), crowd: str = "ignore", masks: bool = True,
                  require_images: bool = True, strict: bool = True) -> ConversionSummary:
    """:func:`convert` under another converter's name (the presets: ModaNet)."""
    source, output = Path(source), Path(output)
    if annotations is None or annotations == [] or annotations == "":
        raise UserError(f"fashion-convert {name} needs annotations=FILE.json (or annotations=[train.json,val.json])")
    files = [str(annotations)] if isinstance(annotations, (str, Path)) else [str(a) for a in annotations]
    if not 1 <= len(files) <= 3:
        raise UserError(f"annotations takes one to three COCO files, got {files}")
    paths = [Path(f) if Path(f).is_absolute() else source / f for f in files]
    root = Path(images) if images and Path(images).is_absolute() else source / (images or "")
    if not root.is_dir():
        raise UserError(f"image folder '{root}' does not exist (images=DIR, relative to source)")
    file_splits = list(splits) if splits else default_file_splits(len(files))
    options = {"split": [float(v) for v in split], "annotations": files, "images": images, "splits": file_splits,
               "keep": list(keep), "drop": list(drop), "drop_supercategories": list(drop_supercategories),
               "crowd": crowd, "masks": bool(masks), "require_images": bool(require_images), "limit": limit}
    rule = "; ".join(f"{f} -> {s}" + (" (seeded split)" if "+" in s else "") for f, s in zip(files, file_splits))
    summary, stats = convert_files(
        source, output, name=name, files=paths, file_splits=file_splits, layouts=[Layout(root)] * len(paths),
        seed=seed, split=split, workers=workers, progress_bar=progress_bar, limit=limit, keep=keep, drop=drop,
        drop_supercategories=drop_supercategories, crowd=crowd, masks=masks, require_images=require_images,
        strict=strict, options=options, split_rule=rule)
    summary.notes.append(annotation_note(stats))
    return summary


def annotation_note(stats: dict, dropped: str = "dropped (categories not kept)") -> str:
    """The summary line on annotations."""
    crowd = f", crowd {stats['annotations_crowd']}" if "annotations_crowd" in stats else ""
    dropped_count = stats.get("annotations_dropped", stats.get("annotations_dropped_parts", 0))
    return (f"annotations kept {stats['annotations_kept']}, {dropped} {dropped_count}{crowd}, "
            f"bad {stats['annotations_bad']}, without image {stats['annotations_orphan']}")
