"""What every box detector shares (see :mod:`fashionvision.tasks.base`).

The dataset (letterboxed images and boxes), COCO evaluation at the original resolution,
mapping boxes back out of the letterbox, and drawing. A family (``families/yolov3``)
subclasses :class:`DetectionTask` and supplies its head through a small interface: a model
(:meth:`build_model`), named losses (:meth:`loss`) and decoding to boxes (:meth:`decode`).
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from fashionvision.config import DEFAULT_IMAGE_SIZE, check_image_size, check_probability, require
from fashionvision.errors import UserError
from fashionvision.engine.distributed import unwrap
from fashionvision.tasks.base import Task

log = logging.getLogger(__name__)

#: keys older checkpoints carry that no longer mean anything: ``rect_eval`` chose rectangular
#: evaluation inputs while prediction letterboxed to a square; both now share one preprocessing
LEGACY_KEYS = ("rect_eval",)


def _without_legacy_keys(model_cfg: dict | None) -> dict:
    """``model_cfg`` without :data:`LEGACY_KEYS` (logged when one asked for something else)."""
    cfg = dict(model_cfg or {})
    for key in LEGACY_KEYS:
        if key in cfg and cfg.pop(key):
            log.info("model.%s is ignored: evaluation uses the same square letterbox as prediction", key)
    return cfg


def _base_dataset(dataset: Any) -> Any:
    while hasattr(dataset, "dataset"):  # EpochAware, Subset
        dataset = dataset.dataset
    return dataset


def _item_attributes(dataset: Any) -> dict | None:
    """The per-item labels a converter kept (``metadata.json["item_attributes"]``), or None."""
    import json

    data = getattr(dataset, "data", None)
    name = (getattr(data, "metadata", None) or {}).get("item_attributes")
    if not name:
        return None
    path = Path(data.folder) / name
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the item labels ({exc}); re-run fashion-convert") from exc
    if not isinstance(items, dict) or not isinstance(items.get("fields"), list) or not isinstance(items.get("images"), dict):
        raise UserError(f"{path}: expected {{\"fields\": [...], \"images\": {{...}}}}; re-run fashion-convert")
    return items


@dataclass
class DetectionConfig:
    """The ``model`` keys every detector has; a family's config adds its own."""

    name: str = ""
    image_size: int = DEFAULT_IMAGE_SIZE  # letterbox size, a multiple of 32
    weights: str | None = None
    seed: int = 0
    conf: float = 0.25        # drawn outputs (one default for the task, fashion-predict and the app)
    iou: float = 0.45
    eval_conf: float = 0.001  # mAP needs every detection
    eval_iou: float = 0.6
    max_det: int = 300
    rect_train: bool = False  # rectangular training inputs (long side image_size, short side padded to 32 only)
    cpu_profile: str | None = None  # the experiment fashion-train picks on a machine without CUDA

    def check(self) -> None:
        check_image_size("model.image_size", self.image_size)
        for key in ("conf", "iou", "eval_conf", "eval_iou"):
            check_probability(f"model.{key}", getattr(self, key))
        require(self.max_det >= 1, "model.max_det", self.max_det, "at least 1")


class DetectionTask(Task):
    """Boxes; metrics are COCO mAP (primary: mAP@.5)."""

    name = "detection"
    role = "detector"
    primary_metric = "map50"
    config_class = DetectionConfig
    #: set by ``fashion-eval class_map=``: ground truth and predictions scored in a common class set
    eval_mapping: Any = None
    #: one input shape for validation, ``fashion-eval``, ``fashion-predict``, the app and the
    #: ONNX model: the square letterbox (:func:`fashionvision.data.prepare.prepare_image`), so
    #: the mAP reported is the one a user's predictions have
    rect_input = False

    def __init__(self, model_cfg: dict, data: Any, augment_cfg: dict | None = None,
                 anchors_cfg: dict | None = None):
        super().__init__(_without_legacy_keys(model_cfg), data, augment_cfg, anchors_cfg)

    @classmethod
    def check_config(cls, model_cfg: dict, augment_cfg: dict | None = None,
                     anchors_cfg: dict | None = None) -> None:
        super().check_config(_without_legacy_keys(model_cfg), augment_cfg, anchors_cfg)

    # --- the family's head ------------------------------------------------------------------
    @abstractmethod
    def loss(self, outputs: Any, targets: Any, model: nn.Module,
             max_targets: int | None = None) -> dict[str, torch.Tensor]:
        """Named scalar losses of the network's ``outputs`` against a batch's ``targets``.

        ``max_targets``: the most boxes of any one image (the collate's host-side count, so a
        loss can size padded tensors without a device-to-host sync); None: count them.
        """

    @abstractmethod
    def decode(self, outputs: Any, model: nn.Module, conf: float, iou: float,
               max_det: int) -> list[dict]:
        """Per image ``{"boxes" [N, 4] xyxy in input pixels, "scores", "labels"}`` after NMS."""

    def default_thresholds(self) -> tuple[float | None, float | None]:
        return self.cfg.conf, self.cfg.iou

    def build_dataset(self, split: str, train: bool, limit: int | None = None,
                      cache: bool = False, data: Any = None) -> Dataset:
        """The split's dataset; ``data`` (another converted folder) is for evaluation across
        datasets through :attr:`eval_mapping`."""
        from fashionvision.data.dataset import FashionDataset

        # training may use rectangular inputs (long side = image_size, short side rounded up to
        # 32: a 2:3 portrait costs about a third less than its square); evaluation always sees
        # what prediction sees (rect_input), so validation picks best.pt on the users' pipeline
        rect = self.cfg.rect_train if train else self.rect_input
        return FashionDataset(data or self.data, split, self.image_size, train, self.augment,
                              task=self.name, limit=limit, cache=cache,
                              seed=self.seed, rect=rect,
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
        outputs = model(self._input(model, batch["images"]))
        return self.loss(outputs, batch["targets"], model, max_targets=batch.get("max_targets"))

    @torch.no_grad()
    def _raw_predict(self, model: nn.Module, images: torch.Tensor, conf: float, iou: float,
                     max_det: int) -> list[dict]:
        return self.decode(model(self._input(model, images)), model, conf, iou, max_det)

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, metas: list[dict],
                conf: float | None = None, iou: float | None = None,
                max_det: int | None = None) -> list[dict]:
        from fashionvision.data.transforms import boxes_from_letterbox

        conf = float(self.cfg.conf if conf is None else conf)
        iou = float(self.cfg.iou if iou is None else iou)
        max_det = int(self.cfg.max_det if max_det is None else max_det)
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
        conf, iou, max_det = self.cfg.eval_conf, self.cfg.eval_iou, self.cfg.max_det
        images, results, seconds = [], [], 0.0
        mapping, dropped = self.eval_mapping, [0, 0]
        # per-subset AP only for a written report (fashion-eval), not at every validation
        items = None if mapping is not None or output_dir is None else _item_attributes(_base_dataset(loader.dataset))
        box_labels: list = []  # per ground-truth box, its item labels (DeepFashion2's items.json)
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
                boxes, scores, labels = pred["boxes"].numpy(), pred["scores"].numpy(), pred["labels"].numpy()
                truth = record.boxes
                if mapping is not None:  # both sides into the common classes; unmapped ones counted
                    truth = mapping.boxes(record.boxes)
                    labels, keep = mapping.labels(labels)
                    dropped[0] += len(record.boxes) - len(truth)
                    dropped[1] += int((~keep).sum())
                    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
                images.append({"id": image_id, "height": h, "width": w, "boxes": truth})
                if items is not None:
                    rows = (items["images"].get(record.path) or {}).get("items") or []
                    box_labels.extend(rows if len(rows) == len(truth) else [None] * len(truth))
                results += M.predictions_to_coco(image_id, boxes, scores, labels)
        model.train(was_training)
        names = list(mapping.names) if mapping is not None else self.class_names
        gt = M.gt_to_coco(images, names)
        extra = {"ms_per_image": 1000.0 * seconds / max(len(images), 1)}
        if mapping is not None:
            extra["class_map"] = {**mapping.report, "ground_truth_boxes_unmapped": dropped[0],
                                  "predictions_unmapped": dropped[1]}
        if items is not None:
            extra["subsets"] = M.subset_metrics(gt, results, items["fields"], box_labels)
        op_conf = self.cfg.conf
        if output_dir is not None:
            metrics = M.write_report(output_dir, gt, results, names, op_conf, 0.5, extra)
        else:
            metrics = M.summarize(gt, results, names)
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
        from fashionvision.tasks.visualize import draw_boxes

        def np_(v):
            return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)

        return draw_boxes(image, np_(prediction["boxes"]), np_(prediction["labels"]), self.class_names,
                          scores=np_(prediction["scores"]) if "scores" in prediction else None)

    def describe(self) -> dict:
        return {**super().describe(), "image_size": self.image_size}
