"""DeepFashion (Category and Attribute Prediction benchmark) -> the project format.

Reads the four list files of the benchmark. Each one starts with the row count (line 1) and
the column names (line 2); both are checked, and every bad row of every file is collected and
reported together as ``FILE:LINE: reason`` before anything is written. The official partition
of ``Eval/list_eval_partition.txt`` is used (no random split). There is one box per image and
no masks. Image paths (``img/...``) stay relative to the DeepFashion root.

With ``check_images`` (default) each image header is read: a missing or unreadable image is
reported and skipped, and boxes are clipped to the image (a box wholly outside is skipped).
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from fashionvision.annotations import INTEGER_RE, MAX_VALUE, Record, check_relative_path
from fashionvision.convert.common import ConversionSummary, Skip, check_paths, progress, staged_output, write_converted
from fashionvision.data.converted import SPLITS
from fashionvision.data.image_io import ImageReadError, image_size
from fashionvision.errors import UserError

BBOX = "Anno/list_bbox.txt"
CATEGORY_IMG = "Anno/list_category_img.txt"
CATEGORY_CLOTH = "Anno/list_category_cloth.txt"
PARTITION = "Eval/list_eval_partition.txt"
COLUMNS = {
    BBOX: ["image_name", "x_1", "y_1", "x_2", "y_2"],
    CATEGORY_IMG: ["image_name", "category_label"],
    CATEGORY_CLOTH: ["category_name", "category_type"],
    PARTITION: ["image_name", "evaluation_status"],
}
MAX_SHOWN_PROBLEMS = 50


def read_list_file(
    root: Path, name: str, problems: list[str], faulty: set[str] | None = None
) -> list[tuple[int, list[str]]]:
    """Rows ``(line number, fields)`` of one list file; header and shape problems go to ``problems``.

    The first field of a row with the wrong number of fields is added to ``faulty``.
    """
    path = root / name
    if not path.is_file():
        raise UserError(f"'{root}' is not a DeepFashion folder: {path} is missing")
    columns = COLUMNS[name]
    lines = []
    # decoded line by line: one stray byte is reported as FILE:LINE, not a UnicodeDecodeError
    for line_no, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            problems.append(f"{path}:{line_no}: not valid UTF-8 text (byte {raw[exc.start]:#04x} at "
                            f"column {exc.start + 1})")
            lines.append(raw.decode("utf-8", "replace"))
    rows: list[tuple[int, list[str]]] = []
    if len(lines) < 2:
        problems.append(f"{path}:1: expected the row count on line 1 and the column names on line 2")
        return rows
    header = lines[1].split()
    if header != columns:
        problems.append(f"{path}:2: column names are {header}, expected {columns}")
    for line_no, text in enumerate(lines[2:], start=3):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != len(columns):
            problems.append(f"{path}:{line_no}: {len(fields)} fields, expected {len(columns)} ({' '.join(columns)})")
            if faulty is not None:
                faulty.add(fields[0])
            continue
        rows.append((line_no, fields))
    first = lines[0].strip()
    if not first.isdigit():
        problems.append(f"{path}:1: expected the row count, found '{first}'")
    elif int(first) != sum(1 for t in lines[2:] if t.strip()):
        problems.append(
            f"{path}:1: the header says {int(first)} rows but the file has {sum(1 for t in lines[2:] if t.strip())}"
        )
    return rows


def _ints(fields: Sequence[str]) -> list[int] | None:
    """Plain ASCII decimal integers within the annotation bound, else None.

    ``int()`` alone would take ``1_000`` and non-ASCII digits, and a huge value would overflow
    the int64 box array.
    """
    if not all(INTEGER_RE.fullmatch(v) for v in fields):
        return None
    values = [int(v) for v in fields]
    return values if all(abs(v) <= MAX_VALUE for v in values) else None


def parse_lists(root: Path) -> tuple[list[str], list[tuple[str, np.ndarray, int, str]]]:
    """Read and cross-check the four list files.

    Returns:
        ``(class names, [(image path, box x1y1x2y2, class index, split), ...])`` in
        ``list_bbox.txt`` order.

    Raises:
        UserError: listing every bad row of every file (``FILE:LINE: reason``).
    """
    problems: list[str] = []
    faulty: set[str] = set()  # images with a bad row somewhere: not reported again as missing
    tables = {name: read_list_file(root, name, problems, faulty) for name in COLUMNS}

    classes: list[str] = []
    for line_no, (category, kind) in tables[CATEGORY_CLOTH]:
        if kind not in ("1", "2", "3"):
            problems.append(f"{root / CATEGORY_CLOTH}:{line_no}: category_type '{kind}' is not 1, 2 or 3")
        classes.append(category)

    def keyed(name: str, parse) -> dict[str, tuple[int, object]]:
        table: dict[str, tuple[int, object]] = {}
        for line_no, fields in tables[name]:
            where = f"{root / name}:{line_no}"
            image = fields[0]
            problem = check_relative_path(image)
            if problem:
                problems.append(f"{where}: {problem}")
                faulty.add(image)
                continue
            if image in table:
                problems.append(f"{where}: '{image}' repeats line {table[image][0]}")
                continue
            value = parse(fields[1:], where)
            if value is None:
                faulty.add(image)
            else:
                table[image] = (line_no, value)
        return table

    def parse_box(fields: Sequence[str], where: str) -> np.ndarray | None:
        values = _ints(fields)
        if values is None:
            problems.append(f"{where}: box {' '.join(fields)} has a non-integer value (or one outside "
                            f"0..{MAX_VALUE})")
        elif min(values) < 0 or values[2] < values[0] or values[3] < values[1]:
            problems.append(f"{where}: box {' '.join(fields)} is not x_1 <= x_2, y_1 <= y_2 with coordinates >= 0")
        else:
            return np.array(values, dtype=np.int64)
        return None

    def parse_label(fields: Sequence[str], where: str) -> int | None:
        values = _ints(fields)
        if values is None or not 1 <= values[0] <= len(classes):
            problems.append(f"{where}: category_label '{fields[0]}' is not an integer in 1..{len(classes)}")
            return None
        return values[0] - 1

    def parse_status(fields: Sequence[str], where: str) -> str | None:
        if fields[0] not in SPLITS:
            problems.append(f"{where}: evaluation_status '{fields[0]}' is not one of {', '.join(SPLITS)}")
            return None
        return fields[0]

    boxes = keyed(BBOX, parse_box)
    labels = keyed(CATEGORY_IMG, parse_label)
    status = keyed(PARTITION, parse_status)
    # Cross-file checks skip images whose own rows were bad, so each fault is named once.
    for image, (line_no, _) in boxes.items():
        for name, table in ((CATEGORY_IMG, labels), (PARTITION, status)):
            if image not in table and image not in faulty:
                problems.append(f"{root / BBOX}:{line_no}: '{image}' has no row in {name}")
    for name, table in ((CATEGORY_IMG, labels), (PARTITION, status)):
        for image, (line_no, _) in table.items():
            if image not in boxes and image not in faulty:
                problems.append(f"{root / name}:{line_no}: '{image}' has no row in {BBOX}")
    if problems:
        shown = "\n".join(problems[:MAX_SHOWN_PROBLEMS])
        more = f"\n... and {len(problems) - MAX_SHOWN_PROBLEMS} more" if len(problems) > MAX_SHOWN_PROBLEMS else ""
        raise UserError(f"DeepFashion list files have {len(problems)} problem(s):\n{shown}{more}")
    items = [(image, box, int(labels[image][1]), str(status[image][1])) for image, (_, box) in boxes.items()]
    return classes, items


def _probe(path: Path) -> tuple[int, int] | str:
    """Image ``(width, height)`` from its header, or why it cannot be used."""
    if not path.is_file():
        return "image not found"
    try:
        return image_size(path)
    except ImageReadError as exc:
        return f"image unreadable: {exc.reason}"


def convert(
    source: str | Path,
    output: str | Path,
    *,
    seed: int | None = None,
    split: Sequence[float] | None = None,
    workers: int = 2,
    progress_bar: bool = True,
    limit: int | None = None,
    check_images: bool = True,
) -> ConversionSummary:
    """Convert a DeepFashion Category and Attribute Prediction root (``Anno/``, ``Eval/``, ``img/``).

    ``seed`` and ``split`` are accepted for a uniform converter signature but unused: the
    official partition decides the splits. ``limit`` keeps the first rows of ``list_bbox.txt``.
    """
    del seed, split  # the official partition is used
    started = time.perf_counter()
    source, output = Path(source), Path(output)
    if not source.is_dir():
        raise UserError(f"source folder '{source}' does not exist")
    check_paths(source, output)  # fail before the (long) reading, not after
    classes, items = parse_lists(source)
    if limit is not None:
        items = items[: int(limit)]

    skipped: list[Skip] = []
    clipped = 0
    splits: dict[str, list[Record]] = {name: [] for name in SPLITS}
    sizes: list[tuple[int, int] | str | None] = [None] * len(items)
    if check_images:
        paths = [source / image for image, *_ in items]
        if workers > 1 and len(paths) > 256:
            with multiprocessing.get_context("fork").Pool(int(workers)) as pool:
                probed = pool.imap(_probe, paths, chunksize=256)
                sizes = list(progress(probed, len(paths), "deepfashion images", progress_bar))
        else:
            sizes = [_probe(p) for p in progress(paths, len(paths), "deepfashion images", progress_bar)]
    for (image, box, cls, status), size in zip(items, sizes):
        x1, y1, x2, y2 = (int(v) for v in box)
        if isinstance(size, str):
            skipped.append(Skip(image, size))
            continue
        if size is not None:
            width, height = size
            if x1 >= width or y1 >= height:
                skipped.append(Skip(image, f"box {x1},{y1},{x2},{y2} lies outside the {width}x{height} image"))
                continue
            if x2 >= width or y2 >= height:
                clipped += 1
                x2, y2 = min(x2, width - 1), min(y2, height - 1)
        splits[status].append(Record(image, np.array([[x1, y1, x2, y2, cls]], dtype=np.int64)))

    with staged_output(source, output) as staging:
        summary = write_converted(
            staging,
            output,
            name="deepfashion",
            source=source,
            image_root=source,
            splits=splits,
            classes=classes,
            mask_classes=None,
            options={"check_images": bool(check_images), "limit": limit},
            seed=None,
            skipped=skipped,
            extra={"split_rule": f"official partition ({PARTITION})", "boxes_clipped": clipped},
            started=started,
        )
    if check_images:
        summary.notes.append(f"boxes clipped to the image: {clipped}")
    summary.seconds = time.perf_counter() - started
    return summary
