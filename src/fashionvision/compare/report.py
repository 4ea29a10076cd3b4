"""The ``fashion-compare`` report: ``report.md``, ``report.json`` and figures, and the whole run.

Sections (each in both files): setup (dataset, split, image list, checkpoints, thresholds),
detection metrics for both families, segmentation metrics for both, the per-class table
(AP50 and IoU side by side with instance counts), where each family wins, speed side by side,
and figures: ``grid.png`` (original, ground truth, detector, segmenter for the first N images)
and ``per_class.png``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import cv2
import numpy as np

from fashionvision.data.annotations import atomic_write_text
from fashionvision.compare.evaluation import Evaluation, check_compatible, evaluate_both, measure_speed
from fashionvision.compare.convert_outputs import class_map_by_name
from fashionvision.data.converted import ConvertedDataset
from fashionvision.data.image_io import write_image
from fashionvision.errors import UserError
from fashionvision.output_guard import check_output
from fashionvision.inference.predictor import load_predictor
from fashionvision.metrics.segmentation import background_name

log = logging.getLogger("fashionvision")

FAMILIES = ("detector", "segmenter")
SECTIONS = ("Setup", "Detection metrics", "Segmentation metrics", "Per-class comparison",
            "Where each family wins", "Speed", "Figures")
PANEL_WIDTH = 360      # px per grid panel: legible at 100 % (4 panels + legend ~ 1.7k px)
HEADER_HEIGHT = 30
GRID_FONT = 0.5        # OpenCV font scale of titles, labels and legend (~12 px capitals)
LEGEND_WIDTH = 200


def per_class_rows(ev: Evaluation, det_classes: list[str], seg_classes: list[str]) -> list[dict]:
    """One row per segmentation class: instances, AP50 of both, IoU of both, winners."""
    seg_to_det = class_map_by_name(seg_classes, det_classes)
    rows = []
    for s, name in enumerate(seg_classes):
        d = seg_to_det.get(s)
        seg_iou = ev.segmentation["segmenter"]["per_class"][s]
        det_iou = ev.segmentation["detector"]["per_class"][s]
        row = {"class": background_name(name, s), "det_index": d, "seg_index": s, "instances": 0, "gt_pixels": seg_iou["gt_pixels"],
               "ap50_detector": None, "ap50_segmenter": None,
               "iou_segmenter": seg_iou["iou"] if seg_iou["present"] else None,
               # boxes paint the garments of the detection list and leave background (index 0)
               "iou_detector": (det_iou["iou"] or 0.0) if seg_iou["present"] and (d is not None or s == 0)
               else None}
        if d is not None:
            row["instances"] = ev.detection["detector"]["per_class"][d]["instances"]
            if row["instances"]:
                row["ap50_detector"] = ev.detection["detector"]["per_class"][d]["ap50"]
                row["ap50_segmenter"] = ev.detection["segmenter"]["per_class"][d]["ap50"]
        row["ap50_winner"] = _winner(row["ap50_detector"], row["ap50_segmenter"])
        row["iou_winner"] = _winner(row["iou_detector"], row["iou_segmenter"])
        rows.append(row)
    return rows


def _winner(det: float | None, seg: float | None) -> str | None:
    if det is None or seg is None:
        return None
    if abs(det - seg) < 1e-9:
        return "tie"
    return "detector" if det > seg else "segmenter"


def wins(rows: list[dict]) -> dict:
    """Per metric: the classes each family wins (ties listed apart)."""
    out = {}
    for metric in ("ap50", "iou"):
        out[metric] = {k: [r["class"] for r in rows if r[f"{metric}_winner"] == k]
                       for k in ("detector", "segmenter", "tie")}
    return out


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(report: dict) -> str:
    """``report.md`` from the ``report.json`` dict."""
    s, det, seg, speed = report["setup"], report["detection"], report["segmentation"], report["speed"]
    lines = ["# Detector vs segmenter", "", "## Setup", "",
             f"- dataset: `{s['dataset']}` ({s['dataset_name']}), split `{s['split']}`, "
             f"{s['num_images']} images (list sha1 `{s['image_list_sha1']}`; both models saw exactly these)",
             f"- detector: `{s['detector']}`", f"- segmenter: `{s['segmenter']}`",
             f"- detection classes: {s['num_det_classes']}, segmentation classes: {s['num_seg_classes']} "
             "(mapped by name; segmentation-only classes cannot come from boxes)",
             f"- thresholds: {', '.join(f'{k}={v}' for k, v in s['thresholds'].items())}"]
    if s["skipped"]:
        lines.append(f"- skipped unreadable images: {', '.join(x['path'] for x in s['skipped'])}")
    lines += ["", "## Detection metrics", "",
              "COCO evaluation of the detector's boxes and of boxes derived from the segmenter's masks "
              "(connected components per class, mean class probability as score).", "",
              "| source | mAP50-95 | mAP50 | mAP75 | AR100 | predictions |", "|---|---|---|---|---|---|"]
    for k, label in (("detector", "detector boxes"), ("segmenter", "segmenter masks -> boxes")):
        m = det[k]
        lines.append(f"| {label} | {_fmt(m['map'])} | {_fmt(m['map50'])} | {_fmt(m['map75'])} | "
                     f"{_fmt(m['ar100'])} | {m['num_predictions']} |")
    lines += ["", "## Segmentation metrics", "",
              "Confusion-matrix metrics of the segmenter's masks and of masks painted from the detector's boxes "
              "(lowest score first, above the detector's drawing threshold).", "",
              "mIoU is the standard one (mmsegmentation, torchmetrics): per-class IoU over the split, averaged "
              "over every class in the ground truth or in the predictions; the next column keeps only the classes "
              "that boxes can give (background and the detection classes: never hair or skin); the last one is "
              "the lenient mean over the ground-truth classes only.", "",
              "| source | mIoU | mIoU (classes boxes can give) | pixel acc | mean class acc | fwIoU "
              "| mIoU (GT classes) |", "|---|---|---|---|---|---|---|"]
    for k, label in (("segmenter", "segmenter masks"), ("detector", "detector boxes -> masks")):
        m = seg[k]
        lines.append(f"| {label} | {_fmt(m['miou'])} | {_fmt(m['miou_shared_classes'])} | {_fmt(m['pixel_acc'])} | "
                     f"{_fmt(m['mean_class_acc'])} | {_fmt(m['fwiou'])} | {_fmt(m.get('miou_gt_classes'))} |")
    lines += ["", "## Per-class comparison", "",
              "| class | instances | AP50 det | AP50 seg->box | GT pixels | IoU seg | IoU det->mask |",
              "|---|---|---|---|---|---|---|"]
    for r in report["per_class"]:
        if r["instances"] or r["gt_pixels"]:
            lines.append(f"| {r['class']} | {r['instances']} | {_fmt(r['ap50_detector'])} | "
                         f"{_fmt(r['ap50_segmenter'])} | {r['gt_pixels']} | {_fmt(r['iou_segmenter'])} | "
                         f"{_fmt(r['iou_detector'])} |")
    lines += ["", "## Where each family wins", ""]
    for metric, label in (("ap50", "AP50 (classes with instances)"), ("iou", "IoU (classes present, shared)")):
        w = report["wins"][metric]
        lines.append(f"- {label}: detector {len(w['detector'])}, segmenter {len(w['segmenter'])}, "
                     f"ties {len(w['tie'])}")
        for k in FAMILIES:
            if w[k]:
                lines.append(f"  - {k}: {', '.join(w[k])}")
    lines += ["", "## Speed", "", f"Device: {speed['device']}. Timed: preprocessed batch through the model and the "
              "task's decoding (NMS / argmax and resize back); GFLOPs of one forward at the model input shape.", "",
              f"| model | parameters | GFLOPs/img | input | ms/img (batch {speed['detector']['batch_small']}) | "
              f"img/s (batch {speed['detector']['batch_large']}) |", "|---|---|---|---|---|---|"]
    for k in FAMILIES:
        m = speed[k]
        params = "-" if m["params"] is None else f"{m['params']:,}"
        lines.append(f"| {k} | {params} | {_fmt(m['gflops'], 2)} | {'x'.join(map(str, m['input_shape'][1:]))} "
                     f"| {_fmt(m['ms_per_image_small'], 1)} | {_fmt(m['images_per_s_large'], 1)} |")
    lines += ["", "## Figures", "", f"![grid]({report['figures']['grid']})", "",
              "Columns: original, ground truth (mask and boxes), detector (boxes above its drawing threshold), "
              "segmenter (mask).", "", f"![per-class]({report['figures']['per_class']})", ""]
    return "\n".join(lines)


def _panel(image: np.ndarray, title: str) -> np.ndarray:
    """``image`` under a white title bar; ``image`` is already at the panel size."""
    header = np.full((HEADER_HEIGHT, image.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(header, title, (6, HEADER_HEIGHT - 10), cv2.FONT_HERSHEY_SIMPLEX, GRID_FONT, (0, 0, 0), 1,
                cv2.LINE_AA)
    return np.vstack([header, image])


def _legend(class_ids: list[int], class_names: list[str], height: int) -> np.ndarray:
    """A white column: one colour swatch and name per mask class shown in the row."""
    from fashionvision.tasks.visualize import class_colors

    palette = class_colors(max(len(class_names), 1))
    column = np.full((height, LEGEND_WIDTH, 3), 255, dtype=np.uint8)
    cv2.putText(column, "mask colours", (6, HEADER_HEIGHT - 10), cv2.FONT_HERSHEY_SIMPLEX, GRID_FONT, (0, 0, 0), 1,
                cv2.LINE_AA)
    row = 24
    for r, cls in enumerate(class_ids):
        y = HEADER_HEIGHT + 6 + r * row
        if y + row > height:
            break
        color = tuple(int(c) for c in palette[cls % len(palette)])
        cv2.rectangle(column, (6, y), (6 + 18, y + 18), color, -1)
        cv2.putText(column, background_name(class_names[cls], cls), (32, y + 15), cv2.FONT_HERSHEY_SIMPLEX,
                    GRID_FONT, (0, 0, 0), 1, cv2.LINE_AA)
    return column


def legend_classes(*masks: np.ndarray, ignore_index: int = 255) -> list[int]:
    """The mask classes present in any of ``masks``, background (0) and ignored pixels left out."""
    present = set()
    for mask in masks:
        present |= {int(c) for c in np.unique(mask)}
    return sorted(c for c in present if c not in (0, ignore_index))


def draw_grid(ev: Evaluation, det_classes: list[str], path: Path, seg_classes: list[str] | None = None) -> Path:
    """One row per sample image: original, ground truth, detector, segmenter, and a colour legend.

    Each panel is :data:`PANEL_WIDTH` pixels wide and drawn at that size (boxes and labels after
    resizing), so the grid reads at 100 % zoom; the legend names the mask classes of the row.
    """
    from fashionvision.tasks.visualize import draw_boxes, overlay_mask

    seg_classes = list(seg_classes or [])
    rows = []
    for sample in ev.samples:
        image = sample["image"]
        factor = PANEL_WIDTH / image.shape[1]
        size = (PANEL_WIDTH, max(1, round(image.shape[0] * factor)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        gt_mask = cv2.resize(sample["gt_mask"].astype(np.int32), size, interpolation=cv2.INTER_NEAREST)
        seg_mask = cv2.resize(np.asarray(sample["segmenter"]["mask"]).astype(np.int32), size,
                              interpolation=cv2.INTER_NEAREST)
        gt_boxes = sample["gt_boxes"]
        # GT boxes are inclusive pixel extents; drawing takes continuous coordinates
        boxes = (gt_boxes[:, :4].astype(np.float32) + np.array([0, 0, 1, 1], dtype=np.float32)) * factor
        gt = draw_boxes(overlay_mask(small, gt_mask, alpha=0.5), boxes, gt_boxes[:, 4], det_classes,
                        font_scale=GRID_FONT)
        d = sample["detector"]
        detected = draw_boxes(small, np.asarray(d["boxes"], dtype=np.float32).reshape(-1, 4) * factor,
                              np.asarray(d["labels"]), det_classes, scores=np.asarray(d["scores"]),
                              font_scale=GRID_FONT)
        segmented = overlay_mask(small, seg_mask, alpha=0.5)
        panels = [_panel(small, Path(sample["path"]).name), _panel(gt, "ground truth"),
                  _panel(detected, f"detector ({len(d['boxes'])} boxes)"),
                  _panel(segmented, f"segmenter ({len(sample['derived_boxes'][0])} regions)")]
        panels = [np.pad(p, ((0, 0), (0, 4), (0, 0)), constant_values=255) for p in panels]
        if seg_classes:
            panels.append(_legend(legend_classes(gt_mask, seg_mask), seg_classes, panels[0].shape[0]))
        rows.append(np.hstack(panels))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    write_image(path, np.vstack(rows))
    return path


def plot_per_class(rows: list[dict], path: Path) -> Path:
    """Side-by-side bars: AP50 (classes with instances) and IoU (classes present), both families."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ap_rows = [r for r in rows if r["ap50_detector"] is not None]
    iou_rows = [r for r in rows if r["iou_segmenter"] is not None]
    n = max(len(ap_rows), len(iou_rows), 1)
    fig = Figure(figsize=(12, max(3.0, 0.22 * n + 1.5)))
    FigureCanvasAgg(fig)
    for ax, subset, metric, title in zip(fig.subplots(1, 2), (ap_rows, iou_rows), ("ap50", "iou"),
                                         ("AP50 per class", "IoU per class")):
        y = np.arange(len(subset))
        for offset, family, color in ((-0.2, "detector", "tab:orange"), (0.2, "segmenter", "tab:blue")):
            ax.barh(y + offset, [r[f"{metric}_{family}"] or 0.0 for r in subset], height=0.4,
                    color=color, label=family)
        ax.set_yticks(y, [r["class"] for r in subset], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def run_compare(detector: str, segmenter: str, dataset: str | None, split: str, output: str | Path,
                n_images: int = 8, limit: int | None = None, device: str = "cpu",
                speed_batch_sizes: tuple[int, int] = (1, 32), speed_seconds: float = 1.0,
                speed_iters: int = 20) -> dict:
    """Load both runs, check they match, evaluate, time, and write the report folder."""
    # loaded with their own stored class lists, so that a mismatch with the dataset shows
    det = load_predictor(detector, device=device)
    seg = load_predictor(segmenter, device=device)
    if dataset is None:
        dataset = (det.config.get("dataset") or {}).get("path")
        if not dataset:
            raise UserError("give dataset.path=DIR: the detector's checkpoint does not record its dataset folder")
    data = ConvertedDataset.open(dataset)
    from fashionvision.inference.files import model_inputs

    check_output(output, [*data.inputs(), *model_inputs(detector), *model_inputs(segmenter)])
    check_compatible(det, seg, data)
    ev = evaluate_both(det, seg, data, split, limit=limit, n_samples=n_images)
    photo_hw = tuple(ev.samples[0]["image"].shape[:2]) if ev.samples else (416, 312)
    speed = {k: measure_speed(p, photo_hw, speed_batch_sizes, speed_seconds, speed_iters)
             for k, p in (("detector", det), ("segmenter", seg))}
    speed["device"] = speed["detector"]["device"]
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    rows = per_class_rows(ev, det.class_names, seg.class_names)
    report = {
        "sections": list(SECTIONS),
        "setup": {"dataset": str(data.folder), "dataset_name": data.name, "split": split,
                  "num_images": len(ev.images), "images": ev.images,
                  "image_list_sha1": hashlib.sha1("\n".join(ev.images).encode()).hexdigest()[:12],
                  "skipped": ev.skipped, "detector": det.source, "segmenter": seg.source,
                  "num_det_classes": len(det.class_names), "num_seg_classes": len(seg.class_names),
                  "thresholds": ev.thresholds},
        "detection": ev.detection, "segmentation": ev.segmentation,
        "per_class": rows, "wins": wins(rows), "speed": speed,
        "figures": {"grid": "grid.png", "per_class": "per_class.png"},
        "grid_images": [s["path"] for s in ev.samples],
    }
    draw_grid(ev, det.class_names, output / "grid.png", seg.class_names)
    plot_per_class(rows, output / "per_class.png")
    atomic_write_text(output / "report.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(output / "report.md", render_markdown(report))
    log.info("comparison report written to %s", output)
    return report
