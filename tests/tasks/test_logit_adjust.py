"""Logit adjustment of the segmenter: the loss option and the decision rule, on CCP masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fashionvision.data.converted import ConvertedDataset
from fashionvision.errors import UserError
from fashionvision.families import build_task, rebuild_task
from fashionvision.families.unet.losses import SegmentationLoss
from fashionvision.tasks.class_prior import log_prior

TINY_UNET = {"name": "unet", "encoder": "vanilla", "width": 0.125, "image_size": 64}


class ConstantLogits(nn.Module):
    """A 'network' whose logits are the same at every pixel: the decision rule alone decides."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        return self.logits.view(1, -1, 1, 1).expand(b, -1, h, w)


def training_share(data: ConvertedDataset) -> np.ndarray:
    """Each class's share of the training pixels, counted here independently of the package."""
    counts = np.zeros(len(data.mask_classes), dtype=np.int64)
    for record in data.records("train"):
        mask = np.asarray(Image.open(data.mask_path(record))).ravel()
        counts += np.bincount(mask[mask != 255], minlength=len(counts))[:len(counts)]
    return counts


def test_log_prior_is_smoothed_and_normalised():
    prior = log_prior(np.array([9, 1, 0]))
    assert torch.exp(prior).sum().item() == pytest.approx(1.0)
    assert torch.isfinite(prior).all()
    assert prior[0] > prior[1] > prior[2]  # a class never seen is the rarest, not minus infinity
    assert prior.tolist() == pytest.approx(np.log(np.array([10, 2, 1]) / 13).tolist())


def test_logit_adjusted_loss_is_cross_entropy_on_shifted_logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 0] = 255  # padding stays ignored
    shift = log_prior(np.array([1000, 10, 1]))
    loss = SegmentationLoss("ce", logit_shift=shift)(logits, target)["ce"]
    expected = F.cross_entropy(logits + shift.view(1, -1, 1, 1), target, ignore_index=255)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # a pixel of the rarest class costs more than without the shift: it must win by a margin
    rare = torch.full((1, 1, 1), 2)
    flat = torch.zeros(1, 3, 1, 1)
    assert (SegmentationLoss("ce", logit_shift=shift)(flat, rare)["ce"]
            > SegmentationLoss("ce")(flat, rare)["ce"])


def test_bad_values_are_refused(tiny_ccp: Path):
    data = ConvertedDataset.open(tiny_ccp)
    with pytest.raises(UserError, match="model.logit_adjust must be in"):
        build_task({**TINY_UNET, "logit_adjust": -0.5}, data)
    with pytest.raises(UserError, match="model.logit_adjust_loss must be in"):
        build_task({**TINY_UNET, "logit_adjust_loss": 3.0}, data)


def test_decision_bias_comes_from_the_training_masks(tiny_ccp: Path):
    data = ConvertedDataset.open(tiny_ccp)
    assert build_task(TINY_UNET, data).decision_bias() is None  # off by default
    bias = build_task({**TINY_UNET, "logit_adjust": 0.5}, data).decision_bias()
    counts = training_share(data)
    seen = counts > 0  # the classes never seen: test_classes_never_seen_in_training_are_not_lifted
    expected = -0.5 * np.log((counts + 1.0) / (counts + 1.0).sum())
    np.testing.assert_allclose(bias.numpy()[seen], expected[seen], rtol=1e-5)
    skin = data.mask_classes.index("skin")
    assert bias[0] < bias[skin]  # background, the commonest class, is pushed down the most


def test_adjusted_argmax_moves_tied_pixels_to_the_rarer_class(tiny_ccp: Path):
    data = ConvertedDataset.open(tiny_ccp)
    skin = data.mask_classes.index("skin")
    logits = torch.full((len(data.mask_classes),), -10.0)
    logits[0] = logits[skin] = 1.0  # background and skin tie everywhere
    model = ConstantLogits(logits)
    plain, adjusted = build_task(TINY_UNET, data), build_task({**TINY_UNET, "logit_adjust": 0.25}, data)
    dataset = plain.build_dataset("test", train=False)
    batch = plain.collate([dataset[0], dataset[1]])
    for kind, task in (("plain", plain), ("adjusted", adjusted)):
        masks = [p["mask"] for p in task.predict(model, batch["images"], batch["metas"])]
        expected = 0 if kind == "plain" else skin  # the tie goes to the first class, or the rarer
        assert all(m.shape == tuple(meta["orig_size"]) for m, meta in zip(masks, batch["metas"]))
        assert all(bool((m == expected).all()) for m in masks), kind


def test_the_bias_travels_with_the_model_without_its_data(tiny_ccp: Path, tmp_path: Path):
    """A checkpoint or export stores the biases (describe); a task rebuilt from them without the
    dataset predicts what the training task predicts, and never reads a mask."""
    data = ConvertedDataset.open(tiny_ccp)
    task = build_task({**TINY_UNET, "logit_adjust": 0.5}, data)
    described = task.describe()
    assert described["decision_bias"] == pytest.approx(task.decision_bias().tolist(), abs=1e-5)
    elsewhere = rebuild_task({**TINY_UNET, "logit_adjust": 0.5}, described, source="test")
    with pytest.raises(UserError):
        elsewhere.data.records("train")  # no data here: the stored values are all it has
    np.testing.assert_allclose(elsewhere.decision_bias().numpy(), task.decision_bias().numpy(), atol=1e-5)
    assert "decision_bias" not in build_task(TINY_UNET, data).describe()
    short = {**described, "decision_bias": described["decision_bias"][:3]}
    with pytest.raises(UserError, match="decision_bias has 3 values"):
        rebuild_task({**TINY_UNET, "logit_adjust": 0.5}, short, source="test")


def test_a_trained_checkpoint_predicts_with_its_biases(tiny_ccp: Path, tmp_path: Path, one_torch_thread):
    from fashionvision.cli._hydra import compose
    from fashionvision.engine.trainer import Trainer
    from fashionvision.inference.loading import load_for_inference

    cfg = compose("train", ["model=unet", "model.encoder=vanilla", "model.width=0.125", "model.image_size=64",
                            "model.logit_adjust=0.5", "model.logit_adjust_loss=0.5", "trainer=smoke",
                            "trainer.epochs=1", "trainer.limit_images=2", f"dataset.path={tiny_ccp}"])
    task = build_task(cfg["model"], ConvertedDataset.open(tiny_ccp), cfg["augment"], cfg["anchors"])
    Trainer(task, cfg["trainer"], tmp_path / "run", cfg).fit()
    loaded, _, _ = load_for_inference(tmp_path / "run")  # no dataset path: the checkpoint's own values
    np.testing.assert_allclose(loaded.decision_bias().numpy(), task.decision_bias().numpy(), atol=1e-5)


@pytest.mark.slow  # several trainings and evaluations: tens of seconds on 2 cores
def test_fashion_eval_multirun_scores_each_tau_and_flip(tiny_runs: dict, tiny_ccp: Path, tmp_path: Path,
                                                        monkeypatch, capsys, one_torch_thread):
    """`fashion-eval -m model.logit_adjust=0,1.5 tta_flip=false,true` (what scripts/sweep_logit_adjust.py
    and score_tta_flip.py did): each job's mIoU is the task's with those decode-time options."""
    import json
    import sys

    from fashionvision.cli import eval as eval_cli
    from fashionvision.engine.build import build_loader
    from fashionvision.inference.loading import load_for_inference

    sweep = tmp_path / "sweep"
    monkeypatch.setattr(sys, "argv", ["fashion-eval", "-m", f"ckpt={tiny_runs['segmenter']}", f"dataset.path={tiny_ccp}",
                                      "split=val", "device=cpu", "workers=0", "model.logit_adjust=0,1.5",
                                      "tta_flip=false,true", f"hydra.sweep.dir={sweep}"])
    with pytest.raises(SystemExit) as info:
        eval_cli.main()
    assert info.value.code == 0, capsys.readouterr()
    task, model, _ = load_for_inference(tiny_runs["segmenter"], dataset_path=str(tiny_ccp))
    loader = build_loader(task.build_dataset("val", train=False), 8, 0, task.collate, pin_memory=False)
    jobs = json.loads((sweep / "summary.json").read_text())
    assert len(jobs) == 4 and all(j["status"] == "ok" and j["metric"] == "miou" for j in jobs)
    for j in jobs:
        tau = float(next(o for o in j["overrides"] if o.startswith("model.logit_adjust=")).split("=")[1])
        flip = "tta_flip=true" in [o.lower() for o in j["overrides"]]
        expected = build_task({**task.model_cfg, "logit_adjust": tau, "tta_flip": flip}, task.data)
        assert j["value"] == pytest.approx(expected.evaluate(model, loader, torch.device("cpu"))["miou"], abs=1e-4)
        written = json.loads((Path(j["folder"]) / "metrics.json").read_text())
        assert written["miou"] == pytest.approx(j["value"])


def test_fashion_eval_refuses_logit_adjust_for_a_detector(tiny_runs: dict):
    from fashionvision.errors import UserError
    from fashionvision.inference.loading import load_for_inference

    detector, _, _ = load_for_inference(tiny_runs["detector"])
    detector.set_logit_adjust(None)
    with pytest.raises(UserError, match="model.logit_adjust is for segmenters"):
        detector.set_logit_adjust(0.25)


def test_classes_never_seen_in_training_are_not_lifted(tiny_ccp: Path):
    """The add-one prior would give a class with no training pixel the largest lift of all; the
    network never learned it, so it gets the commonest class's bias instead."""
    data = ConvertedDataset.open(tiny_ccp)
    counts = training_share(data)
    unseen, seen = np.where(counts == 0)[0], np.where(counts > 0)[0]
    assert len(unseen) and len(seen)  # 6 CCP photos show only some of the 59 classes
    bias = build_task({**TINY_UNET, "logit_adjust": 0.5}, data).decision_bias().numpy()
    rarest = seen[np.argmin(counts[seen])]
    assert bias[unseen] == pytest.approx(bias[0]) and bias[0] == bias[seen].min()
    assert bias[rarest] == bias.max()
