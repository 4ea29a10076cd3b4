"""fashion-convert deepfashion2 and modanet on fixtures in their native layouts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fashionvision.convert import deepfashion2, modanet
from fashionvision.data.converted import ConvertedDataset
from fashionvision.errors import UserError
from fixtures.deepfashion2_files import BAD_FILES, DOCUMENTS, H, W, make_deepfashion2
from fixtures.modanet_files import make_modanet


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_boxes_masks_and_item_labels(tmp_path: Path):
    source = make_deepfashion2(tmp_path / "df2")
    summary = deepfashion2.convert(source, tmp_path / "out", split=(1, 0, 0), progress_bar=False, workers=1)
    data = ConvertedDataset.open(tmp_path / "out")
    assert len(data.classes) == 13 and data.classes[0] == "short sleeve top" and data.classes[12] == "sling dress"
    assert summary.images == {"train": 3, "val": 0, "test": 1}
    train = {r.path: r.boxes.tolist() for r in data.records("train")}
    assert train["train/image/000001.jpg"] == [[5, 5, 39, 34, 0], [10, 36, 44, 77, 7]]
    assert train["train/image/000002.jpg"] == [[0, 0, 59, 79, 0]]
    assert train["train/image/000003.jpg"] == [[20, 10, 50, 70, 12]]
    assert [r.boxes.tolist() for r in data.records("test")] == [[[12, 40, 47, 74, 8]]]
    items = json.loads((tmp_path / "out" / "items.json").read_text())
    assert items["fields"] == ["item", "occlusion", "zoom_in", "viewpoint", "scale", "style"]
    first = items["images"]["train/image/000001.jpg"]
    assert first["source"] == "user" and first["pair_id"] == 1
    assert first["items"] == [[1, 2, 1, 2, 2, 1], [2, 3, 2, 2, 2, 1]]  # in the order of the boxes
    assert data.metadata["item_attributes"] == "items.json"
    record = next(r for r in data.records("train") if r.path.endswith("000001.jpg"))
    mask = cv2.imread(str(data.mask_path(record)), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (H, W) and set(np.unique(mask).tolist()) == {0, 1, 8}
    assert mask[20, 20] == 1 and mask[60, 30] == 8 and mask[2, 2] == 0


def test_every_bad_file_and_item_reported_together(tmp_path: Path):
    source = make_deepfashion2(tmp_path / "df2")
    for name, text, _ in BAD_FILES:
        (source / "train" / "annos" / name).write_text(text)
        if name != "000009.json":
            (source / "train" / "image" / name.replace(".json", ".jpg")).write_bytes(
                (source / "train" / "image" / "000001.jpg").read_bytes())
    before = tree_digest(source)
    with pytest.raises(UserError) as caught:
        deepfashion2.convert(source, tmp_path / "out", progress_bar=False)
    message = str(caught.value)
    assert "\n" not in message and f"{len(BAD_FILES)} bad record(s)" in message
    for _, _, fragment in BAD_FILES:
        assert fragment in message
    assert tree_digest(source) == before and not (tmp_path / "out").exists()
    summary = deepfashion2.convert(source, tmp_path / "out", strict=False, progress_bar=False)
    assert len(summary.skipped) == len(BAD_FILES) and sum(summary.images.values()) == 4


def test_not_a_deepfashion2_folder(tmp_path: Path):
    (tmp_path / "x").mkdir()
    with pytest.raises(UserError, match="not a DeepFashion2 folder"):
        deepfashion2.convert(tmp_path / "x", tmp_path / "out", progress_bar=False)


def test_modanet_preset(tmp_path: Path):
    source = make_modanet(tmp_path / "modanet")
    summary = modanet.convert(source, tmp_path / "out", progress_bar=False, workers=1)
    data = ConvertedDataset.open(tmp_path / "out")
    assert tuple(data.classes) == modanet.CATEGORIES and sum(summary.images.values()) == 6
    assert not [n for n in summary.notes if n.startswith("warning: the file's categories")]
    assert data.metadata["converter"] == "modanet" and "seeded split" in data.metadata["split_rule"]
    boxes = [b for s in ("train", "val", "test") for r in data.records(s) for b in r.boxes.tolist()]
    assert sorted(b[:4] for b in boxes) == [[2, 3, 11, 22]] * 6


def test_cli_composes_every_converter():
    from fashionvision.cli._hydra import compose
    from fashionvision.convert import CONVERTERS

    for name in CONVERTERS:
        cfg = compose("convert", [f"converter={name}"])
        assert cfg["converter"] == name
    cfg = compose("convert", ["converter=export", "format=yolo", "dataset.path=/x"])
    assert cfg["dataset"]["path"] == "/x" and cfg["format"] == "yolo"
