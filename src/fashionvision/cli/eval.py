"""fashion-eval ckpt=RUN_OR_CKPT [split=test] [dataset.path=DIR] [class_map=NAME] [output=DIR] [device=auto].

``class_map=`` scores a detector trained on one dataset on another: predictions and ground truth
both go through class maps (:mod:`fashionvision.data.class_map`) onto a common set; the classes
either side leaves unmapped are listed and counted, never silently dropped.

Segmenters: every decode-time option is a key (``model.logit_adjust``, ``tta_flip``,
``tta_scales``; null keeps the checkpoint's), so one multirun scores them all:
``fashion-eval -m ckpt=A,B model.logit_adjust=0,0.25 tta_flip=false,true split=val`` (each job
its own folder and metrics.json; the summary at the end lists each job's mIoU).

Task-agnostic: the checkpoint names its model family, the engine rebuilds ``(task, model)``
from it, and the task's own :meth:`~fashionvision.tasks.base.Task.evaluate` computes and
writes its report (detection: COCO mAP, per-class AP, PR curve, confusion matrix,
predictions.json; segmentation: mIoU and friends). This command only builds the split's
loader, adds what was evaluated to ``metrics.json`` and prints the headline numbers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fashionvision.data.annotations import atomic_write_text
from fashionvision.cli._hydra import Outcome, run_dir, run_hydra
from fashionvision.errors import UserError
from fashionvision.output_guard import check_output

log = logging.getLogger("fashionvision")


def _dataset_path(cfg: dict, config: dict) -> str:
    """``dataset.path=DIR`` (or ``dataset=NAME``) if given, else the folder the checkpoint was trained on."""
    given = (cfg.get("dataset") or {}).get("path")
    path = given or (config.get("dataset") or {}).get("path")
    if not path:
        raise UserError("the checkpoint does not record its dataset folder; pass dataset.path=DIR")
    if not (Path(path) / "metadata.json").is_file():
        raise UserError(f"dataset folder '{path}' is not a converted dataset; pass dataset.path=DIR "
                        "(a folder written by fashion-convert)")
    return str(path)


def _mapped_dataset(task, dataset: str, class_map, split: str, limit: int | None):
    """The split of another dataset, with the task set to score through ``class_map``."""
    from fashionvision.data.class_map import eval_mapping
    from fashionvision.data.converted import ConvertedDataset

    if task.name != "detection":
        raise UserError(f"class_map= scores detectors across datasets; this checkpoint is a {task.name} model")
    other = ConvertedDataset.open(dataset)
    task.eval_mapping = eval_mapping(task.class_names, other.classes, class_map)
    for side in ("model", "dataset"):
        unmapped = task.eval_mapping.report[side]["unmapped"]
        if unmapped:
            log.warning("class map %s: the %s's classes %s have no common class: their %s are left out",
                        task.eval_mapping.report[side]["class_map"], side, unmapped,
                        "predictions" if side == "model" else "ground-truth boxes")
    return task.build_dataset(split, train=False, limit=limit, data=other)


def evaluate(cfg: dict, output: Path | None = None) -> dict:
    """Evaluate ``cfg["ckpt"]`` on ``cfg["split"]``; returns the metrics (also written to disk)."""
    import torch

    from fashionvision.engine.loaders import build_loader

    from fashionvision.engine.device import clamp_workers, resolve_device
    from fashionvision.engine.checkpoint import checkpoint_inputs, load_checkpoint, resolve_checkpoint
    from fashionvision.inference.loading import load_for_inference
    from fashionvision.progress import TrackedLoader

    ckpt = resolve_checkpoint(cfg["ckpt"])
    device = resolve_device(cfg.get("device", "auto"), key="device")
    config = load_checkpoint(ckpt).get("config") or {}
    dataset = _dataset_path(cfg, config)
    class_map = cfg.get("class_map")
    # across datasets the model keeps its own classes; the class map brings both sides together
    task, model, _ = load_for_inference(ckpt, device=device, dataset_path=None if class_map else dataset)
    task.eval_options = {"save_masks": bool(cfg.get("save_masks", False))}
    # the segmenter's decode-time options (null: the checkpoint's): a sweep scores several at once,
    # `fashion-eval -m ckpt=A,B model.logit_adjust=0,0.25 tta_flip=false,true`
    task.set_logit_adjust((cfg.get("model") or {}).get("logit_adjust"))
    task.set_tta(cfg.get("tta_flip"), cfg.get("tta_scales"))
    split = str(cfg.get("split", "test"))
    limit = cfg.get("limit_images")
    if class_map:
        data = _mapped_dataset(task, dataset, class_map, split, int(limit) if limit else None)
    else:
        data = task.build_dataset(split, train=False, limit=int(limit) if limit else None)
    if len(data) == 0:
        raise UserError(f"split '{split}' of '{dataset}' has no images")
    loader = build_loader(data, int(cfg.get("batch_size", 8)), clamp_workers(int(cfg.get("workers", 2))),
                          task.collate, pin_memory=device.type == "cuda")
    output = Path(output or cfg.get("output") or run_dir())
    check_output(output, [*task.data.inputs(), *checkpoint_inputs(ckpt)])
    output.mkdir(parents=True, exist_ok=True)
    log.info("evaluating %s on %s split '%s' (%d images) on %s", ckpt, dataset, split, len(data), device)
    with torch.no_grad():
        metrics = dict(task.evaluate(model, TrackedLoader(loader, f"eval {split}"), device, output))
    # unreadable images are left out of ground truth and predictions alike (data/dataset.py)
    skipped = int(getattr(data, "bad_images", 0))
    if skipped:
        log.warning("%d unreadable image(s) skipped: left out of the ground truth and the predictions",
                    skipped)
    report_file = output / "metrics.json"
    written = json.loads(report_file.read_text()) if report_file.is_file() else {}
    report = {**written, **metrics, "eval": {"checkpoint": str(ckpt), "dataset": dataset, "split": split,
                                             "images": len(data) - skipped,
                                             "skipped_images": skipped, "device": str(device),
                                             "task": task.name, "primary_metric": task.primary_metric}}
    atomic_write_text(report_file, json.dumps(report, indent=2))
    return report


def _print(report: dict, output: Path) -> None:
    from fashionvision.engine.report import per_class_lines

    info = report["eval"]
    print(f"{info['task']} on {info['dataset']} [{info['split']}], {info['images']} images")
    if info.get("skipped_images"):
        print(f"  skipped {info['skipped_images']} unreadable image(s) (not scored; see the warnings)")
    for key, value in report.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            print(f"  {key:16s} {value:.4f}" if isinstance(value, float) else f"  {key:16s} {value}")
    for line in per_class_lines(report.get("per_class", [])):
        print(line)
    for field, values in (report.get("subsets") or {}).items():
        for value, scores in values.items():
            print(f"  subset {field}={value}: mAP {scores['map']:.4f}  mAP50 {scores['map50']:.4f}  "
                  f"({scores['instances']} boxes)")
    mapped = report.get("class_map")
    if mapped:
        for side in ("model", "dataset"):
            print(f"  class map {mapped[side]['class_map']} ({side}): unmapped {mapped[side]['unmapped'] or 'none'}")
        print(f"  left out: {mapped['ground_truth_boxes_unmapped']} ground-truth boxes, "
              f"{mapped['predictions_unmapped']} predictions of unmapped classes")
    print(f"report written to {output}")


def main_body(cfg: dict) -> Outcome:
    """Evaluate and print; the outcome's value (under ``-m``) is the task's primary metric."""
    output = Path(cfg.get("output") or run_dir())
    report = evaluate(cfg, output)
    _print(report, output)
    metric = report["eval"]["primary_metric"]
    value = report.get(metric)
    return Outcome(0, float(value) if isinstance(value, (int, float)) else None, metric)


def main() -> None:
    # `fashion-eval RUN_DIR` -> `ckpt=RUN_DIR`
    run_hydra("eval", main_body, bare_word_key="ckpt", dataset_alias=True)


if __name__ == "__main__":
    main()
