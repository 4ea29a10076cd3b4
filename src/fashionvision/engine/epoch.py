"""One pass over the training split: the steps of :meth:`Trainer.train_one_epoch`.

Each batch: to the device, the task's GPU augmentation, forward and backward
(:func:`forward_backward`), and once ``trainer.accumulate`` micro-batches are in, the
finite check and the gradient clip (:func:`step_is_finite`), the learning rate, the optimizer
step and the EMA (:meth:`Trainer.optimizer_step`), then the after-step hooks. A non-finite
loss or gradient is the :class:`~fashionvision.engine.guard.NonFiniteGuard`'s.

What the host reads from the device, and when (on a GPU each read waits for every queued
kernel, so the CPU stops running ahead of the GPU):

- once per optimizer step: one flag, "every micro-batch's total loss is finite, and so is the
  gradient norm that the clip computes", built on the device, all-reduced (MIN) when
  distributed so that every rank takes the same branch, read after the last micro-batch.
  The backward therefore runs whatever the loss; a non-finite micro-batch skips its whole
  optimizer step, whose gradients are dropped. With a GradScaler (fp16) the norm is left out
  and the decision comes before the unscale: overflowing gradients stay the scaler's to skip
  (its ``step`` reads its own flag), and a skipped step leaves the scaler untouched.
- every ``trainer.log_every_steps`` steps, on rank 0 only: the running loss sums, which stay on
  the device (:class:`LossMeter`), for TensorBoard and the progress bar's postfix.
- at the epoch end: the epoch's mean losses (then all-reduced when distributed).

The stop check (:meth:`Trainer._sync_stop`) reads nothing from the device on one process;
distributed, it is one more small all-reduce per step, after the optimizer step so that a
stop signal is honoured at the step it arrived in.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch
from torch import nn

from fashionvision.engine import distributed as du
from fashionvision.engine.loaders import to_device
from fashionvision.engine.logging import progress


class LossMeter:
    """The epoch's running sums of the logged loss values, kept on the device.

    Each micro-batch adds ``[loss, *named terms, 1]`` where its total loss is finite and zeros
    where it is not (without a host read), so the last entry counts the micro-batches averaged:
    the means are those of the finite micro-batches. The sums are kept per set of names, so a
    task whose loss terms vary between batches is still averaged by name.
    """

    def __init__(self) -> None:
        self._sums: dict[tuple[str, ...], torch.Tensor] = {}
        self._last: tuple[tuple[str, ...], torch.Tensor] | None = None

    def add(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Count one micro-batch's values (``"loss"`` first); returns whether its loss is finite (a device bool)."""
        names = tuple(values)
        total = values["loss"]
        one = total.new_ones((), dtype=torch.float64)
        stacked = torch.stack([*(v.detach().double() for v in values.values()), one])
        finite = torch.isfinite(total)
        counted = torch.where(finite, stacked, 0.0)
        self._sums[names] = self._sums[names] + counted if names in self._sums else counted
        self._last = (names, stacked)
        return finite

    def read(self) -> tuple[dict[str, float], int, dict[str, float]]:
        """One host read: the means of the finite micro-batches, their count, the last micro-batch's values."""
        parts = [*self._sums.items(), *([self._last] if self._last is not None else [])]
        if not parts:
            return {}, 0, {}
        flat = iter(torch.cat([values for _, values in parts]).tolist())
        chunks = [(names, [next(flat) for _ in names], next(flat)) for names, _ in parts]
        last = {}
        if self._last is not None:
            names, values, _ = chunks.pop()
            last = dict(zip(names, values))
        sums: dict[str, float] = {}
        counted = 0
        for names, values, count in chunks:
            counted += int(count)
            for name, value in zip(names, values):
                sums[name] = sums.get(name, 0.0) + value
        return {k: v / max(counted, 1) for k, v in sums.items()}, counted, last


def forward_backward(trainer: Any, batch: dict, final_micro: bool) -> dict[str, torch.Tensor]:
    """Named losses of one micro-batch (detached, on the device, ``"loss"`` first) after their backward pass.

    The backward runs even for a non-finite loss: deciding first would cost a host read per
    micro-batch; :func:`step_is_finite` drops such a step's gradients.
    """
    # gradients are all-reduced once per optimizer step, not once per micro-batch
    sync = trainer._ddp.no_sync if (trainer._ddp is not None and not final_micro) else contextlib.nullcontext
    with sync():
        with torch.autocast(trainer.device.type, dtype=trainer.amp_dtype or torch.bfloat16, enabled=trainer.amp):
            losses = trainer.task.compute_losses(trainer.train_model, batch)
        # "raw_*" terms (e.g. unweighted losses) are logged only, never optimised
        total = sum(v for k, v in losses.items() if not k.startswith("raw_"))
        trainer.scaler.scale(total / trainer.cfg.accumulate).backward()
    return {"loss": total.detach().float(), **{k: v.detach().float() for k, v in losses.items()}}


def clip_gradients(trainer: Any) -> torch.Tensor | None:
    """Clip to ``trainer.grad_clip``; the norm before clipping (on the device), None without a clip."""
    if not trainer.cfg.grad_clip:
        return None
    return nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.cfg.grad_clip)


def step_is_finite(trainer: Any, losses_finite: torch.Tensor) -> bool:
    """Whether the optimizer step may run, as every rank agrees, with one host read.

    Args:
        losses_finite: a device bool, whether every micro-batch of the step had a finite loss.

    Without a GradScaler the gradients are clipped first and a non-finite norm makes the step
    bad too. With one (fp16) overflow is the scaler's business: the flag holds the losses only,
    and the unscale and clip follow a good decision, so a skipped step leaves the scaler as it was.
    """
    finite = losses_finite
    if not trainer.scaler.is_enabled():
        norm = clip_gradients(trainer)
        if norm is not None:
            finite = finite & torch.isfinite(norm)
    good = bool(du.all_true(finite).item())  # the step's one read
    if good and trainer.scaler.is_enabled():
        trainer.scaler.unscale_(trainer.optimizer)
        clip_gradients(trainer)
    return good


def _postfix(trainer: Any, means: dict[str, float], lr: float, speed: float) -> dict[str, str]:
    """The progress bar's postfix: running mean loss, learning rate, speed and the budget left."""
    shown = {"loss": f"{means.get('loss', float('nan')):.4g}", "lr": f"{lr:.3g}", "img_s": f"{speed:.0f}"}
    if trainer.cfg.max_seconds is not None:  # the bar's ETA is the epoch's; this is the run's
        shown["left"] = f"{max(trainer.cfg.max_seconds - trainer.state.train_seconds, 0):.0f}s"
    return shown


def _log_step(trainer: Any, bar: Any, meter: LossMeter, lr: float, speed: float) -> None:
    """Every ``trainer.log_every_steps`` steps on rank 0: read the losses once, log them and show them."""
    means, _, last = meter.read()
    trainer.logger.scalars("train", {**last, "lr": lr, "img_per_s": speed}, trainer.state.step)
    bar.set_postfix(_postfix(trainer, means, lr, speed), refresh=False)


def run_epoch(trainer: Any) -> dict[str, float]:
    """Train one epoch (or what is left of it after a resume); the mean of each logged value."""
    cfg, task, state = trainer.cfg, trainer.task, trainer.state
    trainer.train_model.train()
    trainer.sampler.set_epoch(state.epoch)
    trainer.sampler.skip = state.batch_in_epoch * cfg.batch_size
    trainer.train_set.set_epoch(state.epoch)
    trainer.train_set.set_progress(trainer._progress())  # augment.close_mosaic
    trainer.train_loader.generator.manual_seed(cfg.seed * 1_000_003 + state.epoch)
    meter = LossMeter()
    losses_finite: torch.Tensor | None = None  # of the micro-batches of the step in progress
    images, accumulated = 0, 0
    started = time.perf_counter()
    trainer.budget.start_epoch()  # the training speed, for the budget's reserve
    bar = progress(trainer.train_loader, total=len(trainer.train_loader), desc=f"epoch {state.epoch + 1}",
                   enabled=trainer.dist.is_main)
    lr = trainer.optimizer.param_groups[0]["lr"]
    for batch in bar:
        state.batch_in_epoch += 1
        state.batches_seen += 1
        batch = to_device(batch, trainer.device, trainer.channels_last)
        batch = task.gpu_augment(batch)  # a no-op unless task.gpu_color
        final_micro = accumulated + 1 >= cfg.accumulate or state.batch_in_epoch == trainer.batches_per_epoch
        finite = meter.add(forward_backward(trainer, batch, final_micro))
        losses_finite = finite if losses_finite is None else losses_finite & finite
        batch_images = int(batch["images"].shape[0])
        images += batch_images
        trainer.budget.count(batch_images)
        accumulated += 1
        if not final_micro:
            continue
        good = step_is_finite(trainer, losses_finite)
        accumulated, losses_finite = 0, None
        if not good:
            trainer.guard.bad(trainer)  # raises TrainingStopped after trainer.max_bad_steps in a row
            continue
        trainer.guard.good(trainer)
        lr = trainer.schedule.update(trainer._progress(), state.step)
        trainer.optimizer_step()
        stop = trainer._sync_stop()
        trainer.train_set.set_progress(trainer._progress())
        if state.step % cfg.log_every_steps == 0 and trainer.dist.is_main:
            speed = images * trainer.dist.world_size / max(time.perf_counter() - started, 1e-9)
            _log_step(trainer, bar, meter, lr, speed)
        trainer._call("after_step")
        if stop:
            break
    means, counted, _ = meter.read()  # the epoch's one read
    speed = images * trainer.dist.world_size / max(time.perf_counter() - started, 1e-9)
    if counted:
        bar.set_postfix(_postfix(trainer, means, lr, speed), refresh=False)
    bar.close()
    trainer.budget.end_epoch()
    means = du.all_reduce_mean(means if counted else {}, trainer.device)
    means["img_per_s"] = images * trainer.dist.world_size / max(time.perf_counter() - started, 1e-9)
    return means
