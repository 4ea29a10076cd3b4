"""fashion-convert yolo and masks on native-layout fixtures, bad lines and files included."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fashionvision.convert import mask_folder, yolo
from fashionvision.data.converted import ConvertedDataset
from fashionvision.errors import UserError
from fixtures.yolo_layout import BAD_LINES, BOXES, NAMES, H, W, make_yolo


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def records(folder: Path) -> dict:
    data = ConvertedDataset.open(folder)
    return {r.path: sorted(map(tuple, r.boxes.tolist())) for s in ("train", "val", "test")
            for r in data.records(s)}


def test_boxes_come_back_exactly(tmp_path: Path):
    summary = yolo.convert(make_yolo(tmp_path / "src"), tmp_path / "out", progress_bar=False, workers=1)
    data = ConvertedDataset.open(tmp_path / "out")
    assert data.classes == list(NAMES.values()) and data.mask_classes is None
    assert records(tmp_path / "out") == {f"images/{rel}": sorted(b) for rel, b in BOXES.items()}
    assert summary.images == {"train": 3, "val": 1, "test": 0}
    assert "images without a label file 1" in summary.text()


def test_polygon_labels_become_masks(tmp_path: Path):
    yolo.convert(make_yolo(tmp_path / "src", segments=True), tmp_path / "out", progress_bar=False, workers=1)
    data = ConvertedDataset.open(tmp_path / "out")
    assert data.mask_classes == ["background", *NAMES.values()]
    assert records(tmp_path / "out") == {f"images/{rel}": sorted(b) for rel, b in BOXES.items()}
    a = next(r for r in data.records("train") if r.path.endswith("a.jpg"))
    mask = cv2.imread(str(data.mask_path(a)), cv2.IMREAD_UNCHANGED)
    want = np.zeros((H, W), np.uint8)
    want[10:46, 30:60] = 2  # the larger one first
    want[6:30, 4:24] = 1
    np.testing.assert_array_equal(mask, want)


def test_every_bad_line_is_reported_with_file_and_line(tmp_path: Path):
    source = make_yolo(tmp_path / "src")
    label = source / "labels" / "train" / "a.txt"
    label.write_text(label.read_text() + "".join(f"{line}\n" for line, _ in BAD_LINES))
    before = tree_digest(source)
    with pytest.raises(UserError) as caught:
        yolo.convert(source, tmp_path / "out", progress_bar=False)
    message = str(caught.value)
    assert "\n" not in message and f"{len(BAD_LINES)} bad record(s)" in message
    for number, (_, fragment) in enumerate(BAD_LINES, start=3):
        assert f"{label}:{number}: " in message and fragment in message
    assert tree_digest(source) == before and not (tmp_path / "out").exists()
    summary = yolo.convert(source, tmp_path / "out", progress_bar=False, strict=False)
    assert len(summary.skipped) == len(BAD_LINES) and summary.boxes["train"] == 3


@pytest.mark.parametrize("text, reason", [
    ("- train\n- val\n", "top level is a YAML list"),
    ("train: images/train\n", "no names"),
    ("train: images/nowhere\nnames: [a]\n", "neither an image folder nor a .txt list"),
    ("names: {0: a, 2: b}\ntrain: images/train\n", "numbered 0..N-1"),
])
def test_bad_data_yaml(tmp_path: Path, text: str, reason: str):
    source = make_yolo(tmp_path / "src")
    (source / "data.yaml").write_text(text)
    with pytest.raises(UserError, match=reason):
        yolo.convert(source, tmp_path / "out", progress_bar=False)


def make_mask_folder(folder: Path) -> Path:
    (folder / "images" / "train").mkdir(parents=True)
    (folder / "images" / "val").mkdir(parents=True)
    (folder / "masks" / "train").mkdir(parents=True)
    (folder / "masks" / "val").mkdir(parents=True)
    (folder / "classes.txt").write_text("background\nskin\ndress\nbag\n")
    for rel in ("train/a", "train/b", "val/c"):
        Image.new("RGB", (40, 30)).save(folder / "images" / f"{rel}.jpg")
        mask = np.zeros((30, 40), np.uint8)
        mask[2:20, 3:15] = 2
        mask[22:28, 30:38] = 3
        mask[0:2, 0:2] = 1  # skin: in the mask, no box
        mask[25, 0] = 3  # one pixel: under 0.05 % of 1200 px? no (1 px = 0.083 %): a box
        cv2.imwrite(str(folder / "masks" / f"{rel}.png"), mask)
    return folder


def test_mask_folder_boxes_by_the_ccp_rule(tmp_path: Path):
    source = make_mask_folder(tmp_path / "src")
    summary = mask_folder.convert(source, tmp_path / "out", exclude=["background", "skin"], progress_bar=False)
    data = ConvertedDataset.open(tmp_path / "out")
    assert data.classes == ["dress", "bag"] and data.mask_classes == ["background", "skin", "dress", "bag"]
    assert summary.images == {"train": 2, "val": 1, "test": 0}
    assert records(tmp_path / "out")["train/a.jpg"] == [(0, 25, 0, 25, 1), (3, 2, 14, 19, 0), (30, 22, 37, 27, 1)]
    coarse = mask_folder.convert(source, tmp_path / "coarse", exclude=["background", "skin"], min_area_fraction=0.01,
                                 progress_bar=False)
    assert coarse.boxes["train"] == 4  # the one-pixel bag is under 1 %


def test_mask_folder_bad_masks_reported_together(tmp_path: Path):
    source = make_mask_folder(tmp_path / "src")
    cv2.imwrite(str(source / "masks" / "train" / "a.png"), np.full((30, 40), 9, np.uint8))
    cv2.imwrite(str(source / "masks" / "train" / "b.png"), np.zeros((10, 10), np.uint8))
    (source / "masks" / "val" / "c.png").unlink()
    before = tree_digest(source)
    with pytest.raises(UserError) as caught:
        mask_folder.convert(source, tmp_path / "out", progress_bar=False)
    message = str(caught.value)
    assert "3 bad record(s)" in message
    assert "masks/train/a.png: pixel values [9] beyond the 4 labels" in message
    assert "masks/train/b.png: mask is 10x10 but the image is 40x30" in message
    assert "masks/val/c.png: no mask for images/val/c.jpg" in message
    assert tree_digest(source) == before and not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="not in"):
        mask_folder.convert(source, tmp_path / "out", exclude=["sky"], progress_bar=False)
