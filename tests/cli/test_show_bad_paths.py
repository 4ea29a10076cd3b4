"""A NUL byte in an annotation path ends fashion-show in one line, not a crash."""

from __future__ import annotations

import json

from test_one_line_errors import assert_one_error, run_cli


def test_a_nul_byte_in_a_path_is_one_line(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    (tmp_path / "photos").mkdir()
    (folder / "train.txt").write_text("a\x00b.jpg 1,1,5,5,0\n", encoding="utf-8")
    (folder / "classes.txt").write_text("shirt\n")
    (folder / "metadata.json").write_text(json.dumps({"image_root": str(tmp_path / "photos")}))
    result = run_cli("show", [f"dataset.path={folder}", f"output={tmp_path / 'pics'}", "n=1"], tmp_path, capsys)
    assert_one_error(result, "1 bad annotation line")
    assert "train.txt:1" in result[1] and "control character" in result[1]
