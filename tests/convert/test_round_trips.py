"""Ours -> COCO -> ours and ours -> YOLO -> ours on real CCP images: the same boxes, the same masks."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from fashionvision.convert import coco, export, mask_folder, yolo
from fashionvision.data.converted import SPLITS, ConvertedDataset
from fashionvision.errors import UserError


def contents(folder: Path) -> dict[str, tuple[list, np.ndarray | None]]:
    """{image file name: (sorted boxes, mask)} of a converted folder, every split together."""
    data = ConvertedDataset.open(folder)
    out = {}
    for split in SPLITS:
        if not data.split_file(split).is_file():
            continue
        for record in data.records(split):
            mask = cv2.imread(str(data.mask_path(record)), cv2.IMREAD_UNCHANGED) if data.has_masks else None
            out[Path(record.path).name] = (sorted(map(tuple, record.boxes.tolist())), mask)
    return out


def assert_same(original: Path, back: Path, box_tolerance: int = 0) -> None:
    want, got = contents(original), contents(back)
    assert set(got) == set(want)
    assert ConvertedDataset.open(back).classes == ConvertedDataset.open(original).classes
    assert ConvertedDataset.open(back).mask_classes == ConvertedDataset.open(original).mask_classes
    for name, (boxes, mask) in want.items():
        got_boxes, got_mask = got[name]
        assert len(got_boxes) == len(boxes), name
        if box_tolerance:
            np.testing.assert_allclose(np.array(got_boxes), np.array(boxes), atol=box_tolerance)
        else:
            assert got_boxes == boxes, name
        np.testing.assert_array_equal(got_mask, mask)


def test_ours_to_coco_to_ours(hand_converted_ccp: Path, tmp_path: Path):
    summary = export.export(hand_converted_ccp, tmp_path / "coco", format="coco", progress_bar=False)
    assert summary.images["train"] == 4
    document = json.loads((tmp_path / "coco" / "annotations" / "instances_train.json").read_text())
    assert {"images", "annotations", "categories", "info"} <= set(document)
    boxes = [a for a in document["annotations"] if not a["iscrowd"]]
    assert len(boxes) == sum(len(b) for b, _ in contents(hand_converted_ccp).values())
    assert all(isinstance(a["segmentation"]["counts"], str) for a in document["annotations"])
    assert (tmp_path / "coco" / "images" / "photos" / "0001.jpg").is_symlink()
    coco.convert(tmp_path / "coco", tmp_path / "back", annotations="annotations/instances_train.json",
                 images="images", splits=["train"], progress_bar=False, workers=1)
    assert_same(hand_converted_ccp, tmp_path / "back")


def test_coco_export_reads_in_pycocotools(hand_converted_ccp: Path, tmp_path: Path):
    from pycocotools.coco import COCO

    export.export(hand_converted_ccp, tmp_path / "coco", format="coco", images="none", progress_bar=False)
    api = COCO(str(tmp_path / "coco" / "annotations" / "instances_train.json"))
    ann = api.loadAnns(api.getAnnIds(iscrowd=False))[0]
    assert api.annToMask(ann).sum() == ann["area"] > 0
    assert not (tmp_path / "coco" / "images").exists()


def test_ours_to_yolo_to_ours(hand_converted_ccp: Path, tmp_path: Path):
    export.export(hand_converted_ccp, tmp_path / "yolo", format="yolo", progress_bar=False)
    config = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert config["train"] == "images/train" and config["names"][0] == ConvertedDataset.open(hand_converted_ccp).classes[0]
    first = (tmp_path / "yolo" / "labels" / "train" / "photos" / "0001.txt").read_text().splitlines()[0].split()
    assert len(first) == 5 and all(0 <= float(v) <= 1 for v in first[1:])
    yolo.convert(tmp_path / "yolo", tmp_path / "back", progress_bar=False, workers=1)
    assert_same(hand_converted_ccp, tmp_path / "back", box_tolerance=1)


def test_export_refuses_an_output_inside_its_inputs(hand_converted_ccp: Path, tmp_path: Path):
    with pytest.raises(UserError, match="inside"):
        export.export(hand_converted_ccp, hand_converted_ccp / "out", format="coco", progress_bar=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a previous export"):
        export.export(hand_converted_ccp, tmp_path / "mine", format="yolo", progress_bar=False)
    with pytest.raises(UserError, match="unknown export format"):
        export.export(hand_converted_ccp, tmp_path / "x", format="voc", progress_bar=False)


def test_mask_folder_gives_the_ccp_boxes(hand_converted_ccp: Path, tmp_path: Path):
    """Images + class-index PNGs + classes file -> the same boxes as the CCP rule (ccp's labels)."""
    data = ConvertedDataset.open(hand_converted_ccp)
    source = tmp_path / "src"
    (source / "images").mkdir(parents=True)
    (source / "masks").mkdir()
    for record in data.records("train"):
        name = Path(record.path).name
        (source / "images" / name).symlink_to(data.image_path(record))
        (source / "masks" / Path(name).with_suffix(".png")).symlink_to(data.mask_path(record))
    (source / "classes.txt").write_text("".join(f"{n}\n" for n in data.mask_classes))
    mask_folder.convert(source, tmp_path / "out", exclude=["null", "hair", "skin"], split=(1, 0, 0),
                        progress_bar=False)
    assert_same(hand_converted_ccp, tmp_path / "out")


def test_our_ccp_conversion_round_trips_with_all_three_splits(shared_data: Path, tmp_path: Path):
    """fashion-convert ccp's own output (12 real photos, train/val/test) -> COCO -> ours, and -> YOLO -> ours."""
    from fashionvision.convert import ccp

    ccp.convert(shared_data / "ccp-416", tmp_path / "ours", limit=12, workers=1, progress_bar=False)
    export.export(tmp_path / "ours", tmp_path / "coco", format="coco", progress_bar=False)
    files = [f"annotations/instances_{s}.json" for s in SPLITS]
    coco.convert(tmp_path / "coco", tmp_path / "back", annotations=files, images="images", progress_bar=False,
                 workers=1)
    assert_same(tmp_path / "ours", tmp_path / "back")
    for split in SPLITS:
        assert [Path(r.path).name for r in ConvertedDataset.open(tmp_path / "back").records(split)] == \
            [Path(r.path).name for r in ConvertedDataset.open(tmp_path / "ours").records(split)]
    export.export(tmp_path / "ours", tmp_path / "yolo", format="yolo", images="copy", progress_bar=False)
    yolo.convert(tmp_path / "yolo", tmp_path / "back_yolo", progress_bar=False, workers=1)
    assert_same(tmp_path / "ours", tmp_path / "back_yolo", box_tolerance=1)


def test_yolo_segments_export_traces_the_masks(hand_converted_ccp: Path, tmp_path: Path):
    export.export(hand_converted_ccp, tmp_path / "yolo", format="yolo", segments=True, progress_bar=False)
    lines = (tmp_path / "yolo" / "labels" / "train" / "photos" / "0001.txt").read_text().splitlines()
    assert lines and all(len(line.split()) >= 7 and len(line.split()) % 2 for line in lines)
    yolo.convert(tmp_path / "yolo", tmp_path / "back", progress_bar=False, workers=1)
    want, got = contents(hand_converted_ccp), contents(tmp_path / "back")
    for name, (boxes, mask) in want.items():
        np.testing.assert_array_equal(got[name][1], mask)  # the exact masks travel beside the polygons
        assert len(got[name][0]) == len(boxes)
        near = sum(min(np.abs(np.array(g[:4]) - np.array(b[:4])).max() for g in got[name][0] if g[4] == b[4]) <= 2
                   for b in boxes)
        assert near >= 0.9 * len(boxes), (name, near, len(boxes))
    with pytest.raises(UserError, match="needs format=yolo"):
        export.export(hand_converted_ccp, tmp_path / "x", format="coco", segments=True, progress_bar=False)
