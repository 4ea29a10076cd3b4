"""The annotation format: every validation error kind, FILE:LINE reporting, round trip, fashion-validate."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashionvision.data.annotations import (
    AnnotationError,
    Record,
    parse_annotations,
    read_annotations,
    read_classes,
    validate_file,
    write_annotations,
    write_classes,
)

# (line text, expected fragment of the reason); each is checked alone on line 3 of a file
BAD_LINES = [
    ("a.jpg 1,2,3,4", "has 4 fields, expected 5"),
    ("a.jpg 1,2,3,4,5,6", "has 6 fields, expected 5"),
    ("a.jpg 1,2,x,4,0", "non-integer"),
    ("a.jpg 1.5,2,3,4,0", "non-integer"),
    ("a.jpg 10,2,3,4,0", "x2 < x1"),
    ("a.jpg 1,20,3,4,0", "y2 < y1"),
    ("a.jpg -1,2,3,4,0", "negative coordinate"),
    ("a.jpg 1,2,3,4,7", "class id 7 out of range (0..2)"),
    ("a.jpg 1,2,3,4,-1", "class id -1 out of range"),
    ("/abs/a.jpg 1,2,3,4,0", "is absolute"),
    ("C:/data/a.jpg 1,2,3,4,0", "is absolute"),
    ("../a.jpg 1,2,3,4,0", "climbs out"),
    ("img/../../a.jpg", "climbs out"),
    ("1,2,3,4,0", "looks like a box"),
    # values int() accepts or that overflow int64 / no image can hold
    ("a.jpg 1,2,99999999999999999999999,4,0", "above 65535"),
    (f"a.jpg 1,2,{2 ** 63},4,0", "above 65535"),
    ("a.jpg 1,2,70000,4,0", "above 65535"),
    ("a.jpg 1_000,2,3000,4,0", "non-integer"),
    ("a.jpg \u0661,2,3,4,0", "non-integer"),  # ARABIC-INDIC DIGIT ONE
    ("a.jpg +1,2,3,4,0", "non-integer"),
]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("text, reason", BAD_LINES)
def test_each_error_kind_is_reported_with_its_line(tmp_path: Path, text: str, reason: str):
    file = write(tmp_path / "train.txt", ["good.jpg 0,0,5,5,0", "# a comment", text])
    records, issues = parse_annotations(file, num_classes=3)
    errors = [i for i in issues if i.severity == "error"]
    assert len(errors) >= 1
    assert all(str(e).startswith(f"{file}:3: ") for e in errors)
    assert any(reason in str(e) for e in errors), [str(e) for e in errors]
    assert [r.path for r in records] == ["good.jpg"], "a bad line yields no record"
    with pytest.raises(AnnotationError):
        read_annotations(file, num_classes=3)


def test_all_bad_lines_reported_at_once(tmp_path: Path):
    lines = ["ok.jpg 0,0,1,1,0", "a.jpg 1,2,3", "", "b.jpg 5,5,1,1,0", "ok2.jpg", "c.jpg 1,1,2,2,9"]
    file = write(tmp_path / "val.txt", lines)
    with pytest.raises(AnnotationError) as info:
        read_annotations(file, num_classes=3)
    assert sorted({i.line for i in info.value.issues}) == [2, 4, 6]
    message = str(info.value)
    for line_no in (2, 4, 6):
        assert f"{file}:{line_no}: " in message


def test_duplicates_are_warnings(tmp_path: Path):
    file = write(tmp_path / "t.txt", ["a.jpg 1,1,5,5,0 1,1,5,5,0 2,2,6,6,1"])
    records = read_annotations(file)  # does not raise
    assert len(records[0].boxes) == 3
    _, issues = parse_annotations(file)
    assert [i.severity for i in issues] == ["warning"]
    assert str(issues[0]) == f"{file}:1: warning: box 2 '1,1,5,5,0' is a duplicate"


def test_round_trip(tmp_path: Path):
    records = [
        Record("img/a.jpg", [[0, 0, 10, 20, 1], [3, 4, 5, 6, 0]]),
        Record("img/empty.jpg"),
        Record("b.png", np.array([[7, 7, 7, 7, 2]])),
    ]
    write_annotations(tmp_path / "train.txt", records)
    text = (tmp_path / "train.txt").read_text()
    assert text.splitlines()[1] == "img/empty.jpg"
    back = read_annotations(tmp_path / "train.txt", num_classes=3)
    assert [r.path for r in back] == [r.path for r in records]
    for a, b in zip(back, records):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert a.boxes.dtype == np.int64 and a.boxes.shape[1] == 5
    write_classes(tmp_path / "classes.txt", ["dress", "shoes", "bag"])
    assert read_classes(tmp_path / "classes.txt") == ["dress", "shoes", "bag"]


@pytest.mark.parametrize(
    "record, reason",
    [
        (Record("/abs.jpg"), "absolute"),
        (Record("../up.jpg"), "climbs out"),
        (Record("with space.jpg"), "space"),
        (Record("a.jpg", [[5, 0, 1, 1, 0]]), "invalid box"),
    ],
)
def test_writer_refuses_what_the_reader_would_reject(tmp_path: Path, record: Record, reason: str):
    with pytest.raises(ValueError, match=reason):
        write_annotations(tmp_path / "x.txt", [record])
    assert not (tmp_path / "x.txt").exists()


@pytest.fixture()
def image_dataset(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "img" / "a.jpg")
    (tmp_path / "img" / "broken.jpg").write_bytes(b"not a jpeg")
    return tmp_path


def test_check_images_box_outside_and_missing_image(image_dataset: Path):
    file = write(
        image_dataset / "train.txt",
        ["img/a.jpg 0,0,39,29,0", "img/a.jpg 0,0,40,10,0", "img/a.jpg 0,0,10,30,0", "img/missing.jpg 0,0,1,1,0",
         "img/broken.jpg 0,0,1,1,0"],
    )
    report = validate_file(file, root=image_dataset, num_classes=1, check_images=True)
    by_line = {i.line: i.reason for i in report.errors}
    assert set(by_line) == {2, 3, 4, 5}
    assert "outside the image (40x30)" in by_line[2] and "outside the image" in by_line[3]
    assert "not found" in by_line[4]
    assert "unreadable" in by_line[5]
    assert not report.ok and "FAILED" in report.summary()
    # without image checks the same file is structurally fine
    assert validate_file(file, num_classes=1).ok


def run_validate(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("fashion-validate")
    cmd = [exe] if exe else [sys.executable, "-m", "fashionvision.cli.validate"]
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_validate_cli_exit_status(image_dataset: Path):
    write_classes(image_dataset / "classes.txt", ["dress", "bag"])
    write(image_dataset / "good.txt", ["img/a.jpg 0,0,39,29,1 1,1,2,2,0", "img/a.jpg"])
    write(image_dataset / "bad.txt", ["img/a.jpg 0,0,39,29,1", "img/a.jpg 0,0,5,5,2", "img/a.jpg 1,2,3"])
    good = run_validate(["good.txt"], image_dataset)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "OK: good.txt: 2 images, 2 boxes, 0 errors" in good.stdout
    bad = run_validate(["bad.txt"], image_dataset)
    assert bad.returncode != 0
    assert "bad.txt:2: box 1 '0,0,5,5,2' has class id 2 out of range (0..1)" in bad.stdout
    assert "bad.txt:3: box 1 '1,2,3' has 3 fields" in bad.stdout
    checked = run_validate(["good.txt", "check_images=true"], image_dataset)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    write(image_dataset / "outside.txt", ["img/a.jpg 0,0,40,29,0"])
    outside = run_validate(["outside.txt", "check_images=true"], image_dataset)
    assert outside.returncode != 0 and "outside.txt:1: box 1 (0,0,40,29) lies outside" in outside.stdout
    missing = run_validate(["nope.txt"], image_dataset)
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_binary_line_reported_not_crashing(tmp_path: Path):
    file = tmp_path / "t.txt"
    file.write_bytes(b"\xef\xbb\xbfa.jpg 1,1,2,2,0\r\n\xff\xfe\x00junk\nb.jpg\n")
    records, issues = parse_annotations(file)
    assert [r.path for r in records] == ["a.jpg", "b.jpg"], "BOM and CRLF are tolerated"
    assert [str(i) for i in issues] == [f"{file}:2: line is not valid UTF-8 text (is this an annotation file?)"]
    report = validate_file(file)
    assert [i.line for i in report.errors] == [2] and report.images == 2
