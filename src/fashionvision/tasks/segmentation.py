"""U-Net semantic segmentation as the engine sees it (see :mod:`fashionvision.tasks.base`).

Classes are the converted dataset's ``mask_classes`` (index 0 = background). Images reach
the model as RGB floats in [0, 1]; the ImageNet normalisation happens inside the model
(:class:`fashionvision.models.unet.UNet`), so exported models and the app feed the same input.

Evaluation is honest about resolution: the logits of each image are cropped to the real
image inside the letterbox, resized (bilinear) to the image's ORIGINAL size and only then
turned into classes, and they are compared with the original mask read from disk, never
with the downscaled training mask. Everything accumulates in one confusion matrix on the
model's device (:mod:`fashionvision.metrics.segmentation`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from fashionvision.errors import UserError, int_setting
from fashionvision.tasks.base import Task, unwrap

log = logging.getLogger(__name__)


def logits_to_original(logits: torch.Tensor, meta: dict) -> torch.Tensor:
    """Float32 logits ``[C, h, w]`` at the original image size from letterboxed ``[C, H, W]``.

    Crops the padding (``meta["pad"]`` = (left, top), ``meta["scale"]``) and resizes
    bilinearly to ``meta["orig_size"]`` = (h, w).
    """
    h, w = (int(v) for v in meta["orig_size"])
    scale = float(meta.get("scale", 1.0))
    left, top = (int(v) for v in meta.get("pad", (0, 0)))
    height, width = logits.shape[-2:]
    content_h = min(height - top, max(1, round(h * scale)))
    content_w = min(width - left, max(1, round(w * scale)))
    region = logits[:, top:top + content_h, left:left + content_w].float()
    if region.shape[-2:] != (h, w):
        region = F.interpolate(region.unsqueeze(0), size=(h, w), mode="bilinear",
                               align_corners=False).squeeze(0)
    return region


class SegmentationTask(Task):
    """U-Net (vanilla, MobileNetV2 or ResNet50 encoder); primary metric: mIoU."""

    name = "segmentation"
    primary_metric = "miou"

    def __init__(self, model_cfg: dict, data, augment_cfg: dict | None = None,
                 anchors_cfg: dict | None = None):
        super().__init__(model_cfg, data, augment_cfg, anchors_cfg)
        if data.mask_classes is None:
            raise UserError(
                f"dataset '{data.name}' has no segmentation masks (DeepFashion has boxes only), so "
                "model=unet cannot train or evaluate on it; use dataset=ccp or dataset=fashionpedia, "
                "or model=yolo for detection")
        self.image_size = int_setting("model.image_size", self.model_cfg.get("image_size", 416), 32)
        self.ignore_index = int(self.model_cfg.get("ignore_index", 255))
        if len(data.mask_classes) > self.ignore_index:
            raise UserError(f"{len(data.mask_classes)} mask classes collide with "
                            f"model.ignore_index={self.ignore_index}")
        #: set by ``fashion-eval``: ``save_masks`` writes predicted masks during :meth:`evaluate`
        self.eval_options: dict = {"save_masks": False}
        self._criterion: nn.Module | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.data.mask_classes)

    # --- model and data -------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        from fashionvision.models import build_model

        return build_model(self.model_cfg, len(self.class_names))

    def build_dataset(self, split: str, train: bool, limit: int | None = None,
                      cache: bool = False) -> Dataset:
        from fashionvision.data.dataset import FashionDataset

        if not self.data.has_masks:
            raise UserError(f"converted dataset '{self.data.folder}' has mask_classes.txt but no masks/ "
                            "folder; convert it again")
        return FashionDataset(self.data, split, self.image_size, train, self.augment_cfg,
                              task="segmentation", limit=limit, cache=cache,
                              seed=int(self.model_cfg.get("seed", 0)), ignore_index=self.ignore_index,
                              color_on_cpu=not (train and self.gpu_color))

    def collate(self, items: list[dict]) -> dict:
        from fashionvision.data.dataset import segmentation_collate

        return segmentation_collate(items)

    # --- training -------------------------------------------------------------------------
    def class_weights(self) -> torch.Tensor:
        """Cross-entropy weights from the training split's pixel frequencies (masks read once)."""
        from fashionvision.models.seg_losses import class_weights_from_frequencies, pixel_frequencies

        records = self.data.records("train")
        started = time.perf_counter()
        counts = pixel_frequencies((self.data.mask_path(r) for r in records), len(self.class_names),
                                   self.ignore_index)
        weights = class_weights_from_frequencies(counts)
        log.info("class weights from %d training masks in %.1fs: min %.2f, max %.2f", len(records),
                 time.perf_counter() - started, float(weights.min()), float(weights.max()))
        return weights

    @property
    def criterion(self) -> nn.Module:
        if self._criterion is None:
            from fashionvision.models.seg_losses import SegmentationLoss

            weights = self.class_weights() if self.model_cfg.get("class_weights") else None
            self._criterion = SegmentationLoss(str(self.model_cfg.get("loss", "ce+dice")), weights,
                                               self.ignore_index, self.model_cfg.get("loss_weights"))
        return self._criterion

    @staticmethod
    def _input(images: torch.Tensor) -> torch.Tensor:
        # uint8 travels to the device (4x smaller copies); [0, 1] floats from here on, in the
        # memory format the images came in (channels_last when the engine asked for it)
        return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()

    def compute_losses(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        logits = model(self._input(batch["images"]))
        criterion = self.criterion
        if criterion.class_weights is not None and criterion.class_weights.device != logits.device:
            criterion.to(logits.device)
        return criterion(logits, batch["masks"])

    # --- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, metas: list[dict],
                conf: float | None = None, iou: float | None = None,
                return_probs: bool = True) -> list[dict]:
        """Per image ``{"mask": int64 [h, w], "probs": float32 [C, h, w]}`` at original size.

        ``conf`` and ``iou`` are detection settings and are ignored. Results stay on the
        images' device; ``return_probs=False`` saves the (large) probability maps.
        """
        device = next(unwrap(model).parameters()).device
        # bf16 forward on GPUs that have it (as in training); cropping, resizing and softmax
        # run in float32 in logits_to_original
        fast = device.type == "cuda" and torch.cuda.is_bf16_supported()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            logits = model(self._input(images.to(device)))
        results = []
        for i, meta in enumerate(metas):
            full = logits_to_original(logits[i], meta)
            result = {"mask": full.argmax(0)}
            if return_probs:
                result["probs"] = full.softmax(0)
            results.append(result)
        return results

    def _relative_path(self, meta: dict) -> Path:
        """The image path of ``meta`` relative to the dataset's image root (as in split files)."""
        path = Path(meta["path"])
        if path.is_absolute():
            rel = Path(os.path.relpath(path, self.data.image_root))
            return Path(path.name) if rel.parts[:1] == ("..",) else rel
        return path

    def _original_mask(self, meta: dict) -> np.ndarray:
        """The ground-truth mask at the original resolution, read from the converted folder."""
        from fashionvision.data.cache import read_mask
        from fashionvision.data.converted import mask_path_for

        path = meta.get("mask_path") or mask_path_for(self.data.folder, str(self._relative_path(meta)))
        try:
            mask = read_mask(path)
        except OSError as exc:
            raise UserError(f"evaluation needs the original mask: {exc}") from None
        if tuple(mask.shape) != tuple(int(v) for v in meta["orig_size"]):
            raise UserError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                            f"{meta['orig_size'][1]}x{meta['orig_size'][0]}")
        return mask

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device,
                 output_dir: Path | None = None, save_masks: bool | None = None) -> dict[str, float]:
        """mIoU and friends at original resolution; with ``output_dir`` the full report.

        The report: ``metrics.json`` (all figures and per-class IoU with pixel counts),
        ``confusion_matrix.png`` (row-normalised), ``per_class_iou.png``,
        ``confusion_matrix.npy`` and, when ``save_masks``, predicted
        masks as palette PNGs under ``masks/`` (pixel value = class index); ``save_masks``
        defaults to ``self.eval_options["save_masks"]`` (what ``fashion-eval save_masks=true`` sets).
        """
        from fashionvision.metrics.segmentation import ConfusionMatrix, scalar_metrics, write_report

        options = getattr(self, "eval_options", None) or {}
        save = bool(options.get("save_masks", False)) if save_masks is None else bool(save_masks)
        was_training = model.training
        model.eval()
        confusion = ConfusionMatrix(len(self.class_names), self.ignore_index, device)
        images, seconds = 0, 0.0
        try:
            for batch in loader:
                metas = batch["metas"]
                if not metas:
                    continue  # every image of the batch was unreadable (skipped by the dataset)
                # read the ground truth before timing: disk I/O is not the model's speed
                truths = [torch.from_numpy(self._original_mask(m).astype(np.int64)) for m in metas]
                started = time.perf_counter()
                predictions = self.predict(model, batch["images"].to(device, non_blocking=True), metas,
                                           return_probs=False)
                for prediction, truth, meta in zip(predictions, truths, metas):
                    confusion.update(prediction["mask"], truth.to(device, non_blocking=True))
                    if save and output_dir is not None:
                        self._save_mask(prediction["mask"], meta, Path(output_dir) / "masks")
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds += time.perf_counter() - started
                images += len(metas)
        finally:
            model.train(was_training)
        # No all-reduce here: the engine validates on rank 0 only, over the whole split.
        if images == 0:
            raise UserError("evaluation split is empty")
        extra = {"images": images, "ms_per_image": 1000.0 * seconds / images}
        if output_dir is not None:
            metrics = write_report(confusion.matrix.cpu().numpy(), self.class_names, output_dir, extra)
        else:
            metrics = {**confusion.compute(self.class_names), **extra}
        return {**scalar_metrics(metrics), **extra}

    def _save_mask(self, mask: torch.Tensor, meta: dict, folder: Path) -> Path:
        """A palette PNG whose pixel values are class indices (viewable and machine-readable)."""
        from PIL import Image

        from fashionvision.visualize import class_colors

        path = folder / self._relative_path(meta).with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(mask.to(torch.uint8).cpu().numpy(), mode="P")
        image.putpalette(class_colors(len(self.class_names)).reshape(-1).tolist())
        image.save(path)
        return path

    # --- pictures and checkpoints ---------------------------------------------------------
    def draw(self, image: Any, prediction: dict) -> Any:
        """The predicted mask blended over the image, with a legend of the classes present."""
        mask = prediction["mask"]
        mask = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        try:
            from fashionvision.visualize import class_colors, mask_legend, overlay_mask
        except ImportError:  # drawing must work even if the shared module changes
            return _blend(np.asarray(image), mask)
        colors = class_colors(len(self.class_names))
        out = overlay_mask(image, mask, alpha=0.5, colors=colors, ignore_index=self.ignore_index)
        return mask_legend(out, mask, self.class_names, colors, ignore_index=self.ignore_index)

    def describe(self) -> dict:
        # classes = what the model predicts (mask labels); det_classes rebuild the dataset's
        # detection list for inference without the data (engine.checkpoint.load_for_inference)
        return {**super().describe(), "model": "unet", "mask_classes": self.class_names,
                "det_classes": list(self.data.classes),
                "image_size": self.image_size, "ignore_index": self.ignore_index,
                "encoder": self.model_cfg.get("encoder")}


def _blend(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Fallback overlay: a fixed pseudo-random colour per class, background untouched."""
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, size=(256, 3), dtype=np.uint8)
    painted = (mask > 0) & (mask < 256)
    out = image.copy()
    colored = palette[mask[painted].astype(np.int64)].astype(np.float32)
    out[painted] = (image[painted] * (1 - alpha) + colored * alpha).astype(np.uint8)
    return out
