"""``trainer.max_time``: a wall-clock budget that the whole run, not only its steps, ends within.

The budget counts from the command's start (setup, model build and image caching included).
What follows the last step (one validation, the checkpoints, the results plot) is kept back as
a reserve, measured once each has run and estimated before; the learning-rate schedule spans
the budget minus that reserve.
"""

from __future__ import annotations

import time
from typing import Any


class TimeBudget:
    """The budget's arithmetic and the training speed it is estimated from.

    Args:
        max_seconds: the budget, or None when the run is measured in epochs.
        total_steps: the planned optimizer steps (the schedule's length without a budget).
    """

    def __init__(self, max_seconds: float | None, total_steps: int):
        self.max_seconds = max_seconds
        self.total_steps = total_steps
        self.done_images, self.done_seconds = 0, 0.0  # finished epochs of this process
        self.epoch_images, self.epoch_started = 0, None  # the epoch in progress
        # across ranks: the largest reserve, agreed at the last stop check (each rank's own
        # differs: only rank 0 validates), so that every rank's schedule reads the same progress
        self.agreed_reserve: float | None = None

    # -------------------------------------------------------------- the training speed
    def start_epoch(self) -> None:
        self.epoch_images, self.epoch_started = 0, time.perf_counter()

    def count(self, images: int) -> None:
        """``images`` more trained in the current epoch."""
        self.epoch_images += images

    def end_epoch(self) -> None:
        if self.epoch_started is not None:
            self.done_seconds += time.perf_counter() - self.epoch_started
        self.done_images += self.epoch_images
        self.epoch_images, self.epoch_started = 0, None

    def seconds_per_image(self) -> float | None:
        seen = self.done_images + self.epoch_images
        seconds = self.done_seconds
        if self.epoch_images and self.epoch_started is not None:
            seconds += time.perf_counter() - self.epoch_started
        return seconds / seen if seen else None

    # -------------------------------------------------------------- the budget
    def reserve(self, trainer: Any) -> float:
        """Seconds to keep back from ``max_time`` so that the run *ends* within it.

        What follows the last step: one validation and the checkpoints (``last.pt`` and maybe
        ``best.pt``). Both are measured when they have run once; before that, the validation is
        estimated from the training speed (seconds per training image x validation images: a
        training step is a forward and a backward pass, so this errs on the safe side for the
        validation's one forward pass, which the metrics then make up for; the validation decodes
        without test-time augmentation, :meth:`Task.plain_decoding`) and the checkpoint from its size.
        """
        if self.max_seconds is None:
            return 0.0
        state = trainer.state
        val = state.val_seconds
        if val is None:
            per_image = self.seconds_per_image()
            val = per_image * len(getattr(trainer, "val_set", ())) if per_image is not None else 0.0
        # a background write costs the loop a copy, the final foreground write the whole file
        written = getattr(getattr(trainer, "checkpoints", None), "write_seconds", None)
        measured = [seconds for seconds in (state.save_seconds, written) if seconds is not None]
        save = max(measured) if measured else None
        if save is None:
            params = sum(p.numel() for p in trainer.model.parameters())
            save = 0.2 + params * 4 * 4 / 200e6  # model, EMA and two optimizer moments at ~200 MB/s
        results = getattr(trainer, "results", None)
        # before the first drawing: matplotlib's import and first figure take about a second
        plot = 1.0 if results is None or results.drawn_at is None else results.plot_seconds
        return 1.1 * val + 2.0 * save + plot

    def time_up(self, trainer: Any) -> bool:
        """This process's view: the clock plus the reserve has reached the budget."""
        return (self.max_seconds is not None
                and trainer.state.train_seconds + self.reserve(trainer) >= self.max_seconds)

    def progress(self, trainer: Any) -> float:
        """How far the run is, from 0 to 1: of the budget (less the reserve) or of the planned steps."""
        if self.max_seconds is not None:
            reserve = self.agreed_reserve if self.agreed_reserve is not None else self.reserve(trainer)
            return trainer.state.train_seconds / max(self.max_seconds - reserve, 1e-9)
        return trainer.state.step / max(self.total_steps, 1)
