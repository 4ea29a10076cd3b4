"""The parts of a training run around its steps, each a small hook over the trainer's state.

In the spirit of detectron2's ``HookBase``: the :class:`~fashionvision.engine.trainer.Trainer`
calls every hook, in order, before and after the run, after each epoch and after each optimizer
step. A hook is handed the trainer (its ``state``, config, model and loaders) and never imports
it, so the engine has no import circle. The after-epoch order is the run's: validate, report,
checkpoint, report, then decide on an early stop.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import torch

from fashionvision.engine import distributed as du
from fashionvision.engine import report
from fashionvision.engine.ema import unwrap
from fashionvision.engine.logging import log_predictions
from fashionvision.errors import UserError
from fashionvision.progress import TrackedLoader

log = logging.getLogger("fashionvision.engine")


class HookBase:
    """A no-op at every point of the run; subclasses override the points they need."""

    def before_train(self, trainer: Any) -> None:
        """After the setup, before the first step."""

    def after_epoch(self, trainer: Any) -> None:
        """After an epoch has been counted (``state.epoch`` is the number of epochs done)."""

    def after_step(self, trainer: Any) -> None:
        """After a successful optimizer step (``state.step`` counted)."""

    def after_train(self, trainer: Any) -> None:
        """After the last step of a run that ended normally or was preempted."""


class Validation(HookBase):
    """Validate the EMA (or the model) on rank 0 when due, and track the best metric.

    Due every ``trainer.val_every`` epochs, after the last epoch and when the time budget is
    spent. The decoding is the plain one (no test-time augmentation: that is ``fashion-eval``'s).
    """

    def after_epoch(self, trainer: Any) -> None:
        state, cfg = trainer.state, trainer.cfg
        last_epoch = cfg.max_seconds is None and state.epoch >= cfg.epochs
        state.improved, state.epoch_metrics = False, None
        if state.epoch % cfg.val_every == 0 or last_epoch or trainer._time_up():
            state.improved = self.validate_epoch(trainer)
            state.epoch_metrics = state.metrics

    def validate_epoch(self, trainer: Any) -> bool:
        """Validate after epoch ``state.epoch``; True when the primary metric improved."""
        state, task = trainer.state, trainer.task
        state.metrics = self.evaluate(trainer)
        state.validated_epoch = state.epoch
        trainer.logger.scalars("val", state.metrics, state.epoch)
        value = state.metrics[task.primary_metric]
        if value > state.best_metric:
            state.best_metric, state.best_epoch, state.epochs_without_gain = value, state.epoch, 0
            state.best_per_class = state.last_per_class
            return True
        state.epochs_without_gain += 1
        return False

    @torch.no_grad()
    def evaluate(self, trainer: Any) -> dict[str, float]:
        """The task's metrics on the validation split, computed on rank 0 and sent to all ranks."""
        state, task = trainer.state, trainer.task
        metrics: dict[str, float] | None = None
        started = time.perf_counter()
        if trainer.dist.is_main:
            model = trainer.ema.module if trainer.ema is not None else unwrap(trainer.model)
            was_training = model.training
            model.eval()
            # no autocast here: box decoding and metrics need float32; a task may autocast its forward
            loader = TrackedLoader(trainer.val_loader, f"validate epoch {state.epoch}")
            with task.plain_decoding():  # test-time augmentation is for fashion-eval
                result = task.evaluate(model, loader, trainer.device)
                log_predictions(trainer.logger, task, model, trainer.val_loader, trainer.device,
                                trainer.cfg.log_images, state.step)
            state.last_per_class = list(result.get("per_class") or [])
            metrics = {k: float(v) for k, v in result.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
            model.train(was_training)
            if task.primary_metric not in metrics:
                raise UserError(f"task '{task.name}' returned no '{task.primary_metric}' metric "
                                f"(got {sorted(metrics)})")
        metrics = du.broadcast_object(metrics)
        state.val_seconds = time.perf_counter() - started
        state.epoch_val_seconds += state.val_seconds
        return metrics


class EmaRampPlan(HookBase):
    """Scale the EMA's ramp to the steps a time budget allows, re-estimated after every epoch.

    A run of known length has its ramp scaled when the EMA is made; under ``trainer.max_time``
    the length is the steps so far plus this process's step rate times the seconds left.
    """

    def before_train(self, trainer: Any) -> None:
        self.steps_at_start = trainer.state.step

    def after_epoch(self, trainer: Any) -> None:
        budget, state = trainer.budget, trainer.state
        if trainer.ema is None or budget.max_seconds is None or not trainer.cfg.ema_scale_ramp:
            return
        if budget.done_seconds <= 0 or state.step <= self.steps_at_start:
            return
        rate = (state.step - self.steps_at_start) / budget.done_seconds
        left = max(budget.max_seconds - budget.reserve(trainer) - state.train_seconds, 0.0)
        trainer.ema.plan(state.step + rate * left)


class RunReport(HookBase):
    """What the user reads: the header, one line and one ``results.csv`` row per epoch, and
    ``metrics.json`` at the end (rank 0 only; see :mod:`fashionvision.engine.report`)."""

    def before_train(self, trainer: Any) -> None:
        if trainer.dist.is_main:
            for line in report.header_lines(trainer):
                log.info("%s", line)

    def after_epoch(self, trainer: Any) -> None:
        state, task = trainer.state, trainer.task
        if "loss" in state.epoch_losses:  # not an epoch whose batches all ran before a restart
            trainer.logger.scalars("train_epoch", state.epoch_losses, state.epoch)
        log.info("%s", report.epoch_line(state.epoch, state.epoch_losses, state.epoch_metrics,
                                         task.primary_metric, state.best_metric, state.best_epoch))
        trainer.update_clock()
        trainer.results.add(report.epoch_row(trainer, state.epoch_losses, state.epoch_metrics,
                                             time.perf_counter() - state.epoch_started))
        trainer.logger.flush()

    def after_train(self, trainer: Any) -> None:
        if not trainer.dist.is_main:
            return
        state = trainer.state
        trainer.results.finish()
        trainer.update_clock()  # the whole run
        summary = {"status": state.status, "epochs": state.epoch, "steps": state.step,
                   "train_seconds": round(state.train_seconds, 3), "skipped_steps": state.skipped_steps,
                   "primary_metric": trainer.task.primary_metric, "best": state.best_metric,
                   "best_epoch": state.best_epoch, "final": state.metrics}
        path = trainer.run_dir / "metrics.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(summary, indent=2, default=float), encoding="utf-8")
        os.replace(tmp, path)


class Checkpointing(HookBase):
    """``last.pt`` on a wall-clock interval, ``best.pt`` whenever the metric improved.

    ``trainer.checkpoint_every`` (a duration; 0 = at every epoch end) spaces the ``last.pt``
    writes, which hold the optimizer state and so are large (about 1 GB for a full YOLOv3);
    ``trainer.checkpoint_every_steps`` adds one every N steps. The run also checkpoints at its
    end, on SIGTERM/Ctrl-C and before it stops on non-finite losses (the trainer sees to those).
    Every rank takes the same decision: it is made on the clock all ranks agree on. These
    checkpoints may be written in the background (``trainer.checkpoint_background``).
    """

    def __init__(self, every_seconds: float, every_steps: int | None):
        self.every_seconds = every_seconds
        self.every_steps = every_steps
        self.saved_at = 0.0  # state.train_seconds at the last last.pt write

    def before_train(self, trainer: Any) -> None:
        self.saved_at = trainer.state.train_seconds

    def _interval_due(self, trainer: Any) -> bool:
        return trainer.state.train_seconds - self.saved_at >= self.every_seconds

    def after_step(self, trainer: Any) -> None:
        step = trainer.state.step
        if (self.every_steps and step % self.every_steps == 0) or (
                self.every_seconds > 0 and self._interval_due(trainer)):
            self.save(trainer)

    def after_epoch(self, trainer: Any) -> None:
        due = self.every_seconds <= 0 or self._interval_due(trainer)
        due = bool(du.all_reduce_max([float(due)], trainer.device)[0])  # the epoch-end clocks may differ
        due = due and trainer.state.saved_step != trainer.state.step  # not twice for one step
        if due:
            self.save(trainer, best=trainer.state.improved)
        elif trainer.state.improved:
            self.save(trainer, best=True, last=False)

    def save(self, trainer: Any, best: bool = False, last: bool = True) -> None:
        trainer.save(best=best, last=last, background=True)
        if last:
            self.saved_at = trainer.state.train_seconds


class EarlyStopping(HookBase):
    """``trainer.early_stop_patience``: end the run after that many validations without a gain."""

    def __init__(self, patience: int | None):
        self.patience = patience

    def after_epoch(self, trainer: Any) -> None:
        state = trainer.state
        if self.patience and state.epochs_without_gain >= self.patience:
            log.info("early stop: no gain in %s for %d validations", trainer.task.primary_metric,
                     state.epochs_without_gain)
            state.status = "early_stopped"
