"""A sampler that resumes mid-epoch and a dataset wrapper that tells loader workers the epoch."""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler


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
