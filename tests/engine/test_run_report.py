"""What a training run shows and leaves: the header, results.csv/png,
metrics.json of a preempted run, a clean resume line, and a time budget that bounds the run."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
import torch

from fashionvision.data.converted import ConvertedDataset
from fashionvision.engine.trainer import Trainer
from toy_task import ToyTask, make_toy_dataset

BASE = {"device": "cpu", "epochs": 2, "batch_size": 2, "workers": 0, "amp": "none", "channels_last": False,
        "cache_images": False, "gpu_augment": False, "deterministic": True, "warmup_epochs": 0.5,
        "log_images": 0, "log_every_steps": 1}


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "data", n_train=8, n_val=2)


def _trainer(data: Path, run: Path, cls=Trainer, **overrides) -> Trainer:
    config = {"model": {"name": "toy", "width": 4}, "dataset": {"path": str(data)}}
    return cls(ToyTask(config["model"], ConvertedDataset.open(data)), {**BASE, **overrides}, run, config)


def _rows(run: Path) -> list[dict]:
    with open(run / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_header_names_the_device_model_and_counts(toy_data: Path, tmp_path: Path, caplog) -> None:
    with caplog.at_level("INFO", logger="fashionvision.engine"):
        _trainer(toy_data, tmp_path, epochs=1).fit()
    text = caplog.text
    assert "device CPU: " in text and "cores" in text
    assert "M parameters" in text and "GFLOPs per image" not in text  # the toy model has no image_size
    assert "train 8 images 8 boxes, val 2 images 2 boxes, test 2 images 2 boxes" in text
    assert "1 epochs, 4 batches per epoch, batch 2, fp32" in text
    assert f"run     {tmp_path}" in text
    assert text.index("device CPU") < text.index("epoch 1:")  # before the first step's epoch line


def test_results_csv_has_one_row_per_epoch_and_a_plot(toy_data: Path, tmp_path: Path) -> None:
    _trainer(toy_data, tmp_path, epochs=3, val_every=2).fit()
    rows = _rows(tmp_path)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert {"train/loss", "train/mse", "train/l1", "lr", "val/score", "val/mae", "seconds"} <= set(rows[0])
    assert rows[0]["val/score"] == "" and rows[1]["val/score"] != ""  # validated on epochs 2 and 3
    assert all(float(r["seconds"]) > 0 and float(r["train/loss"]) >= 0 for r in rows)
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _PreemptAtEpochEnd(Trainer):
    """SIGTERM arriving during the last batch of epoch 2 (as a cluster does)."""

    def optimizer_step(self) -> None:
        super().optimizer_step()
        if self.epoch == 1 and self.batch_in_epoch == self.batches_per_epoch:
            self._stop_signal = True


def test_preempted_run_writes_metrics_and_resume_prints_no_nan(toy_data: Path, tmp_path: Path, caplog) -> None:
    first = _trainer(toy_data, tmp_path, cls=_PreemptAtEpochEnd, epochs=3)
    first.fit()
    assert first.status == "preempted"
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["status"] == "preempted" and summary["epochs"] == 1 and summary["steps"] == 8

    caplog.clear()  # only the resumed run's lines
    with caplog.at_level("INFO", logger="fashionvision.engine"):
        resumed = _trainer(toy_data, tmp_path, epochs=3, resume="auto")
        resumed.fit()
    assert resumed.status == "completed"
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert epoch_lines[0].startswith("epoch 2: its batches ran before the restart, score")
    assert not any("nan" in line or " 0 img/s" in line for line in epoch_lines), epoch_lines
    rows = _rows(tmp_path)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[1]["train/loss"] == "" and rows[1]["img_per_s"] == "" and rows[1]["val/score"] != ""


def test_max_time_bounds_the_whole_run(toy_data: Path, tmp_path: Path) -> None:
    import matplotlib.pyplot  # noqa: F401  (imports are the command's business: the CLI test counts them)
    import torch.utils.tensorboard  # noqa: F401

    budget = 8.0
    started = time.perf_counter()
    trainer = _trainer(toy_data, tmp_path, epochs=1, max_time=f"{budget:g}s", val_every=1)
    trainer.started_at = started
    trainer.fit()
    elapsed = time.perf_counter() - started
    assert trainer.status == "time_budget" and trainer.epoch >= 1
    # validation, checkpoints and results.png of the last epoch included
    print(f"max_time {budget:g}s: the run took {elapsed:.2f} s")
    # on a loaded 2-core machine one drawing or checkpoint can take a second: a lot of an 8-s budget
    assert 0.6 * budget <= elapsed <= 1.2 * budget, elapsed
    assert json.loads((tmp_path / "metrics.json").read_text())["train_seconds"] <= 1.2 * budget


def test_best_checkpoint_keeps_its_per_class_table(tiny_runs: dict) -> None:
    """The real tiny detector (CCP images): best.pt holds the validation table printed at the end."""
    from types import SimpleNamespace

    from fashionvision.engine.report import final_lines

    run = tiny_runs["detector"]
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    rows = best["best_per_class"]
    assert rows and {"class", "instances", "ap50", "ap"} <= set(rows[0])
    trainer = SimpleNamespace(task=SimpleNamespace(primary_metric="map50", tta_summary=lambda: ""),
                              best_per_class=rows,
                              best_epoch=best["best_epoch"], best_metric=best["best_metric"], val_set=[0, 1],
                              run_dir=run, epoch=best["epoch"], step=best["step"], status="completed")
    lines = final_lines(trainer, 12.3)
    assert lines[0].startswith("best epoch 1: map50 ") and "validation split (2 images)" in lines[0]
    assert lines[1].split() == ["class", "instances", "ap50", "ap"]
    shown = {line.split()[0] for line in lines[2:] if line.startswith("  ")}
    assert shown and shown <= {r["class"] for r in rows if r["instances"]}
    assert "completed after 0:12 (1 epochs" in "\n".join(lines)
    assert any(line.startswith(f"files in {run}: checkpoints/best.pt") for line in lines)


def test_an_empty_validation_split_is_a_clear_error(tmp_path: Path) -> None:
    from fashionvision.errors import UserError

    data = make_toy_dataset(tmp_path / "data", n_train=4, n_val=0)
    with pytest.raises(UserError, match=r"split 'val' of .*data has no images .*split fractions"):
        _trainer(data, tmp_path / "run").fit()
