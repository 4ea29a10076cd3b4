"""The training loop in-process on the toy task: NaN handling, TensorBoard, budgets, reloading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fashionvision.data.converted import ConvertedDataset
from fashionvision.engine.trainer import Trainer, TrainingStopped
from fashionvision.errors import UserError
from toy_task import ToyTask, make_toy_dataset

BASE = {"device": "cpu", "epochs": 2, "batch_size": 2, "workers": 0, "amp": "none", "channels_last": False,
        "cache_images": False, "gpu_augment": False, "deterministic": True, "warmup_epochs": 0.5,
        "log_images": 1, "log_every_steps": 1}


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    torch.set_num_threads(2)
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "data", n_train=8, n_val=2)


def _run(data: Path, run: Path, **overrides):
    config = {"model": {"name": "toy", "width": 4}, "dataset": {"path": str(data)}}
    task = ToyTask(config["model"], ConvertedDataset.open(data))
    trainer = Trainer(task, {**BASE, **overrides}, run, config)
    trainer.fit()
    return trainer


def inject_nan(monkeypatch, batches: set[int]) -> None:
    """Wrap the task's losses: the given 1-based training batches return NaN (as a diverging model would)."""
    original = ToyTask.compute_losses
    calls = {"n": 0}

    def compute_losses(self, model, batch):
        losses = original(self, model, batch)
        if model.training:
            calls["n"] += 1
            if calls["n"] in batches:
                return {k: v * float("nan") for k, v in losses.items()}
        return losses

    monkeypatch.setattr(ToyTask, "compute_losses", compute_losses)


def test_nan_loss_is_skipped_counted_and_logged(toy_data: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    inject_nan(monkeypatch, {2})
    with caplog.at_level("WARNING"):
        trainer = _run(toy_data, tmp_path)
    assert trainer.status == "completed"
    assert trainer.step == 7  # 8 batches, one skipped
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["skipped_steps"] == 1
    assert "non-finite loss" in caplog.text
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values() if v.is_floating_point())


def test_nan_losses_in_a_row_stop_with_a_valid_checkpoint(toy_data: Path, tmp_path: Path, monkeypatch) -> None:
    inject_nan(monkeypatch, {3, 4, 5})
    with pytest.raises(TrainingStopped, match="3 non-finite losses in a row"):
        _run(toy_data, tmp_path, max_bad_steps=3)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 2 and state["skipped_steps"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_tensorboard_has_named_losses_lr_speed_metrics_and_images(toy_data: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _run(toy_data, tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/mse", "train/l1", "train/loss", "train/lr", "train/img_per_s", "val/score", "val/mae"} <= scalars
    assert len(events.Scalars("train/mse")) == 8
    assert "val/prediction_0" in events.Tags()["images"]


def test_accumulation_early_stop_and_best(toy_data: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ToyTask, "evaluate", lambda self, model, loader, device, output_dir=None: {"score": 1.0})
    trainer = _run(toy_data, tmp_path, epochs=10, accumulate=2, early_stop_patience=2)
    assert trainer.status == "early_stopped" and trainer.epoch == 3 and trainer.step == 6
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == 1 and best["best_metric"] == 1.0


def test_max_time_budget_ends_the_run(toy_data: Path, tmp_path: Path) -> None:
    trainer = _run(toy_data, tmp_path, epochs=1, max_time="1s")
    assert trainer.status == "time_budget"
    # the budget bounds the whole run: it stops early enough for the last validation
    assert trainer.epoch >= 1 and trainer.step >= 1 and 0 < trainer.train_seconds
    assert json.loads((tmp_path / "metrics.json").read_text())["final"]["score"] <= 0


def test_load_for_inference_and_resume_class_mismatch(toy_data: Path, tmp_path: Path, monkeypatch) -> None:
    from fashionvision.families import FAMILIES
    from fashionvision.inference.loading import load_for_inference

    monkeypatch.setitem(FAMILIES, "toy", "toy_task:ToyTask")
    trainer = _run(toy_data, tmp_path / "run", epochs=1)
    task, model, config = load_for_inference(tmp_path / "run")
    assert isinstance(task, ToyTask) and task.class_names == ["red", "green"]
    assert not model.training and config["model"]["name"] == "toy"
    for name, value in trainer.ema.module.state_dict().items():  # EMA weights, not the raw ones
        assert torch.equal(model.state_dict()[name], value)
    task2, _, _ = load_for_inference(tmp_path / "run" / "checkpoints" / "last.pt", dataset_path=str(toy_data))
    assert task2.data.folder == toy_data

    other = make_toy_dataset(tmp_path / "other", n_train=4, n_val=2)
    (other / "classes.txt").write_text("red\ngreen\nblue\n")
    with pytest.raises(UserError, match="trained on 2 classes, the data has 3"):
        _run(other, tmp_path / "run2", resume=str(tmp_path / "run" / "checkpoints" / "last.pt"))


def test_fresh_run_into_a_folder_with_checkpoints_is_refused(toy_data: Path, tmp_path: Path) -> None:
    """A second run without trainer.resume must not replace the first run's checkpoints."""
    _run(toy_data, tmp_path, epochs=1)
    files = ("checkpoints/last.pt", "checkpoints/best.pt", "metrics.json")
    before = {name: (tmp_path / name).read_bytes() for name in files}
    with pytest.raises(UserError, match=r"trainer\.resume=auto.*hydra\.run\.dir") as info:
        _run(toy_data, tmp_path, epochs=1)
    assert "\n" not in str(info.value)
    assert {name: (tmp_path / name).read_bytes() for name in files} == before
    assert _run(toy_data, tmp_path, epochs=2, resume="auto").step == 8  # continuing is fine
    trainer = _run(toy_data, tmp_path, epochs=1, overwrite=True)  # and so is an explicit overwrite
    assert trainer.step == 4
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["step"] == 4


@pytest.mark.parametrize("amp, autocast", [("bf16", True), ("fp16", False), ("none", False)])
def test_bf16_autocast_on_cpu(toy_data: Path, tmp_path: Path, monkeypatch, amp: str, autocast: bool) -> None:
    """trainer.amp=bf16 autocasts the CPU forward (AMX Xeons: faster steps); fp16 stays CUDA-only.
    The CPU is taken to have bf16 units, so the check holds on every processor (on one without,
    the trainer falls back to float32: the test below)."""
    import fashionvision.engine.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_has_bf16", lambda: True)
    seen: list[tuple[bool, torch.dtype]] = []
    original = ToyTask.compute_losses

    def spy(self, model, batch):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return original(self, model, batch)

    monkeypatch.setattr(ToyTask, "compute_losses", spy)
    trainer = _run(toy_data, tmp_path, amp=amp, epochs=1)
    assert trainer.status == "completed" and trainer.step == 4
    assert seen and all(enabled == autocast for enabled, _ in seen)
    if autocast:
        assert all(dtype == torch.bfloat16 for _, dtype in seen)
    assert not trainer.scaler.is_enabled()  # no GradScaler on a CPU (bf16 needs none)
    params = trainer.model.state_dict().values()
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in params if v.is_floating_point())


def test_bf16_on_a_cpu_without_bf16_units_trains_in_float32(toy_data: Path, tmp_path: Path, monkeypatch,
                                                          caplog) -> None:
    """The CPU recipes ask for bf16 (AMX Xeons: ~1.7x the steps); a CPU that would only emulate
    it (slower than float32) trains in float32 and says so once."""
    import fashionvision.engine.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_has_bf16", lambda: False)
    seen: list[bool] = []
    original = ToyTask.compute_losses

    def spy(self, model, batch):
        seen.append(torch.is_autocast_enabled("cpu"))
        return original(self, model, batch)

    monkeypatch.setattr(ToyTask, "compute_losses", spy)
    with caplog.at_level("WARNING", logger="fashionvision.engine"):
        trainer = _run(toy_data, tmp_path, amp="bf16", epochs=1)
    assert trainer.status == "completed" and seen and not any(seen)
    assert sum("no bf16 units" in r.getMessage() for r in caplog.records) == 1


def test_channels_last_is_honoured_on_a_cpu(toy_data: Path, tmp_path: Path, monkeypatch) -> None:
    """trainer.channels_last=true on a CPU: model and images in channels_last (faster oneDNN
    convolutions); false keeps the default layout."""
    layouts = []
    original = ToyTask.compute_losses

    def compute_losses(self, model, batch):
        if model.training:
            layouts.append((batch["images"].is_contiguous(memory_format=torch.channels_last),
                            model.body[0].weight.is_contiguous(memory_format=torch.channels_last)))
        return original(self, model, batch)

    monkeypatch.setattr(ToyTask, "compute_losses", compute_losses)
    _run(toy_data, tmp_path / "on", epochs=1, channels_last=True)
    assert layouts and all(images and weights for images, weights in layouts)
    layouts.clear()
    _run(toy_data, tmp_path / "off", epochs=1, channels_last=False)
    assert layouts and not any(weights for _, weights in layouts)


def test_cpu_bf16_detection_matches_torch() -> None:
    from fashionvision.engine.build import cpu_has_bf16

    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert cpu_has_bf16() == expected


def test_budget_running_out_during_the_epoch_end_checkpoint_still_validates(toy_data: Path, tmp_path: Path,
                                                                            monkeypatch) -> None:
    """An epoch that ends just inside max_time, whose checkpoint write uses up the rest: the run
    still ends with a final validation, not with empty metrics: the final validation is owed."""
    saves: list[bool] = []
    original_save = Trainer.save

    def slow_save(self, *args, **kwargs):
        saves.append(True)
        if len(saves) == 1:  # the first epoch-end checkpoint "takes" the rest of the budget
            self._start_time_up = True
        return original_save(self, *args, **kwargs)

    def time_up(self) -> bool:
        return getattr(self, "_start_time_up", False)

    def sync_stop(self) -> bool:
        return self._stop_signal or time_up(self)

    monkeypatch.setattr(Trainer, "save", slow_save)
    monkeypatch.setattr(Trainer, "_time_up", time_up)
    monkeypatch.setattr(Trainer, "_sync_stop", sync_stop)
    trainer = _run(toy_data, tmp_path, max_time="1h", val_every=1000)
    assert trainer.status == "time_budget" and trainer.epoch == 1
    assert trainer.metrics and trainer.validated_epoch == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["final"]


def test_ema_ramp_reaches_the_trainer(toy_data: Path, tmp_path: Path) -> None:
    """trainer.ema_ramp sets how fast the EMA decay ramps up (a short run needs a short ramp)."""
    short = _run(toy_data, tmp_path / "short", epochs=1, ema_decay=0.99, ema_ramp=1.0)
    fixed = _run(toy_data, tmp_path / "fixed", epochs=1, ema_decay=0.99, ema_scale_ramp=False)
    assert short.ema.ramp == 1.0 and fixed.ema.ramp == 2000.0
    assert short.ema.current_decay() > 0.9 > fixed.ema.current_decay()
    scaled = _run(toy_data, tmp_path / "default", epochs=10, ema_decay=0.99)  # 40 steps: a ramp of 4
    assert scaled.ema.max_ramp == 2000.0 and scaled.ema.ramp == 4.0
    assert scaled.ema.current_decay() > 0.9
    with pytest.raises(UserError, match="trainer.ema_ramp"):
        _run(toy_data, tmp_path / "bad", epochs=1, ema_ramp=-1.0)


def test_repeat_threshold_lengthens_the_epoch_with_rare_images(toy_data: Path, tmp_path: Path) -> None:
    """trainer.repeat_threshold wraps the training split: each toy class is in half the images,
    so with t = 0.9 every image repeats sqrt(1.8) ~ 1.34 times (rounded from the seed)."""
    import numpy as np

    from fashionvision.data.repeat_factor import repeat_counts

    plain = _run(toy_data, tmp_path / "plain", epochs=1)
    repeated = _run(toy_data, tmp_path / "repeated", epochs=1, repeat_threshold=0.9)
    expected = repeat_counts(np.full(8, np.sqrt(1.8)), seed=0)
    assert len(plain.train_set) == 8 and len(repeated.train_set) == int(expected.sum()) > 8
    assert repeated.batches_per_epoch == int(expected.sum()) // BASE["batch_size"]
    with pytest.raises(UserError, match="trainer.repeat_threshold"):
        _run(toy_data, tmp_path / "bad", epochs=1, repeat_threshold=0.0)
