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

The generic parts of a kind live in :mod:`fashionvision.tasks.detection` and
:mod:`fashionvision.tasks.segmentation`; a family (``fashionvision.families.<name>``)
subclasses one of them and is registered by model name in :data:`fashionvision.families.FAMILIES`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from fashionvision.config import DEFAULT_IMAGE_SIZE, parse_section
from fashionvision.data.augment_config import AugmentConfig
from fashionvision.data.converted import ConvertedDataset
from fashionvision.data.gpu_augment import RankGenerator
from fashionvision.engine.distributed import env_info
from fashionvision.errors import UserError



class Task(ABC):
    """A model family as the engine sees it.

    Args:
        model_cfg: the ``model`` config group as a plain dict.
        data: the converted dataset.
        augment_cfg: the ``augment`` config group as a plain dict.
        anchors_cfg: the ``anchors`` config group (detection only; may be None).
    """

    #: the kind of task (``detection``, ``segmentation``), stored in checkpoints as ``task``
    name: str = "task"
    #: what apps and reports call a model of this kind (``detector``, ``segmenter``)
    role: str = "model"
    #: the family's registry key (``model.name``), stored in checkpoints as ``model``
    family: str = ""
    #: key of :meth:`evaluate`'s result that selects the best checkpoint (higher is better)
    primary_metric: str = "metric"
    #: the dataclass the ``model`` group is parsed into (None: kept as a plain dict)
    config_class: type | None = None
    #: class count for ``fashion-summary`` when neither a dataset nor ``num_classes`` gives one
    default_num_classes: int = 80
    #: input shape: True keeps the aspect ratio (long side ``image_size``, padded to a multiple
    #: of 32), False letterboxes to a square ``image_size``
    rect_input: bool = False
    #: (lowest, highest) of the family's model settings a checkpoint from elsewhere may carry
    #: (checked before a model is built from a stranger's file)
    checkpoint_bounds: dict[str, tuple[float, float]] = {}

    def __init__(self, model_cfg: dict, data: ConvertedDataset, augment_cfg: dict | None = None,
                 anchors_cfg: dict | None = None):
        self.model_cfg = dict(model_cfg)
        #: the ``model`` group parsed once (unknown keys and bad values refused here)
        self.cfg = parse_section(self.config_class, self.model_cfg, "model") if self.config_class else None
        self.data = data
        #: the ``augment`` group parsed once; the datasets' transforms take it as it is
        self.augment = parse_section(AugmentConfig, augment_cfg, "augment")
        self.anchors_cfg = dict(anchors_cfg or {})
        #: set by the engine when colour jitter runs on the GPU (gpu_augment) instead of in the loader
        self.gpu_color = False
        #: this process's rank for the GPU colour stream; None: torchrun's ``RANK`` (0 without it)
        self.rank: int | None = None
        self._color_rng = None  # RankGenerator, made on the first GPU-jittered batch
        #: seeds the per-item augmentation; the engine sets it from ``trainer.seed``
        self.seed = int(self.model_cfg.get("seed", 0))

    @property
    def augment_cfg(self) -> dict:
        """The ``augment`` group as a plain dict (what checkpoints and reports record)."""
        return dataclasses.asdict(self.augment)

    @property
    def class_names(self) -> list[str]:
        """Names of the classes the model predicts (index order)."""
        return self.data.classes

    @property
    def image_size(self) -> int:
        """The input size (the long side for ``rect_input``)."""
        return int(getattr(self.cfg, "image_size", None) or self.model_cfg.get("image_size", DEFAULT_IMAGE_SIZE))

    def default_thresholds(self) -> tuple[float | None, float | None]:
        """``(conf, iou)`` for drawn outputs; ``(None, None)`` where a kind has none."""
        return None, None

    @classmethod
    def check_config(cls, model_cfg: dict, augment_cfg: dict | None = None,
                     anchors_cfg: dict | None = None) -> None:
        """Parse every config group the task reads, without data: bad keys fail before any work."""
        if cls.config_class is not None:
            parse_section(cls.config_class, model_cfg, "model")
        parse_section(AugmentConfig, augment_cfg, "augment")

    @classmethod
    def new_model(cls, model_cfg: dict, num_classes: int) -> nn.Module:
        """A fresh network of this family without a dataset (``fashion-summary``)."""
        raise NotImplementedError(f"{cls.__name__} cannot build a model without its data")

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

    def restore(self, described: dict) -> None:
        """Take back what training computed from the data, from a checkpoint's :meth:`describe`.

        A no-op unless the task stores such values (the segmenter's logit-adjustment biases).
        """

    def tta_summary(self) -> str:
        """The test-time augmentation decoding uses, in words ("" for none): the trainer's
        final report says that its validation figure was decoded without it."""
        return ""

    @contextmanager
    def plain_decoding(self) -> Iterator[None]:
        """Decode without test-time augmentation inside the block (the trainer's validation).

        Validation during training ranks checkpoints of one run against each other, which the
        plain decision does as well (mmsegmentation validates the same way); the flip and the
        scales would multiply its cost (six forward passes a photo in ``unet_cpu_10m``: 5 % of a
        10-minute budget). ``fashion-eval``, ``fashion-predict`` and the rest keep them.
        """
        yield

    def set_logit_adjust(self, tau: float | None = None) -> None:
        """Override the checkpoint's post-hoc logit adjustment (``fashion-eval model.logit_adjust=``);
        None keeps the model's own."""
        if tau is not None:
            raise UserError(f"model.logit_adjust is for segmenters; this checkpoint holds a {self.role}")

    def set_tta(self, flip: bool | None = None, scales: list[float] | None = None) -> None:
        """Override the checkpoint's test-time augmentation: the flip and the scales
        (``fashion-eval tta_flip= tta_scales=``, the same keys of ``fashion-predict``); None
        keeps what the model was trained with."""
        for key, value in (("tta_flip", flip), ("tta_scales", scales)):
            if value is not None:
                raise UserError(f"{key} is for segmenters; this checkpoint holds a {self.role}")

    def image_classes(self, split: str) -> list[np.ndarray]:
        """The class indices each image of ``split`` contains (repeat-factor sampling reads them).

        Detection: the classes of its boxes. Segmentation overrides this with its masks' classes.
        """
        return [np.unique(r.boxes[:, 4]) for r in self.data.records(split)]

    def gpu_augment(self, batch: dict) -> dict:
        """Colour jitter of a training batch already on the GPU, when :attr:`gpu_color` is set.

        The loader then skips colour work (``color_on_cpu=False``), which is the costliest part
        of CPU augmentation after decoding; geometry stays in the loader because boxes and masks
        must follow it.
        """
        if not self.gpu_color:
            return batch
        from fashionvision.data.gpu_augment import gpu_color_jitter

        a = self.augment
        batch["images"] = gpu_color_jitter(batch["images"], a.hsv_h, a.hsv_s, a.hsv_v, a.contrast,
                                           generator=self.color_generator(batch["images"].device),
                                           max_value=255.0)
        return batch

    @property
    def color_rng(self) -> RankGenerator:
        """The :class:`~fashionvision.data.gpu_augment.RankGenerator` of the GPU colour jitter,
        seeded from ``(self.seed, rank)`` so that every rank draws its own jitter; remade when
        the seed or the rank changes. Its ``state_dict()`` continues the stream after a resume."""
        rank = env_info().rank if self.rank is None else int(self.rank)
        rng = self._color_rng
        if rng is None or (rng.seed, rng.rank) != (int(self.seed), rank):
            rng = self._color_rng = RankGenerator(self.seed, rank)
        return rng

    def color_generator(self, device: torch.device) -> torch.Generator:
        """This rank's generator for colour draws on ``device`` (see :attr:`color_rng`)."""
        return self.color_rng.get(device)

    def draw(self, image: "Any", prediction: dict) -> "Any":
        """An RGB uint8 picture of ``prediction`` over ``image`` (for TensorBoard and apps)."""
        return image

    def describe(self) -> dict:
        """What to store in a checkpoint to rebuild this task (names only, no code)."""
        return {"task": self.name, "model": self.family, "classes": self.class_names}
