"""The ``trainer`` config group as a typed, validated dataclass.

Hydra hands the engine a plain dict; :func:`parse_trainer_config` turns it into a
:class:`TrainerConfig` and fails loudly on unknown keys (a typo such as ``trainer.epoch=3``
must not be silently ignored) and on values of the wrong kind.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass

from fashionvision.config import parse_section, require
from fashionvision.errors import UserError

#: the decay after the warm-up (``engine/schedule.py``)
LR_SCHEDULES = ("cosine", "linear")
_CHOICES = {"optimizer": ("adamw", "sgd"), "amp": ("bf16", "fp16", "none"), "lr_schedule": LR_SCHEDULES}
_POSITIVE = ("epochs", "batch_size", "accumulate", "val_every", "max_bad_steps")


@dataclass
class TrainerConfig:
    """Every knob of the training loop; see ``configs/trainer/default.yaml`` for the meaning."""

    device: str = "auto"
    epochs: int = 100
    max_time: str | float | None = None
    batch_size: int = 16
    accumulate: int = 1
    workers: int = 4
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 5e-4
    momentum: float = 0.937
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.05
    lr_schedule: str = "cosine"
    grad_clip: float | None = 10.0
    ema: bool = True
    ema_decay: float = 0.9998
    ema_ramp: float = 2000.0  # updates over which the EMA decay ramps up (1 - exp(-updates / ramp))
    ema_scale_ramp: bool = True  # the ramp at most a tenth of the run's planned steps (engine/ema.py)
    amp: str = "bf16"
    channels_last: bool = True
    compile: bool = False
    cache_images: bool = True
    gpu_augment: bool = True
    val_every: int = 1
    checkpoint_every: str | float | None = 0  # wall clock between last.pt writes; 0 = every epoch end
    checkpoint_every_steps: int | None = None
    checkpoint_background: bool = False  # last.pt/best.pt written by a thread from a copy of the tensors
    early_stop_patience: int | None = None
    max_bad_steps: int = 5
    resume: str | None = None
    overwrite: bool = False
    deterministic: bool = False
    seed: int = 0
    sync_bn: bool = False
    limit_images: int | None = None
    repeat_threshold: float | None = None  # repeat-factor sampling of rare classes (LVIS's t)
    log_images: int = 4
    log_every_steps: int = 10
    threads: int | None = None  # torch threads for this run (the command sets them; sweeps side by side)

    def check(self) -> None:
        """Refuse values that make no sense, before anything is written."""
        for key, choices in _CHOICES.items():
            if getattr(self, key) not in choices:
                raise UserError(f"trainer.{key}='{getattr(self, key)}'; choose one of {', '.join(choices)}")
        for key in _POSITIVE:
            require(getattr(self, key) >= 1, f"trainer.{key}", getattr(self, key), "at least 1")
        if self.checkpoint_every_steps is not None:
            require(self.checkpoint_every_steps >= 1, "trainer.checkpoint_every_steps",
                    self.checkpoint_every_steps, "at least 1 (or null)")
        require(math.isfinite(self.lr) and self.lr > 0, "trainer.lr", self.lr, "a positive number")
        require(self.workers >= 0, "trainer.workers", self.workers, "0 (load in the main process) or more")
        require(self.grad_clip is None or self.grad_clip >= 0, "trainer.grad_clip", self.grad_clip,
                ">= 0 (or null)")
        require(0.0 <= self.ema_decay < 1.0, "trainer.ema_decay", self.ema_decay, "in [0, 1)")
        require(self.ema_ramp >= 0, "trainer.ema_ramp", self.ema_ramp, ">= 0 (0 = the full decay at once)")
        if self.repeat_threshold is not None:
            require(0 < self.repeat_threshold <= 1, "trainer.repeat_threshold", self.repeat_threshold,
                    "null (off) or in (0, 1]")
        require(self.threads is None or self.threads >= 1, "trainer.threads", self.threads,
                "at least 1 (or null: torch's default)")
        self.max_seconds, self.checkpoint_seconds  # validates the durations now rather than mid-run

    @functools.cached_property
    def max_seconds(self) -> float | None:
        """The wall-clock budget in seconds, or None when training runs for ``epochs``."""
        return parse_duration(self.max_time)

    @functools.cached_property
    def checkpoint_seconds(self) -> float:
        """Seconds between ``last.pt`` writes (0: at every epoch end)."""
        if self.checkpoint_every in (0, "0", None):
            return 0.0
        return parse_duration(self.checkpoint_every, "trainer.checkpoint_every")


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str | float | int | None, key: str = "trainer.max_time") -> float | None:
    """``"180s"``, ``"30m"``, ``"2h"``, ``"1h30m"`` or a number of seconds -> seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd]?)", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise UserError(f"{key}='{value}' is not a duration; use e.g. 180s, 30m, 2h or 1h30m")
        seconds = sum(float(n) * _UNITS[u or "s"] for n, u in parts)
    if seconds <= 0:
        raise UserError(f"{key} must be positive, got '{value}'")
    return seconds


def parse_trainer_config(raw: dict | TrainerConfig) -> TrainerConfig:
    """Validate the ``trainer`` dict; unknown keys and bad values raise :class:`UserError`."""
    return parse_section(TrainerConfig, raw, "trainer")


def to_dict(cfg: TrainerConfig) -> dict:
    return dataclasses.asdict(cfg)
