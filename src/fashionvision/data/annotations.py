"""The project's one annotation format: ``<image path> x1,y1,x2,y2,cls ...``.

Every converter writes it through :func:`write_annotations` and every dataset reads it
through :func:`read_annotations`, so the rules live in exactly one place:

* integer pixel coordinates, inclusive extents, ``x1 <= x2`` and ``y1 <= y2``;
* ``cls`` is a 0-based index into ``classes.txt`` of the same folder;
* the image path is relative to the dataset root (never absolute, never climbing out with ``..``);
* an image without objects is a line holding the path alone.

Reading validates every line and collects *all* problems before failing, so a user fixing a
file written by another tool sees every bad line at once as ``FILE:LINE: reason``.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, Sequence

import numpy as np

from fashionvision.errors import UserError
from fashionvision.output_guard import atomic_write_text as guarded_write_text

BOX_FIELDS = 5  # x1, y1, x2, y2, cls
#: no image format in use stores a side longer than this (JPEG's limit); a larger value is a
#: broken file, and refusing it here keeps int64 arithmetic (and OpenCV) away from overflow
MAX_VALUE = 65535
#: plain ASCII decimal integers only: ``int()`` also takes ``1_000``, ``+5`` and non-ASCII digits
INTEGER_RE = re.compile(r"-?[0-9]+")


@dataclass
class Record:
    """One image and its boxes.

    Attributes:
        path: image path relative to the dataset root, with forward slashes.
        boxes: int64 array of shape ``[N, 5]`` holding ``x1, y1, x2, y2, cls``.
        line: the line of the annotation file it was read from (0: not read from a file), so
            that problems found later (a box outside its image) can be reported as FILE:LINE.
    """

    path: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, BOX_FIELDS), dtype=np.int64))
    line: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.int64).reshape(-1, BOX_FIELDS)


@dataclass(frozen=True)
class Issue:
    """A problem found in an annotation file, printable as ``FILE:LINE: reason``."""

    file: str
    line: int
    reason: str
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        prefix = "" if self.severity == "error" else "warning: "
        return f"{self.file}:{self.line}: {prefix}{self.reason}"


class AnnotationError(UserError, ValueError):
    """Raised when an annotation file has bad lines; carries every one of them."""

    def __init__(self, issues: Sequence[Issue]):
        self.issues = list(issues)
        shown = "\n".join(str(i) for i in self.issues[:50])
        more = f"\n... and {len(self.issues) - 50} more" if len(self.issues) > 50 else ""
        super().__init__(f"{len(self.issues)} bad annotation line(s):\n{shown}{more}")


def check_relative_path(path: str) -> str | None:
    """Return why ``path`` is not an acceptable dataset-relative image path, or None if it is."""
    bad = next((ch for ch in path if unicodedata.category(ch) == "Cc"), None)
    if bad is not None:  # a NUL byte would pass the other checks and crash every open()
        return f"image path {path!r} contains a control character ({bad!r})"
    if path.startswith("/") or path.startswith("\\") or (len(path) > 1 and path[1] == ":"):
        return f"image path '{path}' is absolute; paths must be relative to the dataset root"
    if ".." in PurePosixPath(path.replace("\\", "/")).parts:
        return f"image path '{path}' climbs out of the dataset root with '..'"
    return None


def parse_line(
    text: str, file: str, line_no: int, num_classes: int | None = None
) -> tuple[Record | None, list[Issue]]:
    """Parse one line of the format; return the record (None if unusable) and its issues.

    Blank lines and lines starting with ``#`` yield ``(None, [])``.
    """
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None, []
    tokens = stripped.split()
    path, box_tokens = tokens[0], tokens[1:]
    issues: list[Issue] = []

    def bad(reason: str) -> None:
        issues.append(Issue(file, line_no, reason))

    path_problem = check_relative_path(path)
    if path_problem:
        bad(path_problem)
    if "," in path:
        bad(f"first field '{path}' looks like a box, not an image path")

    boxes: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    for index, token in enumerate(box_tokens, start=1):
        fields = token.split(",")
        if len(fields) != BOX_FIELDS:
            bad(f"box {index} '{token}' has {len(fields)} fields, expected 5 (x1,y1,x2,y2,cls)")
            continue
        if not all(INTEGER_RE.fullmatch(v) for v in fields):
            bad(f"box {index} '{token}' has a non-integer field (plain decimal digits only)")
            continue
        values = [int(v) for v in fields]
        if max(abs(v) for v in values) > MAX_VALUE:
            bad(f"box {index} '{token}' has a value above {MAX_VALUE} (no image is that large)")
            continue
        x1, y1, x2, y2, cls = values
        ok = True
        if x2 < x1:
            bad(f"box {index} '{token}' has x2 < x1")
            ok = False
        if y2 < y1:
            bad(f"box {index} '{token}' has y2 < y1")
            ok = False
        if min(x1, y1) < 0:
            bad(f"box {index} '{token}' has a negative coordinate")
            ok = False
        if cls < 0 or (num_classes is not None and cls >= num_classes):
            limit = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
            bad(f"box {index} '{token}' has class id {cls} out of range ({limit})")
            ok = False
        if not ok:
            continue
        key = tuple(values)
        if key in seen:
            issues.append(Issue(file, line_no, f"box {index} '{token}' is a duplicate", "warning"))
        seen.add(key)
        boxes.append(values)

    if any(i.severity == "error" for i in issues):
        return None, issues
    return Record(path.replace("\\", "/"), np.array(boxes, dtype=np.int64), line_no), issues


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str | None]]:
    """Yield ``(line number, text)``; text is None for a line that is not valid UTF-8.

    Decoding per line (not per file) lets a stray binary line be reported as ``FILE:LINE``
    instead of aborting the whole read; a UTF-8 byte-order mark on line 1 is dropped.
    """
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield line_no, raw.decode("utf-8")
            except UnicodeDecodeError:
                yield line_no, None


NOT_TEXT = "line is not valid UTF-8 text (is this an annotation file?)"


def parse_annotations(
    path: str | os.PathLike, num_classes: int | None = None
) -> tuple[list[Record], list[Issue]]:
    """Read a file and return the good records plus every issue (errors and warnings)."""
    records: list[Record] = []
    issues: list[Issue] = []
    file = str(path)
    for line_no, text in iter_lines(path):
        if text is None:
            issues.append(Issue(file, line_no, NOT_TEXT))
            continue
        record, line_issues = parse_line(text, file, line_no, num_classes)
        issues.extend(line_issues)
        if record is not None:
            records.append(record)
    return records, issues


def read_annotations(path: str | os.PathLike, num_classes: int | None = None) -> list[Record]:
    """Read a split file; raise :class:`AnnotationError` listing every bad line if any."""
    records, issues = parse_annotations(path, num_classes)
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        raise AnnotationError(errors)
    return records


def format_record(record: Record) -> str:
    """Format one record as a line of the format (without newline)."""
    parts = [record.path]
    parts.extend(",".join(str(int(v)) for v in box) for box in record.boxes)
    return " ".join(parts)


def atomic_write_text(path: str | os.PathLike, text: str, root: str | os.PathLike | None = None) -> None:
    """Write ``text`` so that readers see the old file or the whole new one, never half.

    The output guard's write (:func:`fashionvision.output_guard.atomic_write_text`): a unique
    temporary name, never through an existing symbolic link, and ``OSError`` rather than
    renaming over anything but a regular file (``/dev/full``, a FIFO).
    """
    guarded_write_text(path, text, root)


def write_annotations(path: str | os.PathLike, records: Iterable[Record]) -> None:
    """Write records in the project format, checking each one as the reader would."""
    lines = []
    for record in records:
        line = format_record(record)
        problem = check_relative_path(record.path)
        if problem or " " in record.path:
            raise ValueError(problem or f"image path '{record.path}' contains a space")
        b = record.boxes
        if len(b) and ((b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any() or (b < 0).any()
                       or (b > MAX_VALUE).any()):
            raise ValueError(f"invalid box in record for '{record.path}': {b.tolist()}")
        lines.append(line)
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def read_classes(path: str | os.PathLike) -> list[str]:
    """Read ``classes.txt``: one class name per line, in index order."""
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle if line.strip()]


def class_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be one line of ``classes.txt``, or None.

    A line break (or any control or line-separator character) would split it into two lines
    and shift every later class.
    """
    if not isinstance(name, str) or not name.strip():
        return f"class name {name!r} is empty or not text"
    bad = next((ch for ch in name if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        return (f"class name {name!r} contains a line break or control character ({bad!r}); it would split "
                "classes.txt and shift every later class")
    return None


def write_classes(path: str | os.PathLike, names: Sequence[str]) -> None:
    """Write ``classes.txt`` atomically; a name that is not one clean line is a :class:`UserError`."""
    for index, name in enumerate(names):
        problem = class_name_problem(name)
        if problem:
            raise UserError(f"{path}: class {index}: {problem}")
    atomic_write_text(path, "".join(f"{n}\n" for n in names))


@dataclass
class ValidationReport:
    """What :func:`validate_file` found."""

    file: str
    lines: int = 0
    images: int = 0
    boxes: int = 0
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        status = "OK" if self.ok else "FAILED"
        return (
            f"{status}: {self.file}: {self.images} images, {self.boxes} boxes, "
            f"{len(self.errors)} errors, {len(self.warnings)} warnings"
        )


def validate_file(
    path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    num_classes: int | None = None,
    check_images: bool = False,
) -> ValidationReport:
    """Check an annotation file written by anyone.

    Args:
        path: the split file.
        root: dataset root the image paths are relative to; needed for ``check_images``.
        num_classes: class count (from ``classes.txt``) to range-check class ids.
        check_images: open each image header to check it exists and the boxes lie inside it.
    """
    from fashionvision.data.image_io import ImageReadError, image_size  # local: avoids PIL on import

    report = ValidationReport(file=str(path))
    file = str(path)
    for line_no, text in iter_lines(path):
        if text is None:
            report.errors.append(Issue(file, line_no, NOT_TEXT))
            continue
        if text.strip() and not text.strip().startswith("#"):
            report.lines += 1
        record, issues = parse_line(text, file, line_no, num_classes)
        report.errors.extend(i for i in issues if i.severity == "error")
        report.warnings.extend(i for i in issues if i.severity == "warning")
        if record is None:
            continue
        report.images += 1
        report.boxes += len(record.boxes)
        if check_images:
            image_path = Path(root or ".") / record.path
            if not image_path.is_file():
                report.errors.append(Issue(file, line_no, f"image '{record.path}' not found under {root}"))
                continue
            try:
                width, height = image_size(image_path)
            except ImageReadError as exc:
                report.errors.append(Issue(file, line_no, f"image '{record.path}' unreadable: {exc.reason}"))
                continue
            for index, (x1, y1, x2, y2, _) in enumerate(record.boxes, start=1):
                if x2 >= width or y2 >= height:
                    report.errors.append(
                        Issue(
                            file,
                            line_no,
                            f"box {index} ({x1},{y1},{x2},{y2}) lies outside the image "
                            f"({width}x{height})",
                        )
                    )
    return report
