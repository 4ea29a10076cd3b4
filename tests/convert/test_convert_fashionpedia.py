"""Fashionpedia converter: the official sample, RLE cases, the two-file split, window masks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from fashionvision.data.annotations import validate_file
from fashionvision.convert import fashionpedia, masks
from fashionvision.data.converted import SPLITS, ConvertedDataset
from fashionvision.errors import UserError

PARTS = {"garment parts", "closures", "decorations"}


def check_output(folder: Path, check_images: bool = True) -> ConvertedDataset:
    dataset = ConvertedDataset.open(folder)
    for split in SPLITS:
        report = validate_file(dataset.split_file(split), root=dataset.image_root,
                               num_classes=len(dataset.classes), check_images=check_images)
        assert report.ok, [str(e) for e in report.errors]
    return dataset


def expected_box(bbox: list[float], width: int, height: int) -> tuple[int, ...]:
    x, y, w, h = bbox
    return (max(0, math.floor(x)), max(0, math.floor(y)),
            min(width - 1, math.ceil(x + w) - 1), min(height - 1, math.ceil(y + h) - 1))


def expected_mask(anns: list[dict], kept_index: dict, height: int, width: int) -> np.ndarray:
    """Whole-image pycocotools decoding, larger instances first (independent of the window trick)."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    for ann in sorted(anns, key=lambda a: -a["area"]):
        seg = ann["segmentation"]
        if isinstance(seg, list):
            rle = coco_mask.merge(coco_mask.frPyObjects(seg, height, width))
        elif isinstance(seg["counts"], list):
            rle = coco_mask.frPyObjects(seg, height, width)
        else:
            rle = {"size": seg["size"], "counts": seg["counts"].encode()}
        canvas[coco_mask.decode(rle) > 0] = kept_index[ann["category_id"]] + 1
    return canvas


def test_official_sample(shared_data: Path, tmp_path: Path):
    source = shared_data / "fashionpedia-sample"
    data = json.loads((source / "sample.json").read_text())
    summary = fashionpedia.convert(source, tmp_path / "out", files=["sample.json"], split=(0.5, 0.5, 0.0),
                                   progress_bar=False, workers=1)
    dataset = check_output(tmp_path / "out")
    kept = sorted((c for c in data["categories"] if c["supercategory"] not in PARTS), key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(kept)}
    assert dataset.classes == [c["name"] for c in kept] and len(kept) == 28  # older 48-category file
    assert dataset.mask_classes == ["background", *dataset.classes]
    assert summary.images == {"train": 1, "val": 1, "test": 0} and not summary.skipped
    records = {r.path: r for s in SPLITS for r in dataset.records(s)}
    assert set(records) == {i["file_name"] for i in data["images"]}
    for image in data["images"]:
        h, w = image["height"], image["width"]
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"] and a["category_id"] in index]
        assert all("bbox" not in a for a in anns)  # the sample has no bbox: derived from polygons
        want = set()
        for a in anns:
            bbox = coco_mask.toBbox(coco_mask.merge(coco_mask.frPyObjects(a["segmentation"], h, w))).tolist()
            want.add((*expected_box(bbox, w, h), index[a["category_id"]]))
        got = {tuple(b) for b in records[image["file_name"]].boxes.tolist()}
        assert got == want and len(got) == len(anns)
        mask = cv2.imread(str(dataset.mask_path(records[image["file_name"]])), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(mask, expected_mask(anns, index, h, w))
    stats = dataset.metadata["annotation_counts"]
    assert stats["annotations_kept"] == 6 and stats["annotations_dropped_parts"] == 6


def rle_string(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def rle_list(mask: np.ndarray) -> dict:
    flat = mask.ravel(order="F").astype(np.uint8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": runs if flat[0] == 0 else [0, *runs]}


CATEGORIES = [
    {"id": 2, "name": "belt", "supercategory": "waist"},
    {"id": 5, "name": "dress", "supercategory": "wholebody"},
    {"id": 9, "name": "zipper", "supercategory": "closures"},
    {"id": 7, "name": "sleeve", "supercategory": "garment parts"},
]


def write_coco(path: Path, images: list[dict], annotations: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"info": {}, "categories": CATEGORIES, "attributes": [], "images": images,
                                "annotations": annotations, "licenses": []}))


def test_rle_compressed_and_uncompressed(tmp_path: Path):
    h, w = 30, 40
    dress = np.zeros((h, w), bool)
    dress[5:25, 5:30] = True
    belt = np.zeros((h, w), bool)
    belt[10:13, 8:21] = True
    anns = [
        {"id": 1, "image_id": 1, "category_id": 5, "segmentation": rle_string(dress), "area": 500, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": rle_list(belt), "area": 39, "iscrowd": 1},
        {"id": 3, "image_id": 1, "category_id": 5, "bbox": [30.2, 1.5, 5.3, 3.0], "area": 16,
         "segmentation": [[31, 2, 35, 2, 35, 4, 31, 4]], "iscrowd": 0},
        {"id": 4, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2], "area": 4, "segmentation": [[1, 1, 2, 1, 2, 2]]},
        {"id": 5, "image_id": 1, "category_id": 2, "bbox": [35, 25, 10, 10], "area": 25, "segmentation": []},
        {"id": 6, "image_id": 1, "category_id": 2, "bbox": [50, 50, 3, 3], "area": 9, "segmentation": []},
        {"id": 7, "image_id": 1, "category_id": 99, "bbox": [1, 1, 2, 2], "segmentation": []},
    ]
    write_coco(tmp_path / "src" / "fixture.json", [{"id": 1, "width": w, "height": h, "file_name": "a.jpg"}], anns)
    (tmp_path / "src" / "train").mkdir()
    Image.new("RGB", (w, h)).save(tmp_path / "src" / "train" / "a.jpg")
    summary = fashionpedia.convert(tmp_path / "src", tmp_path / "out", files=["fixture.json"], split=(1, 0, 0),
                                   progress_bar=False, workers=2)
    dataset = check_output(tmp_path / "out")
    assert dataset.classes == ["belt", "dress"]  # renumbered in id order, zipper dropped by supercategory
    (record,) = dataset.records("train")
    assert record.path == "train/a.jpg"
    assert sorted(map(tuple, record.boxes.tolist())) == sorted([
        (5, 5, 29, 24, 1),  # compressed RLE, no bbox
        (8, 10, 20, 12, 0),  # uncompressed RLE, no bbox
        (30, 1, 35, 4, 1),  # float bbox -> floor / ceil - 1
        (35, 25, 39, 29, 0),  # clipped to the image
    ])
    reasons = " | ".join(f"{s.file}: {s.reason}" for s in summary.skipped)  # FILE: annotation id N: reason
    assert "annotation id 6: box empty, not finite or outside the image" in reasons, reasons
    assert "unknown category_id 99" in reasons
    mask = cv2.imread(str(dataset.mask_path(record)), cv2.IMREAD_UNCHANGED)
    want = np.zeros((h, w), np.uint8)
    want[dress] = 2
    want[belt] = 1  # smaller, painted on top
    want[2:4, 31:35] = 2  # pycocotools' rasterisation of the small dress polygon
    np.testing.assert_array_equal(mask, want)


def test_two_files_train_val_and_test(tmp_path: Path):
    src = tmp_path / "src"
    train = [{"id": i, "width": 16, "height": 12, "file_name": f"t{i}.jpg"} for i in range(1, 11)]
    val = [{"id": i, "width": 16, "height": 12, "file_name": f"v{i}.jpg"} for i in range(1, 4)]
    ann = {"category_id": 5, "bbox": [1, 1, 4, 4], "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]], "area": 16}
    write_coco(src / "instances_attributes_train2020.json", train,
               [{**ann, "id": i, "image_id": i} for i in range(1, 11)])
    write_coco(src / "instances_attributes_val2020.json", val, [{**ann, "id": i, "image_id": i} for i in range(1, 4)])
    for folder, entries in (("train", train), ("test", val[:2])):  # v3.jpg is missing
        (src / folder).mkdir(exist_ok=True)
        for e in entries:
            Image.new("RGB", (16, 12)).save(src / folder / e["file_name"])
    summary = fashionpedia.convert(src, tmp_path / "out", progress_bar=False, masks=False)
    dataset = check_output(tmp_path / "out")
    assert summary.images == {"train": 9, "val": 1, "test": 2}
    assert [r.path for r in dataset.records("test")] == ["test/v1.jpg", "test/v2.jpg"]
    assert all(r.path.startswith("train/") for s in ("train", "val") for r in dataset.records(s))
    assert [s.reason for s in summary.skipped] == ["image not found as train/v3.jpg or test/v3.jpg or v3.jpg"]
    assert "not public" in dataset.metadata["split_rule"] and dataset.mask_classes is None
    # require_images=false: sizes from the JSON, expected paths kept (benchmarks without images)
    loose = fashionpedia.convert(src, tmp_path / "loose", progress_bar=False, masks=False, require_images=False)
    assert loose.images["test"] == 3 and not loose.skipped
    assert "test/v3.jpg" in (tmp_path / "loose" / "test.txt").read_text()
    with pytest.raises(UserError, match="does not exist"):
        fashionpedia.convert(src, tmp_path / "x", files=["nope.json"], progress_bar=False)


def test_window_rasterisation_equals_whole_image():
    rng = np.random.default_rng(0)
    for k in range(300):
        h, w = int(rng.integers(20, 120)), int(rng.integers(20, 120))
        count = int(rng.integers(3, 25))
        angles = np.sort(rng.uniform(0, 2 * np.pi, count))
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(3, 60)
        pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1)
        pts = pts.round(2) if k % 2 else pts.round()  # floats with ties, integers; some leave the image
        seg = [pts.ravel().tolist()]
        canvas = np.zeros((h, w), np.uint8)
        masks.paint_instance(canvas, seg, 1)
        np.testing.assert_array_equal(canvas, coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(seg, h, w))))


def test_empty_splits_warn_at_conversion_and_fail_clearly_at_training(shared_data: Path, tmp_path: Path):
    """The 2-image sample gives train 2, val 0, test 0; say so, then refuse to train."""
    from fashionvision.cli._hydra import compose
    from fashionvision.families import task_for_config as build_task
    from fashionvision.engine.trainer import Trainer
    from fashionvision.errors import UserError

    out = tmp_path / "out"
    summary = fashionpedia.convert(shared_data / "fashionpedia-sample", out, files=["sample.json"],
                                   progress_bar=False)
    assert summary.images == {"train": 2, "val": 0, "test": 0}
    warnings = [n for n in summary.notes if n.startswith("warning:")]
    assert len(warnings) == 1 and "val and test are empty (train 2, val 0, test 0 images)" in warnings[0]
    assert warnings[0] in summary.text()

    cfg = compose("train", ["model=yolo", "model.width=0.0625", "model.image_size=64", "anchors=coco",
                            "trainer=smoke", f"dataset.path={out}"])
    with pytest.raises(UserError, match=r"split 'val' of .*out has no images .*change the split fractions"):
        Trainer(build_task(cfg), cfg["trainer"], tmp_path / "run", cfg).fit()
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


# --- Fashionpedia is the COCO converter plus a preset; its output matches the dedicated converter's ----
# Digests of what the dedicated Fashionpedia converter wrote, on the official sample
# and on a small synthetic file from scripts/make_synthetic_fashionpedia.py.

BEFORE_COCO = {
    "sample": {"train.txt": "cc68407963d3979c9810b4e1355cffccfa891d5f7b5a4ab7a93ffaea66220d3e",
               "val.txt": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
               "test.txt": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
               "classes.txt": "f88a6d72ca1bf118bc57f075dfe31798d27ec975fe84070d050f09cb2153f064",
               "mask_classes.txt": "c3e8ed084a02c674522987e08193a955af814aeaa9e4a7812cb2db5c1734a0a0",
               "metadata": "40b4b665635fe417501f32f0a837e6ab30b8a6ff544c4d583686c426dc1d3a55",
               "masks": "88dddbd0b248a81a194ef83841ca5bf20ec0ad92a7f70fea170643a68e5c9447"},
    "synthetic": {"train.txt": "86e26850ccc943af4aebf978c1b07250378752e767bbff91e1f39c3d68dc9d1c",
                  "val.txt": "2e804b23d733e73331a8ff8bf90ee0fb4b6654cd1bf2f294a716796dc79c1b5b",
                  "test.txt": "85d0e68b2500350a893705289088b7cbb7aff428ee0762f774b2e64ffee6076b",
                  "classes.txt": "77b146b5602fa9d79684649f7de2d29deb112bcae440c2e6643685ea2d52863e",
                  "mask_classes.txt": "d13fa9a5c1f4f8c63ba3f10a6dceb2e128543872e742cb708cec7272b9863320",
                  "metadata": "d92d78b0dc88cbfb8b301638116938fb4ecf1e2555f75dbb3698072cc6ea2dc7",
                  "masks": "72239804fe1d5ee6ad87ed97a15b2685b41f7fe91f9ff99951517c3e1ef61684"},
}


def converted_digest(folder: Path) -> dict:
    """sha256 of the split and class files, of metadata.json less its time and paths, of the decoded masks."""
    import hashlib

    out = {}
    for name in ("train.txt", "val.txt", "test.txt", "classes.txt", "mask_classes.txt"):
        path = folder / name
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    meta = json.loads((folder / "metadata.json").read_text())
    for key in ("created", "source", "image_root", "image_root_abs"):
        meta.pop(key, None)
    out["metadata"] = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
    digest = hashlib.sha256()
    for png in sorted((folder / "masks").rglob("*.png")):
        digest.update(str(png.relative_to(folder)).encode())
        digest.update(cv2.imread(str(png), cv2.IMREAD_UNCHANGED).tobytes())
    out["masks"] = digest.hexdigest()
    return out


def test_output_unchanged_on_the_official_sample(shared_data: Path, tmp_path: Path):
    fashionpedia.convert(shared_data / "fashionpedia-sample", tmp_path / "out", files=["sample.json"],
                         progress_bar=False, workers=1)
    assert converted_digest(tmp_path / "out") == BEFORE_COCO["sample"]


def test_output_unchanged_on_the_synthetic_file(shared_data: Path, tmp_path: Path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "make_synthetic_fashionpedia.py"
    (tmp_path / "src").mkdir()
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "src" / "syn.json"), "--images", "120",
                    "--annotations", "900", "--vertices", "40", "--seed", "3", "--categories",
                    str(shared_data / "fashionpedia-sample" / "category_attributes_descriptions.json")],
                   check=True, capture_output=True)
    fashionpedia.convert(tmp_path / "src", tmp_path / "out", files=["syn.json"], require_images=False,
                         progress_bar=False, workers=2)
    assert converted_digest(tmp_path / "out") == BEFORE_COCO["synthetic"]
