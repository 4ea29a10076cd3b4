"""SegmentationTask: refusal without masks, evaluation at original resolution, overfitting."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from fashionvision.data.converted import ConvertedDataset
from fashionvision.errors import UserError
from fashionvision.families import family
from fashionvision.families.unet.task import UNetTask
from fashionvision.tasks.segmentation import SegmentationTask, logits_to_original

TINY = {"name": "unet", "encoder": "vanilla", "width": 0.25, "image_size": 128, "loss": "ce+dice"}


pytestmark = pytest.mark.usefixtures("two_torch_threads")


def test_registry_names_the_segmentation_task():
    assert family("unet") is UNetTask and issubclass(UNetTask, SegmentationTask)


def test_deepfashion_is_refused_at_once(tmp_path):
    # a converted DeepFashion folder: boxes only, no mask_classes.txt, no masks/
    (tmp_path / "classes.txt").write_text("Anorak\nBlazer\n")
    (tmp_path / "train.txt").write_text("img/a.jpg 1,1,5,5,0\n")
    (tmp_path / "metadata.json").write_text(json.dumps({"source_name": "deepfashion", "image_root": "."}))
    data = ConvertedDataset.open(tmp_path)
    with pytest.raises(UserError, match="deepfashion.*no segmentation masks"):
        UNetTask({"name": "unet", "encoder": "vanilla"}, data)


def test_deepfashion_is_refused_from_the_train_command(tmp_path, monkeypatch):
    """`fashion-train model=unet dataset=deepfashion` stops before any model is built."""
    from fashionvision.cli._hydra import compose
    from fashionvision.cli.train import check_model_fits_dataset

    (tmp_path / "classes.txt").write_text("Anorak\n")
    (tmp_path / "train.txt").write_text("img/a.jpg 1,1,5,5,0\n")
    (tmp_path / "metadata.json").write_text(json.dumps({"source_name": "deepfashion", "image_root": "."}))
    cfg = compose("train", ["model=unet", "dataset=deepfashion", f"dataset.path={tmp_path}"])
    with pytest.raises(UserError, match="no segmentation masks"):
        check_model_fits_dataset(cfg)


def test_logits_to_original_undoes_the_letterbox():
    # a 10x6 (h x w) image scaled by 2 into a 32x32 canvas at pad (left=10, top=6)
    c, h, w, scale, left, top = 3, 10, 6, 2.0, 10, 6
    logits = torch.full((c, 32, 32), -5.0)
    logits[1, top:top + 20, left:left + 12] = 5.0   # the image region says class 1
    out = logits_to_original(logits, {"orig_size": (h, w), "scale": scale, "pad": (left, top)})
    assert out.shape == (c, h, w) and out.dtype == torch.float32
    assert (out.argmax(0) == 1).all()


def test_describe_lets_inference_rebuild_the_task(hand_converted_ccp):
    data = ConvertedDataset.open(hand_converted_ccp)
    task = UNetTask(TINY, data)
    described = task.describe()
    assert described["classes"] == described["mask_classes"] == data.mask_classes
    rebuilt = UNetTask(TINY, ConvertedDataset.from_classes(described["classes"],
                                                                   described["mask_classes"]))
    assert rebuilt.class_names == task.class_names and len(task.class_names) == 59


def _train(task: SegmentationTask, batch: dict, steps: int, lr: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = task.build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for _ in range(steps):
        losses = task.compute_losses(model, batch)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
        schedule.step()
    return model


@pytest.fixture(scope="module")
def ccp_batch(hand_converted_ccp):
    """The 4 real CCP images of the hand-converted folder as one batch at long side 128."""
    data = ConvertedDataset.open(hand_converted_ccp)
    task = UNetTask(TINY, data)
    dataset = task.build_dataset("train", train=False)
    return task, task.collate([dataset[i] for i in range(len(dataset))])


def test_evaluate_report_predict_and_draw(ccp_batch, tmp_path):
    """The whole evaluation path on real images after two steps (fast; no accuracy claim)."""
    task, batch = ccp_batch
    assert batch["images"].shape == (4, 3, 128, 96) and batch["masks"].shape == (4, 128, 96)
    model = _train(task, batch, steps=2, lr=1e-3)
    task.eval_options["save_masks"] = True
    metrics = task.evaluate(model, [batch], torch.device("cpu"), output_dir=tmp_path)
    assert {"miou", "miou_all", "pixel_acc", "mean_class_acc", "fwiou"} <= set(metrics)
    assert model.training  # evaluate restores the mode it found
    report = json.loads((tmp_path / "metrics.json").read_text())
    # every pixel of the original images (CCP photos are 550 wide, 810-832 high), none of the padding
    assert report["pixels"] == sum(h * w for h, w in (m["orig_size"] for m in batch["metas"]))
    assert len(report["per_class"]) == 59 and report["classes_present"] >= 10
    assert (tmp_path / "confusion_matrix.png").is_file() and (tmp_path / "per_class_iou.png").is_file()
    # predicted masks: palette PNGs at original size whose values are class indices
    from PIL import Image

    saved = sorted((tmp_path / "masks").rglob("*.png"))
    assert len(saved) == 4
    mask = Image.open(saved[0])
    h, w = batch["metas"][0]["orig_size"]
    assert mask.mode == "P" and mask.size == (w, h)  # original size (CCP: 550 x 810-832)
    model.eval()
    # the same batch as evaluate: oneDNN may pick other kernels for another batch size, and after
    # two steps a near-tie pixel can then flip its argmax (1 of 457,600 on an AVX2-only EPYC)
    prediction = task.predict(model, batch["images"], batch["metas"])[0]
    assert np.array_equal(np.asarray(mask), prediction["mask"].numpy())
    assert prediction["confidence"].shape == (h, w)  # the probability of each pixel's class
    assert bool(((prediction["confidence"] >= 1 / 59 - 1e-6) & (prediction["confidence"] <= 1)).all())
    drawn = task.draw(np.zeros((h, w, 3), np.uint8), prediction)
    assert drawn.shape == (h, w, 3)


@pytest.mark.slow
def test_tiny_vanilla_unet_overfits_four_ccp_images(ccp_batch):
    """A direct training loop (no engine) on 4 real CCP images; mIoU measured by the task's
    own evaluation, at the images' original 550x832 resolution against the original masks.
    About 3 minutes on 2 cores (marked slow)."""
    task, batch = ccp_batch
    started = time.perf_counter()
    model = _train(task, batch, steps=200, lr=5e-3)
    metrics = task.evaluate(model, [batch], torch.device("cpu"))
    print(f"overfit: {time.perf_counter() - started:.1f}s, {metrics}")
    assert metrics["miou"] > 0.5, metrics
    assert metrics["pixel_acc"] > metrics["miou"]
