"""YOLOv3 as a detection task: its model, loss, decoding and anchors.

The generic parts (dataset, COCO evaluation, letterbox mapping, drawing) come from
:class:`fashionvision.tasks.detection.DetectionTask`; this class adds only what makes it
YOLOv3.

Anchors come from the ``anchors`` config group: ``kmeans`` (computed from the training split
by :func:`fashionvision.families.yolov3.anchors.ensure_anchors` when the file does not exist
yet), ``coco`` (the published values) or ``values`` (explicit ``[[w, h]] * 9``, as rebuilt
from a checkpoint). They are stored in the model as a persistent buffer, so a loaded
checkpoint always decodes with the anchors it was trained with; the task reads them back from
the model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fashionvision.config import parse_section
from fashionvision.errors import UserError
from fashionvision.families.yolov3.config import AnchorsConfig, YOLOv3Config
from fashionvision.engine.distributed import unwrap
from fashionvision.tasks.detection import DetectionTask

log = logging.getLogger(__name__)


class YOLOv3Task(DetectionTask):
    """YOLOv3 on Darknet-53; metrics are COCO mAP (primary: mAP@.5)."""

    family = "yolo"
    config_class = YOLOv3Config
    checkpoint_bounds = {"width": (0.01, 2.0), "depth": (0.01, 2.0)}
    default_num_classes = 80  # COCO

    def __init__(self, model_cfg: dict, data, augment_cfg: dict | None = None,
                 anchors_cfg: dict | None = None):
        super().__init__(model_cfg, data, augment_cfg, anchors_cfg)
        self.anchors_config = parse_section(AnchorsConfig, anchors_cfg, "anchors")
        self._anchors: np.ndarray | None = None
        self._criterion = None

    @classmethod
    def check_config(cls, model_cfg: dict, augment_cfg: dict | None = None,
                     anchors_cfg: dict | None = None) -> None:
        super().check_config(model_cfg, augment_cfg, anchors_cfg)
        parse_section(AnchorsConfig, anchors_cfg, "anchors")

    # --- anchors --------------------------------------------------------------------------
    @property
    def anchors(self) -> np.ndarray:
        """The nine anchors (pixels at ``image_size``), sorted by area."""
        if self._anchors is None:
            self._anchors = self._resolve_anchors()
        return self._anchors

    def _resolve_anchors(self) -> np.ndarray:
        from fashionvision.families.yolov3.anchors import COCO_ANCHORS, ensure_anchors

        cfg = self.anchors_config
        if cfg.name in ("values", "coco"):
            values = np.asarray(cfg.values or COCO_ANCHORS, dtype=np.float32)
        else:  # kmeans
            folder = Path(self.data.folder)
            if not cfg.file or not (Path(cfg.file).is_file() or (folder / "train.txt").is_file()):
                # a checkpoint rebuilt without its dataset: the anchors buffer stored in the
                # checkpoint replaces these placeholders when its weights are loaded
                log.info("k-means anchors file not available; using COCO anchors until weights load")
                values = np.asarray(COCO_ANCHORS, dtype=np.float32)
            else:
                values = ensure_anchors(folder, cfg.k, self.image_size, cfg.seed, cfg.file)
        values = values.reshape(-1, 2)
        if len(values) != 9:
            raise UserError(f"YOLOv3 needs 9 anchors (3 per scale); anchors={cfg.name} gives {len(values)}")
        return values[np.argsort(values.prod(1))]

    # --- model, loss, decoding ------------------------------------------------------------
    @classmethod
    def new_model(cls, model_cfg: dict, num_classes: int) -> nn.Module:
        from fashionvision.families.yolov3.model import build_yolov3

        return build_yolov3(model_cfg, num_classes)

    def build_model(self) -> nn.Module:
        return self.new_model({**self.model_cfg, "anchors": self.anchors.tolist()}, len(self.class_names))

    @property
    def criterion(self) -> nn.Module:
        if self._criterion is None:
            from fashionvision.families.yolov3.loss import YOLOLoss

            c = self.cfg
            self._criterion = YOLOLoss(
                len(self.class_names), ignore_iou=c.ignore_iou, loss_weights=c.loss_weights,
                xy_scale=c.xy_scale, multi_anchor_iou=c.multi_anchor_iou,
                iou_aware_obj=c.iou_aware_obj, label_smoothing=c.label_smoothing,
                neighbor_cells=c.neighbor_cells, reduction=c.loss_reduction)
        return self._criterion

    def loss(self, outputs: Any, targets: Any, model: nn.Module,
             max_targets: int | None = None) -> dict[str, torch.Tensor]:
        bare = unwrap(model)
        return self.criterion(outputs, targets, bare.anchors, bare.strides, max_targets=max_targets)

    def decode(self, outputs: Any, model: nn.Module, conf: float, iou: float,
               max_det: int) -> list[dict]:
        from fashionvision.families.yolov3.decode import decode_outputs, nms

        bare = unwrap(model)
        return nms(decode_outputs(outputs, bare.anchors, bare.strides, self.cfg.xy_scale), conf, iou, max_det)

    def describe(self) -> dict:
        return {**super().describe(), "anchors": np.asarray(self.anchors).round(2).tolist()}
