"""One pass over the training split: the steps of :meth:`Trainer.train_one_epoch`.

Each batch: to the device, the task's GPU augmentation, forward and backward
(:func:`forward_backward`), and once ``trainer.accumulate`` micro-batches are in, the
learning rate, the gradient check and clip, the optimizer step and the EMA
(:meth:`Trainer.optimizer_step`), then the after-step hooks. A non-finite loss or gradient is
the :class:`~fashionvision.engine.guard.NonFiniteGuard`'s.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch
from torch import nn

from fashionvision.engine import distributed as du
from fashionvision.engine.build import to_device
from fashionvision.engine.logging import progress


def forward_backward(trainer: Any, batch: dict, final_micro: bool) -> tuple[dict[str, float], bool]:
        """Named losses of one micro-batch and their backward pass; ``(values, finite on every rank)``."""
        # gradients are all-reduced once per optimizer step, not once per micro-batch
        sync = trainer._ddp.no_sync if (trainer._ddp is not None and not final_micro) else contextlib.nullcontext
        with sync():
            with torch.autocast(trainer.device.type, dtype=trainer.amp_dtype or torch.bfloat16, enabled=trainer.amp):
                losses = trainer.task.compute_losses(trainer.train_model, batch)
            # "raw_*" terms (e.g. unweighted losses) are logged only, never optimised
            total = sum(v for k, v in losses.items() if not k.startswith("raw_"))
            # one device->host copy per batch for the NaN check and the logged values
            values = dict(zip(["loss", *losses], torch.stack(
                [total.detach().float(), *(v.detach().float() for v in losses.values())]).tolist()))
            finite = du.all_true(math.isfinite(values["loss"]), trainer.device)
            if finite:
                trainer.scaler.scale(total / trainer.cfg.accumulate).backward()
        return values, finite


def gradients_finite(trainer: Any) -> bool:
        """Unscale, clip (``trainer.grad_clip``); False when the gradient norm is not finite."""
        trainer.scaler.unscale_(trainer.optimizer)
        if not trainer.cfg.grad_clip:
            return True
        norm = nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.cfg.grad_clip)
        # fp16 overflow is the scaler's business; otherwise a non-finite gradient is a bad step
        return trainer.scaler.is_enabled() or bool(torch.isfinite(norm).item())


def run_epoch(trainer: Any) -> dict[str, float]:
    """Train one epoch (or what is left of it after a resume); the mean of each logged value."""
    cfg, task, state = trainer.cfg, trainer.task, trainer.state
    trainer.train_model.train()
    trainer.sampler.set_epoch(state.epoch)
    trainer.sampler.skip = state.batch_in_epoch * cfg.batch_size
    trainer.train_set.set_epoch(state.epoch)
    trainer.train_set.set_progress(trainer._progress())  # augment.close_mosaic
    trainer.train_loader.generator.manual_seed(cfg.seed * 1_000_003 + state.epoch)
    sums: dict[str, float] = {}
    counted, images, accumulated = 0, 0, 0
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
        values, finite = forward_backward(trainer, batch, final_micro)
        batch_images = int(batch["images"].shape[0])
        images += batch_images
        trainer.budget.count(batch_images)
        if finite:
            trainer.guard.good(trainer)
            accumulated += 1
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + value
            counted += 1
            if not final_micro:
                continue
            lr = trainer.schedule.update(trainer._progress(), state.step)
            finite = gradients_finite(trainer)
        if not finite:
            trainer.guard.bad(trainer)  # raises TrainingStopped after trainer.max_bad_steps in a row
            accumulated = 0
            continue
        trainer.optimizer_step()
        accumulated = 0
        stop = trainer._sync_stop()
        trainer.train_set.set_progress(trainer._progress())
        speed = images * trainer.dist.world_size / max(time.perf_counter() - started, 1e-9)
        current = {k: v / max(counted, 1) for k, v in sums.items()}
        shown = {"loss": f"{current.get('loss', float('nan')):.4g}", "lr": f"{lr:.3g}", "img_s": f"{speed:.0f}"}
        if cfg.max_seconds is not None:  # the bar's ETA is the epoch's; this is the run's
            shown["left"] = f"{max(cfg.max_seconds - state.train_seconds, 0):.0f}s"
        bar.set_postfix(shown, refresh=False)
        if state.step % cfg.log_every_steps == 0:
            trainer.logger.scalars("train", {**values, "lr": lr, "img_per_s": speed}, state.step)
        trainer._call("after_step")
        if stop:
            break
    bar.close()
    trainer.budget.end_epoch()
    means = du.all_reduce_mean({k: v / max(counted, 1) for k, v in sums.items()}, trainer.device)
    means["img_per_s"] = images * trainer.dist.world_size / max(time.perf_counter() - started, 1e-9)
    return means
