"""Host syncs of the training loop on a real GPU, as CUDA itself reports them.

``torch.cuda.set_sync_debug_mode("warn")`` warns at every synchronising CUDA call, those the
CPU test's counter cannot see included (blocking copies, ``nonzero``). Counted while the epochs
run (not validation or checkpoints), they must keep to the loop's design (engine/epoch.py): one
per optimizer step, one per ``log_every_steps`` steps and one per epoch end.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import fashionvision.engine.trainer as trainer_module
from fashionvision.data.converted import ConvertedDataset
from fashionvision.engine.trainer import Trainer
from toy_task import ToyTask, make_toy_dataset

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

LOADER = str(Path(torch.utils.data.__file__).parent)


@pytest.mark.parametrize("amp", ["bf16", "none"])
def test_cuda_syncs_per_step_keep_to_the_design(tmp_path: Path, monkeypatch, amp: str) -> None:
    data = make_toy_dataset(tmp_path / "data", n_train=16, n_val=2)
    syncs: list[str] = []
    original = trainer_module.run_epoch

    def counted_epoch(trainer: Trainer) -> dict[str, float]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                return original(trainer)
            finally:
                torch.cuda.set_sync_debug_mode(0)
                syncs.extend(f"{w.filename}:{w.lineno}" for w in caught
                             if "synchroniz" in str(w.message) and not w.filename.startswith(LOADER))

    monkeypatch.setattr(trainer_module, "run_epoch", counted_epoch)
    config = {"model": {"name": "toy", "width": 4}, "dataset": {"path": str(data)}}
    cfg = {"device": "cuda", "epochs": 2, "batch_size": 2, "workers": 0, "amp": amp, "cache_images": False,
           "gpu_augment": False, "log_images": 0, "log_every_steps": 4, "accumulate": 2}
    trainer = Trainer(ToyTask(config["model"], ConvertedDataset.open(data)), cfg, tmp_path / "run", config)
    trainer.fit()
    assert trainer.status == "completed" and trainer.step == 8
    allowed = trainer.step + trainer.skipped_steps + trainer.step // 4 + trainer.epoch
    assert len(syncs) <= allowed, syncs
