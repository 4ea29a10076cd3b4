"""The contract between the engine and a model family.

The engine (``fashionvision.engine``) knows nothing about boxes or masks. It asks a
:class:`Task` for a model, datasets, a collate function, named losses for a batch and
validation metrics; it sums the losses, steps the optimizer, logs, checkpoints.

Data flowing through it:

* A dataset item is a dict: ``image`` uint8 tensor ``[3, H, W]`` (RGB), ``boxes`` float32
  ``[N, 4]`` (x1, y1, x2, y2 in the transformed image's pixels), ``labels`` int64 ``[N]``,
  optionally ``mask`` int64 ``[H, W]`` (class indices, ``ignore_index`` where padded), and
  ``meta`` (a dict: ``path``, ``image_id``, ``orig_size`` (h, w), ``scale``, ``pad`` (left, top)).
* A batch is what :meth:`Task.collate` returns: a dict with ``images`` uint8 ``[B, 3, H, W]``
  plus task-specific targets and ``metas`` (a list). The engine moves every tensor to the
  device; the task turns ``images`` into floats inside :meth:`Task.compute_losses` (uint8 keeps
  host-to-device copies four times smaller).

Tasks are registered by model name in :data:`fashionvision.tasks.TASKS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from fashionvision.data.converted import ConvertedDataset


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP and ``torch.compile`` wrappers (in any nesting)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


class Task(ABC):
    """A model family as the engine sees it.

    Args:
        model_cfg: the ``model`` config group as a plain dict.
        data: the converted dataset.
        augment_cfg: the ``augment`` config group as a plain dict.
        anchors_cfg: the ``anchors`` config group (detection only; may be None).
    """

    name: str = "task"
    #: key of :meth:`evaluate`'s result that selects the best checkpoint (higher is better)
    primary_metric: str = "metric"

    def __init__(self, model_cfg: dict, data: ConvertedDataset, augment_cfg: dict | None = None,
                 anchors_cfg: dict | None = None):
        self.model_cfg = dict(model_cfg)
        self.data = data
        self.augment_cfg = dict(augment_cfg or {})
        self.anchors_cfg = dict(anchors_cfg or {})
        #: set by the engine when colour jitter runs on the GPU (gpu_augment) instead of in the loader
        self.gpu_color = False
        #: seeds the per-item augmentation; the engine sets it from ``trainer.seed``
        self.seed = int(self.model_cfg.get("seed", 0))

    @property
    def class_names(self) -> list[str]:
        """Names of the classes the model predicts (index order)."""
        return self.data.classes

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A fresh model for this task's classes."""

    @abstractmethod
    def build_dataset(self, split: str, train: bool, limit: int | None = None,
                      cache: bool = False) -> Dataset:
        """A dataset over one split; ``train`` turns augmentation on."""

    @abstractmethod
    def collate(self, items: list[dict]) -> dict:
        """Stack dataset items into a batch dict (see module docstring)."""

    @abstractmethod
    def compute_losses(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """Forward ``batch`` (already on the device) and return named scalar losses."""

    @abstractmethod
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device,
                 output_dir: Path | None = None) -> dict[str, float]:
        """Validation metrics over a loader; includes :attr:`primary_metric`.

        With ``output_dir`` the task also writes its full report there (metrics.json,
        predictions, plots), as ``fashion-eval`` does.
        """

    @abstractmethod
    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, metas: list[dict],
                conf: float | None = None, iou: float | None = None) -> list[dict]:
        """Predictions for a batch of uint8 images, mapped back to original image coordinates.

        Detection returns ``{"boxes": [N,4] float, "scores": [N], "labels": [N]}`` per image;
        segmentation returns ``{"mask": [h, w] int64, "confidence": optional [h, w]}`` (the
        probability of each pixel's class).
        """

    def gpu_augment(self, batch: dict) -> dict:
        """Colour jitter of a training batch already on the GPU, when :attr:`gpu_color` is set.

        The loader then skips colour work (``color_on_cpu=False``), which is the costliest part
        of CPU augmentation after decoding; geometry stays in the loader because boxes and masks
        must follow it.
        """
        if not self.gpu_color:
            return batch
        from fashionvision.data.gpu_augment import gpu_color_jitter

        a = self.augment_cfg
        batch["images"] = gpu_color_jitter(batch["images"], float(a.get("hsv_h", 0)), float(a.get("hsv_s", 0)),
                                           float(a.get("hsv_v", 0)), float(a.get("contrast", 0)),
                                           max_value=255.0)
        return batch

    def draw(self, image: "Any", prediction: dict) -> "Any":
        """An RGB uint8 picture of ``prediction`` over ``image`` (for TensorBoard and apps)."""
        return image

    def describe(self) -> dict:
        """What to store in a checkpoint to rebuild this task (names only, no code)."""
        return {"task": self.name, "classes": self.class_names}
