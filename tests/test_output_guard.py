"""The one output guard: inputs, planted links, temporary names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fashionvision.errors import UserError
from fashionvision.output_guard import Input, atomic_write_bytes, atomic_write_text, check_output, writable_target


def test_output_that_is_contains_or_lies_inside_an_input_is_refused(tmp_path):
    photos = tmp_path / "data" / "photos"
    photos.mkdir(parents=True)
    inputs = [Input(photos, "source photo folder")]
    for output, relation in [(photos, "is"), (tmp_path / "data", "contains"), (photos / "pred", "lies inside")]:
        with pytest.raises(UserError, match=f"{relation} the source photo folder") as info:
            check_output(output, inputs)
        assert "\n" not in str(info.value)
    check_output(tmp_path / "out", inputs)  # beside it: fine
    link = tmp_path / "link"
    link.symlink_to(photos)
    with pytest.raises(UserError, match="is the source photo folder"):
        check_output(link, inputs)  # a link to the photos is the photos


def test_a_run_folder_takes_outputs_only_in_a_subfolder(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes(b"x")
    inputs = [Input(run, "training run folder", subfolders_ok=True), Input(run / "checkpoints" / "best.pt", "checkpoint")]
    with pytest.raises(UserError, match="is the training run folder"):
        check_output(run, inputs)
    with pytest.raises(UserError, match="contains the checkpoint"):
        check_output(run / "checkpoints", inputs)
    check_output(run / "eval_test", inputs)  # the peer benchmarks' layout


def test_planted_symlinks_are_never_written_through(tmp_path):
    important = tmp_path / "important.txt"
    important.write_text("mine")
    out = tmp_path / "out"
    out.mkdir()
    (out / "0001.jpg.jpg").symlink_to(important)
    with pytest.raises(UserError, match="symbolic link"):
        atomic_write_bytes(out / "0001.jpg.jpg", b"jpeg", root=out)
    (out / "sub").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(UserError, match="folder .* is a symbolic link"):
        atomic_write_text(out / "sub" / "important.txt", "x", root=out)
    with pytest.raises(UserError, match="outside the output folder"):
        writable_target(out / ".." / "important.txt", root=out)
    assert important.read_text() == "mine"
    assert os.path.islink(out / "0001.jpg.jpg")


def test_temporary_names_are_unique_and_never_left(tmp_path):
    seen = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_text("x")

    from fashionvision.output_guard import atomic_write

    atomic_write(tmp_path / "a.json", write)
    atomic_write(tmp_path / "a.json", write)
    assert len(set(seen)) == 2 and all(t.suffix == ".json" for t in seen)  # the format stays readable
    with pytest.raises(OSError, match="could not write"):
        atomic_write(tmp_path / "b.png", lambda tmp: False)  # cv2.imwrite's way of failing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
