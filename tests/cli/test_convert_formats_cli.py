"""fashion-convert coco / yolo / export as a user types them (bare word first), in-process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fashionvision.data.converted import ConvertedDataset


def run_cli(args: list[str], tmp_path: Path, capsys) -> tuple[int, str, str]:
    from fashionvision.cli.convert import main

    saved, sys.argv = sys.argv, ["fashion-convert", *args, f"hydra.run.dir={tmp_path / 'run'}"]
    try:
        with pytest.raises(SystemExit) as info:
            main()
    finally:
        sys.argv = saved
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_coco_in_export_yolo_out_and_back(tmp_path: Path, capsys):
    from fixtures.coco_files import make_coco

    source = make_coco(tmp_path / "src")
    code, out, _ = run_cli(["coco", f"source={source}", "annotations=annotations/instances_train.json",
                            "images=images", f"output={tmp_path / 'ours'}", "progress=false", "workers=1",
                            "coco.splits=[train]"], tmp_path, capsys)
    assert code == 0 and "coco: converted into" in out
    code, out, _ = run_cli(["export", "format=yolo", f"dataset.path={tmp_path / 'ours'}",
                            f"output={tmp_path / 'yolo'}", "progress=false"], tmp_path, capsys)
    assert code == 0 and "export yolo" in out and (tmp_path / "yolo" / "data.yaml").is_file()
    code, out, _ = run_cli(["yolo", f"source={tmp_path / 'yolo'}", f"output={tmp_path / 'back'}", "progress=false",
                            "workers=1"], tmp_path, capsys)
    assert code == 0
    ours, back = ConvertedDataset.open(tmp_path / "ours"), ConvertedDataset.open(tmp_path / "back")
    assert [r.boxes.tolist() for r in back.records("train")] == [r.boxes.tolist() for r in ours.records("train")]


def test_bad_records_end_in_one_error_line(tmp_path: Path, capsys):
    from fixtures.yolo_layout import make_yolo

    source = make_yolo(tmp_path / "src")
    label = source / "labels" / "train" / "a.txt"
    label.write_text(label.read_text() + "0 0.5 0.5 0.2\n9 0.5 0.5 0.1 0.1\n")
    code, out, err = run_cli(["yolo", f"source={source}", f"output={tmp_path / 'out'}", "progress=false"],
                             tmp_path, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in out + err
    assert f"{label}:3: has 4 fields" in errors[0] and f"{label}:4: class id 9 out of range" in errors[0]
    code, _, err = run_cli(["export", f"output={tmp_path / 'x'}"], tmp_path, capsys)
    assert code == 2 and "needs dataset.path=" in err
