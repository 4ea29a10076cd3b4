"""Plain objects the trainer needs: device, samplers and loaders.

Kept apart from the loop so that ``fashion-eval``, the benchmark and the tests build the
same loaders the trainer does.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from fashionvision.errors import UserError, int_setting


def resolve_device(name: str | torch.device | None, local_rank: int = 0,
                   key: str = "trainer.device") -> torch.device:
    """``auto`` (or nothing) -> the local GPU if there is one, else the CPU; a missing GPU fails.

    ``key`` names the setting in error messages (``trainer.device`` for training).
    """
    name = "auto" if name in (None, "") else str(name).strip().lower()
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            cpu = "trainer.device=cpu or trainer=cpu" if key == "trainer.device" else f"{key}=cpu"
            raise UserError(f"{key}={name} but no CUDA GPU is visible to PyTorch "
                            f"(torch {torch.__version__}); use {cpu}")
        if name == "cuda":
            return torch.device(f"cuda:{local_rank}")
        index = name.split(":", 1)[1]
        if not index.isdigit():
            raise UserError(f"{key}='{name}' is not a device; use auto, cpu, cuda or cuda:N")
        if int(index) >= torch.cuda.device_count():
            raise UserError(f"{key}={name} but only {torch.cuda.device_count()} GPU(s) are visible")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise UserError(f"{key}='{name}' is not a device; use auto, cpu, cuda or cuda:N")


def clamp_workers(workers: int, cores: int | None = None) -> int:
    """Loader workers, never more than this process's cores (per local rank under torchrun).

    More workers than cores only makes them fight over the CPU (PyTorch warns about it, and
    on a 2-core laptop the default 4 workers slow training down); one line says so.
    """
    import logging

    from fashionvision.engine.report import cpu_count

    workers = int_setting("workers", workers, 0)  # a negative count is a mistake, not zero
    local = max(int(os.environ.get("LOCAL_WORLD_SIZE", 1)), 1)
    available = max((cores if cores is not None else cpu_count()) // local, 1)
    if workers > available:
        logging.getLogger("fashionvision.engine").info(
            "trainer.workers=%d but %d core(s) are available: using %d loader workers", workers, available, available)
        return available
    return workers


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX).

    Without either, PyTorch emulates bf16 autocast and a step gets slower instead of about
    1.7x faster (the CPU recipes' measurement), so the trainer falls back to float32.
    """
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if check is not None)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch part-way (exact mid-epoch resume).

    The order of an epoch depends only on ``(seed, epoch)``; ``skip`` drops the first items
    of this rank's share, which a checkpoint taken after that many items had already used.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip:])

    def __len__(self) -> int:
        return max(self.num_samples - self.skip, 0)


class EpochAware(Dataset):
    """Passes the epoch to ``dataset.set_epoch`` inside loader workers too.

    Persistent workers hold their own copy of the dataset, so calling ``set_epoch`` in the
    main process would never reach them (and every epoch would repeat the same per-item
    augmentation). The epoch lives in a shared-memory tensor that workers read.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._seen = -1

    def set_epoch(self, epoch: int) -> None:
        self.epoch.fill_(int(epoch))

    def set_progress(self, progress: float) -> None:
        """Training progress (0..1) for the dataset's augmentation (shared memory: workers see it)."""
        if hasattr(self.dataset, "set_progress"):
            self.dataset.set_progress(progress)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        epoch = int(self.epoch.item())
        if epoch != self._seen and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
            self._seen = epoch
        return self.dataset[index]


def _seed_worker_ignoring_stop_signals(worker_id: int) -> None:
    """Training loaders: SIGTERM/Ctrl-C to the process group are the main process's to handle
    (it finishes the step, checkpoints and shuts the workers down; see engine/signals.py)."""
    from fashionvision.engine.signals import ignore_stop_signals

    ignore_stop_signals()
    _seed_worker(worker_id)


def _seed_worker(worker_id: int) -> None:
    from fashionvision.data.dataset import worker_init

    worker_init(worker_id)  # one OpenCV thread per worker: the workers are the parallelism
    # torch seeds `torch` and `random` in each worker from the loader's generator; numpy too
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


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
        init = _seed_worker_ignoring_stop_signals if ignore_stop_signals else _seed_worker
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


def dataset_ready(path: str | os.PathLike) -> bool:
    """True when ``path`` is a converted folder with a training split."""
    path = Path(path)
    return (path / "train.txt").is_file() and (path / "metadata.json").is_file()
