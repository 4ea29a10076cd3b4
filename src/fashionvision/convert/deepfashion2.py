"""DeepFashion2 -> the project format (``fashion-convert deepfashion2``).

The layout (DeepFashion2's README)::

    <source>/train/image/000001.jpg       <source>/train/annos/000001.json
    <source>/validation/image/...         <source>/validation/annos/...
    <source>/test/image/...               (no annotations: not converted)

One JSON per image: ``source`` (``shop`` or ``user``), ``pair_id`` and ``item1``..``itemN``,
each with ``category_id`` (1..13) and ``category_name``, ``bounding_box`` ``[x1, y1, x2, y2]``,
``segmentation`` (polygons ``[[x1, y1, x2, y2, ...], ...]``), ``landmarks``, ``style`` (0: not
part of a pair), ``scale`` (1 small, 2 moderate, 3 large), ``occlusion`` (1 slight or none,
2 medium, 3 heavy), ``zoom_in`` (1 none, 2 medium, 3 large) and ``viewpoint`` (1 not worn,
2 frontal, 3 side or back).

Classes are the 13 categories in id order. Boxes: ``bounding_box`` as a continuous span,
``floor(x1), floor(y1), ceil(x2) - 1, ceil(y2) - 1`` clipped to the image. Masks: the polygons
painted class k -> k + 1, larger items first. Per item, occlusion / zoom_in / viewpoint /
scale / style (and per image source and pair_id) are written to ``items.json``, in the order of
the image's boxes, so that evaluation can report AP per subset. Splits: by folder,
``splits={train: train+val, validation: test}`` by default (DeepFashion2's test annotations are
not public), ``train+val`` meaning a seeded split of that folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from fashionvision.convert import masks as mask_ops
from fashionvision.convert.coco import box_from_bbox, file_split_names
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
from fashionvision.data.annotations import Record, atomic_write_text
from fashionvision.data.converted import SPLITS, mask_path_for
from fashionvision.data.image_io import ImageReadError, image_size
from fashionvision.errors import UserError

CATEGORIES = ("short sleeve top", "long sleeve top", "short sleeve outwear", "long sleeve outwear", "vest", "sling",
              "shorts", "trousers", "skirt", "short sleeve dress", "long sleeve dress", "vest dress", "sling dress")
ITEM_FIELDS = ("item", "occlusion", "zoom_in", "viewpoint", "scale", "style")
ITEMS_FILE = "items.json"


def parse_item(key: str, item: object, width: int, height: int) -> tuple[list[int], list | None, list[int]]:
    """``(box + [cls], polygons or None, [item number, occlusion, zoom_in, viewpoint, scale, style])``.

    Raises ValueError saying what is wrong with the item.
    """
    if not isinstance(item, dict):
        raise ValueError(f"is a {type(item).__name__}, expected an object")
    category = item.get("category_id")
    if isinstance(category, bool) or not isinstance(category, int) or not 1 <= category <= len(CATEGORIES):
        raise ValueError(f"category_id {category!r} is not 1..{len(CATEGORIES)}")
    box = item.get("bounding_box")
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
        raise ValueError(f"bounding_box {box!r} is not [x1, y1, x2, y2]")
    x1, y1, x2, y2 = (float(v) for v in box)
    pixels = box_from_bbox([x1, y1, x2 - x1, y2 - y1], width, height)
    if pixels is None:
        raise ValueError(f"bounding_box {box} is empty or outside the {width}x{height} image")
    segmentation = item.get("segmentation")
    if segmentation:
        mask_ops.check_segmentation(segmentation, height, width)
    labels = []
    for name in ITEM_FIELDS[1:]:
        value = item.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} {value!r} is not an integer")
        labels.append(value)
    return [*pixels, category - 1], segmentation or None, [int(key[4:]), *labels]


def convert(
    source: str | Path,
    output: str | Path,
    *,
    seed: int = 0,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    workers: int = 2,
    progress_bar: bool = True,
    limit: int | None = None,
    splits: Mapping[str, str] | None = None,
    masks: bool = True,
    require_images: bool = True,
    strict: bool = True,
) -> ConversionSummary:
    """Convert a DeepFashion2 folder into ``output``.

    Args:
        splits: DeepFashion2 folder -> our split(s) (``train+val``: seeded); folders absent are noted.
        masks: write one class-index PNG per image.
        require_images: skip items whose image is missing (false: the size is taken from nothing,
            so it is refused: DeepFashion2's JSON holds no image size).
        strict: any bad file or item fails the run, all listed (false: skip and report).
        limit: the first ``limit`` images of each folder.
    """
    started = time.perf_counter()
    source, output = Path(source), Path(output)
    fractions = check_split(split)
    if not require_images:
        raise UserError("deepfashion2.require_images=false is not possible: DeepFashion2's JSON files hold no "
                        "image sizes, so every image is read")
    mapping = dict(splits or {"train": "train+val", "validation": "test"})
    present = {folder: file_split_names(spec) for folder, spec in mapping.items() if (source / folder / "annos").is_dir()}
    if not present:
        raise UserError(f"'{source}' has none of {', '.join(f'{f}/annos/' for f in mapping)}: not a DeepFashion2 folder")
    notes = [f"{folder}/annos/ not found: not converted" for folder in mapping if folder not in present]
    skipped: list[Skip] = []
    records: dict[str, list[Record]] = {s: [] for s in SPLITS}
    items: dict[str, dict] = {}
    with staged_output(source, output) as staging, mask_ops.MaskWriter(staging, workers if masks else 0) as writer:
        for folder, names in present.items():
            files = sorted((source / folder / "annos").glob("*.json"))
            if limit is not None:
                files = files[: int(limit)]
            wanted = [fractions[SPLITS.index(s)] for s in names]
            assignment = seeded_split(len(files), wanted, seed, names=names) if len(names) > 1 else [names[0]] * len(files)
            for path, split_name in zip(progress(files, len(files), folder, progress_bar), assignment):
                where = f"{folder}/annos/{path.name}"
                rel = f"{folder}/image/{path.stem}.jpg"
                converted = _convert_file(source, path, rel, where, writer, skipped)
                if converted is not None:
                    record, image_items = converted
                    records[split_name].append(record)
                    items[rel] = image_items
        for mask_file, problem in writer.finish():
            skipped.append(Skip(str(Path(mask_file).relative_to(staging)), problem))
        if strict:
            fail_on_skips("deepfashion2", skipped)
        atomic_write_text(staging / ITEMS_FILE, json.dumps({"fields": list(ITEM_FIELDS), "images": items}) + "\n")
        options = {"split": list(fractions), "splits": mapping, "masks": bool(masks), "limit": limit}
        summary = write_converted(
            staging, output, name="deepfashion2", source=source, image_root=source, splits=records,
            classes=list(CATEGORIES), mask_classes=["background", *CATEGORIES] if masks else None, options=options,
            seed=seed, skipped=skipped,
            extra={"split_rule": "; ".join(f"{f} -> {'+'.join(n)}" for f, n in present.items()),
                   "item_attributes": ITEMS_FILE}, started=started)
    summary.notes.extend(notes)
    summary.seconds = time.perf_counter() - started
    return summary


def _convert_file(source: Path, path: Path, rel: str, where: str, writer: "mask_ops.MaskWriter",
                  skipped: list[Skip]) -> tuple[Record, dict] | None:
    """One annotation file -> its record and item labels (None when it cannot be used)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        skipped.append(Skip(where, f"not valid JSON ({exc})"))
        return None
    if not isinstance(data, dict):
        skipped.append(Skip(where, f"the top level is a JSON {type(data).__name__}, expected an object with item1, item2, ..."))
        return None
    keys = sorted((k for k in data if k.startswith("item") and k[4:].isdigit()), key=lambda k: int(k[4:]))
    if not keys:
        skipped.append(Skip(where, "no item1, item2, ... entries"))
        return None
    image = source / rel
    if not image.is_file():
        skipped.append(Skip(where, f"image {rel} not found"))
        return None
    try:
        width, height = image_size(image)
    except ImageReadError as exc:
        skipped.append(Skip(where, f"image {rel} unreadable: {exc.reason}"))
        return None
    boxes, paint, labels, bad = [], [], [], False
    for key in keys:
        try:
            box, polygons, item_labels = parse_item(key, data[key], width, height)
        except (ValueError, TypeError) as exc:
            skipped.append(Skip(f"{where}: {key}", str(exc)))
            bad = True
            continue
        boxes.append(box)
        labels.append(item_labels)
        if polygons:
            paint.append((float((box[2] - box[0] + 1) * (box[3] - box[1] + 1)), box[4] + 1, polygons))
    if bad and not boxes:
        return None
    if writer.enabled:
        writer.submit(mask_path_for(writer.folder, rel), height, width, paint)
    info = {"source": data.get("source"), "pair_id": data.get("pair_id"), "items": labels}
    return Record(rel, np.array(boxes, dtype=np.int64).reshape(-1, 5)), info
