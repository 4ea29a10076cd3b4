"""A NUL byte in an annotation path is refused by fashion-validate, so it cannot crash fashion-show."""

from __future__ import annotations

import json

from fashionvision.data.annotations import validate_file


def _folder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (tmp_path / "photos").mkdir()
    (folder / "train.txt").write_text("a\x00b.jpg 1,1,5,5,0\n", encoding="utf-8")
    (folder / "classes.txt").write_text("shirt\n")
    (folder / "metadata.json").write_text(json.dumps({"image_root": str(tmp_path / "photos")}))
    return folder


def test_the_validator_reports_a_nul_byte(tmp_path):
    report = validate_file(_folder(tmp_path) / "train.txt", num_classes=1)
    assert not report.ok and "control character" in str(report.errors[0]), report.errors

