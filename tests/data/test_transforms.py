"""Transforms: letterbox maths, and image/mask/boxes staying aligned under every augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from fashionvision.data.gpu_augment import color_matrices, gpu_color_jitter
from fashionvision.data.transforms import (
    boxes_from_letterbox, boxes_to_letterbox, build_train_transform, color_jitter, color_matrix,
    content_region, letterbox, letterbox_sample, padded_shape)

IGNORE = 255
# Well separated colours, far from the pad grey (114): a pixel decodes to the nearest entry.
PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0],
                    [255, 0, 255], [0, 255, 255], [255, 255, 255]], dtype=np.uint8)
NONE_CFG = {"hflip": 0.0, "vflip": 0.0, "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "contrast": 0.0,
            "scale": [1.0, 1.0], "translate": 0.0, "rotate": 0.0, "crop": 0.0, "mosaic": 0.0}
GEOMETRIC = {
    "hflip": {"hflip": 1.0},
    "vflip": {"vflip": 1.0},
    "scale": {"scale": [0.5, 1.5]},
    "rotate": {"rotate": 15.0},
    "translate": {"translate": 0.2},
    "crop": {"crop": 1.0},
    "all": {"hflip": 0.5, "vflip": 0.5, "scale": [0.6, 1.4], "rotate": 10.0, "translate": 0.1, "crop": 0.5},
    "mosaic": {"mosaic": 1.0, "scale": [0.6, 1.4], "rotate": 5.0, "translate": 0.1, "hflip": 0.5},
}


def blocky_sample(seed: int, h: int = 96, w: int = 64, block: int = 16) -> dict:
    """An image whose colours encode its mask (palette[mask]), in blocks, with one box per block row."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, len(PALETTE), (h // block, w // block))
    mask = np.kron(small, np.ones((block, block), dtype=np.int64)).astype(np.uint8)
    return {"image": PALETTE[mask], "mask": mask, "boxes": np.zeros((0, 4), np.float32),
            "labels": np.zeros(0, np.int64)}


def rect_sample(h: int = 96, w: int = 64) -> dict:
    """Background (class 0) with four rectangles of distinct classes; boxes = their continuous extents."""
    mask = np.zeros((h, w), np.uint8)
    rects = [(4, 6, 20, 30, 1), (30, 10, 58, 40, 2), (8, 50, 40, 90, 3), (44, 60, 60, 80, 4)]
    boxes, labels = [], []
    for x1, y1, x2, y2, cls in rects:  # inclusive pixel extents, as in the annotation format
        mask[y1:y2 + 1, x1:x2 + 1] = cls
        boxes.append([x1, y1, x2 + 1, y2 + 1])
        labels.append(cls)
    return {"image": PALETTE[mask], "mask": mask, "boxes": np.array(boxes, np.float32),
            "labels": np.array(labels, np.int64)}


def decode(image: np.ndarray) -> np.ndarray:
    """Nearest palette index per pixel; pad grey decodes to IGNORE."""
    colours = np.concatenate([PALETTE, [[114, 114, 114]]]).astype(np.int32)
    dist = ((image[:, :, None, :].astype(np.int32) - colours[None, None]) ** 2).sum(-1)
    index = dist.argmin(-1)
    return np.where(index == len(PALETTE), IGNORE, index)


def test_padded_shape_ccp():
    assert padded_shape(832, 550, 416) == (416, 288)
    assert padded_shape(550, 832, 416) == (288, 416)
    assert padded_shape(100, 100, 64) == (64, 64)
    h, w = padded_shape(333, 517, 320)
    assert h % 32 == 0 and w % 32 == 0 and w == 320


@pytest.mark.parametrize("shape,new_shape", [((832, 550), 416), ((300, 500), (256, 320)), ((50, 40), 64)])
def test_letterbox_round_trip(shape, new_shape):
    rng = np.random.default_rng(0)
    h, w = shape
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    mask = rng.integers(0, 10, (h, w), dtype=np.uint8)
    out, out_mask, scale, pad = letterbox(image, new_shape, mask=mask)
    oh, ow = (new_shape, new_shape) if isinstance(new_shape, int) else new_shape
    assert out.shape == (oh, ow, 3) and out_mask.shape == (oh, ow)
    top, left, ch, cw = content_region(scale, pad, (h, w))
    # padding is 114 / ignore outside the content, class indices inside
    assert (out_mask[top:top + ch, left:left + cw] < 10).all()
    assert (out_mask == IGNORE).sum() == oh * ow - ch * cw
    assert (out[:top] == 114).all() and (out[:, :left] == 114).all()
    xy = rng.uniform(0, [w, h], (20, 2))
    wh = rng.uniform(1, [w, h], (20, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1).astype(np.float32)
    there = boxes_to_letterbox(boxes, scale, pad)
    assert there[:, 0::2].max() <= ow + 1e-3 and there[:, 1::2].max() <= oh + 1e-3
    back = boxes_from_letterbox(there, scale, pad, (h, w))
    np.testing.assert_allclose(back, boxes, atol=1e-4)


def test_letterbox_content_matches_boxes():
    """A box around a block stays around the same block after letterboxing."""
    sample = rect_sample()
    out = letterbox_sample(sample, (128, 128))
    for box, cls in zip(out["boxes"], out["labels"]):
        ys, xs = np.nonzero(out["mask"] == cls)
        np.testing.assert_allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1.5)


def test_augment_none_is_letterbox_only():
    sample = blocky_sample(1)
    transform = build_train_transform(NONE_CFG, (80, 80), "detection")
    out = transform(sample, np.random.default_rng(0))
    ref = letterbox_sample(sample, (80, 80))
    assert np.array_equal(out["image"], ref["image"]) and np.array_equal(out["mask"], ref["mask"])
    assert out["scale"] == ref["scale"] and out["pad"] == ref["pad"]
    assert build_train_transform(None, 80, "detection")(sample, np.random.default_rng(5))["image"].shape == (80, 80, 3)


@pytest.mark.parametrize("name", list(GEOMETRIC))
def test_image_and_mask_stay_aligned(name):
    cfg = {**NONE_CFG, **GEOMETRIC[name]}
    others = [blocky_sample(100 + k, h=64 + 16 * k, w=64) for k in range(4)]
    transform = build_train_transform(cfg, (96, 96), "detection")
    changed = 0
    for seed in range(6):
        sample = blocky_sample(seed)
        out = transform(sample, np.random.default_rng(seed), fetch=lambda i: others[i], length=len(others))
        assert out["image"].shape == (96, 96, 3) and out["mask"].shape == (96, 96)
        decoded, mask = decode(out["image"]), out["mask"].astype(np.int64)
        agree = (decoded == mask).mean()
        assert agree > 0.97, f"{name}: only {agree:.3f} of pixels agree"
        # sharper: interpolation only blurs block edges, so away from edges all must agree,
        # and the alignment must beat the mask shifted by one pixel either way
        interior = ndimage.maximum_filter(mask, 3) == ndimage.minimum_filter(mask, 3)
        assert (decoded == mask)[interior].mean() > 0.99
        for dy, dx in ((0, 1), (1, 0)):
            shifted = (decoded[dy:, dx:] == mask[:mask.shape[0] - dy, :mask.shape[1] - dx]).mean()
            back = (decoded[:decoded.shape[0] - dy, :decoded.shape[1] - dx] == mask[dy:, dx:]).mean()
            assert agree > max(shifted, back), f"{name}: a one-pixel shift matches better"
        changed += not np.array_equal(out["mask"], letterbox_sample(sample, (96, 96))["mask"])
    assert changed >= 3, f"{name} did not change the geometry"


@pytest.mark.parametrize("name", [n for n in GEOMETRIC if n != "mosaic"])
def test_boxes_follow_mask_regions(name):
    cfg = {**NONE_CFG, **GEOMETRIC[name]}
    transform = build_train_transform(cfg, (112, 112), "detection")
    kept = 0
    for seed in range(8):
        out = transform(rect_sample(), np.random.default_rng(seed))
        for box, cls in zip(out["boxes"], out["labels"]):
            ys, xs = np.nonzero(out["mask"] == cls)
            assert len(xs), f"{name}: box of class {cls} kept but its region left the image"
            region = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            # rotation by corners is slightly loose; nearest-neighbour edges move by a pixel
            tol = 3.0 + (0.1 * max(box[2] - box[0], box[3] - box[1]) if name in ("rotate", "all") else 0)
            np.testing.assert_allclose(box, region, atol=tol, err_msg=f"{name} seed {seed}")
            kept += 1
    assert kept >= 8


def test_tiny_and_outside_boxes_are_dropped():
    sample = rect_sample()
    transform = build_train_transform({**NONE_CFG, "translate": 0.45}, (112, 112), "detection")
    counts = [len(transform(sample, np.random.default_rng(s))["boxes"]) for s in range(20)]
    assert min(counts) < 4  # some box pushed out of the picture is dropped, not kept as a sliver


def test_segmentation_is_rectangular_and_ignores_mosaic():
    sample = blocky_sample(3, h=128, w=64)
    transform = build_train_transform({**NONE_CFG, "mosaic": 1.0}, 64, "segmentation")
    out = transform(sample, np.random.default_rng(0), fetch=lambda i: blocky_sample(9), length=4)
    assert out["image"].shape == (64, 32, 3)
    assert np.array_equal(out["mask"], letterbox_sample(sample, (64, 32))["mask"])


def test_same_rng_same_sample():
    cfg = {**NONE_CFG, **GEOMETRIC["all"], "hsv_h": 0.02, "hsv_s": 0.5, "hsv_v": 0.3, "contrast": 0.2}
    transform = build_train_transform(cfg, 96, "detection")
    a = transform(rect_sample(), np.random.default_rng([1, 2, 3]))
    b = transform(rect_sample(), np.random.default_rng([1, 2, 3]))
    c = transform(rect_sample(), np.random.default_rng([1, 2, 4]))
    for key in ("image", "mask", "boxes", "labels"):
        assert np.array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], c["image"])


def test_color_changes_only_the_image():
    colour = {"hsv_h": 0.05, "hsv_s": 0.5, "hsv_v": 0.4, "contrast": 0.3}
    sample = rect_sample()
    on = build_train_transform({**NONE_CFG, **colour}, 96, "detection")(sample, np.random.default_rng(0))
    off = build_train_transform({**NONE_CFG, **colour}, 96, "detection", color_on_cpu=False)(
        sample, np.random.default_rng(0))
    plain = letterbox_sample(sample, (96, 96))
    assert np.array_equal(off["image"], plain["image"])
    assert not np.array_equal(on["image"], plain["image"])
    assert np.array_equal(on["mask"], plain["mask"]) and np.array_equal(on["boxes"], plain["boxes"])


def test_color_jitter_gains():
    image = np.full((4, 4, 3), 100, np.uint8)
    image[..., 0] = 200
    rng = np.random.default_rng(0)
    same = color_jitter(image, rng, 0, 0, 0, 0)
    assert np.array_equal(same, image)
    brighter = [color_jitter(image, np.random.default_rng(s), 0, 0, 0.5, 0)[0, 0, 0] for s in range(10)]
    assert len(set(int(v) for v in brighter)) > 3


def test_color_matrix_semantics():
    import cv2

    red = np.array([[[200, 50, 50]]], np.uint8)
    hue = lambda px: int(cv2.cvtColor(px, cv2.COLOR_RGB2HSV)[0, 0, 0]) * 2  # degrees
    assert np.array_equal(cv2.transform(red, color_matrix(1.0, 1, 1, 1, 0)), red)  # full turn
    assert 100 <= hue(cv2.transform(red, color_matrix(1 / 3, 1, 1, 1, 0))) <= 140  # red -> green
    grey = cv2.transform(red, color_matrix(0, 0.0, 1, 1, 0))  # saturation 0
    assert np.ptp(grey.astype(int)) <= 1
    np.testing.assert_allclose(cv2.transform(red, color_matrix(0, 1, 0.5, 1, 0)), red // 2, atol=1)
    flat = cv2.transform(red, color_matrix(0, 1, 1, 0.0, 77.0))  # contrast 0: the mean luma
    assert (np.abs(flat.astype(int) - 77) <= 1).all()


def test_gpu_matches_cpu_color_maths():
    rng = np.random.default_rng(0)
    factors = rng.uniform(-0.4, 0.4, (5, 4))
    f = torch.from_numpy(factors)
    mats = color_matrices(f[:, 0], 1 + f[:, 1], 1 + f[:, 2], 1 + f[:, 3])
    for k, (dh, gs, gv, gc) in enumerate(factors):
        np.testing.assert_allclose(mats[k].numpy(), color_matrix(dh, 1 + gs, 1 + gv, 1 + gc, 0)[:, :3],
                                   atol=1e-5)


def test_gpu_color_jitter():
    x = torch.rand(4, 3, 8, 8) * 255
    assert torch.equal(gpu_color_jitter(x, 0, 0, 0, 0, max_value=255.0), x)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = gpu_color_jitter(x, 0.02, 0.5, 0.3, 0.2, g1, max_value=255.0)
    b = gpu_color_jitter(x, 0.02, 0.5, 0.3, 0.2, g2, max_value=255.0)
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 255 and not torch.allclose(a, x)
    # value gain alone scales the pixels of each image by one factor (grey stays grey)
    grey = torch.full((3, 3, 4, 4), 0.5)
    v = gpu_color_jitter(grey, 0, 0, 0.4, 0, torch.Generator().manual_seed(1))
    assert torch.allclose(v, v[:, :1].expand_as(v)) and not torch.allclose(v[0], v[1])
    with pytest.raises(ValueError):
        gpu_color_jitter(torch.rand(3, 8, 8), 0.1, 0, 0, 0)


def test_unknown_augment_option_fails_loudly():
    with pytest.raises(ValueError, match="hfilp"):
        build_train_transform({"hfilp": 0.5}, 64, "detection")
