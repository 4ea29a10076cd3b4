"""FashionDataset on real CCP photos and on synthetic folders: shapes, mapping back, cache, RNG."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import build_hand_converted_ccp, ccp_boxes_from_mat

from fashionvision.data import cache as cache_module
from fashionvision.data.converted import ConvertedDataset
from fashionvision.data.dataset import (
    FashionDataset, detection_collate, pad_collate_images, pad_collate_masks, segmentation_collate,
    worker_init)
from fashionvision.data.transforms import boxes_from_letterbox, content_region
from fashionvision.errors import UserError

STEMS = ["0001", "0002", "0003", "0004", "0005", "0006", "0008", "0010"]
AUGMENT = {"hflip": 0.5, "vflip": 0.0, "hsv_h": 0.015, "hsv_s": 0.5, "hsv_v": 0.3, "contrast": 0.2,
           "scale": [0.6, 1.4], "translate": 0.1, "rotate": 5.0, "crop": 0.3, "mosaic": 0.5}
SIZE = 128  # small training scale keeps the test fast; CCP photos become 128x(85 -> 96)


@pytest.fixture(scope="module")
def ccp8(shared_data: Path, tmp_path_factory) -> ConvertedDataset:
    folder = build_hand_converted_ccp(shared_data / "ccp", tmp_path_factory.mktemp("ccp8"), STEMS)
    return ConvertedDataset.open(folder)


def _equal_items(a: dict, b: dict) -> bool:
    keys = [k for k in ("image", "boxes", "labels", "mask") if k in a]
    return all(torch.equal(a[k], b[k]) for k in keys) and a["meta"] == b["meta"]


@pytest.mark.parametrize("train", [False, True])
def test_detection_items_and_batch(ccp8, train):
    ds = FashionDataset(ccp8, "train", SIZE, train, AUGMENT, "detection")
    assert len(ds) == 8
    items = [ds[i] for i in range(len(ds))]
    for it in items:
        assert it["image"].dtype == torch.uint8 and it["image"].shape == (3, SIZE, SIZE)
        assert it["boxes"].dtype == torch.float32 and it["boxes"].shape[1] == 4
        assert it["labels"].dtype == torch.int64 and len(it["labels"]) == len(it["boxes"])
        assert "mask" not in it
        b = it["boxes"]
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all() and b.min() >= 0 and b.max() <= SIZE
    batch = detection_collate(items)
    assert batch["images"].shape == (8, 3, SIZE, SIZE) and batch["targets"].dtype == torch.float32
    assert batch["targets"].shape == (sum(len(it["labels"]) for it in items), 6)
    assert set(batch["targets"][:, 0].long().tolist()) <= set(range(8))
    assert [m["image_id"] for m in batch["metas"]] == list(range(8))


def test_eval_boxes_map_back_to_annotations(ccp8, shared_data):
    ds = FashionDataset(ccp8, "train", SIZE, False, None, "detection")
    for i in (0, 5):
        it = ds[i]
        meta = it["meta"]
        gt, ref = ccp_boxes_from_mat(shared_data / "ccp" / "annotations" / "pixel-level" / f"{STEMS[i]}.mat")
        assert meta["orig_size"] == gt.shape and meta["image_id"] == i
        back = boxes_from_letterbox(it["boxes"].numpy(), meta["scale"], meta["pad"], meta["orig_size"])
        np.testing.assert_allclose(back, ref[:, :4] + [0, 0, 1, 1], atol=1e-3)
        assert it["labels"].tolist() == ref[:, 4].tolist()


@pytest.mark.parametrize("train", [False, True])
def test_segmentation_items_and_batch(ccp8, train):
    ds = FashionDataset(ccp8, "train", SIZE, train, AUGMENT, "segmentation")
    items = [ds[i] for i in range(4)]
    for it in items:
        assert it["image"].shape == (3, 128, 96)  # padded_shape: 832x550 -> 128x(84.6 -> 96)
        assert it["mask"].dtype == torch.int64 and it["mask"].shape == (128, 96)
        values = set(it["mask"].unique().tolist())
        assert 255 in values and values - {255} <= set(range(59))
    batch = segmentation_collate(items)
    assert batch["images"].shape == (4, 3, 128, 96) and batch["masks"].shape == (4, 128, 96)
    assert batch["masks"].dtype == torch.int64 and len(batch["metas"]) == 4


def test_eval_mask_maps_back_to_groundtruth(ccp8, shared_data):
    ds = FashionDataset(ccp8, "train", SIZE, False, None, "segmentation")
    it = ds[2]
    meta = it["meta"]
    top, left, h, w = content_region(meta["scale"], meta["pad"], meta["orig_size"])
    crop = it["mask"].numpy()[top:top + h, left:left + w].astype(np.uint8)
    assert (crop != 255).all()
    back = cv2.resize(crop, meta["orig_size"][::-1], interpolation=cv2.INTER_NEAREST_EXACT)
    gt, _ = ccp_boxes_from_mat(shared_data / "ccp" / "annotations" / "pixel-level" / f"{STEMS[2]}.mat")
    assert (back == gt).mean() > 0.95


@pytest.mark.parametrize("train", [False, True])
def test_cached_equals_uncached(ccp8, tmp_path, train):
    plain = FashionDataset(ccp8, "train", SIZE, train, AUGMENT, "segmentation", limit=4)
    cached = FashionDataset(ccp8, "train", SIZE, train, AUGMENT, "segmentation", limit=4,
                            cache=True, cache_dir=tmp_path)
    assert cached.cache is not None and cached.cache.buffer_path.parent == tmp_path
    for i in range(4):
        assert _equal_items(plain[i], cached[i])


def test_cache_file_is_reused_and_ram_fallback(ccp8, tmp_path, monkeypatch):
    first = FashionDataset(ccp8, "train", SIZE, False, None, "detection", limit=3, cache=True, cache_dir=tmp_path)
    index = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert len(index["entries"]) == 3

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cache file should have been reused")

    monkeypatch.setattr(cache_module, "load_resized", no_decoding)
    again = FashionDataset(ccp8, "train", SIZE, False, None, "detection", limit=3, cache=True, cache_dir=tmp_path)
    assert _equal_items(first[1], again[1])
    monkeypatch.undo()
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    in_ram = FashionDataset(ccp8, "train", SIZE, False, None, "detection", limit=3, cache=True,
                            cache_dir=blocker / "cache")
    assert in_ram.cache.buffer_path is None and _equal_items(first[2], in_ram[2])


def test_determinism_and_epochs(ccp8):
    a = FashionDataset(ccp8, "train", SIZE, True, AUGMENT, "segmentation", seed=3)
    b = FashionDataset(ccp8, "train", SIZE, True, AUGMENT, "segmentation", seed=3)
    assert _equal_items(a[1], b[1]) and _equal_items(a[1], a[1])
    a.set_epoch(1)
    assert not torch.equal(a[1]["image"], b[1]["image"])
    b.set_epoch(1)
    assert _equal_items(a[1], b[1])


# --- synthetic folders: bad images, mixed shapes, workers -----------------------------------

def _synthetic(tmp_path: Path, sizes: list[tuple[int, int]], corrupt: set[int] = frozenset(),
               masks: bool = True) -> ConvertedDataset:
    root, folder = tmp_path / "images", tmp_path / "converted"
    rng = np.random.default_rng(0)
    lines = []
    for i, (h, w) in enumerate(sizes):
        path = root / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i in corrupt:
            path.write_bytes(b"\x89PNG not really")
        else:
            cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        if masks:
            (folder / "masks").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / "masks" / f"img{i}.png"), np.full((h, w), i % 3, np.uint8))
        lines.append(f"img{i}.png 1,2,{w // 2},{h // 2},{i % 3}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    (folder / "classes.txt").write_text("a\nb\nc\n")
    if masks:
        (folder / "mask_classes.txt").write_text("bg\nx\ny\n")
    (folder / "metadata.json").write_text(json.dumps({"image_root": str(root)}))
    return ConvertedDataset.open(folder)


@pytest.mark.parametrize("cache", [False, True])
def test_unreadable_image_is_skipped_and_counted(tmp_path, caplog, cache):
    """Training replaces an unreadable image by the next readable one and counts it."""
    data = _synthetic(tmp_path, [(40, 30)] * 4, corrupt={1})
    ds = FashionDataset(data, "train", 64, True, {}, "detection", cache=cache, cache_dir=tmp_path / "c")
    with caplog.at_level(logging.WARNING):
        item = ds[1]
    assert item["meta"]["image_id"] == 2 and ds.bad_images == 1
    assert "img1.png" in caplog.text


@pytest.mark.parametrize("cache", [False, True])
def test_unreadable_image_is_left_out_of_evaluation(tmp_path, caplog, cache):
    """Evaluation must not score the next image in its place."""
    data = _synthetic(tmp_path, [(40, 30)] * 4, corrupt={1})
    ds = FashionDataset(data, "train", 64, False, None, "detection", cache=cache, cache_dir=tmp_path / "c")
    with caplog.at_level(logging.WARNING):
        items = [ds[i] for i in range(len(ds))]
    assert items[1] is None and ds.bad_images == 1
    assert "img1.png" in caplog.text and "left out of the evaluation" in caplog.text
    batch = detection_collate(items)
    assert [m["image_id"] for m in batch["metas"]] == [0, 2, 3] and batch["images"].shape[0] == 3
    assert detection_collate([None])["metas"] == []


def test_images_without_objects_are_kept(tmp_path):
    data = _synthetic(tmp_path, [(40, 30)] * 3)
    lines = data.split_file("train").read_text().splitlines()
    data.split_file("train").write_text("\n".join([lines[0].split()[0], *lines[1:]]) + "\n")
    ds = FashionDataset(data, "train", 64, True, {**AUGMENT, "mosaic": 0.0}, "detection")
    assert len(ds) == 3 and ds[0]["boxes"].shape == (0, 4) and ds[0]["labels"].shape == (0,)
    batch = detection_collate([ds[0], ds[0]])
    assert batch["targets"].shape == (0, 6)


def test_mixed_shapes_are_padded(tmp_path):
    data = _synthetic(tmp_path, [(64, 32), (32, 64), (50, 50)])
    ds = FashionDataset(data, "train", 64, False, None, "segmentation")
    shapes = [tuple(ds[i]["image"].shape[1:]) for i in range(3)]
    assert shapes == [(64, 32), (32, 64), (64, 64)]
    batch = segmentation_collate([ds[i] for i in range(3)])
    assert batch["images"].shape == (3, 3, 64, 64) and batch["masks"].shape == (3, 64, 64)
    assert (batch["images"][0, :, :, 32:] == 114).all() and (batch["masks"][0, :, 32:] == 255).all()
    assert pad_collate_images([torch.zeros(3, 2, 2, dtype=torch.uint8)]).shape == (1, 3, 2, 2)
    assert pad_collate_masks([torch.zeros(2, 3), torch.zeros(3, 2)], 7)[0, 2, 0] == 7


def test_segmentation_needs_masks(tmp_path):
    data = _synthetic(tmp_path, [(20, 20)], masks=False)
    with pytest.raises(UserError, match="no masks"):
        FashionDataset(data, "train", 64, False, None, "segmentation")


def test_set_epoch_reaches_persistent_workers(tmp_path):
    data = _synthetic(tmp_path, [(48, 40)] * 4)
    ds = FashionDataset(data, "train", 64, True, AUGMENT, "detection", cache=True, cache_dir=tmp_path / "c")
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, persistent_workers=True,
                                         collate_fn=detection_collate, worker_init_fn=worker_init)
    seen = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        seen.append(next(iter(loader))["images"])
    expected = detection_collate([ds[i] for i in range(4)])["images"]  # main process, epoch 1
    assert torch.equal(seen[1], expected) and not torch.equal(seen[0], seen[1])
