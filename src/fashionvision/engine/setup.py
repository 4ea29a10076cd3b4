"""What a training run builds before its first step: the process, the data and the model.

Kept out of :class:`~fashionvision.engine.trainer.Trainer` so that the trainer reads as its
loop; every function here is handed what it needs and returns what it built.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from fashionvision.engine import distributed as du
from fashionvision.engine.checkpoint import CHECKPOINT_DIR, check_fresh_run_folder, load_pretrained
from fashionvision.engine.device import clamp_workers, cpu_has_bf16
from fashionvision.engine.loaders import build_loader
from fashionvision.engine.samplers import EpochAware, ResumableSampler
from fashionvision.engine.seeding import seed_everything
from fashionvision.errors import UserError

if TYPE_CHECKING:  # the contract only: the engine never imports a task at run time
    from pathlib import Path

    from torch.utils.data import DataLoader, Dataset

    from fashionvision.engine.config import TrainerConfig
    from fashionvision.tasks.base import Task

log = logging.getLogger("fashionvision.engine")


def autocast_dtype(amp: str, device: torch.device,
                   has_bf16: Callable[[], bool] = cpu_has_bf16) -> tuple[torch.dtype | None, bool]:
    """``(dtype, enabled)`` of the autocast that ``trainer.amp`` asks for on ``device``.

    bf16 autocast also on a CPU (AMX/avx512_bf16 Xeons: about 1.4x faster steps) but not on one
    without bf16 units, where emulated bf16 would be slower; fp16 stays CUDA-only (it needs the
    GradScaler), and trainer/cpu.yaml keeps amp: none.
    """
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    cuda = device.type == "cuda"
    enabled = dtype is not None and (cuda or dtype == torch.bfloat16)
    if enabled and not cuda and not has_bf16():
        log.warning("trainer.amp=bf16: this CPU has no bf16 units (AVX512-BF16/AMX), training in "
                    "float32 instead (emulated bf16 would be slower); the CPU recipes were tuned and "
                    "measured on bf16 CPUs, expect fewer steps and lower scores (benchmarks/README.md)")
        enabled = False
    return dtype, enabled


def prepare_process(cfg: TrainerConfig, device: torch.device, run_dir: Path, is_main: bool,
                    check_folder: bool = True) -> None:
    """Device, process group, determinism, seeds; a checked run folder with ``checkpoints/``."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    du.init_distributed(device)
    if cfg.deterministic and cuda:
        # CPU kernels are deterministic already (and this call imports torch._dynamo: seconds)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = cuda and not cfg.deterministic
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    seed_everything(cfg.seed)
    if check_folder:  # (the CLI checks before any download instead)
        check_fresh_run_folder(run_dir, cfg.resume, cfg.overwrite)
    if is_main:
        (run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    du.barrier()


@dataclass
class TrainingData:
    """The splits and loaders of a run (only rank 0 holds the validation split: it validates)."""

    train_set: EpochAware
    val_set: Dataset | list
    sampler: ResumableSampler
    train_loader: DataLoader
    val_loader: DataLoader
    workers: int

    @property
    def batches_per_epoch(self) -> int:
        return len(self.train_loader)


def repeated(task: Task, train_set: Dataset, cfg: TrainerConfig, is_main: bool) -> Dataset:
    """``train_set`` with images of rare classes repeated (``trainer.repeat_threshold``)."""
    threshold = cfg.repeat_threshold
    if threshold is None:
        return train_set
    from fashionvision.data.repeat_factor import RepeatedDataset, repeat_counts, repeat_factors

    classes = task.image_classes("train")[:len(train_set)]  # limit_images keeps the first N
    counts = repeat_counts(repeat_factors(classes, threshold), cfg.seed)
    if is_main:
        log.info("repeat-factor sampling (threshold %g): %d images -> %d items an epoch, %d repeated",
                 threshold, len(counts), int(counts.sum()), int((counts > 1).sum()))
    return RepeatedDataset(train_set, counts)


def build_training_data(task: Task, cfg: TrainerConfig, dist: du.DistInfo, cuda: bool) -> TrainingData:
    """Datasets (decoded-image caches built by rank 0 first) and their loaders."""
    limit = cfg.limit_images
    task.gpu_color = bool(cfg.gpu_augment and cuda)
    task.seed = cfg.seed  # the per-item augmentation streams follow trainer.seed
    task.rank = dist.rank  # the GPU colour jitter draws from this rank's own generator
    if not dist.is_main:
        du.barrier()  # rank 0 builds the decoded-image cache files first; the others reuse them
    train_set = EpochAware(repeated(task, task.build_dataset("train", train=True, limit=limit,
                                                             cache=cfg.cache_images), cfg, dist.is_main))
    val_set = task.build_dataset("val", train=False, limit=limit, cache=cfg.cache_images) if dist.is_main else []
    if dist.is_main:
        du.barrier()
    if len(train_set) == 0:
        raise UserError("the training split is empty")
    if dist.is_main and len(val_set) == 0:
        folder = getattr(getattr(task, "data", None), "folder", "the dataset")
        raise UserError(f"split 'val' of {folder} has no images (the run validates to pick best.pt): "
                        "convert more images or change the split fractions, e.g. "
                        "fashion-convert ... split=[0.8,0.1,0.1]")
    workers = clamp_workers(cfg.workers)
    drop_last = len(train_set) >= cfg.batch_size * dist.world_size
    sampler = ResumableSampler(train_set, dist.world_size, dist.rank, shuffle=True, seed=cfg.seed,
                               drop_last=drop_last)
    train_loader = build_loader(train_set, cfg.batch_size, workers, task.collate, sampler=sampler,
                                drop_last=drop_last, pin_memory=cuda, seed=cfg.seed, ignore_stop_signals=True)
    val_loader = build_loader(val_set, cfg.batch_size, workers if len(val_set) else 0, task.collate,
                              pin_memory=cuda, seed=cfg.seed, ignore_stop_signals=True)
    return TrainingData(train_set, val_set, sampler, train_loader, val_loader, workers)


def build_model(task: Task, cfg: TrainerConfig, dist: du.DistInfo, device: torch.device,
                channels_last: bool, pretrained: bool) -> nn.Module:
    """The task's model on ``device``: ``model.weights`` loaded when ``pretrained`` (not on a
    resume, whose checkpoint replaces them), SyncBatchNorm when asked for on CUDA."""
    model = task.build_model()
    weights = task.model_cfg.get("weights")
    if weights and pretrained:
        load_pretrained(model, weights, classes=list(task.class_names))
    if dist.enabled and cfg.sync_bn:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            log.warning("trainer.sync_bn needs CUDA (PyTorch's SyncBatchNorm); ignored on the CPU")
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def wrap_for_training(model: nn.Module, cfg: TrainerConfig, dist: du.DistInfo,
                      device: torch.device) -> tuple[nn.Module, Any]:
    """``(the module the steps call, its DDP wrapper or None)``: DDP across ranks, compiled if asked."""
    ddp = None
    train_model: nn.Module = model
    if dist.enabled:
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        train_model = ddp
    if cfg.compile:
        train_model = torch.compile(train_model)
    return train_model, ddp
