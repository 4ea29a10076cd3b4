"""fashion-validate FILE [root=DIR] [classes=FILE] [check_images=true]."""

from __future__ import annotations

import json
from pathlib import Path

from fashionvision.data.annotations import read_classes, validate_file
from fashionvision.cli._hydra import run_hydra
from fashionvision.errors import UserError


def validate(cfg: dict) -> int:
    """Report every bad line as FILE:LINE: reason and a summary; non-zero exit if any error."""
    file = Path(cfg["file"])
    if not file.is_file():
        raise UserError(f"annotation file '{file}' does not exist")
    classes = cfg.get("classes") or (file.parent / "classes.txt")
    num_classes = len(read_classes(classes)) if Path(classes).is_file() else None
    if cfg.get("classes") and num_classes is None:
        raise UserError(f"classes file '{cfg['classes']}' does not exist")
    root = cfg.get("root")
    if root is None and (file.parent / "metadata.json").is_file():
        meta = json.loads((file.parent / "metadata.json").read_text())
        rel = Path(meta.get("image_root", "."))
        root = rel if rel.is_absolute() else file.parent / rel
        if not Path(root).is_dir() and meta.get("image_root_abs"):
            root = meta["image_root_abs"]
    if cfg.get("check_images") and root is None:
        root = file.parent
    report = validate_file(file, root=root, num_classes=num_classes, check_images=bool(cfg.get("check_images")))
    for issue in report.errors + report.warnings:
        print(issue)
    print(report.summary())
    return 0 if report.ok else 1


def main() -> None:
    # `fashion-validate FILE` -> `file=FILE`
    run_hydra("validate", validate, bare_word_key="file")


if __name__ == "__main__":
    main()
