"""What the user sees: a progress bar per epoch on rank 0, TensorBoard scalars and images.

``results.csv`` / ``results.png`` and the run header are in :mod:`fashionvision.engine.report`.

Other ranks get no-op objects, so the loop never asks "am I rank 0?" around each call.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

log = logging.getLogger("fashionvision.engine")


def progress(iterable: Iterable, total: int, desc: str, enabled: bool):
    """The training bar on rank 0: tqdm on a terminal, plain lines in a log (``fashionvision.progress``)."""
    from fashionvision.progress import progress as _progress

    return _progress(iterable, total=total, desc=desc, enabled=enabled, unit="batch")


class RunLogger:
    """TensorBoard scalars and images under ``<run_dir>/tensorboard`` (rank 0 only)."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{name}", float(value), step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An RGB uint8 ``[H, W, 3]`` picture."""
        if self.writer is None:
            return
        self.writer.add_image(tag, np.ascontiguousarray(image), step, dataformats="HWC")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _original_image(task: Any, meta: dict) -> np.ndarray | None:
    """The source photo of a validation item (predictions are in its coordinates)."""
    from fashionvision.data.image_io import read_image

    path = meta.get("path")
    if not path:
        return None
    candidates = [Path(path)]
    root = getattr(getattr(task, "data", None), "image_root", None)
    if root is not None:
        candidates.append(Path(root) / path)
    for candidate in candidates:
        if candidate.is_file():
            try:
                return read_image(candidate)
            except OSError:
                return None
    return None


@torch.no_grad()
def log_predictions(logger: RunLogger, task: Any, model: torch.nn.Module, loader: Any,
                    device: torch.device, count: int, step: int) -> None:
    """Draw the predictions of ``model`` on the first ``count`` validation images."""
    if not logger.enabled or count <= 0:
        return
    drawn = 0
    try:
        for batch in loader:
            images = batch["images"][: count - drawn].to(device)
            metas = batch["metas"][: count - drawn]
            predictions = task.predict(model, images, metas)
            for meta, prediction in zip(metas, predictions):
                picture = _original_image(task, meta)
                if picture is None:
                    continue
                logger.image(f"val/prediction_{drawn}", np.asarray(task.draw(picture, prediction)), step)
                drawn += 1
            if drawn >= count:
                break
    except Exception as exc:  # drawing must never stop a training run
        log.warning("could not draw validation predictions: %s", exc)
