"""fashion-validate FILE [root=DIR] [classes=FILE] [check_images=true]."""

from __future__ import annotations

import json
from pathlib import Path

from fashionvision.data.annotations import class_name_problem, read_classes, validate_file
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
    problems = classes_problems(Path(classes), file.parent / "metadata.json") if Path(classes).is_file() else []
    for issue in report.errors + report.warnings:
        print(issue)
    for problem in problems:
        print(problem)
    print(report.summary())
    return 0 if report.ok and not problems else 1


def classes_problems(classes: Path, metadata: Path) -> list[str]:
    """``classes.txt`` checked line by line and against what the conversion recorded.

    A name split by a line break passes every range check of the split files (the ids stay
    below the longer list); ``metadata.json`` still knows the real count and names.
    """
    names = read_classes(classes)
    problems = [f"{classes}:{i + 1}: {p}" for i, n in enumerate(names) if (p := class_name_problem(n))]
    try:
        meta = json.loads(metadata.read_text(encoding="utf-8")) if metadata.is_file() else {}
    except (OSError, UnicodeDecodeError, ValueError):
        meta = {}
    if not isinstance(meta, dict):
        return problems
    expected = meta.get("num_classes")
    if isinstance(expected, int) and expected != len(names):
        problems.append(f"{classes}: lists {len(names)} classes, {metadata.name} records {expected} (a class name "
                        "with a line break?); re-run fashion-convert")
    per_class = ((meta.get("counts") or {}).get("train") or {}).get("per_class") if isinstance(
        meta.get("counts"), dict) else None
    if isinstance(per_class, dict) and list(per_class) != names and not problems[-1:]:
        problems.append(f"{classes}: its names differ from those {metadata.name} records; re-run fashion-convert")
    return problems


def main() -> None:
    # `fashion-validate FILE` -> `file=FILE`
    run_hydra("validate", validate, bare_word_key="file")


if __name__ == "__main__":
    main()
