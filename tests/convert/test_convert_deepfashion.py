"""DeepFashion converter on a fixture written in the exact native format."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashionvision.data.annotations import validate_file
from fashionvision.convert import deepfashion
from fashionvision.data.converted import SPLITS, ConvertedDataset
from fashionvision.errors import UserError
from fixtures.deepfashion_lists import CATEGORIES, ROWS, make_deepfashion

def test_official_partition_boxes_and_classes(tmp_path: Path):
    source = make_deepfashion(tmp_path / "df")
    summary = deepfashion.convert(source, tmp_path / "out", progress_bar=False)
    dataset = ConvertedDataset.open(tmp_path / "out")
    assert dataset.classes == CATEGORIES and dataset.mask_classes is None and not dataset.has_masks
    assert dataset.image_root == source.resolve()
    assert summary.images == {"train": 2, "val": 1, "test": 2}
    by_path = {r.path: r.boxes.tolist() for s in SPLITS for r in dataset.records(s)}
    assert by_path["img/Sheer_Pleated-Front_Blouse/img_00000001.jpg"] == [[5, 4, 30, 35, 2]]
    assert by_path["img/Classic_Denim_Jeans/img_00000001.jpg"] == [[10, 12, 39, 47, 25]]  # clipped to 40x48
    assert by_path["img/Floral_Maxi_Dress/img_00000002.jpg"] == [[2, 3, 20, 30, 49]]
    assert [r.path for r in dataset.records("val")] == ["img/Classic_Denim_Jeans/img_00000001.jpg"]
    assert dataset.metadata["boxes_clipped"] == 1 and "official partition" in dataset.metadata["split_rule"]
    assert dataset.metadata["counts"]["test"]["per_class"]["Dress"] == 1
    for split in SPLITS:
        report = validate_file(dataset.split_file(split), root=dataset.image_root,
                               num_classes=50, check_images=True)
        assert report.ok, [str(e) for e in report.errors]


def test_missing_images_are_skipped_or_not_checked(tmp_path: Path):
    source = make_deepfashion(tmp_path / "df")
    (source / ROWS[0][0]).unlink()
    summary = deepfashion.convert(source, tmp_path / "out", workers=1, progress_bar=False)
    assert [(s.file, s.reason) for s in summary.skipped] == [(ROWS[0][0], "image not found")]
    assert summary.images["train"] == 1
    unchecked = deepfashion.convert(source, tmp_path / "out2", check_images=False, progress_bar=False)
    assert unchecked.images["train"] == 2 and not unchecked.skipped


def test_header_count_mismatch_names_the_file(tmp_path: Path):
    source = make_deepfashion(tmp_path / "df", images=False)
    bbox = source / "Anno" / "list_bbox.txt"
    lines = bbox.read_text().splitlines()
    bbox.write_text("\n".join(["7", *lines[1:]]) + "\n")
    with pytest.raises(UserError) as info:
        deepfashion.convert(source, tmp_path / "out", check_images=False, progress_bar=False)
    assert f"{bbox}:1: the header says 7 rows but the file has 5" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_all_bad_rows_reported_together(tmp_path: Path):
    source = make_deepfashion(tmp_path / "df", images=False)
    cat = source / "Anno" / "list_category_img.txt"
    cat.write_text(cat.read_text().replace(" 26\n", " 51\n"))  # label out of 1..50 (line 5)
    part = source / "Eval" / "list_eval_partition.txt"
    part.write_text(part.read_text().replace("val\n", "valid\n"))  # unknown status (line 5)
    bbox = source / "Anno" / "list_bbox.txt"
    lines = bbox.read_text().splitlines()
    lines[3] = lines[3].replace("  39   47", "  3x   47")  # non-integer (line 4)
    lines[6] = lines[6] + " 99"  # 6 fields (line 7)
    bbox.write_text("\n".join(lines) + "\n")
    cloth = source / "Anno" / "list_category_cloth.txt"
    cloth.write_text(cloth.read_text().replace("category_name  category_type", "name type"))
    with pytest.raises(UserError) as info:
        deepfashion.convert(source, tmp_path / "out", check_images=False, progress_bar=False)
    message = str(info.value)
    assert f"{cat}:5: category_label '51'" in message
    assert f"{part}:5: evaluation_status 'valid'" in message
    assert f"{bbox}:4: box" in message and "non-integer" in message
    assert f"{bbox}:7: 6 fields, expected 5" in message
    assert f"{cloth}:2: column names" in message
    # the images whose bbox row was bad are not reported again as missing from list_bbox.txt
    assert "has no row in Anno/list_bbox.txt" not in message
    assert "5 problem(s)" in message
