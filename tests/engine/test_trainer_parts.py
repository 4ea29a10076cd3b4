"""The trainer's parts one by one: its state, the time budget, the checkpoint interval, best.pt."""

from __future__ import annotations

import math
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fashionvision.data.converted import ConvertedDataset
from fashionvision.engine.budget import TimeBudget
from fashionvision.engine.config import TrainerConfig, parse_trainer_config
from fashionvision.engine.hooks import Checkpointing, HookBase
from fashionvision.engine.state import TrainState
from fashionvision.engine.trainer import Trainer
from fashionvision.errors import UserError
from toy_task import ToyTask, make_toy_dataset

BASE = {"device": "cpu", "epochs": 2, "batch_size": 2, "workers": 0, "amp": "none", "channels_last": False,
        "cache_images": False, "gpu_augment": False, "deterministic": True, "warmup_epochs": 0.5,
        "log_images": 0, "log_every_steps": 1}


def test_the_state_round_trips_through_a_checkpoint_in_the_checkpoint_format() -> None:
    """The saved fields are the flat keys every checkpoint has had; restoring them gives them back
    (counters as integers, a missing one as 0), and process-only fields are not saved."""
    state = TrainState(epoch=3, batch_in_epoch=2, step=17, batches_seen=19, train_seconds=12.5, skipped_steps=1,
                       best_metric=0.25, best_epoch=2, epochs_without_gain=1, metrics={"map50": 0.2},
                       best_per_class=[{"class": "shirt"}], status="running", val_seconds=3.0)
    saved = state.saved()
    assert set(saved) == {"epoch", "batch_in_epoch", "step", "batches_seen", "skipped_steps", "bad_in_row",
                          "epochs_without_gain", "best_epoch", "train_seconds", "best_metric", "metrics",
                          "best_per_class"}
    fresh = TrainState()
    fresh.restore(saved)
    assert fresh.saved() == saved and fresh.status == "created" and fresh.val_seconds is None
    older = TrainState()
    older.restore({"epoch": 1})
    assert (older.epoch, older.step, older.best_epoch, older.best_metric) == (1, 0, 0, -math.inf)


def test_the_budget_keeps_back_the_last_validation_and_checkpoint() -> None:
    model = torch.nn.Linear(10, 10)  # 110 parameters: a negligible estimated checkpoint
    trainer = SimpleNamespace(state=TrainState(train_seconds=49.0, val_seconds=5.0, save_seconds=2.0),
                              model=model, val_set=[0] * 4, results=SimpleNamespace(drawn_at=1.0, plot_seconds=0.5))
    budget = TimeBudget(max_seconds=60.0, total_steps=100)
    assert budget.reserve(trainer) == pytest.approx(1.1 * 5.0 + 2.0 * 2.0 + 0.5)
    assert not budget.time_up(trainer)  # 49 + 10 < 60
    trainer.state.train_seconds = 50.5
    assert budget.time_up(trainer)
    assert budget.progress(trainer) == pytest.approx(50.5 / (60.0 - 10.0))
    trainer.checkpoints = SimpleNamespace(write_seconds=3.0)  # a background write took longer than its copy
    assert budget.reserve(trainer) == pytest.approx(1.1 * 5.0 + 2.0 * 3.0 + 0.5)
    del trainer.checkpoints
    budget.agreed_reserve = 20.0  # several ranks: the largest reserve, as agreed
    assert budget.progress(trainer) == pytest.approx(50.5 / 40.0)
    by_steps = TimeBudget(max_seconds=None, total_steps=100)
    trainer.state.step = 25
    assert by_steps.reserve(trainer) == 0.0 and not by_steps.time_up(trainer) and by_steps.progress(trainer) == 0.25


def test_checkpoint_every_is_a_duration_checked_before_the_run() -> None:
    assert parse_trainer_config({"checkpoint_every": "10m"}).checkpoint_seconds == 600.0
    assert parse_trainer_config({"checkpoint_every": 0}).checkpoint_seconds == 0.0
    assert TrainerConfig().checkpoint_seconds == 0.0  # the library default: every epoch end
    with pytest.raises(UserError, match="trainer.checkpoint_every='often' is not a duration"):
        parse_trainer_config({"checkpoint_every": "often"})


class _Recorder:
    """Just what the checkpoint hook reads of a trainer, recording each save."""

    def __init__(self):
        self.state = TrainState()
        self.device = torch.device("cpu")
        self.saves: list[tuple[bool, bool]] = []

    def save(self, best: bool = False, last: bool = True, background: bool = False) -> None:
        self.saves.append((best, last))
        if last:
            self.state.saved_step = self.state.step


def test_last_pt_follows_the_wall_clock_and_best_pt_every_gain() -> None:
    trainer, hook = _Recorder(), Checkpointing(every_seconds=600.0, every_steps=None)
    hook.before_train(trainer)
    trainer.state.train_seconds, trainer.state.improved = 100.0, True
    hook.after_epoch(trainer)
    assert trainer.saves == [(True, False)]  # best.pt only: last.pt is not due yet
    trainer.state.improved = False
    hook.after_epoch(trainer)
    assert trainer.saves == [(True, False)]
    trainer.state.train_seconds = 650.0
    hook.after_step(trainer)  # mid-epoch, once the interval has passed
    assert trainer.saves[-1] == (False, True)
    trainer.state.train_seconds = 700.0
    hook.after_epoch(trainer)
    assert len(trainer.saves) == 2  # counted from the last write
    every_epoch = Checkpointing(every_seconds=0.0, every_steps=3)
    other = _Recorder()
    for step in range(1, 7):
        other.state.step = step
        every_epoch.after_step(other)
    every_epoch.after_epoch(other)
    assert other.saves == [(False, True), (False, True)]  # steps 3 and 6; the epoch end is step 6 again
    other.state.step, other.state.improved = 7, True
    every_epoch.after_epoch(other)
    assert other.saves[-1] == (True, True)  # a step the interval left behind, and a gain


def test_hooks_default_to_doing_nothing() -> None:
    hook = HookBase()
    for point in ("before_train", "after_epoch", "after_step", "after_train"):
        assert getattr(hook, point)(object()) is None


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "data", n_train=8, n_val=2)


def _trainer(data: Path, run: Path, **overrides) -> Trainer:
    config = {"model": {"name": "toy", "width": 4}, "dataset": {"path": str(data)}}
    return Trainer(ToyTask(config["model"], ConvertedDataset.open(data)), {**BASE, **overrides}, run, config)


def test_best_pt_holds_no_optimizer_state_and_is_not_for_resuming(toy_data: Path, tmp_path: Path) -> None:
    """With an interval longer than the run, last.pt is still written at the end; best.pt keeps the
    weights without the optimizer's moments, and resuming from it says to use last.pt."""
    trainer = _trainer(toy_data, tmp_path / "run", checkpoint_every="1h")
    trainer.fit()
    folder = tmp_path / "run" / "checkpoints"
    last = torch.load(folder / "last.pt", weights_only=True)
    best = torch.load(folder / "best.pt", weights_only=True)
    assert last["step"] == trainer.step == 8 and last["optimizer"] and best["optimizer"] is None
    assert best["model"].keys() == last["model"].keys() and best["ema"]
    with pytest.raises(UserError, match="holds weights only .* resume from checkpoints/last.pt"):
        _trainer(toy_data, tmp_path / "run", epochs=3, resume=str(folder / "best.pt")).fit()


def test_background_checkpoints_hold_the_weights_of_their_step(toy_data: Path, tmp_path: Path, monkeypatch) -> None:
    """With checkpoint_background the checkpoints of every step are written by a thread from a copy:
    each file holds the step it was taken at, although training went on changing the tensors while
    it was written; the run ends only once the last write is done (last.pt is the final step)."""
    from fashionvision.engine import checkpoint as ck

    written, original = [], ck.save_checkpoint

    def slow_save(path, state, keep_previous=True):
        time.sleep(0.05)  # the training thread runs on meanwhile
        written.append((Path(path).name, state["step"], state["model"]["body.0.weight"].clone()))
        return original(path, state, keep_previous=keep_previous)

    monkeypatch.setattr(ck, "save_checkpoint", slow_save)
    trainer = _trainer(toy_data, tmp_path / "run", checkpoint_background=True, checkpoint_every_steps=1, ema=False)
    seen = {}
    trainer.hooks.insert(0, SimpleNamespace(before_train=lambda t: None, after_epoch=lambda t: None, after_train=lambda t: None,
                                            after_step=lambda t: seen.setdefault(t.state.step, t.model.state_dict()["body.0.weight"].clone())))
    trainer.fit()
    lasts = [(step, weight) for name, step, weight in written if name == "last.pt"]
    assert [step for step, _ in lasts][:8] == list(range(1, 9))  # one per step, in order, none skipped
    for step, weight in lasts[:8]:
        assert torch.equal(weight, seen[step]), f"last.pt of step {step} holds another step's weights"
    final = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert final["step"] == trainer.step == 8 and trainer.checkpoints._thread is None


def test_a_failed_background_write_stops_the_run_with_its_error(toy_data: Path, tmp_path: Path, monkeypatch) -> None:
    """A background write that fails (a full disk) surfaces at the next write as the one-line error
    of a synchronous write; the checkpoint already on disk stays."""
    from fashionvision.engine import checkpoint as ck

    original, calls = ck.save_checkpoint, []

    def failing_after_first(path, state, keep_previous=True):
        calls.append(state["step"])
        if len(calls) > 1:
            raise UserError(f"could not write checkpoint '{path}' (disk full or a file-size limit? No space left)")
        return original(path, state, keep_previous=keep_previous)

    monkeypatch.setattr(ck, "save_checkpoint", failing_after_first)
    trainer = _trainer(toy_data, tmp_path / "run", checkpoint_background=True, checkpoint_every_steps=1)
    with pytest.raises(UserError, match="disk full"):
        trainer.fit()
    assert calls[:2] == [1, 2] and len(calls) == 2  # nothing written after the failure
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["step"] == 1


def test_a_time_budget_plans_the_ema_ramp_from_the_measured_step_rate() -> None:
    """100 steps in 10 s with 90 s left (a 5 s reserve kept back): about 1,000 steps in all, so the
    2,000-step ramp becomes 100; with ema_scale_ramp=false it stays."""
    from fashionvision.engine.ema import ModelEMA
    from fashionvision.engine.hooks import EmaRampPlan

    budget = TimeBudget(max_seconds=105.0, total_steps=10)
    budget.done_seconds = 10.0
    budget.reserve = lambda trainer: 5.0
    model = torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(state=TrainState(step=0, train_seconds=10.0), budget=budget,
                              ema=ModelEMA(model, 0.999, 2000.0), cfg=TrainerConfig())
    hook = EmaRampPlan()
    hook.before_train(trainer)
    trainer.state.step = 100
    hook.after_epoch(trainer)
    assert trainer.ema.ramp == pytest.approx(100.0)
    trainer.ema.plan(None)
    trainer.cfg = TrainerConfig(ema_scale_ramp=False)
    hook.after_epoch(trainer)
    assert trainer.ema.ramp == 2000.0
