"""Malformed Fashionpedia (and any COCO) JSON is counted and skipped, or one line.

Nested 200,000 deep, negative RLE counts, a bbox of 1e308, an image or annotation that is not
an object, a list as an id: unchecked, each ends in RecursionError, OverflowError, TypeError or
KeyError. Each is ``FILE: annotation id N: reason`` (or ``image id N``), counted and
skipped, or one line when the file itself is unusable.
"""

from __future__ import annotations

import json

import pytest

from fashionvision.convert import coco, fashionpedia
from fashionvision.errors import UserError

CATEGORY = {"id": 1, "name": "shirt", "supercategory": "upperbody"}


def _convert(tmp_path, document, **options):
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    text = document if isinstance(document, str) else json.dumps(document)
    (source / "a.json").write_text(text)
    return fashionpedia.convert(source, tmp_path / "out", files=["a.json"], require_images=False,
                                progress_bar=False, split=(1, 0, 0), **options)


def test_malformed_entries_are_named_counted_and_skipped(tmp_path):
    image = {"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}
    document = {
        "images": [image, "not an object", {"id": [1, 2], "file_name": "b.jpg", "width": 10, "height": 10}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1e308, 1, 1e308, 3]},
            7,
            {"id": [3], "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]},
            {"id": 4, "image_id": 1, "category_id": [1], "bbox": [1, 1, 2, 2]},
            {"id": 5, "image_id": 1, "category_id": 1, "segmentation": {"counts": [-5, 105], "size": [10, 10]}},
            {"id": 6, "image_id": [1], "category_id": 1, "bbox": [1, 1, 2, 2]},
        ],
        "categories": [CATEGORY, "not an object"],
    }
    summary = _convert(tmp_path, document, masks=True, workers=1)
    assert summary.images["train"] == 1 and summary.boxes["train"] == 1
    reasons = [f"{s.file}: {s.reason}" for s in summary.skipped]
    text = "\n".join(reasons)
    for fragment in ("a.json: annotation id 2", "a.json: annotation id 5", "annotation #2 (not an object)",
                     "annotation #3", "annotation id 4", "annotation id 6", "image #1 (not an object)",
                     "image #2", "category #1"):
        assert fragment in text, (fragment, reasons)


@pytest.mark.parametrize("document, fragment", [
    ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ({"images": [], "annotations": [], "categories": [{"id": [1], "name": "x"}]}, "no categories"),
])
def test_an_unusable_file_is_one_line(tmp_path, document, fragment):
    with pytest.raises(UserError, match=fragment) as info:
        _convert(tmp_path, document, masks=False)
    assert "\n" not in str(info.value) and "a.json" in str(info.value)


def test_plain_coco_reports_malformed_entries_together_unless_strict_is_off(tmp_path):
    """The same checks in ``fashion-convert coco``: strict lists every bad entry in one line."""
    source = tmp_path / "src"
    source.mkdir()
    document = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}, "not an object"],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3]},
                        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1e308, 3, 1e308]},
                        {"id": 3, "image_id": {"a": 1}, "category_id": 1, "bbox": [1, 1, 2, 2]}],
        "categories": [CATEGORY, {"id": 2, "name": 5}, {"id": "x", "name": "bag"}],
    }
    (source / "a.json").write_text(json.dumps(document))
    options = dict(annotations="a.json", require_images=False, masks=False, progress_bar=False, split=(1, 0, 0))
    with pytest.raises(UserError) as info:
        coco.convert(source, tmp_path / "out", **options)
    message = str(info.value)
    assert "\n" not in message and "4 bad record(s)" in message and not (tmp_path / "out").exists()
    for fragment in ("a.json: image #1 (not an object)", "a.json: annotation id 2: box empty, not finite",
                     "a.json: annotation id 3: 'image_id' is {'a': 1}", "a.json: category id 2: 'name' is 5"):
        assert fragment in message, (fragment, message)
    summary = coco.convert(source, tmp_path / "out", strict=False, **options)
    assert summary.boxes["train"] == 1 and len(summary.skipped) == 4
    assert (tmp_path / "out" / "classes.txt").read_text() == "shirt\nbag\n"  # numbers, then string ids


@pytest.mark.parametrize("workers", [1, 2])
def test_a_mask_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, workers):
    """``cv2.imwrite`` returning False (full disk) stops a COCO-based conversion, output untouched."""
    from fashionvision.convert import masks

    monkeypatch.setattr(masks.cv2, "imwrite", lambda *args, **kwargs: False)
    document = {"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3],
                                 "segmentation": [[1, 1, 4, 1, 4, 4, 1, 4]]}],
                "categories": [CATEGORY]}
    with pytest.raises(UserError, match="could not write the mask") as info:
        _convert(tmp_path, document, masks=True, workers=workers)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no output, no staging folder left
