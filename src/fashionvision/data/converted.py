"""A converted dataset folder, as every converter writes it and every consumer reads it.

Layout::

    <folder>/train.txt val.txt test.txt   the annotation format (fashionvision.data.annotations)
    <folder>/classes.txt                  detection class names, index order
    <folder>/mask_classes.txt             segmentation label names (index 0 = background), if masks
    <folder>/masks/<image path>.png       class-index PNG per image, if the source has pixels
    <folder>/metadata.json                source, options, counts, seed, image_root

``metadata.json["image_root"]`` is where image paths are relative to; it is stored relative to
the converted folder when possible so that the folder can move together with its data.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fashionvision.data.annotations import Record, read_annotations, read_classes
from fashionvision.errors import UserError
from fashionvision.output_guard import Input

SPLITS = ("train", "val", "test")
METADATA = "metadata.json"


@dataclass
class ConvertedDataset:
    """Paths and class lists of one converted folder."""

    folder: Path
    image_root: Path
    classes: list[str]
    mask_classes: list[str] | None
    metadata: dict

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "ConvertedDataset":
        """Open a converted folder, with a clear message when it is not one."""
        folder = Path(folder)
        meta_path = folder / METADATA
        if not meta_path.is_file():
            raise UserError(
                f"'{folder}' is not a converted dataset (no {METADATA}); run "
                f"`fashion-convert <ccp|deepfashion|fashionpedia|coco|yolo|masks|deepfashion2|modanet> "
                f"output={folder}` first (docs/data.md)"
            )
        try:
            metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UserError(f"{meta_path}: not readable JSON ({exc}); re-run fashion-convert") from exc
        if not isinstance(metadata, dict) or not isinstance(metadata.get("image_root", "."), str):
            raise UserError(f"{meta_path}: expected a JSON object with a string 'image_root'; "
                            "re-run fashion-convert")
        root = Path(metadata.get("image_root", "."))
        image_root = root if root.is_absolute() else (folder / root)
        if not image_root.is_dir() and metadata.get("image_root_abs"):
            image_root = Path(metadata["image_root_abs"])
        classes = _read_class_file(folder / "classes.txt")
        mask_file = folder / "mask_classes.txt"
        mask_classes = _read_class_file(mask_file) if mask_file.is_file() else None
        return cls(folder, image_root.resolve(), classes, mask_classes, metadata)

    @classmethod
    def from_classes(cls, classes: list[str], mask_classes: list[str] | None = None,
                     metadata: dict | None = None) -> "ConvertedDataset":
        """A stand-in holding only class lists: what inference needs, rebuilt from a checkpoint."""
        return cls(Path("."), Path("."), list(classes), list(mask_classes) if mask_classes else None,
                   dict(metadata or {}))

    @property
    def name(self) -> str:
        return str(self.metadata.get("source_name", self.folder.name))

    @property
    def has_masks(self) -> bool:
        return self.mask_classes is not None and (self.folder / "masks").is_dir()

    def inputs(self) -> list[Input]:
        """What a command reading this dataset reads, for :func:`fashionvision.output_guard.check_output`."""
        return [Input(self.folder, "converted dataset"), Input(self.image_root, "image folder")]

    def split_file(self, split: str) -> Path:
        if split not in SPLITS:
            raise UserError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
        return self.folder / f"{split}.txt"

    def records(self, split: str) -> list[Record]:
        """Read and validate one split (every bad line reported at once)."""
        path = self.split_file(split)
        if not path.is_file():
            raise UserError(f"split file '{path}' does not exist")
        return read_annotations(path, num_classes=len(self.classes))

    def image_path(self, record: Record) -> Path:
        return self.image_root / record.path

    def mask_path(self, record: Record) -> Path:
        return mask_path_for(self.folder, record.path)


def _read_class_file(path: Path) -> list[str]:
    """``read_classes`` with the user's problems (missing, unreadable, empty) as one-line errors."""
    if not path.is_file():
        raise UserError(f"{path} is missing: a converted dataset needs its class list; "
                        "re-run fashion-convert")
    try:
        names = read_classes(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not readable as UTF-8 text ({exc})") from exc
    if not names:
        raise UserError(f"{path} lists no classes; re-run fashion-convert")
    return names


def mask_path_for(folder: str | os.PathLike, image_rel_path: str) -> Path:
    """Where a converter writes (and datasets read) the mask of an image."""
    return Path(folder) / "masks" / Path(image_rel_path).with_suffix(".png")


def image_root_entry(folder: str | os.PathLike, image_root: str | os.PathLike) -> dict:
    """Metadata entries recording the image root relative to the folder (and absolute as fallback)."""
    folder = Path(folder).resolve()
    image_root = Path(image_root).resolve()
    return {"image_root": os.path.relpath(image_root, folder), "image_root_abs": str(image_root)}


def dataset_ready(path: str | os.PathLike) -> bool:
    """True when ``path`` is a converted folder with a training split."""
    path = Path(path)
    return (path / "train.txt").is_file() and (path / "metadata.json").is_file()
