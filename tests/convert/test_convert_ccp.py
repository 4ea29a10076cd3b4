"""CCP converter: boxes checked against an independent OpenCV computation, skips, safe output."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from PIL import Image

from fashionvision.data.annotations import read_annotations, validate_file
from fashionvision.convert import CONVERTERS, ccp, common, get_converter
from fashionvision.data.converted import SPLITS, ConvertedDataset
from fashionvision.errors import UserError

EXCLUDED = {"null", "hair", "skin"}


def expected_boxes(groundtruth: np.ndarray, names: list[str]) -> set[tuple[int, ...]]:
    """The CCP box rule computed with OpenCV (not scipy), as the converter's independent check."""
    kept = [v for v, n in enumerate(names) if n not in EXCLUDED]
    det = {v: i for i, v in enumerate(kept)}
    height, width = groundtruth.shape
    boxes = set()
    for value in np.unique(groundtruth):
        if int(value) not in det:
            continue
        count, _, stats, _ = cv2.connectedComponentsWithStats((groundtruth == value).astype(np.uint8), connectivity=8)
        for x, y, w, h, area in stats[1:count]:
            if area >= 0.0005 * width * height:
                boxes.add((int(x), int(y), int(x + w - 1), int(y + h - 1), det[int(value)]))
    return boxes


def check_output(folder: Path) -> ConvertedDataset:
    dataset = ConvertedDataset.open(folder)
    for split in SPLITS:
        report = validate_file(dataset.split_file(split), root=dataset.image_root,
                               num_classes=len(dataset.classes), check_images=True)
        assert report.ok, [str(e) for e in report.errors]
    return dataset


def test_registry_names_and_unknown():
    assert set(CONVERTERS) == {"ccp", "deepfashion", "fashionpedia", "coco", "yolo", "masks", "deepfashion2",
                               "modanet"}
    with pytest.raises(UserError, match="ccp, deepfashion, fashionpedia, coco, yolo, masks, deepfashion2, modanet"):
        get_converter("voc")


def test_ccp_subset_matches_opencv_boxes(shared_data: Path, tmp_path: Path):
    source = shared_data / "ccp"
    summary = ccp.convert(source, tmp_path / "out", limit=10, workers=1, progress_bar=False)
    dataset = check_output(tmp_path / "out")
    names = ccp.read_label_list(source)
    assert len(names) == 59
    assert dataset.classes == [n for n in names if n not in EXCLUDED] and len(dataset.classes) == 56
    assert dataset.mask_classes == names
    assert dataset.image_root == source.resolve()
    records = [r for split in SPLITS for r in dataset.records(split)]
    first_ten = sorted(p.stem for p in (source / "annotations" / "pixel-level").glob("*.mat"))[:10]
    assert sorted(r.path for r in records) == [f"photos/{stem}.jpg" for stem in first_ten]
    assert sum(summary.images.values()) == 10 and not summary.skipped
    total_boxes = 0
    for record in records:
        stem = Path(record.path).stem
        gt = scipy.io.loadmat(source / "annotations" / "pixel-level" / f"{stem}.mat")["groundtruth"]
        assert {tuple(int(v) for v in b) for b in record.boxes} == expected_boxes(gt, names)
        assert len(record.boxes) == len(expected_boxes(gt, names))  # no duplicates
        mask = cv2.imread(str(dataset.mask_path(record)), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(mask, gt)
        total_boxes += len(record.boxes)
    meta = dataset.metadata
    assert meta["seed"] == 0 and meta["options"]["min_area_fraction"] == 0.0005
    assert sum(meta["counts"][s]["boxes"] for s in SPLITS) == total_boxes
    assert sum(sum(meta["counts"][s]["per_class"].values()) for s in SPLITS) == total_boxes
    assert meta["image_level_only_skipped"] == 1094


def test_seeded_split_is_reproducible_and_sized():
    a = common.seeded_split(800, (0.8, 0.1, 0.1), seed=3)
    assert a == common.seeded_split(800, (0.8, 0.1, 0.1), seed=3)
    assert a != common.seeded_split(800, (0.8, 0.1, 0.1), seed=4)
    assert [a.count(s) for s in SPLITS] == [640, 80, 80]
    with pytest.raises(UserError, match="summing to 1"):
        common.check_split([0.5, 0.2])


def make_fake_ccp(root: Path) -> Path:
    """A 4-image CCP folder: one good, one photo missing, one photo of the wrong size, one bad .mat."""
    names = np.empty((1, 59), dtype=object)
    for v in range(59):
        names[0, v] = {0: "null", 19: "hair", 41: "skin"}.get(v, f"label{v}")
    (root / "annotations" / "pixel-level").mkdir(parents=True)
    (root / "annotations" / "image-level").mkdir(parents=True)
    (root / "photos").mkdir()
    scipy.io.savemat(root / "label_list.mat", {"label_list": names})
    gt = np.zeros((40, 30), dtype=np.uint8)
    gt[5:10, 3:8] = 5  # one component -> one box
    gt[20:22, 20:22] = 5  # a second component of the same label
    gt[30:35, 10:20] = 19  # hair: no box
    gt[0, 29] = 7  # 1 px: below 0.05 % of 1200 px? 0.6 px -> kept (area 1 >= 0.6)
    for stem in ("0001", "0002", "0003"):
        scipy.io.savemat(root / "annotations" / "pixel-level" / f"{stem}.mat", {"groundtruth": gt})
    (root / "annotations" / "pixel-level" / "0004.mat").write_bytes(b"not a mat file")
    Image.new("RGB", (30, 40)).save(root / "photos" / "0001.jpg")
    Image.new("RGB", (31, 40)).save(root / "photos" / "0003.jpg")
    Image.new("RGB", (30, 40)).save(root / "photos" / "0004.jpg")
    Image.new("RGB", (30, 40)).save(root / "photos" / "1005.jpg")
    scipy.io.savemat(root / "annotations" / "image-level" / "1005.mat", {"tags": np.array([[0, 5]])})
    return root


def test_bad_files_are_reported_and_skipped(tmp_path: Path):
    source = make_fake_ccp(tmp_path / "ccp")
    summary = ccp.convert(source, tmp_path / "out", workers=2, progress_bar=False, split=(1, 0, 0))
    assert summary.images == {"train": 1, "val": 0, "test": 0}
    reasons = {s.file: s.reason for s in summary.skipped}
    assert "not found" in reasons["annotations/pixel-level/0002.mat"]
    assert "31x40" in reasons["annotations/pixel-level/0003.mat"] and "30x40" in reasons["annotations/pixel-level/0003.mat"]
    assert "groundtruth" in reasons["annotations/pixel-level/0004.mat"]
    (record,) = read_annotations(tmp_path / "out" / "train.txt")
    # label 5 -> class 4 (null dropped before it), label 7 -> class 6
    assert {tuple(b) for b in record.boxes.tolist()} == {(3, 5, 7, 9, 4), (20, 20, 21, 21, 4), (29, 0, 29, 0, 6)}
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert meta["skipped"]["count"] == 3 and meta["image_level_only_skipped"] == 1
    assert "skipped: 3" in summary.text() and "image-level-only" in summary.text()
    check_output(tmp_path / "out")


def test_output_is_staged_replaced_and_never_in_source(tmp_path: Path, monkeypatch):
    source = make_fake_ccp(tmp_path / "ccp")
    before = sorted(p.relative_to(source) for p in source.rglob("*"))
    out = tmp_path / "out"
    with pytest.raises(UserError, match="inside the source"):
        ccp.convert(source, source / "converted", progress_bar=False)
    ccp.convert(source, out, progress_bar=False, split=(1, 0, 0))
    first = (out / "metadata.json").read_text()

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash while writing")

    monkeypatch.setattr(ccp, "write_converted", crash)
    with pytest.raises(RuntimeError, match="simulated"):
        ccp.convert(source, out, progress_bar=False, seed=7)
    assert (out / "metadata.json").read_text() == first  # the old conversion is untouched
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        ccp.convert(source, fresh, progress_bar=False)
    assert not fresh.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left
    monkeypatch.undo()
    ccp.convert(source, out, progress_bar=False, seed=7, split=(0, 1, 0))  # replaces the old one
    assert json.loads((out / "metadata.json").read_text())["seed"] == 7
    assert sorted(p.relative_to(source) for p in source.rglob("*")) == before
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a converted dataset"):
        ccp.convert(source, stranger, progress_bar=False)


def test_cli_runs_converter_from_config(shared_data: Path, tmp_path: Path, capsys):
    from fashionvision.cli._hydra import compose
    from fashionvision.cli.convert import convert

    cfg = compose("convert", ["converter=ccp", f"source={shared_data / 'ccp'}", f"output={tmp_path / 'o'}",
                              "limit=3", "progress=false", "workers=1", "ccp.masks=false"])
    assert convert(cfg) == 0
    assert "train:" in capsys.readouterr().out
    dataset = ConvertedDataset.open(tmp_path / "o")
    assert dataset.mask_classes is None and not (tmp_path / "o" / "masks").exists()
    cfg["ccp"]["bogus"] = 1
    with pytest.raises(UserError, match="bogus"):
        convert(cfg)


@pytest.mark.slow
def test_full_ccp_under_60_seconds(shared_data: Path, tmp_path: Path):
    started = time.perf_counter()
    summary = ccp.convert(shared_data / "ccp", tmp_path / "ccp", workers=2, progress_bar=False)
    seconds = time.perf_counter() - started
    assert summary.images == {"train": 640, "val": 80, "test": 80} and not summary.skipped
    assert seconds < 60, f"800 CCP images took {seconds:.1f} s"
    check_output(tmp_path / "ccp")
