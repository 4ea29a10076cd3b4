"""What every converter shares: safe output staging, seeded splits, metadata and the summary.

A conversion is staged in a hidden temporary folder beside the output and renamed into place
only when everything has been written, so an interrupted run never leaves a folder that looks
like a finished conversion (``metadata.json`` is the last file written, and the folder only
appears under its final name once complete). Source folders are never written to.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from fashionvision.data.annotations import Record, atomic_write_text, write_annotations, write_classes
from fashionvision.data.converted import METADATA, SPLITS, image_root_entry
from fashionvision.errors import UserError
from fashionvision.output_guard import Input, check_output

# Skipped files listed in metadata.json and printed in the summary (all are counted).
MAX_LISTED_SKIPS = 200
MAX_PRINTED_SKIPS = 20


@dataclass(frozen=True)
class Skip:
    """A source item left out of the conversion: which file and why."""

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


@dataclass
class ConversionSummary:
    """What a conversion produced; ``text()`` is the summary printed at the end."""

    name: str
    output: Path
    images: dict[str, int]
    boxes: dict[str, int]
    skipped: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def text(self) -> str:
        lines = [f"{self.name}: converted into {self.output} in {self.seconds:.1f} s"]
        for split in SPLITS:
            lines.append(f"  {split:5s}: {self.images.get(split, 0):7d} images {self.boxes.get(split, 0):8d} boxes")
        lines.extend(f"  {note}" for note in self.notes)
        lines.append(f"  skipped: {len(self.skipped)}")
        for skip in self.skipped[:MAX_PRINTED_SKIPS]:
            lines.append(f"    {skip}")
        if len(self.skipped) > MAX_PRINTED_SKIPS:
            lines.append(f"    ... and {len(self.skipped) - MAX_PRINTED_SKIPS} more (see metadata.json)")
        return "\n".join(lines)


def fail_on_skips(name: str, skipped: Sequence[Skip], shown: int = 50) -> None:
    """Raise one :class:`UserError` listing every bad record (up to ``shown``) when there are any.

    Used by the converters' ``strict`` mode: the source is never touched and nothing is written.
    """
    if not skipped:
        return
    listed = "; ".join(str(s) for s in skipped[:shown])
    more = f"; ... and {len(skipped) - shown} more" if len(skipped) > shown else ""
    raise UserError(f"{name}: {len(skipped)} bad record(s), nothing written ({name}.strict=false skips and lists them): {listed}{more}")


def mask_write_failed(path: str | os.PathLike) -> str:
    """The one line for a mask OpenCV could not write (``cv2.imwrite`` returns False, no reason)."""
    return (f"{path}: could not write the mask (disk full or a file-size limit?); the conversion stopped "
            "and the output folder is unchanged")


def check_split(split: Sequence[float]) -> tuple[float, float, float]:
    """Validate train/val/test fractions (three non-negative numbers summing to 1)."""
    values = tuple(float(v) for v in split)
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1.0) > 1e-6:
        raise UserError(f"split must be three non-negative fractions summing to 1 (train, val, test), got {list(split)}")
    return values  # type: ignore[return-value]


def seeded_split(n: int, fractions: Sequence[float], seed: int, names: Sequence[str] = SPLITS) -> list[str]:
    """Assign each of ``n`` items (in their given order) to a split, reproducibly.

    Sizes are rounded so they add up to ``n`` (the last split takes the remainder); which item
    goes where comes from a permutation seeded with ``seed``, so the same seed and the same
    candidate list always give the same split, whatever the machine.
    """
    fractions = [float(f) for f in fractions]
    total = sum(fractions)
    sizes = [int(round(n * f / total)) for f in fractions[:-1]]
    sizes.append(max(0, n - sum(sizes)))
    order = np.random.default_rng(seed).permutation(n)
    assignment = [names[-1]] * n
    start = 0
    for name, size in zip(names, sizes):
        for index in order[start : start + size]:
            assignment[int(index)] = name
        start += size
    return assignment


def progress(iterable: Iterable, total: int | None, desc: str, enabled: bool) -> Iterable:
    """A bar with ETA on a terminal, plain lines in a log (:mod:`fashionvision.progress`), else the iterable."""
    if not enabled:
        return iterable
    from fashionvision.progress import progress as _progress

    return _progress(iterable, total=total, desc=desc, unit="img", leave=True)


#: what a conversion writes, and the caches that training and the anchor fit add (``image_sizes.json``,
#: ``.cache/``); nothing else may be in a folder that a new conversion replaces
CONVERSION_FILES = {METADATA, "train.txt", "val.txt", "test.txt", "classes.txt", "mask_classes.txt",
                    "image_sizes.json"}
ANCHOR_FILE = re.compile(r"^anchors_k\d+_\d+\.json$")  # fashion-anchors' default output
CONVERSION_FOLDERS = {"masks": (".png",), ".cache": (".bin", ".json", ".tmp")}


def foreign_entry(folder: Path) -> str | None:
    """Why ``folder`` is not verifiably one of our conversions, or None when it is.

    A ``metadata.json`` alone proves nothing: trusting it, a ``{}`` beside a thesis would get the
    whole folder replaced. It must be our schema (a known converter, its counts), and
    every other entry must be one a conversion writes.
    """
    try:
        meta = json.loads((folder / METADATA).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"its {METADATA} is not readable JSON ({exc})"
    if not (isinstance(meta, dict) and isinstance(meta.get("converter"), str) and isinstance(meta.get("source"), str)
            and isinstance(meta.get("counts"), dict) and set(meta["counts"]) == set(SPLITS)):
        return f"its {METADATA} is not one that fashion-convert writes"
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() or (entry.name not in CONVERSION_FILES and entry.name not in CONVERSION_FOLDERS
                                  and not ANCHOR_FILE.match(entry.name)):
            return f"it holds '{entry.relative_to(folder)}'"
        if entry.name in CONVERSION_FILES or ANCHOR_FILE.match(entry.name):
            if not entry.is_file():
                return f"'{entry.name}' is not a file"
            continue
        suffixes = CONVERSION_FOLDERS[entry.name]
        for item in sorted(entry.rglob("*")):
            if item.is_symlink() or (item.is_file() and item.suffix.lower() not in suffixes) or \
                    not (item.is_file() or item.is_dir()):
                return f"it holds '{item.relative_to(folder)}'"
    return None


def check_paths(source: Path, output: Path, marker: str = METADATA) -> None:
    """Refuse outputs that would write into (or replace) the source, or clobber unrelated files.

    An existing non-empty output is replaced only when it holds ``marker`` (what this kind of
    command writes last) and, for a conversion, nothing but what a conversion writes
    (:func:`foreign_entry`), so a folder of the user's own is never taken for an earlier run.
    """
    check_output(output, [Input(source, "source folder")])
    if output.is_symlink():
        raise UserError(f"output '{output}' is a symbolic link; give the folder it points to, or a new folder")
    if output.exists():
        if not output.is_dir():
            raise UserError(f"output '{output}' exists and is not a folder")
        if not any(output.iterdir()):
            return
        if not (output / marker).is_file():
            raise UserError(
                f"output '{output}' exists, is not empty and is not a {'converted dataset' if marker == METADATA else 'previous export'}; "
                "refusing to replace it (choose an empty or new folder)"
            )
        why = foreign_entry(output) if marker == METADATA else None
        if why is not None:
            raise UserError(f"output '{output}' is not one of fashion-convert's conversions ({why}); refusing "
                            "to replace it; choose an empty or new folder")


@contextmanager
def staged_output(source: str | os.PathLike, output: str | os.PathLike, marker: str = METADATA,
                  also_inputs: Sequence[Path] = ()) -> Iterator[Path]:
    """Yield a temporary folder beside ``output``; on success it replaces ``output``.

    A previous conversion in ``output`` is swapped out only after the new one is complete, and
    an error (or Ctrl-C) removes the temporary folder, leaving the old output untouched.
    """
    source, output = Path(source), Path(output)
    if not source.is_dir():
        raise UserError(f"source folder '{source}' does not exist")
    check_paths(source, output, marker)
    for other in also_inputs:  # e.g. the image root of a converted folder being exported
        check_paths(Path(other), output, marker)
    output.parent.mkdir(parents=True, exist_ok=True)
    from fashionvision.convert.staging import clean_stale_staging, staging_prefix

    clean_stale_staging(output.parent, output.name)  # what SIGKILLed earlier runs left behind
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=staging_prefix(output.name)))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a dataset folder should be readable
        if output.exists():
            old = Path(tempfile.mkdtemp(dir=output.parent, prefix=staging_prefix(output.name, "old")))
            os.rename(output, old / "previous")
            os.rename(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def class_counts(records: Iterable[Record], classes: Sequence[str]) -> dict[str, int]:
    """Boxes per class name (every class listed, zeros included)."""
    counter: Counter = Counter()
    for record in records:
        counter.update(int(c) for c in record.boxes[:, 4])
    return {name: int(counter.get(index, 0)) for index, name in enumerate(classes)}


def write_converted(
    staging: Path,
    output: Path,
    *,
    name: str,
    source: Path,
    image_root: Path,
    splits: dict[str, list[Record]],
    classes: Sequence[str],
    mask_classes: Sequence[str] | None,
    options: dict,
    seed: int | None,
    skipped: Sequence[Skip],
    extra: dict | None = None,
    started: float | None = None,
) -> ConversionSummary:
    """Write split files, class lists and ``metadata.json`` into ``staging``; return the summary.

    ``output`` is the final folder name: the image root is recorded relative to it (the staging
    folder sits beside it, so the relative path is the same).
    """
    for split in SPLITS:
        records = sorted(splits.get(split, []), key=lambda r: r.path)
        splits[split] = records
        write_annotations(staging / f"{split}.txt", records)
    write_classes(staging / "classes.txt", classes)
    if mask_classes is not None:
        write_classes(staging / "mask_classes.txt", mask_classes)
    images = {split: len(splits.get(split, [])) for split in SPLITS}
    boxes = {split: int(sum(len(r.boxes) for r in splits.get(split, []))) for split in SPLITS}
    metadata = {
        "source_name": name,
        "converter": name,
        "source": str(source.resolve()),
        **image_root_entry(output, image_root),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": seed,
        "options": options,
        "num_classes": len(classes),
        "has_masks": mask_classes is not None,
        "counts": {
            split: {"images": images[split], "boxes": boxes[split], "per_class": class_counts(splits.get(split, []), classes)}
            for split in SPLITS
        },
        "skipped": {"count": len(skipped), "listed": [{"file": s.file, "reason": s.reason} for s in skipped[:MAX_LISTED_SKIPS]]},
        **(extra or {}),
    }
    # metadata.json last: its presence marks a complete conversion.
    atomic_write_text(staging / METADATA, json.dumps(metadata, indent=2) + "\n")
    seconds = time.perf_counter() - started if started is not None else 0.0
    summary = ConversionSummary(name, output, images, boxes, list(skipped), seconds=seconds)
    summary.notes.extend(empty_split_warnings(images))  # printed with the summary
    return summary


def empty_split_warnings(images: dict[str, int]) -> list[str]:
    """One warning per empty split: training needs train and val images (the test split is optional)."""
    empty = [split for split in SPLITS if not images.get(split)]
    if not empty:
        return []
    needed = [split for split in empty if split in ("train", "val")]
    why = ("fashion-train needs images in train and val" if needed
           else "fashion-eval split=test needs test images")
    shown = ", ".join(f"{s} {images.get(s, 0)}" for s in SPLITS)
    return [f"warning: split{'s' if len(empty) > 1 else ''} {' and '.join(empty)} "
            f"{'are' if len(empty) > 1 else 'is'} empty ({shown} images): {why}; convert more images "
            f"(e.g. without limit=) or change the split fractions (split=[train,val,test])"]
