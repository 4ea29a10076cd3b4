"""One small training loop for every model family.

A :class:`~fashionvision.tasks.base.Task` supplies the model, datasets and named losses; the
:class:`Trainer` sums the losses, steps the optimizer, keeps an EMA, validates, logs and
checkpoints.

Progress is never lost: ``checkpoints/last.pt`` after every epoch (and every
``checkpoint_every_steps`` optimizer steps) holds everything needed to continue exactly where
the run stopped, mid-epoch included. SIGTERM or a first Ctrl-C finishes the step, checkpoints
and returns status ``"preempted"`` (the CLI exits 143 or 130; loader workers ignore both
signals, see :mod:`fashionvision.engine.signals`). A non-finite loss skips the step;
``max_bad_steps`` of them in a row stop the run with a checkpoint of the last good weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fashionvision.engine import distributed as du
from fashionvision.engine.build import (EpochAware, ResumableSampler, build_loader, clamp_workers, cpu_has_bf16,
                                        resolve_device, seed_everything, to_device)
from fashionvision.engine.checkpoint import (BEST, CHECKPOINT_DIR, LAST, check_fresh_run_folder,
                                             find_resume_checkpoint, load_checkpoint, load_pretrained,
                                             resume_mismatch, rng_state, save_checkpoint, set_rng_state)
from fashionvision.engine.config import TrainerConfig, parse_trainer_config, to_dict
from fashionvision.engine.ema import ModelEMA, unwrap
from fashionvision.engine.logging import RunLogger, log_predictions, progress
from fashionvision.engine import report
from fashionvision.engine.schedule import WarmupCosine, build_optimizer
from fashionvision.engine.signals import StopSignals, shutdown_loader_workers
from fashionvision.errors import UserError
from fashionvision.progress import TrackedLoader

if TYPE_CHECKING:  # the contract only: the engine never imports a task at run time
    from torch.utils.data import Dataset

    from fashionvision.tasks.base import Task

log = logging.getLogger("fashionvision.engine")

PREEMPTED_EXIT_CODE = 143


class TrainingStopped(UserError):
    """The run cannot go on (too many non-finite losses); a valid checkpoint was written."""


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
    """

    def __init__(self, task: Task, trainer_cfg: dict | TrainerConfig, run_dir: str | os.PathLike,
                 config: dict | None = None, started_at: float | None = None):
        self.started_at = time.perf_counter() if started_at is None else float(started_at)
        self.task = task
        self.cfg = parse_trainer_config(trainer_cfg)
        self.run_dir = Path(run_dir)
        self.config = dict(config or {})
        self.dist = du.env_info()
        self.device = resolve_device(self.cfg.device, self.dist.local_rank)
        self.cuda = self.device.type == "cuda"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg.amp)
        # bf16 autocast also on a CPU when asked (AMX/avx512_bf16 Xeons: about 1.4x faster steps);
        # fp16 stays CUDA-only (it needs the GradScaler), and trainer/cpu.yaml keeps amp: none
        self.amp = self.amp_dtype is not None and (self.cuda or self.amp_dtype == torch.bfloat16)
        if self.amp and not self.cuda and not cpu_has_bf16():
            log.warning("trainer.amp=bf16: this CPU has no bf16 units (AVX512-BF16/AMX), training in "
                        "float32 instead (emulated bf16 would be slower)")
            self.amp = False
        # channels_last also on a CPU when asked: oneDNN's convolutions prefer it (U-Net
        # MobileNetV2 in bf16 on a Xeon: 1.32x the steps with one thread, 1.17x with two);
        # trainer/cpu.yaml keeps it off
        self.channels_last = self.cfg.channels_last
        self.status = "created"
        self.validated_epoch = -1  # the last epoch validated in this process
        self.metrics: dict[str, float] = {}
        self.best_per_class: list[dict] = []
        self.val_seconds: float | None = None  # duration of the last validation (budget reserve)
        self.save_seconds: float | None = None  # duration of the last checkpoint write
        self._stop_signal = False
        self.stop_signals = StopSignals()

    # ------------------------------------------------------------------ setup
    def _repeated(self, train_set: Dataset) -> Dataset:
        """``train_set`` with images of rare classes repeated (``trainer.repeat_threshold``)."""
        threshold = self.cfg.repeat_threshold
        if threshold is None:
            return train_set
        from fashionvision.data.repeat_factor import RepeatedDataset, repeat_counts, repeat_factors

        classes = self.task.image_classes("train")[:len(train_set)]  # limit_images keeps the first N
        counts = repeat_counts(repeat_factors(classes, threshold), self.cfg.seed)
        if self.dist.is_main:
            log.info("repeat-factor sampling (threshold %g): %d images -> %d items an epoch, %d repeated",
                     threshold, len(counts), int(counts.sum()), int((counts > 1).sum()))
        return RepeatedDataset(train_set, counts)

    def setup(self) -> None:
        """Build datasets, loaders, model, optimizer, EMA; load the resume checkpoint."""
        cfg, task = self.cfg, self.task
        if self.cuda:
            torch.cuda.set_device(self.device)
        du.init_distributed(self.device)
        if cfg.deterministic and self.cuda:
            # CPU kernels are deterministic already (and this call imports torch._dynamo: seconds)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = self.cuda and not cfg.deterministic
        seed_everything(cfg.seed)
        check_fresh_run_folder(self.run_dir, cfg.resume, cfg.overwrite)
        if self.dist.is_main:
            (self.run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        du.barrier()

        limit = cfg.limit_images
        task.gpu_color = bool(cfg.gpu_augment and self.cuda)
        task.seed = cfg.seed  # the per-item augmentation streams follow trainer.seed
        if not self.dist.is_main:
            du.barrier()  # rank 0 builds the decoded-image cache files first; the others reuse them
        self.train_set = EpochAware(self._repeated(task.build_dataset("train", train=True, limit=limit,
                                                                      cache=cfg.cache_images)))
        # only rank 0 validates (mAP does not split across ranks), so only it holds the split
        self.val_set = (task.build_dataset("val", train=False, limit=limit, cache=cfg.cache_images)
                        if self.dist.is_main else [])
        if self.dist.is_main:
            du.barrier()
        if len(self.train_set) == 0:
            raise UserError("the training split is empty")
        if self.dist.is_main and len(self.val_set) == 0:
            folder = getattr(getattr(task, "data", None), "folder", "the dataset")
            raise UserError(f"split 'val' of {folder} has no images (the run validates to pick best.pt): "
                            "convert more images or change the split fractions, e.g. "
                            "fashion-convert ... split=[0.8,0.1,0.1]")
        self.workers = clamp_workers(cfg.workers)
        per_step = cfg.batch_size * self.dist.world_size
        self.sampler = ResumableSampler(self.train_set, self.dist.world_size, self.dist.rank, shuffle=True,
                                        seed=cfg.seed, drop_last=len(self.train_set) >= per_step)
        self.train_loader = build_loader(self.train_set, cfg.batch_size, self.workers, task.collate,
                                         sampler=self.sampler, drop_last=len(self.train_set) >= per_step,
                                         pin_memory=self.cuda, seed=cfg.seed, ignore_stop_signals=True)
        self.val_loader = build_loader(self.val_set, cfg.batch_size, self.workers if len(self.val_set) else 0,
                                       task.collate, pin_memory=self.cuda, seed=cfg.seed, ignore_stop_signals=True)
        self.batches_per_epoch = len(self.train_loader)
        self.steps_per_epoch = max(self.batches_per_epoch // cfg.accumulate, 1)
        self.total_steps = self.steps_per_epoch * cfg.epochs

        model = task.build_model()
        resume_path = self._resume_path()
        weights = task.model_cfg.get("weights")
        if weights and resume_path is None:
            load_pretrained(model, weights, classes=list(task.class_names))
        if self.dist.enabled and cfg.sync_bn:
            if self.cuda:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                log.warning("trainer.sync_bn needs CUDA (PyTorch's SyncBatchNorm); ignored on the CPU")
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.model = model
        self.optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
        self.schedule = WarmupCosine(self.optimizer, cfg.warmup_epochs * self.steps_per_epoch, cfg.min_lr_ratio,
                                     cfg.lr_schedule)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp and self.amp_dtype == torch.float16)
        self.ema = ModelEMA(model, cfg.ema_decay, cfg.ema_ramp) if cfg.ema else None

        self.epoch, self.batch_in_epoch, self.step, self.batches_seen = 0, 0, 0, 0
        self.train_seconds, self.skipped_steps, self.bad_in_row = 0.0, 0, 0
        self.best_metric, self.best_epoch, self.epochs_without_gain = -math.inf, -1, 0
        resume_state = self._load_resume(resume_path) if resume_path is not None else None

        self.train_model: nn.Module = model
        self._ddp: nn.parallel.DistributedDataParallel | None = None
        if self.dist.enabled:
            self._ddp = nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index] if self.cuda else None)
            self.train_model = self._ddp
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        self.logger = RunLogger(self.run_dir, enabled=self.dist.is_main)
        # the budget counts from the command start: setup, model build and caching included
        self._seconds_before, self._fit_started = self.train_seconds, self.started_at
        self.results = report.ResultsLog(self.run_dir, enabled=self.dist.is_main, keep_epochs=self.epoch)
        if resume_state is not None:  # last, so that nothing above consumes the restored RNG
            set_rng_state(resume_state["rng"])

    def _resume_path(self) -> Path | None:
        resume = self.cfg.resume
        if not resume:
            return None
        if str(resume) == "auto":
            path = find_resume_checkpoint(self.run_dir)
            if path is None:
                log.info("trainer.resume=auto: no checkpoint in %s yet, starting fresh", self.run_dir)
            return path
        return Path(resume)

    def _load_resume(self, path: Path) -> dict:
        state = load_checkpoint(path, map_location=self.device)
        problem = resume_mismatch(state, unwrap(self.model), self.task.describe(), self.task.model_cfg)
        if problem:
            raise UserError(f"cannot resume from '{path}': {problem}; use model.weights={path} to "
                            "fine-tune instead")
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for key in ("epoch", "batch_in_epoch", "step", "batches_seen", "skipped_steps", "bad_in_row",
                    "epochs_without_gain", "best_epoch"):
            setattr(self, key, int(state.get(key, 0)))
        if self.batch_in_epoch and int(state.get("world_size", 1)) != self.dist.world_size:
            log.warning("checkpoint was written by %s processes, this run has %d: epoch %d restarts from its "
                        "first batch", state.get("world_size"), self.dist.world_size, self.epoch + 1)
            self.batch_in_epoch = 0
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.best_metric = float(state.get("best_metric", -math.inf))
        self.metrics = dict(state.get("metrics") or {})
        self.best_per_class = list(state.get("best_per_class") or [])
        log.info("resumed from %s: epoch %d, batch %d, step %d", path, self.epoch, self.batch_in_epoch, self.step)
        return state

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        return {
            "version": 1,
            "model": unwrap(self.model).state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step,
            "batches_seen": self.batches_seen, "train_seconds": self.train_seconds,
            "skipped_steps": self.skipped_steps, "bad_in_row": self.bad_in_row, "best_metric": self.best_metric,
            "best_epoch": self.best_epoch, "epochs_without_gain": self.epochs_without_gain,
            "world_size": self.dist.world_size,
            "rng": rng_state(),
            "metrics": dict(self.metrics),
            "best_per_class": list(self.best_per_class),
            "config": self.config,
            "trainer": to_dict(self.cfg),
            "task": self.task.describe(),
        }

    def save(self, best: bool = False) -> None:
        """Write ``last.pt`` (and ``best.pt``) on rank 0; every rank waits for it."""
        started = time.perf_counter()
        if self.dist.is_main:
            state = self._state()
            folder = self.run_dir / CHECKPOINT_DIR
            save_checkpoint(folder / LAST, state)
            if best:
                save_checkpoint(folder / BEST, state, keep_previous=False)
        du.barrier()
        self.save_seconds = time.perf_counter() - started

    # ------------------------------------------------------------------ the loop
    def _progress(self) -> float:
        if self.cfg.max_seconds is not None:
            return self.train_seconds / max(self.cfg.max_seconds - self._reserve(), 1e-9)
        return self.step / max(self.total_steps, 1)

    def _reserve(self) -> float:
        """Seconds kept back from ``max_time`` for the last validation and checkpoint."""
        return report.budget_reserve(self)

    def _time_up(self) -> bool:
        return (self.cfg.max_seconds is not None
                and self.train_seconds + self._reserve() >= self.cfg.max_seconds)

    def _sync_stop(self) -> bool:
        """Update the elapsed time and agree on every rank whether to stop (SIGTERM or budget).

        Ranks take the maximum of each other's clocks and signals, so they all leave the loop
        at the same step.
        """
        self.train_seconds = self._seconds_before + time.perf_counter() - self._fit_started
        signal_flag, self.train_seconds = du.all_reduce_max([float(self._stop_signal), self.train_seconds],
                                                            self.device)
        self._stop_signal = bool(signal_flag)
        return self._stop_signal or self._time_up()

    def forward_backward(self, batch: dict, final_micro: bool) -> tuple[dict[str, float], bool]:
        """Named losses of one micro-batch and their backward pass; ``(values, finite on every rank)``."""
        # gradients are all-reduced once per optimizer step, not once per micro-batch
        sync = self._ddp.no_sync if (self._ddp is not None and not final_micro) else contextlib.nullcontext
        with sync():
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp):
                losses = self.task.compute_losses(self.train_model, batch)
            # "raw_*" terms (e.g. unweighted losses) are logged only, never optimised
            total = sum(v for k, v in losses.items() if not k.startswith("raw_"))
            # one device->host copy per batch for the NaN check and the logged values
            values = dict(zip(["loss", *losses], torch.stack(
                [total.detach().float(), *(v.detach().float() for v in losses.values())]).tolist()))
            finite = du.all_true(math.isfinite(values["loss"]), self.device)
            if finite:
                self.scaler.scale(total / self.cfg.accumulate).backward()
        return values, finite

    def optimizer_step(self) -> None:
        """Apply the accumulated gradients, update the EMA, count the step."""
        self.scaler.step(self.optimizer)  # skips the update itself when fp16 gradients overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1

    def train_one_epoch(self) -> dict[str, float]:
        """One pass over the training split (or what is left of it after a resume)."""
        cfg, task = self.cfg, self.task
        self.train_model.train()
        self.sampler.set_epoch(self.epoch)
        self.sampler.skip = self.batch_in_epoch * cfg.batch_size
        self.train_set.set_epoch(self.epoch)
        self.train_set.set_progress(self._progress())  # augment.close_mosaic
        self.train_loader.generator.manual_seed(cfg.seed * 1_000_003 + self.epoch)
        sums: dict[str, float] = {}
        counted, images, accumulated = 0, 0, 0
        started = time.perf_counter()
        self._epoch_started, self._epoch_images = started, 0  # training speed for the budget reserve
        bar = progress(self.train_loader, total=len(self.train_loader), desc=f"epoch {self.epoch + 1}",
                       enabled=self.dist.is_main)
        for batch in bar:
            self.batch_in_epoch += 1
            self.batches_seen += 1
            batch = to_device(batch, self.device, self.channels_last)
            batch = task.gpu_augment(batch)  # a no-op unless task.gpu_color
            final_micro = accumulated + 1 >= cfg.accumulate or self.batch_in_epoch == self.batches_per_epoch
            values, finite = self.forward_backward(batch, final_micro)
            images += int(batch["images"].shape[0])
            self._epoch_images = images
            if finite:
                self.bad_in_row = 0
                accumulated += 1
                for name, value in values.items():
                    sums[name] = sums.get(name, 0.0) + value
                counted += 1
                if not final_micro:
                    continue
                lr = self.schedule.update(self._progress(), self.step)
                self.scaler.unscale_(self.optimizer)
                if cfg.grad_clip:
                    norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    # fp16 overflow is the scaler's business; otherwise a non-finite gradient is a bad step
                    finite = self.scaler.is_enabled() or bool(torch.isfinite(norm).item())
            if not finite:
                self.bad_in_row += 1
                self.skipped_steps += 1
                self.optimizer.zero_grad(set_to_none=True)
                accumulated = 0
                log.warning("non-finite loss or gradient at epoch %d batch %d (%d in a row, %d in all): skipped",
                            self.epoch + 1, self.batch_in_epoch, self.bad_in_row, self.skipped_steps)
                self.logger.scalars("train", {"skipped_steps": self.skipped_steps}, self.step)
                if self.bad_in_row >= cfg.max_bad_steps:
                    self.save()
                    raise TrainingStopped(
                        f"stopped after {self.bad_in_row} non-finite losses in a row (trainer.max_bad_steps="
                        f"{cfg.max_bad_steps}) at epoch {self.epoch + 1}, step {self.step}; the last good "
                        f"weights are in {self.run_dir / CHECKPOINT_DIR / LAST}. Try a lower trainer.lr, "
                        f"trainer.amp=bf16 instead of fp16, or check the data")
                continue
            self.optimizer_step()
            accumulated = 0
            stop = self._sync_stop()
            self.train_set.set_progress(self._progress())
            speed = images * self.dist.world_size / max(time.perf_counter() - started, 1e-9)
            current = {k: v / max(counted, 1) for k, v in sums.items()}
            shown = {"loss": f"{current.get('loss', float('nan')):.4g}", "lr": f"{lr:.3g}", "img_s": f"{speed:.0f}"}
            if cfg.max_seconds is not None:  # the bar's ETA is the epoch's; this is the run's
                shown["left"] = f"{max(cfg.max_seconds - self.train_seconds, 0):.0f}s"
            bar.set_postfix(shown, refresh=False)
            if self.step % cfg.log_every_steps == 0:
                self.logger.scalars("train", {**values, "lr": lr, "img_per_s": speed}, self.step)
            if cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0:
                self.save()
            if stop:
                break
        bar.close()
        self._done_images = getattr(self, "_done_images", 0) + images
        self._done_seconds = getattr(self, "_done_seconds", 0.0) + time.perf_counter() - started
        self._epoch_images = 0
        means = {k: v / max(counted, 1) for k, v in sums.items()}
        means = du.all_reduce_mean(means, self.device)
        means["img_per_s"] = images * self.dist.world_size / max(time.perf_counter() - started, 1e-9)
        return means

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Metrics of the EMA (or the model) on the validation split, computed on rank 0,
        decoded without test-time augmentation (:meth:`Task.plain_decoding`)."""
        metrics: dict[str, float] | None = None
        started = time.perf_counter()
        if self.dist.is_main:
            model = self.ema.module if self.ema is not None else unwrap(self.model)
            was_training = model.training
            model.eval()
            # no autocast here: box decoding and metrics need float32; a task may autocast its forward
            loader = TrackedLoader(self.val_loader, f"validate epoch {self.epoch}")
            with self.task.plain_decoding():  # test-time augmentation is for fashion-eval
                result = self.task.evaluate(model, loader, self.device)
                log_predictions(self.logger, self.task, model, self.val_loader, self.device,
                                self.cfg.log_images, self.step)
            self.last_per_class = list(result.get("per_class") or [])
            metrics = {k: float(v) for k, v in result.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
            model.train(was_training)
            if self.task.primary_metric not in metrics:
                raise UserError(f"task '{self.task.name}' returned no '{self.task.primary_metric}' metric "
                                f"(got {sorted(metrics)})")
        metrics = du.broadcast_object(metrics)
        self.val_seconds = time.perf_counter() - started
        return metrics

    def _on_stop_signal(self, signum: int) -> None:
        self._stop_signal = True

    def fit(self) -> dict[str, float]:
        """Train until the epochs or the time budget are spent; returns the final metrics.

        ``self.status`` says how it ended: completed, time_budget, early_stopped or preempted.
        With ``max_time`` the budget alone ends the run (``epochs`` is ignored).
        """
        self.setup()
        cfg = self.cfg
        if self.dist.is_main:
            for line in report.header_lines(self):
                log.info("%s", line)
        # SIGTERM / first Ctrl-C: finish the step, checkpoint, return "preempted" (engine/signals.py)
        self.stop_signals = StopSignals(self._on_stop_signal).__enter__()
        try:
            self.status = "running"
            train_losses = None
            # (a fresh run always trains: a budget spent by the setup still gets one step)
            while ((cfg.max_seconds is not None or self.epoch < cfg.epochs)
                   and not (self._sync_stop() and self.step > 0)):
                epoch_started = time.perf_counter()
                train_losses = self.train_one_epoch()
                du.broadcast_buffers(self.model)
                if self._stop_signal:  # preempted: save where we are, validate after the restart
                    self.save()
                    self.status = "preempted"
                    self._write_metrics()
                    return self.metrics
                self.epoch += 1
                self.batch_in_epoch = 0
                if "loss" in train_losses:  # not an epoch whose batches all ran before a restart
                    self.logger.scalars("train_epoch", train_losses, self.epoch)
                last_epoch = cfg.max_seconds is None and self.epoch >= cfg.epochs
                improved, validated = False, None
                if self.epoch % cfg.val_every == 0 or last_epoch or self._time_up():
                    improved = self._validate_epoch()
                    validated = self.metrics
                log.info("%s", report.epoch_line(self.epoch, train_losses, validated, self.task.primary_metric,
                                                 self.best_metric, self.best_epoch))
                self.train_seconds = self._seconds_before + time.perf_counter() - self._fit_started
                self.results.add(report.epoch_row(self, train_losses, validated,
                                                  time.perf_counter() - epoch_started))
                self.save(best=improved)
                self.logger.flush()
                if cfg.early_stop_patience and self.epochs_without_gain >= cfg.early_stop_patience:
                    log.info("early stop: no gain in %s for %d validations", self.task.primary_metric,
                             self.epochs_without_gain)
                    self.status = "early_stopped"
                    break
            else:
                if self._stop_signal:
                    self.save()
                    self.status = "preempted"
                    self._write_metrics()
                    return self.metrics
                if self._time_up() and train_losses is not None and self.validated_epoch != self.epoch:
                    # the budget ran out during the epoch-end work (checkpoint write) after an
                    # epoch that ended just inside it: the final validation is still owed
                    self.save(best=self._validate_epoch())
                self.status = "time_budget" if self._time_up() else "completed"
            self._write_metrics()
            return self.metrics
        finally:
            # the workers ignore SIGTERM/SIGINT: stop them here, not at interpreter exit, and
            # while a second Ctrl-C still aborts quietly
            shutdown_loader_workers(getattr(self, "train_loader", None), getattr(self, "val_loader", None))
            self.stop_signals.__exit__(None, None, None)
            self.logger.close()

    def _validate_epoch(self) -> bool:
        """Validate after epoch ``self.epoch``, track the best; True when it improved."""
        self.metrics = self.validate()
        self.validated_epoch = self.epoch
        self.logger.scalars("val", self.metrics, self.epoch)
        value = self.metrics[self.task.primary_metric]
        improved = value > self.best_metric
        if improved:
            self.best_metric, self.best_epoch, self.epochs_without_gain = value, self.epoch, 0
            self.best_per_class = getattr(self, "last_per_class", [])
        else:
            self.epochs_without_gain += 1
        return improved

    def _write_metrics(self) -> None:
        if not self.dist.is_main:
            return
        self.results.finish()
        self.train_seconds = self._seconds_before + time.perf_counter() - self._fit_started  # the whole run
        summary = {"status": self.status, "epochs": self.epoch, "steps": self.step,
                   "train_seconds": round(self.train_seconds, 3), "skipped_steps": self.skipped_steps,
                   "primary_metric": self.task.primary_metric, "best": self.best_metric,
                   "best_epoch": self.best_epoch, "final": self.metrics}
        tmp = self.run_dir / ".metrics.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=float), encoding="utf-8")
        os.replace(tmp, self.run_dir / "metrics.json")
