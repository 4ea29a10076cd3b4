"""The ``trainer`` config group as a typed, validated dataclass.

Hydra hands the engine a plain dict; :func:`parse_trainer_config` turns it into a
:class:`TrainerConfig` and fails loudly on unknown keys (a typo such as ``trainer.epoch=3``
must not be silently ignored) and on values of the wrong kind.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, fields
from typing import Any

from fashionvision.errors import UserError


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
    grad_clip: float | None = 10.0
    ema: bool = True
    ema_decay: float = 0.9998
    amp: str = "bf16"
    channels_last: bool = True
    compile: bool = False
    cache_images: bool = True
    gpu_augment: bool = True
    val_every: int = 1
    checkpoint_every_steps: int | None = None
    early_stop_patience: int | None = None
    max_bad_steps: int = 5
    resume: str | None = None
    deterministic: bool = False
    seed: int = 0
    sync_bn: bool = False
    limit_images: int | None = None
    log_images: int = 4
    log_every_steps: int = 10

    @property
    def max_seconds(self) -> float | None:
        """The wall-clock budget in seconds, or None when training runs for ``epochs``."""
        return parse_duration(self.max_time)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str | float | int | None) -> float | None:
    """``"180s"``, ``"30m"``, ``"2h"``, ``"1h30m"`` or a number of seconds -> seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd]?)", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise UserError(f"trainer.max_time='{value}' is not a duration; use e.g. 180s, 30m, 2h or 1h30m")
        seconds = sum(float(n) * _UNITS[u or "s"] for n, u in parts)
    if seconds <= 0:
        raise UserError(f"trainer.max_time must be positive, got '{value}'")
    return seconds


_CHOICES = {"optimizer": ("adamw", "sgd"), "amp": ("bf16", "fp16", "none")}
_POSITIVE = ("epochs", "batch_size", "accumulate", "val_every", "max_bad_steps")


def _coerce(name: str, value: Any, default: Any, annotation: str) -> Any:
    """Check one value against its annotation (as written in the dataclass)."""
    if value is None:
        if "None" in annotation:
            return None
        raise UserError(f"trainer.{name} must not be null")
    if "bool" in annotation:
        if not isinstance(value, bool):
            raise UserError(f"trainer.{name} must be true or false, got {value!r}")
        return value
    if annotation.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"trainer.{name} must be an integer, got {value!r}")
        return value
    if annotation.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"trainer.{name} must be a number, got {value!r}")
        return float(value)
    if annotation.startswith("str |"):  # max_time: a duration string or a number
        return value
    if not isinstance(value, str):
        raise UserError(f"trainer.{name} must be a string, got {value!r}")
    return value


def parse_trainer_config(raw: dict | TrainerConfig) -> TrainerConfig:
    """Validate the ``trainer`` dict; unknown keys and bad values raise :class:`UserError`."""
    if isinstance(raw, TrainerConfig):
        return raw
    known = {f.name: f for f in fields(TrainerConfig)}
    unknown = [key for key in raw if key not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise UserError(f"unknown trainer setting {', '.join(hints)}; valid: {', '.join(known)}")
    values = {}
    for key, value in raw.items():
        f = known[key]
        values[key] = _coerce(key, value, f.default, str(f.type))
    cfg = TrainerConfig(**values)
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise UserError(f"trainer.{key}='{getattr(cfg, key)}'; choose one of {', '.join(choices)}")
    for key in _POSITIVE:
        if getattr(cfg, key) < 1:
            raise UserError(f"trainer.{key} must be at least 1, got {getattr(cfg, key)}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise UserError(f"trainer.lr must be a positive number, got {cfg.lr}")
    if cfg.workers < 0:
        raise UserError(f"trainer.workers must be 0 (load in the main process) or more, got {cfg.workers}")
    if cfg.checkpoint_every_steps is not None and cfg.checkpoint_every_steps < 1:
        raise UserError("trainer.checkpoint_every_steps must be at least 1 (or null)")
    cfg.max_seconds  # validates the duration now rather than mid-run
    return cfg


def to_dict(cfg: TrainerConfig) -> dict:
    return dataclasses.asdict(cfg)
