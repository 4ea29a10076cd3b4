"""YOLOv3 detection as the engine sees it (see :mod:`fashionvision.tasks.base`).

Anchors come from the ``anchors`` config group: ``kmeans`` (computed from the training split
by :func:`fashionvision.anchors.ensure_anchors` when the file does not exist yet), ``coco``
(the published values) or ``values`` (explicit ``[[w, h]] * 9``, as rebuilt from a checkpoint).
They are stored in the model as a persistent buffer, so a loaded checkpoint always decodes
with the anchors it was trained with; the task reads them back from the model.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from fashionvision.errors import UserError, int_setting
from fashionvision.tasks.base import Task, unwrap

log = logging.getLogger(__name__)


def _base_dataset(dataset: Any) -> Any:
    while hasattr(dataset, "dataset"):  # EpochAware, Subset
        dataset = dataset.dataset
    return dataset


class DetectionTask(Task):
    """YOLOv3 on Darknet-53; metrics are COCO mAP (primary: mAP@.5)."""

    name = "detection"
    primary_metric = "map50"

    def __init__(self, model_cfg: dict, data, augment_cfg: dict | None = None,
                 anchors_cfg: dict | None = None):
        super().__init__(model_cfg, data, augment_cfg, anchors_cfg)
        self.image_size = int_setting("model.image_size", self.model_cfg.get("image_size", 416), 32)
        if self.image_size % 32:
            raise UserError(f"model.image_size={self.image_size} must be a multiple of 32")
        self._anchors: np.ndarray | None = None
        self._criterion = None

    # --- anchors --------------------------------------------------------------------------
    @property
    def anchors(self) -> np.ndarray:
        """The nine anchors (pixels at ``image_size``), sorted by area."""
        if self._anchors is None:
            self._anchors = self._resolve_anchors()
        return self._anchors

    def _resolve_anchors(self) -> np.ndarray:
        from fashionvision.anchors import COCO_ANCHORS, ensure_anchors

        cfg = self.anchors_cfg
        name = cfg.get("name", "coco")
        if name in ("values", "coco"):
            values = np.asarray(cfg.get("values") or COCO_ANCHORS, dtype=np.float32)
        elif name == "kmeans":
            file = cfg.get("file")
            folder = Path(self.data.folder)
            if not file or not (Path(file).is_file() or (folder / "train.txt").is_file()):
                # a checkpoint rebuilt without its dataset: the anchors buffer stored in the
                # checkpoint replaces these placeholders when its weights are loaded
                log.info("k-means anchors file not available; using COCO anchors until weights load")
                values = np.asarray(COCO_ANCHORS, dtype=np.float32)
            else:
                values = ensure_anchors(folder, int(cfg.get("k", 9)), self.image_size,
                                        int(cfg.get("seed", 0)), file)
        else:
            raise UserError(f"unknown anchors '{name}'; choose one of: coco, kmeans, values")
        values = values.reshape(-1, 2)
        if len(values) != 9:
            raise UserError(f"YOLOv3 needs 9 anchors (3 per scale); anchors={name} gives {len(values)}")
        return values[np.argsort(values.prod(1))]

    # --- engine contract ------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        from fashionvision.models import build_model

        cfg = {**self.model_cfg, "anchors": self.anchors.tolist()}
        return build_model(cfg, len(self.class_names))

    @property
    def criterion(self):
        if self._criterion is None:
            from fashionvision.models.yolo_loss import YOLOLoss

            c = self.model_cfg
            if str(c.get("box_loss", "ciou")).lower() != "ciou":
                raise UserError(f"model.box_loss={c.get('box_loss')} is not supported; use ciou")
            self._criterion = YOLOLoss(
                len(self.class_names), ignore_iou=float(c.get("ignore_iou", 0.5)),
                loss_weights=c.get("loss_weights"), xy_scale=float(c.get("xy_scale", 1.0)),
                multi_anchor_iou=c.get("multi_anchor_iou"),
                iou_aware_obj=float(c.get("iou_aware_obj", 0.0)),
                label_smoothing=float(c.get("label_smoothing", 0.0)))
        return self._criterion

    def build_dataset(self, split: str, train: bool, limit: int | None = None,
                      cache: bool = False) -> Dataset:
        from fashionvision.data.dataset import FashionDataset

        return FashionDataset(self.data, split, self.image_size, train, self.augment_cfg,
                              task="detection", limit=limit, cache=cache,
                              seed=int(self.model_cfg.get("seed", 0)),
                              color_on_cpu=not (train and self.gpu_color))

    def collate(self, items: list[dict]) -> dict:
        from fashionvision.data.dataset import detection_collate

        return detection_collate(items)

    @staticmethod
    def _input(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        first = next(unwrap(model).parameters())
        if first.ndim == 4 and first.is_contiguous(memory_format=torch.channels_last) \
                and not first.is_contiguous():
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def compute_losses(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        bare = unwrap(model)
        outputs = model(self._input(model, batch["images"]))
        return self.criterion(outputs, batch["targets"], bare.anchors, bare.strides)

    @torch.no_grad()
    def _raw_predict(self, model: nn.Module, images: torch.Tensor, conf: float, iou: float,
                     max_det: int) -> list[dict]:
        from fashionvision.models.yolo_decode import decode_outputs, nms

        bare = unwrap(model)
        outputs = model(self._input(model, images))
        decoded = decode_outputs(outputs, bare.anchors, bare.strides,
                                 float(self.model_cfg.get("xy_scale", 1.0)))
        return nms(decoded, conf, iou, max_det)

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, metas: list[dict],
                conf: float | None = None, iou: float | None = None,
                max_det: int | None = None) -> list[dict]:
        from fashionvision.data.transforms import boxes_from_letterbox

        conf = float(self.model_cfg.get("conf", 0.6) if conf is None else conf)
        iou = float(self.model_cfg.get("iou", 0.3) if iou is None else iou)
        max_det = int(self.model_cfg.get("max_det", 300) if max_det is None else max_det)
        results = []
        for det, meta in zip(self._raw_predict(model, images, conf, iou, max_det), metas):
            boxes = boxes_from_letterbox(det["boxes"].cpu().numpy(), meta["scale"], meta["pad"],
                                         meta["orig_size"])
            results.append({"boxes": torch.from_numpy(boxes), "scores": det["scores"].float().cpu(),
                            "labels": det["labels"].cpu()})
        return results

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device,
                 output_dir: Path | None = None) -> dict[str, float]:
        from fashionvision.metrics import detection as M

        was_training = model.training
        model.eval()
        # FashionDataset items carry image_id = index into its records (ground truth source)
        records = list(getattr(_base_dataset(loader.dataset), "records", []))
        conf = float(self.model_cfg.get("eval_conf", 0.001))
        iou = float(self.model_cfg.get("eval_iou", 0.6))
        max_det = int(self.model_cfg.get("max_det", 300))
        images, results, seconds = [], [], 0.0
        for batch in loader:
            if not batch["metas"]:
                continue  # every image of the batch was unreadable (skipped by the dataset)
            x = batch["images"].to(device, non_blocking=True)
            sync = device.type == "cuda"
            if sync:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            preds = self.predict(model, x, batch["metas"], conf, iou, max_det)
            if sync:
                torch.cuda.synchronize(device)
            seconds += time.perf_counter() - start
            for meta, pred in zip(batch["metas"], preds):
                image_id = int(meta["image_id"])
                record = records[image_id] if records else self._record_for(meta["path"])
                h, w = meta["orig_size"]
                images.append({"id": image_id, "height": h, "width": w, "boxes": record.boxes})
                results += M.predictions_to_coco(image_id, pred["boxes"].numpy(),
                                                 pred["scores"].numpy(), pred["labels"].numpy())
        model.train(was_training)
        gt = M.gt_to_coco(images, self.class_names)
        extra = {"ms_per_image": 1000.0 * seconds / max(len(images), 1)}
        op_conf = float(self.model_cfg.get("conf", 0.6))
        if output_dir is not None:
            metrics = M.write_report(output_dir, gt, results, self.class_names, op_conf, 0.5, extra)
        else:
            metrics = M.summarize(gt, results, self.class_names)
            op, _ = M.match_operating_point(gt, results, op_conf, 0.5)
            metrics.update(precision=op["precision"], recall=op["recall"], **extra)
        return metrics

    def _record_for(self, path: str):
        """The annotation record of an image path, searched in every split (other datasets)."""
        if not hasattr(self, "_all_records"):
            self._all_records = {}
            for split in ("train", "val", "test"):
                if self.data.split_file(split).is_file():
                    self._all_records.update({str(self.data.image_path(r)): r for r in self.data.records(split)})
        if path not in self._all_records:
            raise UserError(f"no annotation for '{path}' in {self.data.folder}")
        return self._all_records[path]

    def draw(self, image: Any, prediction: dict) -> Any:
        from fashionvision.visualize import draw_boxes

        def np_(v):
            return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)

        return draw_boxes(image, np_(prediction["boxes"]), np_(prediction["labels"]), self.class_names,
                          scores=np_(prediction["scores"]) if "scores" in prediction else None)

    def describe(self) -> dict:
        return {**super().describe(), "model": "yolo", "image_size": self.image_size,
                "anchors": np.asarray(self.anchors).round(2).tolist()}
