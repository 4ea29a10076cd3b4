"""Seeds: the process's generators, and each loader worker's (numpy and ``random`` too)."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators of this process."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker_ignoring_stop_signals(worker_id: int) -> None:
    """Training loaders: SIGTERM/Ctrl-C to the process group are the main process's to handle
    (it finishes the step, checkpoints and shuts the workers down; see engine/signals.py)."""
    from fashionvision.engine.signals import ignore_stop_signals

    ignore_stop_signals()
    seed_worker(worker_id)


def seed_worker(worker_id: int) -> None:
    from fashionvision.data.dataset import worker_init

    worker_init(worker_id)  # one OpenCV thread per worker: the workers are the parallelism
    # torch seeds `torch` and `random` in each worker from the loader's generator; numpy too
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
