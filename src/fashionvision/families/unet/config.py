"""The ``model`` group of the U-Net as a typed dataclass (see ``configs/model/unet.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from fashionvision.config import require
from fashionvision.errors import UserError
from fashionvision.families.unet.losses import LOSS_TERMS
from fashionvision.tasks.segmentation import SegmentationConfig

LOSSES = tuple(LOSS_TERMS)


@dataclass
class UNetConfig(SegmentationConfig):
    """The vanilla U-Net or a segmentation-models-pytorch encoder, and its loss."""

    encoder: str = "resnet50"
    encoder_weights: str | None = None
    width: float = 1.0                      # vanilla only: channel multiplier
    batch_norm: bool = True                 # vanilla only
    decoder_channels: list[int] | None = None
    loss: str = "ce+dice"
    loss_weights: dict | None = None
    class_weights: bool = False
    ohem: float | None = None               # CE over only this share of the hardest pixels
    lovasz_pixels: int | None = 16384       # random pixels per batch the Lovasz term sorts (null = all)
    logit_adjust_loss: float = 0.0          # CE on logits + tau * log(training pixel share)
    label_smoothing: float = 0.0            # CE target: (1 - e) one-hot + e / classes


    def check(self) -> None:
        super().check()
        require(self.width > 0, "model.width", self.width, "> 0")
        if self.ohem is not None:
            require(0 < self.ohem <= 1, "model.ohem", self.ohem, "null or in (0, 1]")
        if self.lovasz_pixels is not None:
            require(self.lovasz_pixels >= 1, "model.lovasz_pixels", self.lovasz_pixels, "null or at least 1")
        require(0 <= self.logit_adjust_loss <= 2, "model.logit_adjust_loss", self.logit_adjust_loss,
                "in [0, 2] (0 = off; 1 = Menon et al.'s logit-adjusted loss)")
        require(0 <= self.label_smoothing < 1, "model.label_smoothing", self.label_smoothing, "in [0, 1)")
        if self.loss not in LOSSES:
            raise UserError(f"model.loss='{self.loss}'; choose one of {', '.join(LOSSES)}")
