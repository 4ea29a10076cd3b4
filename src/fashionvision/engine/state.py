"""Where a training run stands: one dataclass that the loop, its hooks and checkpoints share.

The fields above the line are what ``last.pt`` stores beside the weights (so that a resumed
run continues exactly); the ones below it describe this process only (how the run is going,
what the epoch that just ended produced for the after-epoch hooks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: the counters restored as integers (a missing one, from an older checkpoint, restores as 0)
_SAVED_COUNTERS = ("epoch", "batch_in_epoch", "step", "batches_seen", "skipped_steps", "bad_in_row",
                   "epochs_without_gain", "best_epoch")


@dataclass
class TrainState:
    """Epoch, step, best metric, clocks and counters of one run."""

    epoch: int = 0  # epochs finished
    batch_in_epoch: int = 0  # batches of the current epoch already trained (a resume skips them)
    step: int = 0  # optimizer steps
    batches_seen: int = 0
    train_seconds: float = 0.0  # wall clock of the run so far, earlier processes of a resumed run included
    skipped_steps: int = 0  # non-finite losses or gradients skipped
    bad_in_row: int = 0
    best_metric: float = -math.inf
    best_epoch: int = -1
    epochs_without_gain: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # the last validation
    best_per_class: list[dict] = field(default_factory=list)
    # ---- this process only
    status: str = "created"  # created, running, completed, time_budget, early_stopped, preempted
    validated_epoch: int = -1  # the last epoch validated in this process
    last_per_class: list[dict] = field(default_factory=list)
    val_seconds: float | None = None  # the last validation (the time budget reserves it)
    save_seconds: float | None = None  # the last checkpoint write
    saved_step: int = -1  # state.step at the last last.pt write of this process
    # ---- the epoch that just ended (set by the loop and the validation, read by the other hooks)
    epoch_losses: dict[str, float] = field(default_factory=dict)
    epoch_metrics: dict[str, float] | None = None
    improved: bool = False
    epoch_started: float = 0.0  # time.perf_counter() at its start
    epoch_val_seconds: float = 0.0
    epoch_save_seconds: float = 0.0

    def saved(self) -> dict:
        """The fields a checkpoint stores (flat, as the checkpoint format has always had them)."""
        values: dict = {name: getattr(self, name) for name in _SAVED_COUNTERS}
        values.update(train_seconds=self.train_seconds, best_metric=self.best_metric,
                      metrics=dict(self.metrics), best_per_class=list(self.best_per_class))
        return values

    def restore(self, checkpoint: dict) -> None:
        """Continue from a checkpoint's fields."""
        for name in _SAVED_COUNTERS:
            setattr(self, name, int(checkpoint.get(name, 0)))
        self.train_seconds = float(checkpoint.get("train_seconds", 0.0))
        self.best_metric = float(checkpoint.get("best_metric", -math.inf))
        self.metrics = dict(checkpoint.get("metrics") or {})
        self.best_per_class = list(checkpoint.get("best_per_class") or [])
