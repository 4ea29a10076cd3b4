"""Model families as the engine sees them, in one explicit registry.

``TASKS`` maps the ``model.name`` config value to the task class. Checkpoints name a task
by this key only, so rebuilding a model from someone else's checkpoint can never
instantiate arbitrary code.
"""

from __future__ import annotations

import importlib

from fashionvision.errors import UserError

# model name -> (module, class); imported on demand so `fashion-convert` never loads models.
TASKS: dict[str, tuple[str, str]] = {
    "yolo": ("fashionvision.tasks.detection", "DetectionTask"),
    "unet": ("fashionvision.tasks.segmentation", "SegmentationTask"),
}


def task_class(model_name: str):
    """The Task class for a model name; unknown names list the valid ones."""
    if model_name not in TASKS:
        raise UserError(f"unknown model '{model_name}'; choose one of: {', '.join(sorted(TASKS))}")
    module, attr = TASKS[model_name]
    return getattr(importlib.import_module(module), attr)
