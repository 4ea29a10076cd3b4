"""fashion-convert coco: any COCO instances file (native-layout fixtures, good and bad)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from fashionvision.convert import coco
from fashionvision.data.converted import ConvertedDataset
from fashionvision.errors import UserError
from fixtures.coco_files import BAD_CASES, H, W, make_coco, rect, train_annotations

TRAIN, VAL = "annotations/instances_train.json", "annotations/instances_val.json"


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def pixels(segmentation) -> np.ndarray:
    if isinstance(segmentation, list):
        rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, H, W))
    elif isinstance(segmentation["counts"], list):
        rle = coco_mask.frPyObjects(segmentation, H, W)
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
    return coco_mask.decode(rle).astype(bool)


def test_train_val_pair_boxes_crowd_and_masks(tmp_path: Path):
    source = make_coco(tmp_path / "src")
    summary = coco.convert(source, tmp_path / "out", annotations=[TRAIN, VAL], images="images",
                           drop_supercategories=["garment parts"], progress_bar=False, workers=1)
    data = ConvertedDataset.open(tmp_path / "out")
    assert data.classes == ["top", "skirt", "bag"] and data.mask_classes == ["background", "top", "skirt", "bag"]
    assert summary.images == {"train": 3, "val": 2, "test": 0}
    train = {r.path: r for r in data.records("train")}
    anns = {a["id"]: a for a in train_annotations()}
    bag_box = coco.box_from_bbox(coco_mask.toBbox(coco_mask.merge(coco_mask.frPyObjects(anns[14]["segmentation"], H, W))), W, H)
    assert sorted(map(tuple, train["t1.jpg"].boxes.tolist())) == [(4, 4, 29, 19, 0), (8, 22, 27, 35, 1)]  # crowd: no box
    assert train["t2.jpg"].boxes.tolist() == [[*bag_box, 2]]  # box from the polygon (no bbox)
    assert train["t3.jpg"].boxes.tolist() == []
    assert [r.boxes.tolist() for r in data.records("val")] == [[[1, 1, 10, 10, 0]], []]
    want = np.zeros((H, W), np.uint8)
    want[rect(36, 2, 45, 30)] = coco.IGNORE  # the crowd region, under the instances
    want[pixels(anns[10]["segmentation"])] = 1
    want[pixels(anns[11]["segmentation"])] = 2
    np.testing.assert_array_equal(cv2.imread(str(data.mask_path(train["t1.jpg"])), cv2.IMREAD_UNCHANGED), want)
    counts = data.metadata["annotation_counts"]
    assert counts["annotations_crowd"] == 1 and counts["annotations_dropped"] == 1
    assert "crowd 1" in summary.text()


def test_keep_and_drop_by_name_or_supercategory(tmp_path: Path):
    source = make_coco(tmp_path / "src")
    coco.convert(source, tmp_path / "a", annotations=TRAIN, images="images", keep=["upperbody", "bag"],
                 crowd="object", masks=False, split=(1, 0, 0), progress_bar=False)
    data = ConvertedDataset.open(tmp_path / "a")
    assert data.classes == ["top", "bag"] and data.mask_classes is None
    t1 = next(r for r in data.records("train") if r.path == "t1.jpg")
    assert sorted(map(tuple, t1.boxes.tolist())) == [(4, 4, 29, 19, 0), (36, 2, 45, 30, 1)]  # crowd=object
    coco.convert(source, tmp_path / "b", annotations=TRAIN, images="images", drop=["skirt"],
                 drop_supercategories=["accessories"], masks=False, progress_bar=False)
    assert ConvertedDataset.open(tmp_path / "b").classes == ["top", "pocket"]
    with pytest.raises(UserError, match=r"\['tops'\] are neither a category nor a supercategory"):
        coco.convert(source, tmp_path / "c", annotations=TRAIN, images="images", keep=["tops"], progress_bar=False)


def test_one_file_seeded_split_is_reproducible(tmp_path: Path):
    source = make_coco(tmp_path / "src")
    for name in ("a", "b"):
        coco.convert(source, tmp_path / name, annotations=TRAIN, images="images", seed=3,
                     split=(0.34, 0.33, 0.33), masks=False, progress_bar=False)
    assert [(tmp_path / "a" / f).read_text() for f in ("train.txt", "val.txt", "test.txt")] == \
        [(tmp_path / "b" / f).read_text() for f in ("train.txt", "val.txt", "test.txt")]
    assert ConvertedDataset.open(tmp_path / "a").metadata["split_rule"].endswith("train+val+test (seeded split)")
    with pytest.raises(UserError, match="a file's split must be one of"):
        coco.convert(source, tmp_path / "c", annotations=TRAIN, images="images", splits=["training"], progress_bar=False)


def test_every_bad_record_is_reported_together_and_the_source_is_untouched(tmp_path: Path):
    source = make_coco(tmp_path / "src")
    path = source / TRAIN
    data = json.loads(path.read_text())
    for _, edit, _ in BAD_CASES:
        edit(data)
    path.write_text(json.dumps(data))
    (source / "images" / "v2.jpg").unlink()  # a missing image too
    before = tree_digest(source)
    with pytest.raises(UserError) as caught:
        coco.convert(source, tmp_path / "out", annotations=[TRAIN, VAL], images="images", progress_bar=False)
    message = str(caught.value)
    assert "\n" not in message and f"{len(BAD_CASES) + 1} bad record(s)" in message
    for what, _, fragment in BAD_CASES:
        assert f"instances_train.json: {fragment}" in message or fragment in message, what
    assert "instances_val.json: image 2 (v2.jpg): image not found as v2.jpg" in message
    assert tree_digest(source) == before and not (tmp_path / "out").exists()
    # strict=false: the same records skipped and listed; the rest converted
    summary = coco.convert(source, tmp_path / "out", annotations=[TRAIN, VAL], images="images", strict=False,
                           progress_bar=False)
    assert len(summary.skipped) == len(BAD_CASES) + 1 and summary.images["val"] == 1


@pytest.mark.parametrize("text, reason", [
    ("[{\"images\": []}]", "top level is a JSON list"),
    ("{\"images\": [], \"annotations\": []}", "no list categories"),
    ("{not json", "not valid JSON"),
])
def test_files_that_are_not_coco(tmp_path: Path, text: str, reason: str):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.json").write_text(text)
    with pytest.raises(UserError, match=reason):
        coco.convert(tmp_path / "src", tmp_path / "out", annotations="a.json", progress_bar=False)


def test_rle_string_counts_match_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = rng.random((int(rng.integers(1, 30)), int(rng.integers(1, 30)))) < rng.random()
        rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        from fashionvision.convert.masks import rle_string_counts

        runs = rle_string_counts(rle["counts"])
        assert sum(runs) == mask.size and runs == [int(v) for v in _runs(mask)]


def _runs(mask: np.ndarray) -> list[int]:
    flat = mask.ravel(order="F").astype(np.uint8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0, *runs]


def test_cli_coco_with_top_level_annotations_and_images(tmp_path: Path, capsys):
    from fashionvision.cli._hydra import compose
    from fashionvision.cli.convert import convert

    source = make_coco(tmp_path / "src")
    cfg = compose("convert", ["converter=coco", f"source={source}", f"output={tmp_path / 'o'}",
                              f"annotations=[{TRAIN},{VAL}]", "images=images", "progress=false", "workers=1"])
    assert convert(cfg) == 0
    assert "coco: converted into" in capsys.readouterr().out
    assert ConvertedDataset.open(tmp_path / "o").classes == ["top", "skirt", "pocket", "bag"]
    cfg = compose("convert", ["converter=ccp", "annotations=a.json"])
    with pytest.raises(UserError, match="annotations= is for the COCO-based converters"):
        convert(cfg)


def test_boxes_only_file_writes_no_masks(tmp_path: Path):
    source = make_coco(tmp_path / "src")
    path = source / TRAIN
    data = json.loads(path.read_text())
    for ann in data["annotations"]:
        ann.pop("segmentation")
        ann.setdefault("bbox", [1, 1, 5, 5])
    path.write_text(json.dumps(data))
    summary = coco.convert(source, tmp_path / "out", annotations=TRAIN, images="images", progress_bar=False)
    dataset = ConvertedDataset.open(tmp_path / "out")
    assert dataset.mask_classes is None and not (tmp_path / "out" / "masks").exists()
    assert "no segmentation in instances_train.json: boxes only" in summary.text()


def test_output_inside_the_image_folder_is_refused(tmp_path: Path):
    source = make_coco(tmp_path / "src")
    elsewhere = tmp_path / "photos"
    (source / "images").rename(elsewhere)
    with pytest.raises(UserError, match="lies inside the source folder"):
        coco.convert(source, elsewhere / "out", annotations=TRAIN, images=str(elsewhere), progress_bar=False)
    summary = coco.convert(source, tmp_path / "out", annotations=TRAIN, images=str(elsewhere), progress_bar=False)
    assert summary.images["train"] + summary.images["val"] + summary.images["test"] == 3
    assert ConvertedDataset.open(tmp_path / "out").image_root == elsewhere.resolve()
