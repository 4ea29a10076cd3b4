"""ModaNet -> the project format: the COCO converter plus a preset (``fashion-convert modanet``).

ModaNet ships COCO instances files (``modanet2018_instances_train.json``, and a val file whose
images carry no annotations) over the Paperdoll photos, which are distributed separately and
unpacked into ``images/``. Its 13 categories (ids 1..13) are kept as they are; the official
train file is split, seeded, into train/val/test (``modanet.splits``). Some of ModaNet's
polygons have fewer than three points: they are skipped and listed (``strict=false``), the rest
of the annotation kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from fashionvision.convert import coco
from fashionvision.convert.common import ConversionSummary

CATEGORIES = ("bag", "belt", "boots", "footwear", "outer", "dress", "sunglasses", "pants", "top", "shorts",
              "skirt", "headwear", "scarf & tie")
TRAIN_FILE = "modanet2018_instances_train.json"


def convert(
    source: str | Path,
    output: str | Path,
    *,
    seed: int = 0,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    workers: int = 2,
    progress_bar: bool = True,
    limit: int | None = None,
    annotations: str | Sequence[str] = TRAIN_FILE,
    images: str = "images",
    splits: Sequence[str] | None = None,
    masks: bool = True,
    require_images: bool = True,
    strict: bool = False,
) -> ConversionSummary:
    """Convert ModaNet (``annotations`` under ``source``, photos in ``images``) into ``output``."""
    summary = coco.convert_named(
        "modanet", source, output, seed=seed, split=split, workers=workers, progress_bar=progress_bar, limit=limit,
        annotations=annotations, images=images, splits=splits, masks=masks, require_images=require_images,
        strict=strict)
    classes = (Path(output) / "classes.txt").read_text(encoding="utf-8").splitlines()
    if tuple(classes) != CATEGORIES:
        summary.notes.append(f"warning: the file's categories {classes} are not ModaNet's 13 {list(CATEGORIES)}")
    return summary
