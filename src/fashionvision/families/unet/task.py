"""The U-Net as a segmentation task: its model and losses.

The generic parts (dataset, mIoU at the original resolution, mask files, overlays) come from
:class:`fashionvision.tasks.segmentation.SegmentationTask`. Images reach the model as RGB
floats in [0, 1]; the ImageNet normalisation happens inside the model
(:class:`fashionvision.families.unet.model.UNet`), so exported models and the app feed the
same input.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from fashionvision.families.unet.config import UNetConfig
from fashionvision.tasks.segmentation import SegmentationTask

log = logging.getLogger(__name__)


class UNetTask(SegmentationTask):
    """U-Net (vanilla, MobileNetV2 or ResNet50 encoder); primary metric: mIoU."""

    family = "unet"
    config_class = UNetConfig
    checkpoint_bounds = {"width": (0.01, 2.0)}
    default_num_classes = 59  # CCP's labels

    def __init__(self, model_cfg: dict, data, augment_cfg: dict | None = None,
                 anchors_cfg: dict | None = None):
        super().__init__(model_cfg, data, augment_cfg, anchors_cfg)
        self._criterion: nn.Module | None = None

    @classmethod
    def new_model(cls, model_cfg: dict, num_classes: int) -> nn.Module:
        from fashionvision.families.unet.model import build_unet

        return build_unet(model_cfg, num_classes)

    def build_model(self) -> nn.Module:
        return self.new_model(self.model_cfg, len(self.class_names))

    def class_weights(self) -> torch.Tensor:
        """Cross-entropy weights from the training split's pixel frequencies."""
        from fashionvision.families.unet.losses import class_weights_from_frequencies

        weights = class_weights_from_frequencies(self.pixel_counts())
        log.info("class weights: min %.2f, max %.2f", float(weights.min()), float(weights.max()))
        return weights

    @property
    def criterion(self) -> nn.Module:
        if self._criterion is None:
            from fashionvision.families.unet.losses import SegmentationLoss
            from fashionvision.tasks.class_prior import log_prior

            weights = self.class_weights() if self.cfg.class_weights else None
            shift = (self.cfg.logit_adjust_loss * log_prior(self.pixel_counts())
                     if self.cfg.logit_adjust_loss else None)
            self._criterion = SegmentationLoss(self.cfg.loss, weights, self.ignore_index, self.cfg.loss_weights,
                                               self.cfg.ohem, self.cfg.lovasz_pixels, shift,
                                               self.cfg.label_smoothing)
        return self._criterion

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, model: nn.Module) -> dict[str, torch.Tensor]:
        criterion = self.criterion
        if any(b.device != outputs.device for b in criterion.buffers()):
            criterion.to(outputs.device)
        return criterion(outputs, targets)

    def describe(self) -> dict:
        return {**super().describe(), "encoder": self.cfg.encoder}
