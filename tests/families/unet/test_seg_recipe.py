"""The CPU segmentation recipe's pieces, on real CCP images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashionvision.data.cache import load_resized
from fashionvision.data.transforms import build_train_transform, crop_window, letterbox_sample


def ccp_sample(shared_data: Path, stem: str = "0001", long_side: int = 256) -> dict:
    """A real CCP-416 photo and its mask from the conversion (mask read from the .mat)."""
    from tests.conftest import ccp_boxes_from_mat

    mask, _ = ccp_boxes_from_mat(shared_data / "ccp-416" / "annotations" / "pixel-level" / f"{stem}.mat")
    import cv2

    from fashionvision.data.image_io import read_image

    image = read_image(shared_data / "ccp-416" / "photos" / f"{stem}.jpg")
    scale = long_side / max(image.shape[:2])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return {"image": cv2.resize(image, size, interpolation=cv2.INTER_AREA),
            "mask": cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST),
            "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}


def test_crop_size_takes_a_window_at_the_same_scale(shared_data: Path):
    sample = ccp_sample(shared_data)
    transform = build_train_transform({"crop_size": [128, 96]}, 256, "segmentation")
    out = transform(sample, np.random.default_rng(7))
    assert out["image"].shape == (128, 96, 3) and out["mask"].shape == (128, 96)
    full = letterbox_sample(sample, transform.shape_for(*sample["image"].shape[:2]))
    (top, left), (h, w) = crop_window(transform.shape_for(*sample["image"].shape[:2]), (128, 96),
                                      np.random.default_rng(7))
    # a pure translation: pixel-exact copies of the letterboxed image and mask
    np.testing.assert_array_equal(out["image"], full["image"][top:top + h, left:left + w])
    np.testing.assert_array_equal(out["mask"], full["mask"][top:top + h, left:left + w])


def test_crop_size_with_flip_keeps_image_and_mask_aligned(shared_data: Path):
    sample = ccp_sample(shared_data)
    transform = build_train_transform({"crop_size": 128, "hflip": 1.0}, 256, "segmentation")
    full = letterbox_sample(sample, transform.shape_for(*sample["image"].shape[:2]))
    flipped = {"image": full["image"][:, ::-1], "mask": full["mask"][:, ::-1]}
    for seed in range(5):
        out = transform(sample, np.random.default_rng(seed))
        assert out["image"].shape[:2] == (128, 128)
        rng = np.random.default_rng(seed)
        rng.random()  # the flip draw
        (top, left), (h, w) = crop_window(full["image"].shape[:2], (128, 128), rng)
        np.testing.assert_array_equal(out["mask"], flipped["mask"][top:top + h, left:left + w])
        np.testing.assert_array_equal(out["image"], flipped["image"][top:top + h, left:left + w])


def test_crop_larger_than_image_trains_whole_image():
    (top, left), shape = crop_window((64, 48), (128, 128), np.random.default_rng(0))
    assert (top, left, shape) == (0, 0, (64, 48))


@pytest.mark.parametrize("bad", [0, [128], [-1, 64], "big"])
def test_bad_crop_size_is_refused(bad):
    with pytest.raises(ValueError, match="crop_size"):
        build_train_transform({"crop_size": bad}, 256, "segmentation")


def test_crop_max_ratio_prefers_windows_with_garments(shared_data: Path):
    """With crop_max_ratio the patches hold more non-dominant pixels than uniform windows."""
    sample = ccp_sample(shared_data)
    plain = build_train_transform({"crop_size": 64}, 256, "segmentation")
    balanced = build_train_transform({"crop_size": 64, "crop_max_ratio": 0.75}, 256, "segmentation")

    def top_share(out: dict) -> float:
        values = out["mask"][out["mask"] != 255]
        return np.bincount(values).max() / max(values.size, 1)

    shares_plain = [top_share(plain(sample, np.random.default_rng(s))) for s in range(40)]
    shares_balanced = [top_share(balanced(sample, np.random.default_rng(s))) for s in range(40)]
    assert np.mean(shares_balanced) < np.mean(shares_plain) - 0.05
    assert np.mean(np.array(shares_balanced) <= 0.75) > 0.8
    # the chosen window is still an exact copy of the letterboxed image (image and mask aligned)
    out = balanced(sample, np.random.default_rng(3))
    full = letterbox_sample(sample, balanced.shape_for(*sample["image"].shape[:2]))
    top, left = next((t, l) for t in range(full["mask"].shape[0] - 63) for l in range(full["mask"].shape[1] - 63)
                     if np.array_equal(full["image"][t:t + 64, l:l + 64], out["image"]))
    np.testing.assert_array_equal(full["mask"][top:top + 64, left:left + 64], out["mask"])


def test_bad_crop_max_ratio_is_refused():
    with pytest.raises(ValueError, match="crop_max_ratio"):
        build_train_transform({"crop_size": 64, "crop_max_ratio": 1.5}, 256, "segmentation")


def test_cpu_experiment_config_trains_patches_and_evaluates_whole_images(shared_data: Path):
    """experiment=unet_cpu_10m: 128x128 patches in training, whole 256x192 images in evaluation,
    at most as many loader workers as a 2-core machine has (the count is picked automatically)."""
    from fashionvision.cli._hydra import compose
    from fashionvision.data.transforms import build_train_transform

    cfg = compose("train", ["experiment=unet_cpu_10m"])
    assert cfg["model"]["encoder"] == "mobilenet_v2" and cfg["trainer"]["device"] == "cpu"
    assert cfg["trainer"]["workers"] <= 2 and cfg["trainer"]["max_time"] == "10m"
    sample = ccp_sample(shared_data)
    train = build_train_transform(cfg["augment"], cfg["model"]["image_size"], "segmentation")
    assert train(sample, np.random.default_rng(0))["image"].shape[:2] == (128, 128)
    evaluation = build_train_transform(None, cfg["model"]["image_size"], "segmentation")
    assert evaluation(sample, np.random.default_rng(0))["image"].shape[:2] == (256, 192)


def test_crop_focus_centres_patches_on_each_garment_alike(shared_data: Path):
    """crop_focus=1: every foreground class of the photo is in about as many patches, the
    smallest included, where uniform windows rarely show it; image and mask stay aligned."""
    sample = ccp_sample(shared_data)
    plain = build_train_transform({"crop_size": 32}, 256, "segmentation")
    focus = build_train_transform({"crop_size": 32, "crop_focus": 1.0}, 256, "segmentation")
    full = letterbox_sample(sample, focus.shape_for(*sample["image"].shape[:2]))
    counts = np.bincount(full["mask"][full["mask"] != 255])
    garments = [c for c in np.flatnonzero(counts) if c != 0]
    smallest = min(garments, key=lambda c: counts[c])

    def seen(transform, cls: int) -> float:
        return np.mean([(transform(sample, np.random.default_rng(s))["mask"] == cls).any() for s in range(200)])

    assert seen(focus, smallest) > seen(plain, smallest) + 0.1
    # each class is drawn with probability 1 / len(garments) (fixed seeds: deterministic)
    assert all(seen(focus, c) >= 0.6 / len(garments) for c in garments)
    out = focus(sample, np.random.default_rng(5))
    assert out["image"].shape[:2] == (32, 32)
    top, left = next((t, l) for t in range(full["mask"].shape[0] - 31) for l in range(full["mask"].shape[1] - 31)
                     if np.array_equal(full["image"][t:t + 32, l:l + 32], out["image"]))
    np.testing.assert_array_equal(full["mask"][top:top + 32, left:left + 32], out["mask"])


def test_crop_focus_without_garments_keeps_a_uniform_window():
    sample = {"image": np.zeros((100, 80, 3), np.uint8), "mask": np.zeros((100, 80), np.uint8),
              "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}
    out = build_train_transform({"crop_size": 32, "crop_focus": 1.0}, 96, "segmentation")(
        sample, np.random.default_rng(0))
    assert out["mask"].shape == (32, 32) and not out["mask"].any()


def test_close_crop_trains_whole_images_at_the_end(shared_data: Path):
    sample = ccp_sample(shared_data)
    transform = build_train_transform({"crop_size": 128, "close_crop": 0.2}, 256, "segmentation")
    assert transform(sample, np.random.default_rng(0), progress=0.79)["image"].shape[:2] == (128, 128)
    assert transform(sample, np.random.default_rng(0), progress=0.8)["image"].shape[:2] == (256, 192)


@pytest.mark.parametrize("key", ["crop_focus", "close_crop"])
def test_bad_crop_fractions_are_refused(key):
    with pytest.raises(ValueError, match=key):
        build_train_transform({"crop_size": 64, key: 1.5}, 256, "segmentation")


def test_ohem_averages_only_the_hardest_pixels():
    import torch

    from fashionvision.families.unet.losses import SegmentationLoss, cross_entropy

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 8, 8, requires_grad=True)
    target = torch.randint(0, 5, (2, 8, 8))
    target[0, :2] = 255  # padding counts for nothing
    per_pixel = torch.nn.functional.cross_entropy(logits, target, ignore_index=255, reduction="none")
    valid = per_pixel[target != 255]
    hardest = valid.sort(descending=True).values[:round(0.25 * valid.numel())].mean()
    ohem = SegmentationLoss("ce", ohem=0.25)(logits, target)["ce"]
    torch.testing.assert_close(ohem, hardest)
    assert ohem > cross_entropy(logits, target)
    torch.testing.assert_close(SegmentationLoss("ce", ohem=1.0)(logits, target)["ce"], cross_entropy(logits, target))
    ohem.backward()
    assert (logits.grad.abs().sum(dim=1) > 0).sum() == round(0.25 * valid.numel())  # only those pixels learn
    everything_ignored = torch.full_like(target, 255)
    assert SegmentationLoss("ce", ohem=0.25)(logits, everything_ignored)["ce"].item() == 0.0


def test_bad_ohem_share_is_refused():
    from fashionvision.errors import UserError
    from fashionvision.families.unet.config import UNetConfig

    with pytest.raises(UserError, match="model.ohem"):
        UNetConfig(ohem=0.0).check()
    with pytest.raises(UserError, match="model.lovasz_pixels"):
        UNetConfig(lovasz_pixels=0).check()


def test_lovasz_term_is_the_libraries_and_ignores_padding():
    """model.loss=ce+lovasz adds segmentation-models-pytorch's Lovasz-softmax: near 0 for a
    confident right answer, large for a wrong one, and padding (255) counts for nothing."""
    import torch

    from fashionvision.families.unet.losses import SegmentationLoss

    criterion = SegmentationLoss("ce+lovasz")
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2] = 2
    right = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 20
    wrong = torch.nn.functional.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).float() * 20
    assert set(criterion(right, target)) == {"ce", "lovasz"}
    assert criterion(right, target)["lovasz"] < 1e-3 < 0.9 < criterion(wrong, target)["lovasz"]
    padded = target.clone()
    padded[0, 3] = 255
    mixed = right.clone()
    mixed[0, :, 3] = wrong[0, :, 3]  # wrong only where the target is padding
    assert criterion(mixed, padded)["lovasz"] < 1e-3
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    criterion(logits, padded.expand(2, 4, 4))["lovasz"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_lovasz_sees_a_random_sample_of_the_valid_pixels():
    """model.lovasz_pixels: the term sorts only that many pixels, never padding ones, each with
    its own logits; null (or a batch with fewer valid pixels) keeps every pixel."""
    import torch

    from fashionvision.families.unet.losses import sample_pixels

    logits = torch.randn(2, 5, 6, 7)
    target = torch.randint(0, 5, (2, 6, 7))
    target[1, :3] = 255
    picked, labels = sample_pixels(logits, target, 20)
    assert picked.shape == (1, 5, 1, 20) and labels.shape == (1, 1, 20)
    assert (labels != 255).all()
    # every sampled column is the logits vector of a pixel with that label
    flat = logits.permute(0, 2, 3, 1).reshape(-1, 5)
    for k in range(20):
        matches = (flat == picked[0, :, 0, k]).all(1).nonzero().squeeze(1)
        assert matches.numel() == 1 and target.reshape(-1)[matches[0]] == labels[0, 0, k]
    everything, all_labels = sample_pixels(logits, target, 10_000)
    assert all_labels.numel() == int((target != 255).sum())
    assert sample_pixels(logits, target, None)[0] is logits


def test_label_smoothing_matches_the_smoothed_target_and_ignores_padding():
    """model.label_smoothing=e: each valid pixel's CE target is (1 - e) one-hot + e / classes,
    computed independently here; padding (255) stays out; 0 is plain CE; ohem is refused with it."""
    import torch

    from fashionvision.errors import UserError
    from fashionvision.families.unet.config import UNetConfig
    from fashionvision.families.unet.losses import SegmentationLoss, cross_entropy

    torch.manual_seed(0)
    classes, eps = 5, 0.1
    logits = torch.randn(2, classes, 6, 6)
    target = torch.randint(0, classes, (2, 6, 6))
    target[1, :3] = 255
    valid = target != 255
    soft = torch.nn.functional.one_hot(target.clamp(max=classes - 1), classes).permute(0, 3, 1, 2).float()
    soft = soft * (1 - eps) + eps / classes
    per_pixel = -(soft * logits.log_softmax(dim=1)).sum(dim=1)
    expected = per_pixel[valid].mean()
    smoothed = SegmentationLoss("ce", label_smoothing=eps)(logits, target)["ce"]
    torch.testing.assert_close(smoothed, expected)
    assert not torch.allclose(smoothed, cross_entropy(logits, target))
    torch.testing.assert_close(SegmentationLoss("ce", label_smoothing=0.0)(logits, target)["ce"],
                               cross_entropy(logits, target))
    with pytest.raises(UserError, match="label_smoothing"):
        SegmentationLoss("ce", ohem=0.25, label_smoothing=0.1)
    with pytest.raises(UserError, match="model.label_smoothing"):
        UNetConfig(label_smoothing=1.0).check()
