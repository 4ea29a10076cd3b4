"""A run's checkpoint written from, and restored into, a trainer (``last.pt`` / ``best.pt``).

``last.pt`` holds everything a resumed run needs to continue exactly: the weights, the EMA, the
optimizer, schedule and scaler, the :class:`~fashionvision.engine.state.TrainState` fields and
every RNG. ``best.pt`` holds the same but the optimizer state (a third of a YOLOv3 file): it is
for evaluation and fine-tuning, not for resuming.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fashionvision.engine.checkpoint import (LAST, find_resume_checkpoint, load_checkpoint, resume_mismatch,
                                             rng_state)
from fashionvision.engine.config import TrainerConfig, to_dict
from fashionvision.engine.ema import unwrap
from fashionvision.errors import UserError

log = logging.getLogger("fashionvision.engine")


def resume_path(cfg: TrainerConfig, run_dir: Path) -> Path | None:
    """The checkpoint ``trainer.resume`` names (``auto``: the run folder's newest), or None."""
    if not cfg.resume:
        return None
    if str(cfg.resume) == "auto":
        path = find_resume_checkpoint(run_dir)
        if path is None:
            log.info("trainer.resume=auto: no checkpoint in %s yet, starting fresh", run_dir)
        return path
    return Path(cfg.resume)


def checkpoint_state(trainer: Any, optimizer: bool = True) -> dict:
    """The checkpoint of ``trainer`` as it stands; the optimizer's moments only when ``optimizer``."""
    return {
        "version": 1,
        "model": unwrap(trainer.model).state_dict(),
        "ema": trainer.ema.state_dict() if trainer.ema is not None else None,
        "optimizer": trainer.optimizer.state_dict() if optimizer else None,
        "scheduler": trainer.schedule.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        **trainer.state.saved(),
        "world_size": trainer.dist.world_size,
        "rng": rng_state(),
        # the GPU colour jitter's stream (rank 0's: an exact resume is a one-process one)
        "color_rng": trainer.task.color_rng.state_dict() if getattr(trainer.task, "gpu_color", False) else None,
        "config": trainer.config,
        "trainer": to_dict(trainer.cfg),
        "task": trainer.task.describe(),
    }


def restore(trainer: Any, path: Path) -> dict:
    """Load ``path`` into the trainer's model, EMA, optimizer, schedule, scaler and state.

    Refuses (one line) a checkpoint of another model or one without optimizer state; returns
    the checkpoint so that the caller restores its RNG state last.
    """
    saved = load_checkpoint(path, map_location=trainer.device)
    problem = resume_mismatch(saved, unwrap(trainer.model), trainer.task.describe(), trainer.task.model_cfg)
    if problem:
        raise UserError(f"cannot resume from '{path}': {problem}; use model.weights={path} to "
                        "fine-tune instead")
    if not saved.get("optimizer"):
        raise UserError(f"cannot resume from '{path}': it holds weights only (best.pt keeps no optimizer "
                        f"state); resume from checkpoints/{LAST}, or fine-tune with model.weights={path}")
    trainer.model.load_state_dict(saved["model"])
    if trainer.ema is not None and saved.get("ema"):
        trainer.ema.load_state_dict(saved["ema"])
    trainer.optimizer.load_state_dict(saved["optimizer"])
    trainer.schedule.load_state_dict(saved["scheduler"])
    if saved.get("scaler"):
        trainer.scaler.load_state_dict(saved["scaler"])
    color = saved.get("color_rng")
    if color and getattr(trainer.task, "gpu_color", False) and int(color["rank"]) == trainer.dist.rank:
        trainer.task.color_rng.load_state_dict(color)
    state = trainer.state
    state.restore(saved)
    if state.batch_in_epoch and int(saved.get("world_size", 1)) != trainer.dist.world_size:
        log.warning("checkpoint was written by %s processes, this run has %d: epoch %d restarts from its "
                    "first batch", saved.get("world_size"), trainer.dist.world_size, state.epoch + 1)
        state.batch_in_epoch = 0
    log.info("resumed from %s: epoch %d, batch %d, step %d", path, state.epoch, state.batch_in_epoch, state.step)
    return saved
