"""One small training loop for every model family.

A :class:`~fashionvision.tasks.base.Task` supplies the model, datasets and named losses; the
:class:`Trainer` sums the losses, steps the optimizer and keeps an EMA; the hooks of
:mod:`fashionvision.engine.hooks` validate, report and checkpoint around it, over one
:class:`~fashionvision.engine.state.TrainState`.

Progress is never lost: ``checkpoints/last.pt`` (every ``checkpoint_every`` of wall clock,
every ``checkpoint_every_steps`` steps, at the end and on a stop signal) holds everything needed
to continue exactly where the run stopped, mid-epoch included. SIGTERM or a first Ctrl-C
finishes the step, checkpoints and returns status ``"preempted"`` (the CLI exits 143 or 130;
loader workers ignore both signals, see :mod:`fashionvision.engine.signals`). A non-finite loss
skips the step; ``max_bad_steps`` of them in a row stop the run with a checkpoint of the last
good weights (:mod:`fashionvision.engine.guard`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from fashionvision.engine import distributed as du
from fashionvision.engine import hooks as run_hooks
from fashionvision.engine import resume
from fashionvision.engine import setup as run_setup
from fashionvision.engine.budget import TimeBudget
from fashionvision.engine.device import cpu_has_bf16, resolve_device
from fashionvision.engine.checkpoint import BEST, CHECKPOINT_DIR, LAST, CheckpointWriter, set_rng_state
from fashionvision.engine.config import TrainerConfig, parse_trainer_config
from fashionvision.engine.ema import ModelEMA
from fashionvision.engine.epoch import run_epoch
from fashionvision.engine.guard import NonFiniteGuard, TrainingStopped
from fashionvision.engine.logging import RunLogger
from fashionvision.engine.report import ResultsLog
from fashionvision.engine.schedule import WarmupCosine, build_optimizer
from fashionvision.engine.signals import StopSignals, shutdown_loader_workers
from fashionvision.engine.state import TrainState

if TYPE_CHECKING:  # the contract only: the engine never imports a task at run time
    from fashionvision.tasks.base import Task

log = logging.getLogger("fashionvision.engine")

PREEMPTED_EXIT_CODE = 143
__all__ = ["PREEMPTED_EXIT_CODE", "Trainer", "TrainingStopped"]


class Trainer:
    """Trains ``task`` with the ``trainer`` config group, writing into ``run_dir``.

    Args:
        task: the model family (see ``fashionvision.tasks.base.Task``).
        trainer_cfg: the ``trainer`` group (a plain dict, validated) or a TrainerConfig.
        run_dir: the run folder (Hydra's run dir from the CLI); shared by every rank.
        config: the full composed config, stored in checkpoints so that the model can be
            rebuilt later by name.
        started_at: ``time.perf_counter()`` when the command started: ``max_time`` counts from
            there (setup, model build and data caching included); default: now.
        folder_checked: the caller has refused a fresh run over earlier checkpoints already.

    The fields of :class:`TrainState` read as attributes too (``trainer.epoch`` is
    ``trainer.state.epoch``).
    """

    def __init__(self, task: Task, trainer_cfg: dict | TrainerConfig, run_dir: str | os.PathLike,
                 config: dict | None = None, started_at: float | None = None, folder_checked: bool = False):
        self.state = TrainState()
        self.started_at = time.perf_counter() if started_at is None else float(started_at)
        self.folder_checked = folder_checked
        self.task = task
        self.cfg = parse_trainer_config(trainer_cfg)
        self.run_dir = Path(run_dir)
        self.config = dict(config or {})
        self.dist = du.env_info()
        self.device = resolve_device(self.cfg.device, self.dist.local_rank)
        self.cuda = self.device.type == "cuda"
        self.amp_dtype, self.amp = run_setup.autocast_dtype(self.cfg.amp, self.device, cpu_has_bf16)
        # channels_last also on a CPU when asked: oneDNN's convolutions prefer it; trainer/cpu.yaml keeps it off
        self.channels_last = self.cfg.channels_last
        self._stop_signal = False
        self.stop_signals = StopSignals()
        self.guard = NonFiniteGuard(self.cfg.max_bad_steps)
        self.checkpoints = CheckpointWriter(background=self.cfg.checkpoint_background)
        self.validation = run_hooks.Validation()
        self.hooks: list[run_hooks.HookBase] = [
            self.validation,
            run_hooks.EmaRampPlan(),
            run_hooks.Checkpointing(self.cfg.checkpoint_seconds, self.cfg.checkpoint_every_steps),
            run_hooks.RunReport(),
            run_hooks.EarlyStopping(self.cfg.early_stop_patience),
        ]

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Build datasets, loaders, model, optimizer, EMA; load the resume checkpoint."""
        cfg, task = self.cfg, self.task
        run_setup.prepare_process(cfg, self.device, self.run_dir, self.dist.is_main, check_folder=not self.folder_checked)
        data = run_setup.build_training_data(task, cfg, self.dist, self.cuda)
        self.train_set, self.val_set, self.sampler = data.train_set, data.val_set, data.sampler
        self.train_loader, self.val_loader, self.workers = data.train_loader, data.val_loader, data.workers
        self.batches_per_epoch = data.batches_per_epoch
        self.steps_per_epoch = max(self.batches_per_epoch // cfg.accumulate, 1)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.budget = TimeBudget(cfg.max_seconds, self.total_steps)

        resume_path = resume.resume_path(cfg, self.run_dir)
        self.model = run_setup.build_model(task, cfg, self.dist, self.device, self.channels_last,
                                           pretrained=resume_path is None)
        self.optimizer = build_optimizer(self.model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
        self.schedule = WarmupCosine(self.optimizer, cfg.warmup_epochs * self.steps_per_epoch, cfg.min_lr_ratio,
                                     cfg.lr_schedule)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp and self.amp_dtype == torch.float16)
        # the ramp scaled to a known run length; a time budget's is planned after each epoch (hooks.EmaRampPlan)
        planned = self.total_steps if cfg.ema_scale_ramp and cfg.max_seconds is None else None
        self.ema = ModelEMA(self.model, cfg.ema_decay, cfg.ema_ramp, planned_steps=planned) if cfg.ema else None
        resume_state = resume.restore(self, resume_path) if resume_path is not None else None
        self.train_model, self._ddp = run_setup.wrap_for_training(self.model, cfg, self.dist, self.device)
        self.logger = RunLogger(self.run_dir, enabled=self.dist.is_main)
        # the budget counts from the command start: setup, model build and caching included
        self._seconds_before, self._fit_started = self.state.train_seconds, self.started_at
        self.results = ResultsLog(self.run_dir, enabled=self.dist.is_main, keep_epochs=self.state.epoch)
        if resume_state is not None:  # last, so that nothing above consumes the restored RNG
            set_rng_state(resume_state["rng"])

    def save(self, best: bool = False, last: bool = True, background: bool = False) -> None:
        """Write ``last.pt`` (and ``best.pt``, without the optimizer state) on rank 0; every rank waits.

        ``background`` and ``trainer.checkpoint_background``: a thread writes, the loop waits for a copy.
        """
        started = time.perf_counter()
        if self.dist.is_main:
            folder = self.run_dir / CHECKPOINT_DIR
            files = []
            if last:
                files.append((folder / LAST, resume.checkpoint_state(self), True))
            if best:
                files.append((folder / BEST, resume.checkpoint_state(self, optimizer=False), False))
            self.checkpoints.write(files, background=background)
        du.barrier()
        if last:
            self.state.saved_step = self.state.step
        self.state.save_seconds = time.perf_counter() - started
        self.state.epoch_save_seconds += self.state.save_seconds

    # ------------------------------------------------------------------ the clock
    def update_clock(self) -> None:
        """``state.train_seconds``: this process's clock, earlier processes of a resumed run included."""
        self.state.train_seconds = self._seconds_before + time.perf_counter() - self._fit_started

    def _progress(self) -> float:
        return self.budget.progress(self)

    def _time_up(self) -> bool:
        """Whether the budget is spent, as every rank agrees (the reserves differ between ranks)."""
        return bool(du.all_reduce_max([float(self.budget.time_up(self))], self.device)[0])

    def _sync_stop(self) -> bool:
        """Update the clock and agree on every rank whether to stop (a stop signal or the budget).

        One all-reduce takes the maximum of the ranks' signals, clocks and budget reserves: every
        rank then leaves the loop at the same step, and reads the same schedule progress.
        """
        self.update_clock()
        signal_flag, seconds, reserve = du.all_reduce_max(
            [float(self._stop_signal), self.state.train_seconds, self.budget.reserve(self)], self.device)
        self._stop_signal, self.state.train_seconds = bool(signal_flag), seconds
        if self.dist.enabled:
            self.budget.agreed_reserve = reserve
        spent = self.cfg.max_seconds is not None and seconds + reserve >= self.cfg.max_seconds
        return self._stop_signal or spent

    # ------------------------------------------------------------------ one step
    def optimizer_step(self) -> None:
        """Apply the accumulated gradients, update the EMA, count the step."""
        self.scaler.step(self.optimizer)  # skips the update itself when fp16 gradients overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.state.step += 1

    # ------------------------------------------------------------------ the loop
    def train_one_epoch(self) -> dict[str, float]:
        """One pass over the training split (:func:`fashionvision.engine.epoch.run_epoch`)."""
        return run_epoch(self)

    def validate(self) -> dict[str, float]:
        """Metrics of the EMA (or the model) on the validation split (:class:`hooks.Validation`)."""
        return self.validation.evaluate(self)

    def _on_stop_signal(self, signum: int) -> None:
        self._stop_signal = True

    def _call(self, point: str) -> None:
        for hook in self.hooks:
            getattr(hook, point)(self)

    def fit(self) -> dict[str, float]:
        """Train until the epochs or the time budget are spent; returns the final metrics.

        ``self.status`` says how it ended: completed, time_budget, early_stopped or preempted.
        With ``max_time`` the budget alone ends the run (``epochs`` is ignored).
        """
        self.setup()
        cfg, state = self.cfg, self.state
        self._call("before_train")
        # SIGTERM / first Ctrl-C: finish the step, checkpoint, return "preempted" (engine/signals.py)
        self.stop_signals = StopSignals(self._on_stop_signal).__enter__()
        try:
            state.status = "running"
            trained = False
            # (a fresh run always trains: a budget spent by the setup still gets one step)
            while ((cfg.max_seconds is not None or state.epoch < cfg.epochs)
                   and not (self._sync_stop() and state.step > 0)):
                state.epoch_started, state.epoch_val_seconds, state.epoch_save_seconds = time.perf_counter(), 0.0, 0.0
                state.epoch_losses = self.train_one_epoch()
                trained = True
                du.broadcast_buffers(self.model)
                if self._stop_signal:  # preempted: save where we are, validate after the restart
                    break
                state.epoch += 1
                state.batch_in_epoch = 0
                self._call("after_epoch")
                if state.status == "early_stopped":
                    break
            self._finish(trained)
            self._call("after_train")
            return state.metrics
        except BaseException:
            self.checkpoints.settle()  # a write under way completes; the error on its way out wins
            raise
        finally:
            # the workers ignore SIGTERM/SIGINT: stop them here, not at interpreter exit, and
            # while a second Ctrl-C still aborts quietly
            shutdown_loader_workers(getattr(self, "train_loader", None), getattr(self, "val_loader", None))
            self.stop_signals.__exit__(None, None, None)
            self.logger.close()

    def _finish(self, trained: bool) -> None:
        """The status, the validation still owed and the final ``last.pt`` of a run that stops."""
        state = self.state
        if self._stop_signal:
            self.save()
            state.status = "preempted"
            return
        if state.status == "early_stopped":
            self._save_if_behind()
            self.checkpoints.wait()
            return
        improved = False
        if self._time_up() and trained and state.validated_epoch != state.epoch:
            # the budget ran out during the epoch-end work (checkpoint write) after an
            # epoch that ended just inside it: the final validation is still owed
            improved = self.validation.validate_epoch(self)
            self.save(best=improved)
        else:
            self._save_if_behind()
        state.status = "time_budget" if self._time_up() else "completed"
        self.checkpoints.wait()  # nothing is left to a background write once the run has ended

    def _save_if_behind(self) -> None:
        """``last.pt`` at the end of the run when the interval left it behind the last step."""
        if self.state.saved_step != self.state.step:
            self.save()


def _state_attribute(name: str) -> property:
    return property(lambda self: getattr(self.state, name),
                    lambda self, value: setattr(self.state, name, value),
                    doc=f"``self.state.{name}``")


for _field in dataclasses.fields(TrainState):
    setattr(Trainer, _field.name, _state_attribute(_field.name))
