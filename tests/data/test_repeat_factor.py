"""Repeat-factor sampling of rare classes (``trainer.repeat_threshold``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fashionvision.data.repeat_factor import RepeatedDataset, repeat_counts, repeat_factors
from fashionvision.errors import UserError


def test_factors_follow_the_lvis_rule():
    """Class 2 is in 1 of 5 images: with t = 0.5 its images repeat sqrt(0.5 / 0.2) times;
    classes in at least half the images, and images without classes, are left alone."""
    factors = repeat_factors([[0, 1], [0, 1, 2, 2], [0, 1], [0, 1], []], 0.5)
    np.testing.assert_allclose(factors, [1.0, np.sqrt(0.5 / 0.2), 1.0, 1.0, 1.0])
    # an image takes the largest factor of its classes
    factors = repeat_factors([[0, 3], [0, 1], [0, 1, 3], [0], [0, 1]], 0.8)
    np.testing.assert_allclose(factors[[0, 2]], np.sqrt(0.8 / 0.4))
    np.testing.assert_allclose(factors[[1, 4]], np.sqrt(0.8 / 0.6))


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_bad_threshold_is_refused(bad):
    with pytest.raises(UserError, match="repeat threshold"):
        repeat_factors([[0]], bad)


def test_counts_round_at_random_from_the_seed_and_keep_the_mean():
    factors = np.full(20_000, 1.3)
    counts = repeat_counts(factors, seed=3)
    assert set(np.unique(counts)) == {1, 2}
    assert abs(counts.mean() - 1.3) < 0.02
    np.testing.assert_array_equal(counts, repeat_counts(factors, seed=3))
    assert not np.array_equal(counts, repeat_counts(factors, seed=4))
    np.testing.assert_array_equal(repeat_counts(np.array([1.0, 2.0, 3.0]), 0), [1, 2, 3])


def test_copies_of_an_image_are_augmented_differently(tiny_ccp: Path):
    """Copy 0 is the unrepeated item; further copies draw their own crop and flip."""
    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.data.dataset import FashionDataset

    data = ConvertedDataset.open(tiny_ccp)
    dataset = FashionDataset(data, "train", 128, True, {"crop_size": [48, 48], "hflip": 0.5},
                             task="segmentation")
    counts = np.ones(len(dataset), dtype=np.int64)
    counts[1] = 4
    repeated = RepeatedDataset(dataset, counts)
    assert len(repeated) == len(dataset) + 3
    items = [repeated[i] for i in range(len(repeated))]
    assert [item["meta"]["image_id"] for item in items] == [0, 1, 1, 1, 1] + list(range(2, len(dataset)))
    assert torch.equal(items[0]["image"], dataset[0]["image"])
    assert torch.equal(items[1]["image"], dataset[1]["image"])
    copies = [items[k]["mask"] for k in range(1, 5)]
    assert any(not torch.equal(copies[0], other) for other in copies[1:])
    repeated.set_epoch(1)  # the wrapped dataset's methods and state come through
    assert dataset.epoch == 1 and repeated.bad_images == 0


def test_wrong_counts_are_refused(tiny_ccp: Path):
    with pytest.raises(ValueError, match="repeat counts"):
        RepeatedDataset([1, 2, 3], np.ones(2))
    with pytest.raises(ValueError, match="at least once"):
        RepeatedDataset([1, 2], np.array([1, 0]))


def test_segmentation_classes_come_from_the_masks(tiny_ccp: Path):
    """The U-Net task reads each training mask's classes (not the boxes): background and skin
    are in every CCP photo, so they never repeat an image."""
    from PIL import Image

    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.families import build_task

    data = ConvertedDataset.open(tiny_ccp)
    task = build_task({"name": "unet", "encoder": "vanilla", "width": 0.125, "image_size": 64}, data)
    classes = task.image_classes("train")
    records = data.records("train")
    assert len(classes) == len(records)
    for found, record in zip(classes, records):
        mask = np.asarray(Image.open(data.mask_path(record)))
        np.testing.assert_array_equal(found, np.unique(mask[mask != 255]))
    skin = data.mask_classes.index("skin")
    assert all(0 in c and skin in c for c in classes)
