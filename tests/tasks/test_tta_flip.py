"""Flip test-time augmentation of the segmenter (``model.tta_flip``): the decision on a
photo does not depend on which way it faces, the switch travels with a checkpoint, and
``fashion-eval`` / ``fashion-predict`` can turn it on or off."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fashionvision.data.converted import ConvertedDataset
from fashionvision.errors import UserError
from fashionvision.families import build_task

TINY_UNET = {"name": "unet", "encoder": "vanilla", "width": 0.125, "image_size": 64}


class LeftLeaning(nn.Module):
    """A 'network' that is not mirror-symmetric: its logits depend on the columns to the left."""

    def __init__(self, classes: int):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, kernel_size=(1, 5), padding=(0, 2))
        with torch.no_grad():
            self.conv.weight[..., 3:] = 0  # looks only left

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images)


def test_flip_tta_makes_the_logits_mirror_symmetric(tiny_ccp: Path):
    data = ConvertedDataset.open(tiny_ccp)
    plain = build_task(TINY_UNET, data)
    flipped = build_task({**TINY_UNET, "tta_flip": True}, data)
    model = LeftLeaning(len(plain.class_names)).eval()
    images = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        once = plain.forward_logits(model, images)
        tta = flipped.forward_logits(model, images)
        tta_of_mirror = flipped.forward_logits(model, images.flip(-1))
    assert not torch.allclose(plain.forward_logits(model, images.flip(-1)).flip(-1), once, atol=1e-4)
    torch.testing.assert_close(tta_of_mirror.flip(-1), tta)  # the mirror photo gets the mirror decision
    torch.testing.assert_close(tta, (once + model(images.flip(-1)).flip(-1)) / 2)


def test_flip_tta_predicts_full_size_masks_on_real_photos(tiny_ccp: Path, one_torch_thread):
    """Through predict (letterbox, crop, resize to the original size) on CCP photos: same shapes
    as without it, and the decision changes only where the two views disagree."""
    from fashionvision.engine.build import build_loader

    data = ConvertedDataset.open(tiny_ccp)
    plain = build_task(TINY_UNET, data)
    model = plain.build_model().eval()
    flipped = build_task({**TINY_UNET, "tta_flip": True}, data)
    batch = next(iter(build_loader(plain.build_dataset("test", train=False), 2, 0, plain.collate, pin_memory=False)))
    one = plain.predict(model, batch["images"], batch["metas"])
    two = flipped.predict(model, batch["images"], batch["metas"])
    for a, b, meta in zip(one, two, batch["metas"]):
        assert a["mask"].shape == b["mask"].shape == tuple(meta["orig_size"])
        assert b["confidence"].shape == a["confidence"].shape


def test_tta_flip_travels_with_a_checkpoint_and_can_be_overridden(tiny_runs: dict, tiny_ccp: Path, tmp_path: Path,
                                                                   monkeypatch):
    from fashionvision.cli.eval import evaluate
    from fashionvision.inference.loading import load_for_inference
    from fashionvision.tasks.segmentation import SegmentationTask

    seen = []
    original = SegmentationTask.forward_logits

    def spy(self, model, inputs):
        seen.append(self.cfg.tta_flip)
        return original(self, model, inputs)

    monkeypatch.setattr(SegmentationTask, "forward_logits", spy)

    task, _, _ = load_for_inference(tiny_runs["segmenter"])
    assert task.cfg.tta_flip is False
    task.set_tta(True)
    assert task.cfg.tta_flip is True
    task.set_tta(None)  # None keeps the current setting
    assert task.cfg.tta_flip is True
    base = {"ckpt": str(tiny_runs["segmenter"]), "split": "test", "dataset": {"path": str(tiny_ccp)},
            "device": "cpu", "workers": 0, "batch_size": 2}
    plain = evaluate({**base, "tta_flip": None}, tmp_path / "plain")
    assert seen and not any(seen)  # the checkpoint's setting (off)
    seen.clear()
    tta = evaluate({**base, "tta_flip": True}, tmp_path / "tta")
    assert seen and all(seen)
    assert set(plain) == set(tta) and 0 <= tta["miou"] <= 1
    detector, _, _ = load_for_inference(tiny_runs["detector"])
    detector.set_tta(None)
    with pytest.raises(UserError, match="tta_flip is for segmenters"):
        detector.set_tta(True)
