"""The ``augment`` config group as a typed dataclass (see ``configs/augment/default.yaml``).

The defaults are "no augmentation", the same values the transforms assume for a missing key,
so a task rebuilt without its augment group (inference from a checkpoint) behaves as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fashionvision.config import check_probability, require


@dataclass
class AugmentConfig:
    """Training-time geometry and colour augmentation; probabilities and ranges."""

    name: str = "none"
    hflip: float = 0.0
    vflip: float = 0.0
    hsv_h: float = 0.0
    hsv_s: float = 0.0
    hsv_v: float = 0.0
    contrast: float = 0.0
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])
    translate: float = 0.0
    rotate: float = 0.0
    crop: float = 0.0
    crop_min_side: float = 0.6
    mosaic: float = 0.0
    close_mosaic: float = 0.0  # detection: fraction of training at the end without mosaic
    crop_size: Any = None  # segmentation patches: random windows (an int or [h, w]) at the same scale
    crop_max_ratio: float = 1.0  # with crop_size: redraw windows dominated by one class beyond this share
    crop_focus: float = 0.0  # with crop_size: share of windows centred on one foreground class of the image
    close_crop: float = 0.0  # with crop_size: fraction of training at the end on whole images

    def check(self) -> None:
        for key in ("hflip", "vflip", "crop", "mosaic", "crop_min_side", "close_mosaic",
                    "crop_focus", "close_crop"):
            check_probability(f"augment.{key}", getattr(self, key))
        for key in ("hsv_h", "hsv_s", "hsv_v", "contrast", "translate", "rotate"):
            require(getattr(self, key) >= 0, f"augment.{key}", getattr(self, key), ">= 0")
        require(0 < self.crop_max_ratio <= 1, "augment.crop_max_ratio", self.crop_max_ratio, "in (0, 1]")
        require(len(self.scale) == 2 and 0 < float(self.scale[0]) <= float(self.scale[1]), "augment.scale",
                self.scale, "[low, high] with 0 < low <= high")
