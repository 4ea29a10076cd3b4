"""Where training runs: the device, the loader workers this machine can feed, native bf16."""

from __future__ import annotations

import os

import torch

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
