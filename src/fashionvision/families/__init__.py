"""Model builders in one explicit registry (no import-order magic).

``MODELS`` maps a ``model.name`` to ``"module:function"``; the function takes the ``model``
config group (a plain dict) and the class count and returns an ``nn.Module``.
"""

from __future__ import annotations

import importlib

from fashionvision.errors import UserError

MODELS: dict[str, str] = {
    "yolo": "fashionvision.families.yolov3.model:build_yolov3",
    "unet": "fashionvision.families.unet.model:build_unet",
}


def build_model(model_cfg: dict, num_classes: int):
    """Build the model named by ``model_cfg["name"]``; unknown names list the valid ones."""
    name = model_cfg.get("name")
    if name not in MODELS:
        raise UserError(f"unknown model '{name}'; choose one of: {', '.join(sorted(MODELS))}")
    module, func = MODELS[name].split(":")
    return getattr(importlib.import_module(module), func)(model_cfg, num_classes)
