"""fashion-show dataset.path=DIR [split=train] [n=8] [images=[...]] [seed=0] [output=DIR].

Look at a converted dataset before training on it: boxes with class names, and masks
(semi-transparent) when the folder has them, drawn over chosen or random images. Unreadable
images are skipped, named and counted; boxes reaching past their image are clipped (and
boxes outside it dropped) with a ``FILE:LINE: warning``, as training does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from fashionvision.data.annotations import Record
from fashionvision.cli._hydra import run_dir, run_hydra
from fashionvision.data.box_bounds import fit_boxes
from fashionvision.data.converted import ConvertedDataset
from fashionvision.data.image_io import ImageReadError, read_image, write_image
from fashionvision.errors import UserError
from fashionvision.output_guard import check_output
from fashionvision.tasks.visualize import class_colors, draw_boxes, mask_legend, overlay_mask


def choose_records(records: list[Record], images: Sequence[str] | None, n: int, seed: int,
                   split_file: Path) -> list[Record]:
    """The named records (all must exist in the split) or ``n`` seeded random ones, in file order."""
    if images:
        by_path = {r.path: r for r in records}
        missing = [p for p in images if p not in by_path]
        if missing:
            raise UserError(f"not in {split_file}: {', '.join(missing)}")
        return [by_path[p] for p in images]
    count = min(int(n), len(records))
    picked = np.random.default_rng(seed).choice(len(records), size=count, replace=False)
    return [records[i] for i in sorted(picked)]


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """A class-index PNG as an integer array, or None (with a note) when absent or mismatched."""
    from PIL import Image

    if not path.is_file():
        print(f"note: no mask at {path}")
        return None
    with Image.open(path) as image:
        mask = np.asarray(image)
    if mask.shape != shape:
        print(f"note: mask {path} is {mask.shape[1]}x{mask.shape[0]}, image is {shape[1]}x{shape[0]}; not drawn")
        return None
    return mask


def picture_name(path: str, taken: set[str]) -> str:
    """A flat file name for the picture of ``path``, unique among ``taken`` (which it joins).

    The whole name is kept (``x.jpg`` -> ``x.jpg.png``) so that ``x.jpg`` and ``x.png`` do not
    share one picture; ``a/b.jpg`` and ``a__b.jpg`` get a counter.
    """
    stem = path.replace("/", "__")
    name, count = f"{stem}.png", 1
    while name in taken:
        count += 1
        name = f"{stem}~{count}.png"
    taken.add(name)
    return name


def show(folder: str | Path, split: str, n: int, images: Sequence[str] | None, seed: int, output: Path,
         masks: bool = True, alpha: float = 0.45, skipped: list[str] | None = None) -> list[Path]:
    """Render the chosen images of one split into PNGs under ``output``; return their paths.

    Unreadable images are reported and skipped; their reasons are appended to ``skipped``.
    """
    data = ConvertedDataset.open(folder)
    chosen = choose_records(data.records(split), images, n, seed, data.split_file(split))
    draw_masks = masks and data.has_masks
    mask_colors = class_colors(len(data.mask_classes)) if data.mask_classes else None
    box_colors = class_colors(len(data.classes))
    if mask_colors is not None:
        # the same garment gets the same colour as box and as mask
        by_name = {name: mask_colors[i] for i, name in enumerate(data.mask_classes or [])}
        box_colors = np.array([by_name.get(name, box_colors[i]) for i, name in enumerate(data.classes)])
    check_output(output, data.inputs())
    output.mkdir(parents=True, exist_ok=True)
    written, names = [], set()
    for record in chosen:
        try:
            image = read_image(data.image_path(record))
        except ImageReadError as exc:
            print(f"skipped: {exc}")
            if skipped is not None:
                skipped.append(str(exc))
            continue
        if draw_masks:
            mask = read_mask(data.mask_path(record), image.shape[:2])
            if mask is not None:
                image = overlay_mask(image, mask, alpha=alpha, colors=mask_colors)
                image = mask_legend(image, mask, data.mask_classes or [], colors=mask_colors)
        b, issues = fit_boxes(record, image.shape[1], image.shape[0], str(data.split_file(split)))
        for issue in issues:
            print(issue)
        image = draw_boxes(image, b[:, :4], b[:, 4], data.classes, colors=box_colors)
        target = output / picture_name(record.path, names)
        write_image(target, image, root=output)
        written.append(target)
    return written


def show_command(cfg: dict) -> int:
    output = Path(cfg["output"]) if cfg.get("output") else run_dir()
    images = cfg.get("images")
    if isinstance(images, str):
        images = [images]
    skipped: list[str] = []
    written = show(cfg["dataset"]["path"], cfg["split"], int(cfg["n"]), images, int(cfg["seed"]), output,
                   masks=bool(cfg["masks"]), alpha=float(cfg["alpha"]), skipped=skipped)
    print(f"{len(written)} image(s) drawn into {output}, {len(skipped)} unreadable skipped")
    return 0 if written else 1


def main() -> None:
    run_hydra("show", show_command, dataset_alias=True)


if __name__ == "__main__":
    main()
