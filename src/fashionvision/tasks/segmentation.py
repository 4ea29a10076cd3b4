"""What every semantic segmenter shares (see :mod:`fashionvision.tasks.base`).

The dataset (aspect-preserving resize, padded to a multiple of 32), mIoU evaluation at the
original resolution, predicted-mask files and overlays. A family (``families/unet``)
subclasses :class:`SegmentationTask` and supplies its model (:meth:`build_model`) and named
losses (:meth:`loss`); decoding is the same for every segmenter: the argmax of the logits, shifted
per class by :meth:`SegmentationTask.decision_bias` when ``model.logit_adjust`` is set, over the
logits averaged with those of the mirrored image when ``model.tta_flip`` is set, and with those
of the photo at other sizes when ``model.tta_scales`` is (:mod:`fashionvision.tasks.seg_tta`).

Classes are the converted dataset's ``mask_classes`` (index 0 = background). Images reach
the model as RGB floats in [0, 1]; any normalisation happens inside the model, so exported
models and the app feed the same input.

Evaluation is honest about resolution: the logits of each image are cropped to the real
image inside the letterbox, resized (bilinear) to the image's ORIGINAL size and only then
turned into classes (band by band, so memory stays bounded on huge photos), and they are compared with the original mask read from disk, never
with the downscaled training mask. Everything accumulates in one confusion matrix on the
model's device (:mod:`fashionvision.metrics.segmentation`).
"""

from __future__ import annotations

import logging
import os
import time
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from fashionvision.config import DEFAULT_IMAGE_SIZE, check_image_size, require
from fashionvision.errors import UserError
from fashionvision.engine.distributed import unwrap
from fashionvision.tasks.base import Task

log = logging.getLogger(__name__)


def logits_to_original(logits: torch.Tensor, meta: dict) -> torch.Tensor:
    """Float32 logits ``[C, h, w]`` at the original image size from letterboxed ``[C, H, W]``.

    Memory grows as ``C x h x w``: for predictions use :func:`~fashionvision.tasks.seg_upsample.
    labels_at_original`, which gives the same classes band by band. Crops the padding (``meta["pad"]`` = (left, top), ``meta["scale"]``) and resizes
    bilinearly to ``meta["orig_size"]`` = (h, w).
    """
    from fashionvision.tasks.seg_upsample import crop_letterbox

    h, w = (int(v) for v in meta["orig_size"])
    region = crop_letterbox(logits, meta).float()
    if region.shape[-2:] != (h, w):
        region = F.interpolate(region.unsqueeze(0), size=(h, w), mode="bilinear",
                               align_corners=False).squeeze(0)
    return region


@dataclass
class SegmentationConfig:
    """The ``model`` keys every segmenter has; a family's config adds its own."""

    name: str = ""
    image_size: int = DEFAULT_IMAGE_SIZE  # long side; batches are rectangular
    weights: str | None = None
    seed: int = 0
    ignore_index: int = 255
    cpu_profile: str | None = None  # the experiment fashion-train picks on a machine without CUDA
    logit_adjust: float = 0.0       # predict argmax(logits - tau * log(training pixel share))
    tta_flip: bool = False          # average the logits of each image and of its mirror image
    tta_scales: list[float] | None = None  # also average the logits at these long-side ratios (with 1)

    def check(self) -> None:
        check_image_size("model.image_size", self.image_size)
        require(0 <= self.ignore_index <= 255, "model.ignore_index", self.ignore_index, "in [0, 255]")
        require(0 <= self.logit_adjust <= 2, "model.logit_adjust", self.logit_adjust,
                "in [0, 2] (0 = plain argmax)")
        from fashionvision.tasks.seg_tta import check_scales

        check_scales("model.tta_scales", self.tta_scales)


class SegmentationTask(Task):
    """Per-pixel classes; primary metric: mIoU."""

    name = "segmentation"
    role = "segmenter"
    primary_metric = "miou"
    config_class = SegmentationConfig
    rect_input = True

    def __init__(self, model_cfg: dict, data, augment_cfg: dict | None = None,
                 anchors_cfg: dict | None = None):
        super().__init__(model_cfg, data, augment_cfg, anchors_cfg)
        if data.mask_classes is None:
            raise UserError(
                f"dataset '{data.name}' has no segmentation masks (DeepFashion has boxes only), so "
                "model=unet cannot train or evaluate on it; use dataset=ccp or dataset=fashionpedia, "
                "or model=yolo for detection")
        self.ignore_index = self.cfg.ignore_index
        if len(data.mask_classes) > self.ignore_index:
            raise UserError(f"{len(data.mask_classes)} mask classes collide with "
                            f"model.ignore_index={self.ignore_index}")
        #: set by ``fashion-eval``: ``save_masks`` writes predicted masks during :meth:`evaluate`
        self.eval_options: dict = {"save_masks": False}
        self._pixel_counts: np.ndarray | None = None
        self._decision_bias: torch.Tensor | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.data.mask_classes)

    # --- the family's head ------------------------------------------------------------------
    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, model: nn.Module) -> dict[str, torch.Tensor]:
        """Named scalar losses of the logits ``[B, C, H, W]`` against masks ``[B, H, W]``."""

    # --- data -----------------------------------------------------------------------------
    def build_dataset(self, split: str, train: bool, limit: int | None = None,
                      cache: bool = False) -> Dataset:
        from fashionvision.data.dataset import FashionDataset

        if not self.data.has_masks:
            raise UserError(f"converted dataset '{self.data.folder}' has mask_classes.txt but no masks/ "
                            "folder; convert it again")
        return FashionDataset(self.data, split, self.image_size, train, self.augment,
                              task=self.name, limit=limit, cache=cache,
                              seed=self.seed, ignore_index=self.ignore_index,
                              color_on_cpu=not (train and self.gpu_color))

    def image_classes(self, split: str) -> list[np.ndarray]:
        """The classes each training mask of ``split`` contains (each mask read once; padding and
        values beyond the classes left out)."""
        from fashionvision.tasks.class_prior import mask_labels

        return [np.unique(mask_labels(self.data.mask_path(r), len(self.class_names), self.ignore_index))
                for r in self.data.records(split)]

    def collate(self, items: list[dict]) -> dict:
        from fashionvision.data.dataset import segmentation_collate

        return segmentation_collate(items)

    # --- class priors ----------------------------------------------------------------------
    def pixel_counts(self) -> np.ndarray:
        """Pixels per class over the training split's masks (read once, then kept)."""
        if self._pixel_counts is None:
            from fashionvision.tasks.class_prior import pixel_frequencies

            records = self.data.records("train")
            started = time.perf_counter()
            self._pixel_counts = pixel_frequencies((self.data.mask_path(r) for r in records),
                                                   len(self.class_names), self.ignore_index)
            log.info("class pixel counts from %d training masks in %.1fs", len(records),
                     time.perf_counter() - started)
        return self._pixel_counts

    def decision_bias(self) -> torch.Tensor | None:
        """``-tau * log(prior)`` added to the logits before the argmax, or None (``model.logit_adjust=0``).

        Post-hoc logit adjustment (Menon et al., 2021): a network trained with plain
        cross-entropy on a long-tailed split learns the training prior into its logits, so its
        argmax under-predicts rare garments. Subtracting ``tau`` times the log of each class's
        share of the training pixels moves the decision towards them; ``tau`` trades false
        negatives of rare classes for false positives. Classes absent from the training masks
        are not lifted (an untrained class would otherwise get the largest lift of all). The prior is computed once from the
        training masks and stored in the checkpoint (:meth:`describe`), so a model predicts the
        same on a machine without its data (:meth:`restore`).
        """
        tau = float(self.cfg.logit_adjust)
        if tau == 0:
            return None
        if self._decision_bias is None:
            from fashionvision.tasks.class_prior import log_prior

            counts = self.pixel_counts()
            bias = -tau * log_prior(counts)
            seen = torch.from_numpy(counts > 0)
            if seen.any():
                # a class the training masks never show was never learned, so there is nothing to
                # lift: it gets the commonest class's bias instead of the largest of all
                bias[~seen] = bias[seen].min()
            self._decision_bias = bias
            log.info("logit adjustment (tau %.2f): class biases from %.2f to %.2f", tau,
                     float(self._decision_bias.min()), float(self._decision_bias.max()))
        return self._decision_bias

    def restore(self, described: dict) -> None:
        bias = described.get("decision_bias")
        if bias is not None:
            if len(bias) != len(self.class_names):
                raise UserError(f"the stored decision_bias has {len(bias)} values for "
                                f"{len(self.class_names)} classes")
            self._decision_bias = torch.tensor(bias, dtype=torch.float32)

    @property
    def multiscale(self) -> bool:
        """Whether decoding averages several scales (``model.tta_scales`` beyond ``[1]``)."""
        return bool(self.cfg.tta_scales) and len(self.cfg.tta_scales) > 1

    def tta_summary(self) -> str:
        parts = ["flip"] if self.cfg.tta_flip else []
        if self.multiscale:
            parts.append("scales " + ", ".join(f"{float(r):g}" for r in self.cfg.tta_scales))
        return " and ".join(parts)

    @contextmanager
    def plain_decoding(self) -> Iterator[None]:
        # the logit adjustment stays: it is the model's decision rule and costs nothing
        flip, scales = self.cfg.tta_flip, self.cfg.tta_scales
        self.cfg.tta_flip, self.cfg.tta_scales = False, None
        try:
            yield
        finally:
            self.cfg.tta_flip, self.cfg.tta_scales = flip, scales

    def set_logit_adjust(self, tau: float | None = None) -> None:
        if tau is None or float(tau) == float(self.cfg.logit_adjust):
            return
        require(0 <= float(tau) <= 2, "model.logit_adjust", tau, "in [0, 2] (0 = plain argmax)")
        self.cfg.logit_adjust = float(tau)
        self._decision_bias = None  # the stored bias was the checkpoint's tau: recomputed from the masks

    def set_tta(self, flip: bool | None = None, scales: list[float] | None = None) -> None:
        if flip is not None:
            if not isinstance(flip, bool):
                raise UserError(f"tta_flip must be true, false or null, got {flip!r}")
            self.cfg.tta_flip = flip
        if scales is not None:
            from fashionvision.tasks.seg_tta import check_scales

            self.cfg.tta_scales = check_scales("tta_scales", scales)

    # --- training -------------------------------------------------------------------------
    @staticmethod
    def _input(images: torch.Tensor) -> torch.Tensor:
        # uint8 travels to the device (4x smaller copies); [0, 1] floats from here on, in the
        # memory format the images came in (channels_last when the engine asked for it)
        return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()

    def compute_losses(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        return self.loss(model(self._input(batch["images"])), batch["masks"], model)

    # --- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, metas: list[dict],
                conf: float | None = None, iou: float | None = None,
                return_probs: bool = True) -> list[dict]:
        """Per image ``{"mask": int64 [h, w], "confidence": float32 [h, w]}`` at original size.

        ``confidence`` is the probability of the chosen class at each pixel (a class's score is
        its mean over the class's pixels; with ``model.logit_adjust`` the softmax of the
        adjusted logits); ``return_probs=False`` leaves it out. With ``model.tta_scales`` each
        photo is prepared again at the other scales, from ``meta["source"]`` or from
        ``meta["path"]``. The logits are
        resized bilinearly in bands of rows (:func:`~fashionvision.tasks.seg_upsample.
        labels_at_original`), never all classes at full size at once, so a 6000 x 6000 photo
        needs ~12 bytes per pixel here instead of 4 x C. ``conf`` and ``iou`` are detection
        settings and are ignored. Results stay on the images' device.
        """
        from fashionvision.tasks.seg_upsample import labels_at_original

        device = next(unwrap(model).parameters()).device
        # bf16 forward on GPUs that have it (as in training); cropping, resizing and softmax
        # run in float32 in logits_to_original
        fast = device.type == "cuda" and torch.cuda.is_bf16_supported()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            logits = self.forward_logits(model, self._input(images.to(device)))
            if self.multiscale:
                from fashionvision.tasks.seg_tta import multiscale_logits

                logits = multiscale_logits(self, model, logits, metas, self.cfg.tta_scales)
        bias = self.decision_bias()
        if bias is not None:
            # a constant per class: adding it before the bilinear resize equals adding it after
            logits = logits.float() + bias.to(logits.device).view(1, -1, 1, 1)
        results = []
        for i, meta in enumerate(metas):
            labels, confidence = labels_at_original(logits[i], meta, confidence=return_probs)
            result = {"mask": labels}
            if return_probs:
                result["confidence"] = confidence
            results.append(result)
        return results

    def forward_logits(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """The logits of a letterboxed batch; with ``model.tta_flip`` the mean of the logits of
        the batch and of its horizontal mirror, mirrored back.

        Flip test-time augmentation (as mmsegmentation's ``flip=True`` test pipeline): the model
        trained on randomly mirrored photos, so both views are in its training distribution and
        their errors partly cancel. The whole padded canvas is mirrored, so the padding comes
        back where it was and the letterbox crop is unchanged. Costs a second forward pass.
        """
        logits = model(inputs)
        if self.cfg.tta_flip:
            logits = (logits.float() + model(inputs.flip(-1)).float().flip(-1)) / 2
        return logits

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
                # read the ground truth (and the photos multi-scale TTA prepares again) before
                # timing: disk I/O is not the model's speed
                truths = [torch.from_numpy(self._original_mask(m).astype(np.int64)) for m in metas]
                if self.multiscale:
                    from fashionvision.tasks.seg_tta import source_image

                    for meta in metas:
                        meta["source"] = source_image(meta)
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
        # per_class: the table the trainer prints for the best checkpoint at the end of a run
        return {**scalar_metrics(metrics), **extra, "per_class": metrics["per_class"]}

    def _save_mask(self, mask: torch.Tensor, meta: dict, folder: Path) -> Path:
        """A palette PNG whose pixel values are class indices (viewable and machine-readable)."""
        from PIL import Image

        from fashionvision.tasks.visualize import class_colors

        from fashionvision.output_guard import atomic_write

        path = folder / self._relative_path(meta).with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(mask.to(torch.uint8).cpu().numpy(), mode="P")
        image.putpalette(class_colors(len(self.class_names)).reshape(-1).tolist())
        atomic_write(path, lambda tmp: image.save(tmp), root=folder)  # never through a planted link
        return path

    # --- pictures and checkpoints ---------------------------------------------------------
    def draw(self, image: Any, prediction: dict) -> Any:
        """The predicted mask blended over the image, with a legend of the classes present."""
        mask = prediction["mask"]
        mask = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        from fashionvision.tasks.visualize import class_colors, mask_legend, overlay_mask

        colors = class_colors(len(self.class_names))
        out = overlay_mask(image, mask, alpha=0.5, colors=colors, ignore_index=self.ignore_index)
        return mask_legend(out, mask, self.class_names, colors, ignore_index=self.ignore_index)

    def describe(self) -> dict:
        # classes = what the model predicts (mask labels); det_classes rebuild the dataset's
        # detection list for inference without the data (families.rebuild_task)
        bias = self.decision_bias()
        return {**super().describe(), "mask_classes": self.class_names,
                "det_classes": list(self.data.classes),
                "image_size": self.image_size, "ignore_index": self.ignore_index,
                **({"decision_bias": [round(float(b), 5) for b in bias]} if bias is not None else {})}

