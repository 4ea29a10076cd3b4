"""One loader for every model file: a checkpoint, a run folder or an exported ``.onnx``.

Both paths rebuild the task through :func:`fashionvision.families.rebuild_task` (the family
registry, by model name only), so a ``.pt`` and an ``.onnx`` of the same run give the same
task, classes, thresholds and decoding.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fashionvision.engine.checkpoint import load_checkpoint, model_state, resolve_checkpoint
from fashionvision.engine.checkpoint_guard import check_model_config, check_state_fits
from fashionvision.errors import UserError
from fashionvision.families import FAMILIES, family, rebuild_task
from fashionvision.tasks.base import Task


def load_for_inference(ckpt_or_run_dir: str | os.PathLike, device: str | torch.device = "cpu",
                       dataset_path: str | None = None) -> tuple[Task, nn.Module, dict]:
    """Rebuild ``(task, model, config)`` from a checkpoint or a run folder.

    Without ``dataset_path`` the class lists stored in the checkpoint stand in for the dataset,
    so a checkpoint works on a machine that never saw the data. EMA weights are used when present.
    """
    path = resolve_checkpoint(ckpt_or_run_dir)
    ckpt = load_checkpoint(path)
    config = ckpt.get("config") or {}
    described = ckpt.get("task") or {}
    model_cfg = {**(config.get("model") or {})}
    model_cfg.setdefault("name", described.get("model"))
    # a stranger's file: bound its settings before anything is allocated
    bounds = family(model_cfg["name"]).checkpoint_bounds if model_cfg.get("name") in FAMILIES else {}
    check_model_config(model_cfg, described.get("classes"), f"checkpoint '{path}'", bounds)
    task = rebuild_task(model_cfg, described, config, dataset_path, source=f"checkpoint '{path}'")
    weights = model_state(ckpt)
    check_state_fits(task.build_model, weights, f"checkpoint '{path}'")  # shapes on the meta device first
    model = task.build_model()
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise UserError(f"checkpoint '{path}' does not fit the model it describes: {exc}") from exc
    model.to(torch.device(device)).eval()
    return task, model, config


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               dataset_path: str | None = None) -> tuple[Task, Any, dict]:
    """``(task, model, config)`` from a checkpoint file, a run folder or an ``.onnx`` file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model '{path}' does not exist (give a checkpoint, a run folder or an .onnx file)")
    if path.suffix.lower() == ".onnx":
        from fashionvision.inference.onnx import load_onnx

        return load_onnx(path, device=str(device))
    return load_for_inference(path, device=device, dataset_path=dataset_path)
