"""Plain objects the trainer needs: device, task, samplers and loaders.

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


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local GPU if there is one, else the CPU; asking for a missing GPU fails."""
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"trainer.device={name} but no CUDA GPU is visible to PyTorch "
                            f"(torch {torch.__version__}); use trainer.device=cpu or trainer=cpu")
        if name == "cuda":
            return torch.device(f"cuda:{local_rank}")
        index = int(name.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise UserError(f"trainer.device={name} but only {torch.cuda.device_count()} GPU(s) are visible")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise UserError(f"trainer.device='{name}' is not a device; use auto, cpu, cuda or cuda:N")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_task(cfg: dict):
    """The Task for a composed config, looked up by ``model.name`` in the registry."""
    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.tasks import task_class

    cls = task_class(cfg["model"]["name"])
    data = ConvertedDataset.open(cfg["dataset"]["path"])
    return cls(cfg["model"], data, cfg.get("augment"), cfg.get("anchors"))


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

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        epoch = int(self.epoch.item())
        if epoch != self._seen and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
            self._seen = epoch
        return self.dataset[index]


def _seed_worker(worker_id: int) -> None:
    from fashionvision.data.dataset import worker_init

    worker_init(worker_id)  # one OpenCV thread per worker: the workers are the parallelism
    # torch seeds `torch` and `random` in each worker from the loader's generator; numpy too
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(dataset: Dataset, batch_size: int, workers: int, collate: Callable,
                 sampler: torch.utils.data.Sampler | None = None, drop_last: bool = False,
                 pin_memory: bool = False, seed: int = 0) -> DataLoader:
    """A loader with pinned memory and persistent workers when they help."""
    workers = int_setting("workers", workers, 0)
    batch_size = int_setting("batch_size", batch_size, 1)
    generator = torch.Generator()
    generator.manual_seed(seed)
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=4, worker_init_fn=_seed_worker)
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
