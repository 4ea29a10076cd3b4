"""Host reads of the training loop: on a GPU each one waits for every queued kernel.

The CPU path stands in for CUDA: the tensor methods that copy a value to the host are wrapped
and counted while an epoch runs. The loop's design (engine/epoch.py) allows one read per
optimizer step (the finite flag), one per ``log_every_steps`` steps (the running losses) and
one at each epoch end (the means). Reads made while the DataLoader builds a batch are left
out: those tensors live on the host.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

import fashionvision.engine.trainer as trainer_module
from fashionvision.data.converted import ConvertedDataset
from fashionvision.engine.trainer import Trainer
from toy_task import ToyTask, make_toy_dataset

BASE = {"device": "cpu", "epochs": 2, "batch_size": 2, "workers": 0, "amp": "none", "channels_last": False,
        "cache_images": False, "gpu_augment": False, "deterministic": True, "warmup_epochs": 0.5,
        "log_images": 0}

#: the tensor methods that hand a value to the host (each a sync on CUDA)
READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy")
LOADER = str(Path(torch.utils.data.__file__).parent)


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    torch.set_num_threads(2)
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "data", n_train=8, n_val=2)


class HostReads:
    """Counts host reads of tensors while ``active``, by the line that made them (loader reads left out)."""

    def __init__(self, monkeypatch) -> None:
        self.active = False
        self.where: Counter[str] = Counter()
        for name in READS:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))

    def _wrap(self, name: str, original):
        def read(tensor, *args, **kwargs):
            if self.active:
                self._record(name, sys._getframe(1))
            return original(tensor, *args, **kwargs)
        return read

    def _record(self, name: str, frame) -> None:
        caller = f"{name} at {Path(frame.f_code.co_filename).name}:{frame.f_lineno}"
        while frame is not None:
            if frame.f_code.co_filename.startswith(LOADER):
                return  # building a batch: host tensors, no device involved
            frame = frame.f_back
        self.where[caller] += 1

    @property
    def total(self) -> int:
        return sum(self.where.values())


def _run_counted(data: Path, run: Path, monkeypatch, **overrides) -> tuple[Trainer, HostReads]:
    """A toy run whose epochs (the training loop only, not validation or checkpoints) are counted."""
    reads = HostReads(monkeypatch)
    original = trainer_module.run_epoch

    def counted_epoch(trainer: Trainer) -> dict[str, float]:
        reads.active = True
        try:
            return original(trainer)
        finally:
            reads.active = False

    monkeypatch.setattr(trainer_module, "run_epoch", counted_epoch)
    config = {"model": {"name": "toy", "width": 4}, "dataset": {"path": str(data)}}
    trainer = Trainer(ToyTask(config["model"], ConvertedDataset.open(data)), {**BASE, **overrides}, run, config)
    trainer.fit()
    return trainer, reads


def _allowed(trainer: Trainer) -> int:
    """The design's figure: one read per optimizer step (skipped ones included), one per logging
    step, one per epoch end."""
    every = trainer.cfg.log_every_steps
    windows = trainer.step + trainer.skipped_steps
    return windows + trainer.step // every + trainer.epoch


def test_the_counter_sees_every_kind_of_read(monkeypatch) -> None:
    """The wrapped methods are the ones Python calls for ``bool()``, ``float()``, ``if t:`` ..."""
    reads = HostReads(monkeypatch)
    reads.active = True
    t = torch.tensor(1.0)
    _ = (t.item(), t.tolist(), bool(t), float(t), int(t), t.cpu(), t.numpy(), [0, 1][torch.tensor(1)])
    if t:
        pass
    reads.active = False
    assert reads.total == 9, reads.where


@pytest.mark.parametrize("overrides", [
    {"accumulate": 1, "log_every_steps": 4},  # 8 steps, logging twice
    {"accumulate": 2, "log_every_steps": 1000},  # 4 steps of 2 micro-batches, never logging
    {"accumulate": 1, "log_every_steps": 1, "grad_clip": None},
], ids=["log-every-4", "accumulate-2", "no-clip"])
def test_at_most_one_read_per_step_and_one_per_log(toy_data: Path, tmp_path: Path, monkeypatch,
                                                    overrides: dict) -> None:
    trainer, reads = _run_counted(toy_data, tmp_path, monkeypatch, **overrides)
    assert trainer.status == "completed" and trainer.epoch == 2
    assert trainer.step == 8 // overrides["accumulate"]
    # the finite flag is read every step, so at least that many reads: the counter works here
    assert trainer.step <= reads.total <= _allowed(trainer), dict(reads.where)


def test_skipped_steps_keep_to_one_read(toy_data: Path, tmp_path: Path, monkeypatch) -> None:
    """A non-finite micro-batch costs no extra read: its step's flag says so."""
    original = ToyTask.compute_losses
    calls = {"n": 0}

    def compute_losses(self, model, batch):
        losses = original(self, model, batch)
        calls["n"] += model.training
        if model.training and calls["n"] in (2, 5):
            return {k: v * float("nan") for k, v in losses.items()}
        return losses

    monkeypatch.setattr(ToyTask, "compute_losses", compute_losses)
    trainer, reads = _run_counted(toy_data, tmp_path, monkeypatch, accumulate=2, log_every_steps=1)
    # micro-batches 2 and 5 fall into steps 1 and 3 of 4: both steps are skipped, once each
    assert trainer.skipped_steps == 2 and trainer.step == 2
    assert reads.total <= _allowed(trainer), dict(reads.where)


def _fake_trainer(scaler_enabled: bool, grad_clip: float | None = 1.0):
    from types import SimpleNamespace

    model = torch.nn.Linear(2, 1)
    return SimpleNamespace(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                           scaler=torch.amp.GradScaler("cpu", init_scale=8.0, enabled=scaler_enabled),
                           cfg=SimpleNamespace(grad_clip=grad_clip))


def test_a_non_finite_gradient_norm_makes_the_step_bad() -> None:
    from fashionvision.engine.epoch import step_is_finite

    trainer = _fake_trainer(scaler_enabled=False)
    trainer.model(torch.ones(1, 2)).sum().backward()
    assert step_is_finite(trainer, torch.tensor(True))
    trainer.model.weight.grad[0, 0] = float("inf")
    assert not step_is_finite(trainer, torch.tensor(True))
    assert not step_is_finite(_fake_trainer(scaler_enabled=False, grad_clip=None), torch.tensor(False))


def test_a_skipped_fp16_step_leaves_the_grad_scaler_as_it_was() -> None:
    """With a GradScaler the decision comes before the unscale: the next step unscales as usual."""
    from fashionvision.engine.epoch import step_is_finite

    trainer = _fake_trainer(scaler_enabled=True)
    trainer.scaler.scale(trainer.model(torch.ones(1, 2)).sum()).backward()
    assert not step_is_finite(trainer, torch.tensor(False))  # a non-finite loss: skipped
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scaler.scale(trainer.model(torch.ones(1, 2)).sum()).backward()
    assert step_is_finite(trainer, torch.tensor(True))  # unscale_ twice without update() would raise
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    assert trainer.scaler.get_scale() == 8.0
