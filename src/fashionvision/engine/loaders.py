"""The loaders of training and evaluation, and batches moved to the device.

One place, so that ``fashion-eval``, the benchmarks and the tests build the loaders the trainer does.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset

from fashionvision.engine.seeding import seed_worker, seed_worker_ignoring_stop_signals
from fashionvision.errors import int_setting


def build_loader(dataset: Dataset, batch_size: int, workers: int, collate: Callable,
                 sampler: torch.utils.data.Sampler | None = None, drop_last: bool = False,
                 pin_memory: bool = False, seed: int = 0, ignore_stop_signals: bool = False) -> DataLoader:
    """A loader with pinned memory and persistent workers when they help.

    ``ignore_stop_signals``: workers ignore SIGTERM and SIGINT; the owner must then shut them
    down itself (:func:`fashionvision.engine.signals.shutdown_loader_workers`).
    """
    workers = int_setting("workers", workers, 0)
    batch_size = int_setting("batch_size", batch_size, 1)
    generator = torch.Generator()
    generator.manual_seed(seed)
    kwargs: dict[str, Any] = {}
    if workers > 0:
        init = seed_worker_ignoring_stop_signals if ignore_stop_signals else seed_worker
        kwargs.update(persistent_workers=True, prefetch_factor=4, worker_init_fn=init)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
                      num_workers=workers, collate_fn=collate, pin_memory=pin_memory,
                      drop_last=drop_last, generator=generator, **kwargs)


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move every tensor of a (nested) batch to ``device``; images optionally channels-last."""
    non_blocking = device.type == "cuda"
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        out = {k: to_device(v, device) for k, v in batch.items()}
        if channels_last and isinstance(out.get("images"), torch.Tensor) and out["images"].ndim == 4:
            out["images"] = out["images"].contiguous(memory_format=torch.channels_last)
        return out
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
