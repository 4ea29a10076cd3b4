"""The non-finite guard: a NaN/inf loss or gradient skips its step; too many in a row stop the run."""

from __future__ import annotations

import logging
from typing import Any

from fashionvision.engine.checkpoint import CHECKPOINT_DIR, LAST
from fashionvision.errors import UserError

log = logging.getLogger("fashionvision.engine")


class TrainingStopped(UserError):
    """The run cannot go on (too many non-finite losses); a valid checkpoint was written."""


class NonFiniteGuard:
    """Counts bad steps in ``trainer.state``; after ``max_bad_steps`` in a row it checkpoints the
    last good weights and raises :class:`TrainingStopped` with what to try."""

    def __init__(self, max_bad_steps: int):
        self.max_bad_steps = max_bad_steps

    def good(self, trainer: Any) -> None:
        trainer.state.bad_in_row = 0

    def bad(self, trainer: Any) -> None:
        """Drop the step's gradients and count it."""
        state = trainer.state
        state.bad_in_row += 1
        state.skipped_steps += 1
        trainer.optimizer.zero_grad(set_to_none=True)
        log.warning("non-finite loss or gradient at epoch %d batch %d (%d in a row, %d in all): skipped",
                    state.epoch + 1, state.batch_in_epoch, state.bad_in_row, state.skipped_steps)
        trainer.logger.scalars("train", {"skipped_steps": state.skipped_steps}, state.step)
        if state.bad_in_row >= self.max_bad_steps:
            trainer.save()
            raise TrainingStopped(
                f"stopped after {state.bad_in_row} non-finite losses in a row (trainer.max_bad_steps="
                f"{self.max_bad_steps}) at epoch {state.epoch + 1}, step {state.step}; the last good "
                f"weights are in {trainer.run_dir / CHECKPOINT_DIR / LAST}. Try a lower trainer.lr, "
                f"trainer.amp=bf16 instead of fp16, or check the data")
