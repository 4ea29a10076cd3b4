"""``fashion-compare``: the detector and the segmenter on exactly the same test images.

Each family is scored with both yardsticks, through one code path each:

* detection (COCO, :mod:`fashionvision.metrics.detection`): the detector's boxes (all down to
  its evaluation threshold, as mAP requires) and boxes derived from the segmenter's masks
  (:func:`~fashionvision.compare.convert_outputs.boxes_from_mask`: connected components per class,
  the dataset's minimum-area rule, mean class probability as score);
* segmentation (confusion matrix, :mod:`fashionvision.metrics.segmentation`): the segmenter's
  masks and masks painted from the detector's boxes above its drawing threshold, lowest score
  first (:func:`~fashionvision.compare.convert_outputs.mask_from_boxes`).

Class lists are mapped by name. Both runs must describe the same dataset and class lists as the
evaluation folder; any difference is a :class:`UserError` saying what differs. Speed is measured
on the same device for both (parameters, GFLOPs, ms/image at batch 1, img/s at batch 32).
The report itself (Markdown, JSON, figures) is written by :mod:`fashionvision.compare.report`.
"""

from __future__ import annotations

import inspect
import logging
import platform
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from fashionvision.compare.convert_outputs import boxes_from_mask, class_map_by_name, invert_class_map, mask_from_boxes
from fashionvision.data.converted import ConvertedDataset
from fashionvision.data.image_io import ImageReadError, read_image
from fashionvision.errors import UserError
from fashionvision.metrics import detection as det_metrics
from fashionvision.metrics.segmentation import ConfusionMatrix, metrics_from_confusion
from fashionvision.inference.predictor import Predictor, prepare_images

log = logging.getLogger("fashionvision")

DEFAULT_MIN_AREA_FRACTION = 0.0005  # the CCP box rule (docs/datasets.md)


def _first_difference(a: list[str], b: list[str]) -> str:
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} classes"
    i = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    return f"class {i} is '{a[i]}' vs '{b[i]}'"


def check_compatible(detector: Predictor, segmenter: Predictor, data: ConvertedDataset) -> None:
    """Refuse runs whose dataset or class lists differ from each other or from ``data``."""
    for role, predictor in (("detector", detector), ("segmenter", segmenter)):
        if predictor.kind != role:
            raise UserError(f"{role}='{predictor.source}' holds a {predictor.task.name} model, not a {role}")
    if data.mask_classes is None:
        raise UserError(f"dataset '{data.folder}' has no masks (no mask_classes.txt): it cannot score a segmenter")
    problems = []
    if detector.class_names != data.classes:
        problems.append(f"the detector's classes differ from the dataset's classes.txt "
                        f"({_first_difference(detector.class_names, data.classes)})")
    if segmenter.class_names != data.mask_classes:
        problems.append(f"the segmenter's classes differ from the dataset's mask_classes.txt "
                        f"({_first_difference(segmenter.class_names, data.mask_classes)})")
    names = {}
    for role, predictor in (("detector", detector), ("segmenter", segmenter)):
        dataset_cfg = predictor.config.get("dataset") or {}
        if dataset_cfg.get("name"):
            names[role] = str(dataset_cfg["name"])
    if len(set(names.values())) > 1:
        problems.append(f"the runs were trained on different datasets: detector on '{names['detector']}', "
                        f"segmenter on '{names['segmenter']}'")
    if problems:
        raise UserError("cannot compare these runs: " + "; ".join(problems))


def read_gt_mask(data: ConvertedDataset, record, shape: tuple[int, int]) -> np.ndarray:
    """The ground-truth class-index mask of ``record`` (int64), checked against the image size."""
    path = data.mask_path(record)
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise UserError(f"ground-truth mask '{path}' is missing or unreadable")
    if mask.shape[:2] != tuple(shape):
        raise UserError(f"ground-truth mask '{path}' is {mask.shape[1]}x{mask.shape[0]} but its image is "
                        f"{shape[1]}x{shape[0]}")
    return mask.astype(np.int64)


def min_area_fraction(data: ConvertedDataset) -> float:
    """The dataset's own box rule (converter option), so derived boxes follow the same rule as GT."""
    options = data.metadata.get("options") or {}
    return float(options.get("min_area_fraction", DEFAULT_MIN_AREA_FRACTION))


@dataclass
class Evaluation:
    """Everything measured on the shared image list (what the report is written from)."""

    images: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    detection: dict = field(default_factory=dict)      # "detector" / "segmenter" -> metrics
    segmentation: dict = field(default_factory=dict)   # "segmenter" / "detector" -> metrics
    thresholds: dict = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)  # the first n images, for the grid


@dataclass
class RunEvaluation:
    """One model on the image list, scored with both yardsticks (its own and the converted one)."""

    kind: str = ""                                     # "detector" or "segmenter"
    images: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    detection: dict = field(default_factory=dict)      # COCO metrics of its boxes (a segmenter: derived)
    segmentation: dict = field(default_factory=dict)   # confusion metrics of its masks (a detector: painted)
    thresholds: dict = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)  # the first n images, for the grid


def check_run(predictor: Predictor, data: ConvertedDataset) -> None:
    """Refuse a run whose class list differs from the evaluation folder's."""
    if data.mask_classes is None:
        raise UserError(f"dataset '{data.folder}' has no masks (no mask_classes.txt): it cannot score a segmenter")
    expected, what = ((data.classes, "classes.txt") if predictor.kind == "detector"
                      else (data.mask_classes, "mask_classes.txt"))
    if predictor.class_names != expected:
        raise UserError(f"cannot compare '{predictor.source}': its classes differ from the dataset's {what} "
                        f"({_first_difference(predictor.class_names, expected)})")


def evaluate_run(predictor: Predictor, data: ConvertedDataset, split: str, limit: int | None = None,
                 n_samples: int = 8) -> RunEvaluation:
    """Run one model (detector or segmenter) on every image of ``split`` (first ``limit``) and
    score it both ways: a detector's boxes by COCO and, painted, as masks; a segmenter's masks
    by the confusion matrix and, as connected components, as boxes."""
    from fashionvision.progress import progress

    records = data.records(split)[: limit or None]
    if not records:
        raise UserError(f"split '{split}' of '{data.folder}' holds no images")
    detector = predictor.kind == "detector"
    det_classes = predictor.class_names if detector else data.classes
    seg_classes = data.mask_classes if detector else predictor.class_names
    seg_to_det = class_map_by_name(seg_classes, det_classes)
    det_to_seg = invert_class_map(seg_to_det)
    ignore = 255 if detector else predictor.task.ignore_index
    area_fraction = min_area_fraction(data)
    if detector:
        eval_conf, eval_iou = predictor.task.cfg.eval_conf, predictor.task.cfg.eval_iou
        draw_conf, draw_iou = predictor.default_thresholds()
        thresholds = {"detector_eval_conf": eval_conf, "detector_eval_iou": eval_iou,
                      "detector_paint_conf": draw_conf, "detector_paint_iou": draw_iou}
    else:
        thresholds = {"segmenter_min_area_fraction": area_fraction}
    result = RunEvaluation(kind=predictor.kind, thresholds=thresholds)
    gt_images: list[dict] = []
    coco: list[dict] = []
    matrix = ConfusionMatrix(len(seg_classes), ignore_index=ignore)
    for image_id, record in enumerate(progress(records, desc=f"{predictor.kind} {split}", unit="img")):
        path = data.image_path(record)
        try:
            image = read_image(path)
        except ImageReadError as exc:
            log.warning("skipped %s: %s", exc.path, exc.reason)
            result.skipped.append({"path": exc.path, "reason": exc.reason})
            continue
        height, width = image.shape[:2]
        gt_mask = read_gt_mask(data, record, (height, width))
        result.images.append(record.path)
        gt_images.append({"id": image_id, "height": height, "width": width, "boxes": record.boxes})
        sample = {"path": record.path, "image": image, "gt_mask": gt_mask, "gt_boxes": record.boxes}
        if detector:
            found = predictor(image, conf=eval_conf, iou=eval_iou)
            coco += det_metrics.predictions_to_coco(image_id, found["boxes"], found["scores"], found["labels"])
            drawn = predictor(image, conf=draw_conf, iou=draw_iou)
            painted = mask_from_boxes(drawn["boxes"], drawn["labels"], drawn["scores"], (height, width), det_to_seg)
            matrix.update(torch.from_numpy(painted), torch.from_numpy(gt_mask))
            sample["detector"] = drawn
        else:
            seg = predictor(image)
            mask = np.asarray(seg["mask"])
            matrix.update(torch.from_numpy(mask), torch.from_numpy(gt_mask))
            boxes, labels, scores = boxes_from_mask(mask, seg.get("confidence"),
                                                    min_area=area_fraction * height * width,
                                                    class_map=seg_to_det, ignore=(0, ignore))
            coco += det_metrics.predictions_to_coco(image_id, boxes, scores, labels)
            sample.update(segmenter={"mask": mask}, derived_boxes=(boxes, labels, scores))
        if len(result.samples) < n_samples:
            result.samples.append(sample)
    if not gt_images:
        raise UserError(f"no readable image in split '{split}' of '{data.folder}'")
    result.detection = det_metrics.summarize(det_metrics.gt_to_coco(gt_images, det_classes), coco, det_classes)
    result.detection["num_predictions"] = len(coco)
    metrics = metrics_from_confusion(matrix.matrix.numpy(), seg_classes)
    # the segmentation classes both families can produce: the garments of the detection list
    # and the background (boxes never give hair or skin, for instance)
    # (the same convention as ``miou``: classes in the ground truth or in the predictions)
    scored = [metrics["per_class"][c]["iou"] for c in sorted({0, *seg_to_det})
              if metrics["per_class"][c]["iou"] is not None]
    metrics["miou_shared_classes"] = float(np.mean(scored)) if scored else 0.0
    metrics["miou_standard"] = metrics["miou"]  # the study report's name for the headline
    result.segmentation = metrics
    return result


def combine(det: RunEvaluation, seg: RunEvaluation) -> Evaluation:
    """A detector's and a segmenter's evaluations on the same images, as one :class:`Evaluation`."""
    if det.images != seg.images:
        raise UserError("the two runs were not evaluated on the same images")
    samples = [{**d, "segmenter": s["segmenter"], "derived_boxes": s["derived_boxes"]}
               for d, s in zip(det.samples, seg.samples)]
    return Evaluation(images=det.images, skipped=det.skipped,
                      detection={"detector": det.detection, "segmenter": seg.detection},
                      segmentation={"segmenter": seg.segmentation, "detector": det.segmentation},
                      thresholds={**det.thresholds, **seg.thresholds}, samples=samples)


def evaluate_both(detector: Predictor, segmenter: Predictor, data: ConvertedDataset, split: str,
                  limit: int | None = None, n_samples: int = 8) -> Evaluation:
    """Run both models on every image of ``split`` (first ``limit``) and score both ways."""
    return combine(evaluate_run(detector, data, split, limit, n_samples),
                   evaluate_run(segmenter, data, split, limit, n_samples))


# ---------------------------------------------------------------- model size and speed
def device_name(device: torch.device) -> str:
    """A human name for the device timings were taken on."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    except OSError:
        pass
    return f"CPU {model}, {torch.get_num_threads()} threads"


def count_flops(predictor: Predictor, image_hw: tuple[int, int]) -> tuple[float | None, list[int]]:
    """Forward GFLOPs per image (``torch.utils.flop_counter``) and the model input shape."""
    from torch.utils.flop_counter import FlopCounterMode

    from fashionvision.inference.export import capture_model_input
    from fashionvision.inference.onnx import OnnxModel

    image = np.zeros((*image_hw, 3), dtype=np.uint8)
    batch, metas = prepare_images(predictor.task, [image])
    (x,) = capture_model_input(predictor.task, predictor.model, batch.to(predictor.device), metas)
    if isinstance(predictor.model, OnnxModel):
        return None, list(x.shape)  # no PyTorch graph to count
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        predictor.model(x)
    return counter.get_total_flops() / 1e9, list(x.shape)


def time_predict(predictor: Predictor, batch_size: int, image_hw: tuple[int, int], min_seconds: float = 1.0,
                 max_iters: int = 20, warmup: int = 1) -> float:
    """Median seconds of one ``task.predict`` call (forward + decoding) on a prepared batch."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*image_hw, 3), dtype=np.uint8) for _ in range(batch_size)]
    batch, metas = prepare_images(predictor.task, images)
    batch = batch.to(predictor.device)
    conf, iou = predictor.default_thresholds()
    sync = torch.cuda.synchronize if predictor.device.type == "cuda" else (lambda: None)
    extra = {}
    if "return_probs" in inspect.signature(predictor.task.predict).parameters:
        extra["return_probs"] = False  # what a user of the mask gets; probabilities are optional
    times: list[float] = []
    with torch.no_grad():
        for i in range(warmup + max_iters):
            sync()
            start = time.perf_counter()
            predictor.task.predict(predictor.model, batch, metas, conf=conf, iou=iou, **extra)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
                if sum(times) >= min_seconds:
                    break
    return float(np.median(times))


def measure_speed(predictor: Predictor, image_hw: tuple[int, int], batch_sizes: tuple[int, int] = (1, 32),
                  min_seconds: float = 1.0, max_iters: int = 20) -> dict:
    """Parameters, GFLOPs, ms/image at the first batch size and img/s at the second."""
    if len(batch_sizes) != 2 or min(batch_sizes) < 1:
        raise UserError(f"speed batch sizes must be two positive numbers (e.g. [1, 32]), not {list(batch_sizes)}")
    from fashionvision.inference.onnx import OnnxModel

    params = None if isinstance(predictor.model, OnnxModel) else sum(p.numel() for p in predictor.model.parameters())
    gflops, input_shape = count_flops(predictor, image_hw)
    single = time_predict(predictor, batch_sizes[0], image_hw, min_seconds, max_iters)
    large = time_predict(predictor, batch_sizes[1], image_hw, min_seconds, max_iters)
    return {"params": params, "gflops": gflops, "input_shape": input_shape,
            "photo_size": list(image_hw), "batch_small": batch_sizes[0], "batch_large": batch_sizes[1],
            "ms_per_image_small": 1000.0 * single / batch_sizes[0],
            "images_per_s_large": batch_sizes[1] / large,
            "device": device_name(predictor.device)}
