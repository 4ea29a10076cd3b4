"""Multi-scale test-time augmentation of the segmenter (``model.tta_scales``):
each extra scale is prepared from the original photo and its logits are averaged into the base
batch; the evaluation (photos read again from disk) and the predictor (photos in memory) decide
the same; nonsense lists are refused; ``fashion-eval`` can turn it on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fashionvision.data.converted import ConvertedDataset
from fashionvision.data.prepare import prepare_batch
from fashionvision.errors import UserError
from fashionvision.families import build_task

TINY_UNET = {"name": "unet", "encoder": "vanilla", "width": 0.125, "image_size": 64}


class SizeVoter(nn.Module):
    """Logits that say how tall the input was: class 1 scores the input height, class 2 a
    constant. One scale alone picks one class everywhere; the average of two scales another."""

    def __init__(self, classes: int, constant: float):
        super().__init__()
        self.classes, self.constant = classes, constant
        self.heights: list[int] = []
        self.unused = nn.Parameter(torch.zeros(1))  # predict finds the device from a parameter

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = images.shape
        self.heights.append(height)
        logits = torch.zeros(batch, self.classes, height, width)
        logits[:, 1] = float(height)
        logits[:, 2] = self.constant
        return logits


def _photo(height: int = 300, width: int = 200) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_scales_are_prepared_from_the_photo_and_averaged_into_the_base_batch(tiny_ccp: Path):
    data = ConvertedDataset.open(tiny_ccp)
    plain = build_task(TINY_UNET, data)
    multi = build_task({**TINY_UNET, "tta_scales": [1, 2]}, data)
    batch, metas = prepare_batch([_photo()], 64, rect=True)
    assert batch.shape[-2:] == (64, 64)  # 300x200 at a long side of 64: 64x43, padded to 64x64
    # base height 64, scale 2 height 128: class 1 averages to 96, so a constant of 80 wins alone only
    model = SizeVoter(len(plain.class_names), constant=80.0)
    alone = plain.predict(model, batch, metas)[0]["mask"]
    assert model.heights == [64] and bool((alone == 2).all())
    model.heights.clear()
    averaged = multi.predict(model, batch, metas)[0]["mask"]
    assert model.heights == [64, 128]  # the second view: the photo itself at a long side of 128
    assert averaged.shape == (300, 200) and bool((averaged == 1).all())


def test_the_evaluation_and_the_predictor_decide_the_same_on_real_photos(tiny_ccp: Path, one_torch_thread):
    """The evaluation dataset's metas carry a path (the photo is read again), the predictor's the
    photo itself: same masks, and different from the plain decision somewhere."""
    from fashionvision.data.image_io import read_image
    from fashionvision.engine.build import build_loader
    from fashionvision.inference.predictor import Predictor

    data = ConvertedDataset.open(tiny_ccp)
    multi = build_task({**TINY_UNET, "tta_scales": [0.5, 1, 1.5]}, data)
    torch.manual_seed(0)
    model = multi.build_model().eval()
    batch = next(iter(build_loader(multi.build_dataset("test", train=False), 2, 0, multi.collate, pin_memory=False)))
    assert all("source" not in meta for meta in batch["metas"])
    from_dataset = multi.predict(model, batch["images"], batch["metas"])
    predictor = Predictor(multi, model, torch.device("cpu"), "test")
    from_photos = predictor.predict_batch([read_image(m["path"]) for m in batch["metas"]])
    plain = build_task(TINY_UNET, data).predict(model, batch["images"], batch["metas"])
    changed = 0
    for a, b, c, meta in zip(from_dataset, from_photos, plain, batch["metas"]):
        assert a["mask"].shape == tuple(meta["orig_size"])
        assert torch.equal(a["mask"], torch.from_numpy(b["mask"]))
        changed += int((a["mask"] != c["mask"]).sum())
    assert changed > 0


@pytest.mark.parametrize("scales, message", [
    ([], "a list of ratios"), ([0.5, 1.5], "must contain 1"), ([1, 1], "twice"), ([1, 8], r"\[0.25, 4\]"),
    (["a", 1], "a list of ratios such as"), (1.25, "must be a list"), ([True, 1], "a list of ratios such as"),
])
def test_nonsense_scale_lists_are_refused(tiny_ccp: Path, scales, message):
    with pytest.raises(UserError, match=f"model.tta_scales.*{message}|model.tta_scales lists"):
        build_task({**TINY_UNET, "tta_scales": scales}, ConvertedDataset.open(tiny_ccp))


def test_a_prepared_image_without_its_photo_or_path_is_refused(tiny_ccp: Path):
    multi = build_task({**TINY_UNET, "tta_scales": [1, 1.5]}, ConvertedDataset.open(tiny_ccp))
    batch, metas = prepare_batch([_photo()], 64, rect=True)
    del metas[0]["source"]
    with pytest.raises(UserError, match="needs the original photo"):
        multi.predict(SizeVoter(len(multi.class_names), 0.0), batch, metas)


def test_fashion_eval_override_reaches_the_decoding_and_a_detector_refuses_it(tiny_runs: dict, tiny_ccp: Path,
                                                                              tmp_path: Path, monkeypatch):
    from fashionvision.cli.eval import evaluate
    from fashionvision.inference.loading import load_for_inference
    from fashionvision.tasks import seg_tta

    seen = []
    original = seg_tta.multiscale_logits

    def spy(task, model, logits, metas, scales):
        seen.append(list(scales))
        return original(task, model, logits, metas, scales)

    monkeypatch.setattr(seg_tta, "multiscale_logits", spy)
    base = {"ckpt": str(tiny_runs["segmenter"]), "split": "test", "dataset": {"path": str(tiny_ccp)},
            "device": "cpu", "workers": 0, "batch_size": 2}
    evaluate({**base, "tta_scales": None}, tmp_path / "plain")
    assert not seen  # the checkpoint's setting (none)
    scores = evaluate({**base, "tta_scales": [1, 1.25]}, tmp_path / "scales")
    assert seen and all(s == [1.0, 1.25] for s in seen) and 0 <= scores["miou"] <= 1
    with pytest.raises(UserError, match="tta_scales must be a list"):
        evaluate({**base, "tta_scales": 1.25}, tmp_path / "scalar")
    with pytest.raises(UserError, match="tta_flip must be true, false or null, got 'maybe'"):
        evaluate({**base, "tta_flip": "maybe"}, tmp_path / "flip")
    detector, _, _ = load_for_inference(tiny_runs["detector"])
    with pytest.raises(UserError, match="tta_scales is for segmenters"):
        detector.set_tta(None, [1, 1.25])


def test_validation_during_training_decodes_plainly_and_the_checkpoint_keeps_the_tta(
        tiny_ccp: Path, tmp_path: Path, monkeypatch):
    """The trainer validates without the flip and the scales (six forward passes a photo
    would eat 5 % of a 10-minute CPU budget), with the logit adjustment; the run's checkpoint
    still carries both settings, so fashion-eval and fashion-predict use them."""
    from fashionvision.cli._hydra import compose
    from fashionvision.engine.report import final_lines
    from fashionvision.engine.trainer import Trainer
    from fashionvision.inference.loading import load_for_inference
    from fashionvision.tasks.segmentation import SegmentationTask

    seen = []
    original = SegmentationTask.evaluate

    def spy(self, *args, **kwargs):
        seen.append((self.cfg.tta_flip, self.cfg.tta_scales, self.multiscale))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SegmentationTask, "evaluate", spy)
    cfg = compose("train", ["model=unet", "model.encoder=vanilla", "model.width=0.125", "model.image_size=64",
                            "model.tta_flip=true", "model.tta_scales=[0.875,1,1.125]", "trainer=smoke",
                            "trainer.epochs=1", "trainer.limit_images=2", f"dataset.path={tiny_ccp}"])
    task = build_task(cfg["model"], ConvertedDataset.open(tiny_ccp), cfg["augment"], cfg["anchors"])
    trainer = Trainer(task, cfg["trainer"], tmp_path / "run", cfg)
    trainer.fit()
    assert seen and all(entry == (False, None, False) for entry in seen)
    assert ("without the test-time augmentation (flip and scales 0.875, 1, 1.125) that fashion-eval applies"
            in final_lines(trainer, 1.0)[0])
    assert task.cfg.tta_flip is True and task.cfg.tta_scales == [0.875, 1, 1.125]  # restored after
    loaded, _, _ = load_for_inference(tmp_path / "run")
    assert loaded.cfg.tta_flip is True and list(loaded.cfg.tta_scales) == [0.875, 1, 1.125]
    with loaded.plain_decoding():
        assert not loaded.multiscale
    assert loaded.multiscale
