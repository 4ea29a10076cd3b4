"""The torch Dataset behind both model families, and their collate functions.

An item is the dict of :mod:`fashionvision.tasks.base`: ``image`` uint8 ``[3, H, W]``,
``boxes`` float32 ``[N, 4]`` (continuous x1, y1, x2, y2 in the output image: an inclusive
annotation ``x2`` becomes ``x2 + 1``), ``labels`` int64 ``[N]``, ``mask`` int64 ``[H, W]``
(segmentation only; ``ignore_index`` where padded) and ``meta`` = ``{path, image_id,
orig_size (h, w), scale, pad (left, top)}`` (plus ``mask_path`` for segmentation). Map a
prediction back with ``transforms.boxes_from_letterbox(boxes, meta["scale"], meta["pad"],
meta["orig_size"])``, or crop a mask with ``transforms.content_region(...)`` and resize it.

Output shapes: detection letterboxes to a square ``image_size`` (``rect=True``: per image
:func:`~fashionvision.data.transforms.padded_shape`); segmentation with an int
``image_size`` always uses ``padded_shape`` (all CCP photos share one aspect ratio, so a CCP
batch is uniform, e.g. 416x288). Items in a batch may still differ in shape on mixed
datasets: the collates pad to the largest shape in the batch, at the bottom/right (so
``meta["pad"]`` stays valid), with 114 for images and ``ignore_index`` for masks.

Every image goes through one loader, :func:`fashionvision.data.cache.load_resized` (decode +
resize to the training scale, long side = ``image_size``), either on the fly or via the
:class:`~fashionvision.data.cache.ImageCache` (``cache=True``), so cached and uncached items
are identical. Unreadable images are warned about once and counted in :attr:`bad_images`. In
training they are replaced by the next readable index so that training continues; in
evaluation (``train=False``) the item is ``None`` and the collates leave it out, so that the
image counts neither in the ground truth nor in the predictions (nothing is scored twice).

Boxes reaching past their image are clipped to it and boxes outside it dropped, with a
``FILE:LINE: warning`` once per image (:mod:`fashionvision.data.box_bounds`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fashionvision.data.annotations import Record
from fashionvision.data.augment_config import AugmentConfig
from fashionvision.data.box_bounds import fitted_record
from fashionvision.data.cache import ImageCache, load_resized
from fashionvision.data.converted import ConvertedDataset
from fashionvision.data.image_io import ImageReadError
from fashionvision.data.transforms import IGNORE_INDEX, PAD_VALUE, build_train_transform
from fashionvision.errors import UserError

log = logging.getLogger(__name__)

TASKS = ("detection", "segmentation")
MAX_CONSECUTIVE_BAD = 32  # more unreadable images in a row than this means a broken dataset


def record_boxes(record: Record, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Continuous-coordinate float32 boxes (inclusive ``x2`` -> ``x2 + 1``) and int64 labels."""
    b = record.boxes
    boxes = (b[:, :4].astype(np.float64) + [0, 0, 1, 1]) * scale
    return boxes.astype(np.float32).reshape(-1, 4), b[:, 4].astype(np.int64)


class FashionDataset(Dataset):
    """One split of a converted dataset as training/evaluation items.

    Args:
        data: the converted dataset.
        split: "train", "val" or "test".
        image_size: long side (int) or fixed (H, W) output.
        train: apply ``augment_cfg`` (otherwise letterbox only).
        augment_cfg: the ``augment`` group (an AugmentConfig, or a dict of its keys; None = no augmentation).
        task: "detection" or "segmentation" (the latter reads masks).
        limit: use only the first ``limit`` images.
        cache: decode each image once into an :class:`ImageCache` file (built here, in the
            main process) under ``cache_dir`` (default ``<converted folder>/.cache``).
        seed: with the epoch (:meth:`set_epoch`) and the index, seeds each item's augmentation.
        rect: rectangular outputs for detection (segmentation always is, for int sizes).
        ignore_index: mask value for padding and out-of-image pixels.
        color_on_cpu: False when colour jitter runs on the GPU (gpu_augment).
    """

    def __init__(self, data: ConvertedDataset, split: str, image_size: int | tuple[int, int],
                 train: bool, augment_cfg: AugmentConfig | dict | None, task: str, limit: int | None = None,
                 cache: bool = False, seed: int = 0, rect: bool = False,
                 ignore_index: int = IGNORE_INDEX, color_on_cpu: bool = True,
                 cache_dir: str | Path | None = None, pad_value: int = PAD_VALUE):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {task!r}")
        if task == "segmentation" and not data.has_masks:
            raise UserError(f"dataset '{data.name}' ({data.folder}) has no masks; segmentation needs "
                            "a source with pixel annotations (CCP or Fashionpedia)")
        records = data.records(split)
        self.records = records[:limit] if limit is not None else records
        if not self.records:
            raise UserError(f"split '{split}' of {data.folder} has no images (training needs train and val "
                            "images): convert more images or change the split fractions, e.g. "
                            "fashion-convert ... split=[0.8,0.1,0.1]")
        self.data, self.split, self.task, self.train = data, split, task, train
        self.image_size = image_size
        self.long_side = int(image_size) if isinstance(image_size, (int, np.integer)) else int(max(image_size))
        self.seed, self.ignore_index = int(seed), int(ignore_index)
        self.transform = build_train_transform(augment_cfg if train else None, image_size, task,
                                               color_on_cpu=color_on_cpu,
                                               rect=rect or task == "segmentation",
                                               pad_value=pad_value, ignore_index=ignore_index)
        self.image_paths = [data.image_path(r) for r in self.records]
        self.mask_paths = [data.mask_path(r) for r in self.records] if task == "segmentation" else None
        # Shared-memory scalars: DataLoader workers (persistent ones too) see set_epoch() and
        # add to one bad-image count, because these tensors are shared, not copied.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._progress = torch.zeros(1, dtype=torch.float64).share_memory_()  # 0..1, for close_mosaic
        self._bad = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._warned: set[str] = set()
        self.cache: ImageCache | None = None
        if cache:
            self.cache = ImageCache.create(
                self.image_paths, self.mask_paths, self.long_side,
                Path(cache_dir) if cache_dir is not None else data.folder / ".cache", split)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (call before iterating the loader)."""
        self._epoch[0] = int(epoch)

    def set_progress(self, progress: float) -> None:
        """Tell the augmentation how far training is (0..1): ``augment.close_mosaic`` reads it."""
        self._progress[0] = float(progress)

    @property
    def progress(self) -> float:
        return float(self._progress[0])

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    @property
    def bad_images(self) -> int:
        """Unreadable images met so far (all workers together)."""
        return int(self._bad[0])

    def load_sample(self, index: int) -> dict:
        """The un-augmented sample of ``index`` at the training scale (raises ImageReadError)."""
        if self.cache is not None:
            image, mask, orig, scale = self.cache.get(index)
        else:
            mask_path = self.mask_paths[index] if self.mask_paths is not None else None
            image, mask, orig, scale = load_resized(self.image_paths[index], mask_path, self.long_side)
        record, issues = fitted_record(self.records[index], int(orig[1]), int(orig[0]),
                                       str(self.data.split_file(self.split)))
        if issues and record.path not in self._warned:
            self._warned.add(record.path)
            for issue in issues:
                log.warning("%s", issue)
        boxes, labels = record_boxes(record, scale)
        sample = {"image": image, "boxes": boxes, "labels": labels, "index": index,
                  "orig_size": orig, "resize_scale": scale}
        if mask is not None:
            sample["mask"] = mask
        return sample

    def _load_readable(self, index: int) -> dict:
        """:meth:`load_sample` of ``index`` or, if unreadable, of the next readable index."""
        for attempt in range(min(len(self), MAX_CONSECUTIVE_BAD)):
            i = (index + attempt) % len(self)
            try:
                return self.load_sample(i)
            except ImageReadError as exc:
                self._bad[0] += 1
                if exc.path not in self._warned:
                    self._warned.add(exc.path)
                    log.warning("skipping unreadable image (using the next one instead): %s", exc)
        raise UserError(f"{min(len(self), MAX_CONSECUTIVE_BAD)} consecutive unreadable images from "
                        f"{self.image_paths[index]} in split '{self.split}' of {self.data.folder}; "
                        "check the dataset (fashion-validate)")

    def rng_for(self, index: int) -> np.random.Generator:
        """The augmentation generator of ``index`` in the current epoch (resume-exact)."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def __getitem__(self, index: int) -> dict | None:
        return self.item(index, stream=index)

    def item(self, index: int, stream: int) -> dict | None:
        """Image ``index`` augmented by the generator of ``stream`` (a repeated image's copies
        each get their own stream; see :class:`~fashionvision.data.repeat_factor.RepeatedDataset`)."""
        if not self.train:
            try:
                sample = self.load_sample(index)
            except ImageReadError as exc:
                # evaluation: substituting another image would score it twice and count the
                # missing one's ground truth as misses; leave it out instead (collates drop None)
                self._bad[0] += 1
                log.warning("skipping unreadable image (left out of the evaluation): %s", exc)
                return None
        else:
            sample = self._load_readable(index)
        out = self.transform(sample, self.rng_for(stream), fetch=self._load_readable, length=len(self),
                             progress=self.progress)
        i = sample["index"]
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1))),
            "boxes": torch.from_numpy(np.asarray(out["boxes"], dtype=np.float32).reshape(-1, 4)),
            "labels": torch.from_numpy(np.asarray(out["labels"], dtype=np.int64).reshape(-1)),
            "meta": {"path": str(self.image_paths[i]), "image_id": i,
                     "orig_size": tuple(int(v) for v in sample["orig_size"]),
                     # from the original image to this output: resize, then letterbox
                     "scale": float(sample["resize_scale"] * out["scale"]),
                     "pad": tuple(int(v) for v in out["pad"])},
        }
        if self.task == "segmentation":
            item["mask"] = torch.from_numpy(out["mask"].astype(np.int64))
            item["meta"]["mask_path"] = str(self.mask_paths[i])  # full-resolution ground truth
        return item


def worker_init(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: one OpenCV thread per worker.

    The workers are the parallelism; OpenCV's own thread pool inside each of them would
    oversubscribe the cores (and a pool inherited through fork can hang).
    """
    import cv2

    cv2.setNumThreads(0)


def pad_collate_images(images: list[torch.Tensor], pad_value: int = PAD_VALUE) -> torch.Tensor:
    """Stack ``[C, H, W]`` tensors into ``[B, C, Hmax, Wmax]``, padding bottom/right."""
    return _pad_stack(images, pad_value)


def pad_collate_masks(masks: list[torch.Tensor], ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Stack ``[H, W]`` masks into ``[B, Hmax, Wmax]``, padding bottom/right with ``ignore_index``."""
    return _pad_stack(masks, ignore_index)


def _pad_stack(tensors: list[torch.Tensor], value: int) -> torch.Tensor:
    h = max(t.shape[-2] for t in tensors)
    w = max(t.shape[-1] for t in tensors)
    if all(t.shape[-2:] == (h, w) for t in tensors):
        return torch.stack(tensors)
    out = tensors[0].new_full((len(tensors), *tensors[0].shape[:-2], h, w), value)
    for k, t in enumerate(tensors):
        out[k, ..., :t.shape[-2], :t.shape[-1]] = t
    return out


def detection_collate(items: list[dict]) -> dict:
    """``{"images": uint8 [B,3,H,W], "targets": float32 [M,6] (batch_index, cls, x1, y1, x2, y2),
    "max_targets": int, "metas"}``.

    ``max_targets`` (the most boxes of any one image, a host int) lets a loss size its padded
    per-image tensors without reading the count back from the GPU.
    """
    items = [it for it in items if it is not None]  # unreadable evaluation images
    if not items:
        return {"images": torch.zeros(0, 3, 1, 1, dtype=torch.uint8), "targets": torch.zeros(0, 6),
                "max_targets": 0, "metas": []}
    targets = [torch.cat([torch.full((len(it["labels"]), 1), float(k)),
                          it["labels"].float().unsqueeze(1), it["boxes"].float()], dim=1)
               for k, it in enumerate(items)]
    return {"images": pad_collate_images([it["image"] for it in items]),
            "targets": torch.cat(targets) if targets else torch.zeros(0, 6),
            "max_targets": max(len(it["labels"]) for it in items),
            "metas": [it["meta"] for it in items]}


def segmentation_collate(items: list[dict], ignore_index: int = IGNORE_INDEX) -> dict:
    """``{"images": uint8 [B,3,H,W], "masks": int64 [B,H,W], "metas"}`` (padding = ignore_index)."""
    items = [it for it in items if it is not None]  # unreadable evaluation images
    if not items:
        return {"images": torch.zeros(0, 3, 1, 1, dtype=torch.uint8),
                "masks": torch.zeros(0, 1, 1, dtype=torch.int64), "metas": []}
    return {"images": pad_collate_images([it["image"] for it in items]),
            "masks": pad_collate_masks([it["mask"] for it in items], ignore_index),
            "metas": [it["meta"] for it in items]}
