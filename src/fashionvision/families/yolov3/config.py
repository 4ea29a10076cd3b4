"""The ``model`` and ``anchors`` groups of YOLOv3 as typed dataclasses.

See ``configs/model/yolo.yaml`` and ``configs/anchors/*.yaml`` for what each key means.
Parsed once when the task is built (:func:`fashionvision.config.parse_section`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fashionvision.config import check_probability, require
from fashionvision.errors import UserError
from fashionvision.tasks.detection import DetectionConfig

ANCHOR_SOURCES = ("coco", "kmeans", "values")


@dataclass
class YOLOv3Config(DetectionConfig):
    """Darknet-53 backbone, three heads, the YOLOv3 loss."""

    width: float = 1.0            # channel multiplier (0.125 for tiny test models)
    depth: float = 1.0            # residual-block multiplier of the backbone stages
    ignore_iou: float = 0.5
    box_loss: str = "ciou"
    loss_weights: dict | None = None
    multi_anchor_iou: float | None = None
    iou_aware_obj: float = 0.0
    label_smoothing: float = 0.0
    xy_scale: float = 1.0
    neighbor_cells: bool = False  # YOLOv5: also the 2 neighbouring cells nearest the box centre
    loss_reduction: str = "global"  # scale: mean per scale, then summed (YOLOv5); global: one division

    def check(self) -> None:
        super().check()
        require(self.width > 0, "model.width", self.width, "> 0")
        require(self.depth > 0, "model.depth", self.depth, "> 0")
        if self.box_loss.lower() != "ciou":
            raise UserError(f"model.box_loss={self.box_loss} is not supported; use ciou")
        for key in ("ignore_iou", "multi_anchor_iou", "iou_aware_obj", "label_smoothing"):
            check_probability(f"model.{key}", getattr(self, key))
        if self.loss_reduction not in ("global", "scale"):
            raise UserError(f"model.loss_reduction={self.loss_reduction} is not one of: global, scale")
        require(self.xy_scale >= 1.0, "model.xy_scale", self.xy_scale, ">= 1")


@dataclass
class AnchorsConfig:
    """Where the nine anchors come from: published COCO values, k-means on the data, or given."""

    name: str = "coco"
    k: int = 9
    file: str | None = None
    seed: int = 0
    values: list | None = None

    def check(self) -> None:
        if self.name not in ANCHOR_SOURCES:
            raise UserError(f"unknown anchors '{self.name}'; choose one of: {', '.join(ANCHOR_SOURCES)}")
        require(self.k > 0, "anchors.k", self.k, "> 0")
