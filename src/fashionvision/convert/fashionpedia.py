"""Fashionpedia (COCO-style JSON) -> the project format: the COCO converter plus a preset.

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

import time
from pathlib import Path
from typing import Sequence

from fashionvision.convert.coco import Layout, annotation_note, box_from_bbox, convert_files, load_coco  # noqa: F401
from fashionvision.convert.common import ConversionSummary
from fashionvision.errors import UserError

DEFAULT_DROP = ("garment parts", "closures", "decorations")
IMAGE_DIRS = ("train", "test", "")


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
    strict: bool = False,
) -> ConversionSummary:
    """Convert Fashionpedia JSON file(s) under ``source`` into ``output``.

    Args:
        files: one JSON (seeded train/val/test split) or two (train file -> train+val, second
            file -> test); relative names are looked up under ``source``.
        drop_supercategories: category supercategories left out (parts by default).
        masks: write one class-index PNG per image.
        require_images: skip images not found under ``source`` (else sizes come from the JSON).
        limit: convert only the first ``limit`` images of each file (quick checks).
        strict: fail on any bad record, listing them all (default: skip and report them).
    """
    started = time.perf_counter()
    source, output = Path(source), Path(output)
    files = list(files)
    if not 1 <= len(files) <= 2:
        raise UserError(f"fashionpedia.files takes one or two JSON files, got {files}")
    paths = [Path(f) if Path(f).is_absolute() else source / f for f in files]
    for path in paths:
        if not path.is_file():
            raise UserError(f"Fashionpedia annotation file '{path}' does not exist (fashionpedia.files={files})")
    rule = (
        "seeded train/val/test split of the single file"
        if len(paths) == 1
        else f"{files[0]} -> seeded train/val split (train/val fractions renormalised); "
        f"{files[1]} -> test (Fashionpedia's test annotations are not public)"
    )
    options = {
        "split": [float(v) for v in split],
        "files": files,
        "drop_supercategories": list(drop_supercategories),
        "masks": bool(masks),
        "require_images": bool(require_images),
        "limit": limit,
    }
    summary, stats = convert_files(
        source, output, name="fashionpedia", files=paths,
        file_splits=["train+val+test"] if len(paths) == 1 else ["train+val", "test"],
        layouts=[Layout(source, IMAGE_DIRS, _default_dir(str(p), len(paths))) for p in paths],
        seed=seed, split=split, workers=workers, progress_bar=progress_bar, limit=limit,
        drop_supercategories=drop_supercategories, crowd="object", masks=masks, require_images=require_images,
        strict=strict, options=options, split_rule=rule,
        stats_names={"annotations_dropped": "annotations_dropped_parts"},
    )
    summary.notes.append(annotation_note(stats, "parts dropped"))
    summary.seconds = time.perf_counter() - started
    return summary
