"""A converted folder -> COCO JSON or ultralytics' YOLO layout (``fashion-convert export``).

So that a conversion made here trains in ultralytics, mmdetection or Detectron2 unchanged, and
comes back (``fashion-convert coco`` / ``fashion-convert yolo``) as the same boxes and masks.

COCO (``format=coco``)::

    <output>/annotations/instances_<split>.json   one per split file present
    <output>/images/<image path>                  links to (or copies of) the images
    <output>/export.json                          what was exported, from where (written last)

Categories are the detection classes (ids 1..K, COCO's habit); each box is an annotation with
``bbox`` ``[x1, y1, x2 - x1 + 1, y2 - y1 + 1]`` and, where the folder has masks, the RLE of
its class's pixels inside its box. Mask pixels no box covers (components under the box rule's
area, labels such as ``skin`` that are no detection class) become ``iscrowd: 1`` annotations,
of a category with supercategory ``mask only`` for the non-detection labels: COCO tools ignore
crowd regions as boxes, and our importer, reading the mask classes kept in
``info.fashionvision``, paints them back, so the masks survive the trip exactly. Ignore pixels
(255) are not exported.

YOLO (``format=yolo``)::

    <output>/data.yaml                      path, train/val/test image folders, names (and mask_names)
    <output>/images/<split>/<image path>    links to (or copies of) the images
    <output>/labels/<split>/<image stem>.txt  ``cls cx cy w h`` normalised, 6 decimals (or, with
                                              ``segments``, ``cls x1 y1 x2 y2 ...``: polygons)
    <output>/masks/<split>/<image stem>.png   the class-index masks, where the folder has them

An inclusive box ``x1..x2`` is the continuous span ``[x1, x2 + 1)``; reading it back rounds to
the nearest pixel, so boxes come back within one pixel (exactly, in practice). Polygons traced
from the masks (``segments``) are an approximation: boxes read back from them can differ by a
pixel or two, and the exact masks travel in ``masks/`` beside them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from fashionvision.convert.coco import MASK_ONLY
from fashionvision.convert.common import ConversionSummary, progress, staged_output
from fashionvision.data.annotations import Record, atomic_write_text
from fashionvision.data.converted import SPLITS, ConvertedDataset
from fashionvision.data.image_io import ImageReadError, image_size
from fashionvision.errors import UserError

COCO, YOLO = "coco", "yolo"  # the export formats (YOLO: ultralytics' label layout, not the model family)
FORMATS = (COCO, YOLO)
IMAGE_MODES = ("link", "copy", "none")
MARKER = "export.json"


def export(dataset: str | os.PathLike, output: str | os.PathLike, *, format: str = "coco", images: str = "link",
           segments: bool = False, progress_bar: bool = True) -> ConversionSummary:
    """Write the converted folder ``dataset`` into ``output`` in ``format``.

    Args:
        format: ``coco`` or ``yolo``.
        images: ``link`` (symlinks to the images), ``copy`` or ``none`` (annotations only).
        segments: yolo: polygon label lines (ultralytics' segmentation variant), traced from
            each box's pixels in the mask, instead of box lines.
    """
    started = time.perf_counter()
    if format not in FORMATS:
        raise UserError(f"unknown export format '{format}'; choose one of {', '.join(FORMATS)}")
    if images not in IMAGE_MODES:
        raise UserError(f"export.images must be one of {', '.join(IMAGE_MODES)}, got '{images}'")
    data = ConvertedDataset.open(dataset)
    splits = {s: data.records(s) for s in SPLITS if data.split_file(s).is_file()}
    if not splits:
        raise UserError(f"'{dataset}' has no split files ({', '.join(f'{s}.txt' for s in SPLITS)})")
    value_of = _mask_values(data) if data.has_masks else None
    if segments and (format != YOLO or value_of is None):
        raise UserError("export.segments=true traces polygons from the masks: it needs format=yolo and a folder with masks")
    output = Path(output)
    with staged_output(data.folder, output, marker=MARKER, also_inputs=[data.image_root]) as staging:
        if format == COCO:
            _write_coco(data, splits, value_of, staging, output, images, progress_bar)
        else:
            _write_yolo(data, splits, value_of, staging, output, images, progress_bar, segments)
        info = {"format": format, "dataset": str(data.folder.resolve()), "images": images,
                "splits": {s: len(r) for s, r in splits.items()}, "classes": data.classes,
                "mask_classes": data.mask_classes if value_of is not None else None,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_text(staging / MARKER, json.dumps(info, indent=2) + "\n")
    counts = {s: len(r) for s, r in splits.items()}
    boxes = {s: int(sum(len(r.boxes) for r in records)) for s, records in splits.items()}
    summary = ConversionSummary(f"export {format}", output, counts, boxes, seconds=time.perf_counter() - started)
    if data.mask_classes is not None and value_of is None:
        summary.notes.append("masks: the folder lists mask classes but has no masks/ folder; boxes only")
    return summary


def _mask_values(data: ConvertedDataset) -> list[int]:
    """Mask value of each detection class (by name)."""
    assert data.mask_classes is not None
    missing = [c for c in data.classes if c not in data.mask_classes]
    if missing:
        raise UserError(f"{data.folder}: detection classes {missing} are not in mask_classes.txt; "
                        "cannot tell which mask pixels are theirs")
    return [data.mask_classes.index(c) for c in data.classes]


def _size(data: ConvertedDataset, record: Record, mask: np.ndarray | None) -> tuple[int, int]:
    if mask is not None:
        return mask.shape[1], mask.shape[0]
    try:
        return image_size(data.image_path(record))
    except ImageReadError as exc:
        raise UserError(f"{data.split_file('train').parent}: image {record.path}: {exc.reason} "
                        "(its size is needed for the export)") from exc


def _read_mask(data: ConvertedDataset, record: Record) -> np.ndarray:
    path = data.mask_path(record)
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.ndim != 2:
        raise UserError(f"{path}: missing or not a single-channel mask PNG")
    return mask


def _place_image(data: ConvertedDataset, record: Record, target: Path, mode: str) -> None:
    if mode == "none":
        return
    source = data.image_path(record)
    if not source.is_file():
        raise UserError(f"image {source} (of {record.path}) does not exist")
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "link":
        os.symlink(source.resolve(), target)
    else:
        shutil.copyfile(source, target)


def _rle(binary: np.ndarray) -> dict:
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(binary.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _write_coco(data: ConvertedDataset, splits: dict[str, list[Record]], value_of: list[int] | None,
                staging: Path, output: Path, images: str, progress_bar: bool) -> None:
    categories = [{"id": i + 1, "name": n, "supercategory": data.name} for i, n in enumerate(data.classes)]
    category_of_value: dict[int, int] = {}
    if value_of is not None:
        assert data.mask_classes is not None
        for cls, value in enumerate(value_of):
            category_of_value.setdefault(value, cls + 1)
        for value, name in enumerate(data.mask_classes):
            if value and value not in category_of_value:
                categories.append({"id": len(categories) + 1, "name": name, "supercategory": MASK_ONLY})
                category_of_value[value] = len(categories)
    info = {"description": f"fashionvision export of {data.name}", "version": "1.0"}
    if value_of is not None:
        info["fashionvision"] = {"mask_classes": data.mask_classes}
    (staging / "annotations").mkdir()
    for split, records in splits.items():
        coco_images, annotations = [], []
        for image_id, record in enumerate(progress(records, len(records), f"coco {split}", progress_bar), start=1):
            mask = _read_mask(data, record) if value_of is not None else None
            width, height = _size(data, record, mask)
            coco_images.append({"id": image_id, "file_name": record.path, "width": width, "height": height})
            covered = np.zeros((height, width), bool) if mask is not None else None
            for x1, y1, x2, y2, cls in record.boxes.tolist():
                ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": cls + 1,
                       "bbox": [x1, y1, x2 - x1 + 1, y2 - y1 + 1], "area": (x2 - x1 + 1) * (y2 - y1 + 1), "iscrowd": 0}
                if mask is not None:
                    inside = np.zeros((height, width), bool)
                    window = (slice(y1, y2 + 1), slice(x1, x2 + 1))
                    inside[window] = mask[window] == value_of[cls]
                    covered |= inside
                    ann["segmentation"], ann["area"] = _rle(inside), int(inside.sum())
                annotations.append(ann)
            if mask is not None:
                for value in np.unique(mask[~covered]).tolist():
                    if value == 0 or value not in category_of_value:
                        continue  # background, and ignore pixels (255)
                    rest = (mask == value) & ~covered
                    ys, xs = np.nonzero(rest)
                    annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                        "category_id": category_of_value[value],
                                        "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                                 int(ys.max() - ys.min() + 1)],
                                        "area": int(rest.sum()), "iscrowd": 1, "segmentation": _rle(rest)})
            _place_image(data, record, staging / "images" / record.path, images)
        document = {"info": info, "licenses": [], "categories": categories, "images": coco_images,
                    "annotations": annotations}
        atomic_write_text(staging / "annotations" / f"instances_{split}.json", json.dumps(document) + "\n")


def yolo_box_line(box: Sequence[int], width: int, height: int) -> str:
    """``cls cx cy w h`` (normalised, 6 decimals) of an inclusive pixel box."""
    x1, y1, x2, y2, cls = (int(v) for v in box)
    cx, cy = (x1 + x2 + 1) / 2 / width, (y1 + y2 + 1) / 2 / height
    w, h = (x2 - x1 + 1) / width, (y2 - y1 + 1) / height
    return f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"


def yolo_polygon_line(mask: np.ndarray, box: Sequence[int], value: int) -> str:
    """``cls x1 y1 x2 y2 ...`` (normalised): the outline of the box's pixels of ``value``.

    The largest outer contour, through pixel centres (ultralytics takes one polygon per object);
    a region too thin to have one is written as its box's outline.
    """
    height, width = mask.shape
    x1, y1, x2, y2, cls = (int(v) for v in box)
    window = (mask[y1:y2 + 1, x1:x2 + 1] == value).astype(np.uint8)
    contours, _ = cv2.findContours(window, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    points = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64) if contours else np.zeros((0, 2))
    if len(points) >= 3 and cv2.contourArea(points.astype(np.float32)) > 0:
        points = points + [x1 + 0.5, y1 + 0.5]
    else:
        points = np.array([[x1, y1], [x2 + 1, y1], [x2 + 1, y2 + 1], [x1, y2 + 1]], dtype=np.float64)
    return f"{cls} " + " ".join(f"{x / width:.6f} {y / height:.6f}" for x, y in points.tolist())


def _write_yolo(data: ConvertedDataset, splits: dict[str, list[Record]], value_of: list[int] | None,
                staging: Path, output: Path, images: str, progress_bar: bool, segments: bool = False) -> None:
    for split, records in splits.items():
        (staging / "images" / split).mkdir(parents=True, exist_ok=True)  # data.yaml names it, even when empty
        (staging / "labels" / split).mkdir(parents=True, exist_ok=True)
        for record in progress(records, len(records), f"yolo {split}", progress_bar):
            mask = _read_mask(data, record) if value_of is not None else None
            width, height = _size(data, record, mask)
            stem = Path(record.path).with_suffix("")
            label = staging / "labels" / split / f"{stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            if segments:
                assert mask is not None and value_of is not None
                lines = [yolo_polygon_line(mask, box, value_of[box[4]]) for box in record.boxes.tolist()]
            else:
                lines = [yolo_box_line(box, width, height) for box in record.boxes.tolist()]
            label.write_text("".join(f"{line}\n" for line in lines))
            if mask is not None:
                target = staging / "masks" / split / f"{stem}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(data.mask_path(record), target)
            _place_image(data, record, staging / "images" / split / record.path, images)
    lines = [f"# fashionvision export of {data.name} (fashion-convert export format=yolo)",
             f"path: {json.dumps(str(output.resolve()))}"]
    lines += [f"{split}: images/{split}" for split in splits]
    lines.append("names:")
    lines += [f"  {i}: {json.dumps(name)}" for i, name in enumerate(data.classes)]
    if value_of is not None:
        assert data.mask_classes is not None
        lines.append("# class-index masks in masks/<split>/ (not read by ultralytics; fashion-convert yolo reads them)")
        lines.append("mask_names:")
        lines += [f"  - {json.dumps(name)}" for name in data.mask_classes]
    atomic_write_text(staging / "data.yaml", "\n".join(lines) + "\n")
