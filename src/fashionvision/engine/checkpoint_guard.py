"""Checks on a checkpoint's own config before a model is built from it.

:func:`~fashionvision.engine.checkpoint.load_for_inference` rebuilds a model from the
``config`` a checkpoint carries. A file from a stranger can say ``model.width=64`` (a YOLOv3
of 250 G parameters) or ``model.image_size=100000`` (a 10^10-pixel input on the first
prediction), and building or using that model would run the machine out of memory long
before any error. So, before anything is allocated:

1. :func:`check_model_config` bounds the values that drive memory (widths, depth, input
   size, class count, decoder channels) to what a real run of this project can use;
2. :func:`check_state_fits` builds the model on PyTorch's ``meta`` device (shapes only, no
   memory) and compares every tensor's shape with the state dict in the file, so weights that
   do not match the config they came with fail in one line instead of after the allocation.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from fashionvision.errors import UserError

#: (lowest, highest) a checkpoint of any family may carry; a family adds its own multipliers
#: (``Task.checkpoint_bounds``: the project's models use width/depth 1.0 and 416 px)
BOUNDS: dict[str, tuple[float, float]] = {
    "image_size": (32, 2048),
    "max_det": (1, 10_000),
}
MAX_CLASSES = 1000
MAX_DECODER_CHANNELS = 1024
#: the full YOLOv3 has 62 M parameters, a U-Net-ResNet50 33 M; 300 M float32 are 1.2 GB
MAX_PARAMETERS = 300_000_000


def _number(name: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where}: model.{name}={value!r} is not a finite number; refusing to build it")
    return float(value)


def check_model_config(model_cfg: dict, classes: list | None, where: str,
                       family_bounds: dict[str, tuple[float, float]] | None = None) -> None:
    """Refuse model settings no run of this project produces (they would exhaust memory).

    ``family_bounds`` are the family's own (e.g. its ``width`` and ``depth`` multipliers); the
    shapes and the parameter budget are checked afterwards by :func:`check_state_fits`.
    """
    for name, (low, high) in {**BOUNDS, **(family_bounds or {})}.items():
        if model_cfg.get(name) is None:
            continue
        value = _number(name, model_cfg[name], where)
        if not low <= value <= high:
            raise UserError(f"{where}: model.{name}={model_cfg[name]!r} is outside the range a checkpoint may "
                            f"carry ({low:g} to {high:g}); refusing to build it (the file may be damaged or crafted)")
    channels = model_cfg.get("decoder_channels")
    if channels is not None:
        if not isinstance(channels, (list, tuple)) or not 1 <= len(channels) <= 8 or not all(
                isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= MAX_DECODER_CHANNELS
                for c in channels):
            raise UserError(f"{where}: model.decoder_channels={channels!r} must be 1 to 8 integers from 1 to "
                            f"{MAX_DECODER_CHANNELS}; refusing to build it")
    if classes is not None and not 1 <= len(classes) <= MAX_CLASSES:
        raise UserError(f"{where}: the checkpoint lists {len(classes)} classes (at most {MAX_CLASSES} are "
                        f"accepted); refusing to build it")


def check_state_fits(build: Callable[[], nn.Module], state: dict, where: str) -> None:
    """Build the model on the ``meta`` device and compare its tensors with ``state``.

    Raises a one-line :class:`UserError` when the model would be too large, when a tensor
    is missing or extra, or when a shape differs (the first few are named).
    """
    with torch.device("meta"):
        skeleton = build()
    own = skeleton.state_dict()
    parameters = sum(t.numel() for t in own.values())
    if parameters > MAX_PARAMETERS:
        raise UserError(f"{where}: the model its config describes has {parameters / 1e6:.0f} M parameters "
                        f"(at most {MAX_PARAMETERS / 1e6:.0f} M are accepted); refusing to build it")
    problems = []
    for name, tensor in own.items():
        theirs = state.get(name)
        if not isinstance(theirs, torch.Tensor):
            problems.append(f"{name} missing")
        elif tuple(theirs.shape) != tuple(tensor.shape):
            problems.append(f"{name} is {tuple(theirs.shape)}, the model needs {tuple(tensor.shape)}")
    problems += [f"unexpected {name}" for name in state if name not in own]
    if problems:
        shown = "; ".join(problems[:3]) + (f"; ... ({len(problems)} in all)" if len(problems) > 3 else "")
        raise UserError(f"{where}: the weights do not fit the model its config describes ({shown})")
