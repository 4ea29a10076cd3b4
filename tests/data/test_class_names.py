"""A class name with a line break would split classes.txt and shift every
later class; converters refuse it, and the validator checks classes.txt against the dataset."""

from __future__ import annotations

import json

import pytest

from fashionvision.data.annotations import write_classes
from fashionvision.errors import UserError


@pytest.mark.parametrize("name", ["shirt\nskirt", "a\rb", "tab\tbed", "x\u2028y", "nul\x00"])
def test_write_classes_refuses_names_that_break_lines(tmp_path, name):
    with pytest.raises(UserError, match="line break or control character") as info:
        write_classes(tmp_path / "classes.txt", ["dress", name])
    assert "\n" not in str(info.value) and not (tmp_path / "classes.txt").exists()


def test_fashionpedia_category_with_a_newline_is_refused(tmp_path):
    from fashionvision.convert import fashionpedia

    source = tmp_path / "src"
    source.mkdir()
    document = {"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 3, 3]}],
                "categories": [{"id": 1, "name": "shirt\nskirt", "supercategory": "upperbody"},
                               {"id": 2, "name": "pants", "supercategory": "lowerbody"}]}
    (source / "a.json").write_text(json.dumps(document))
    with pytest.raises(UserError, match="a.json: category id 1") as info:
        fashionpedia.convert(source, tmp_path / "out", files=["a.json"], require_images=False, masks=False,
                             progress_bar=False, split=(1, 0, 0))
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()


def test_the_validator_checks_classes_against_the_dataset(tmp_path, capsys):
    from fashionvision.cli._hydra import compose
    from fashionvision.cli.validate import validate

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.txt").write_text("a.jpg 1,1,5,5,1\n")
    (folder / "classes.txt").write_text("shirt\nskirt\npants\n")  # "shirt\nskirt" split in two
    per_class = {"shirt\nskirt": 0, "pants": 1}
    (folder / "metadata.json").write_text(json.dumps({
        "image_root": ".", "num_classes": 2,
        "counts": {s: {"images": 0, "boxes": 0, "per_class": per_class} for s in ("train", "val", "test")}}))
    code = validate(compose("validate", [f"file={folder / 'train.txt'}"]))
    out = capsys.readouterr().out
    assert code != 0 and "classes.txt" in out and "3 classes" in out and "2" in out, out
