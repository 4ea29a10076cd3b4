"""COCO-standard detection metrics (pycocotools) and the report ``fashion-eval`` writes.

Coordinates: ground truth comes from the annotation format's inclusive integer boxes, so a
box ``x1..x2`` covers ``x2 - x1 + 1`` pixels and becomes COCO ``[x1, y1, x2 - x1 + 1, ...]``.
Predictions are continuous boxes in original image pixels (``[x, y, x2 - x, y2 - y]``).
Category ids are the 0-based class indices of ``classes.txt``; image ids are the caller's.

Besides the COCOeval summary (mAP@[.5:.95], mAP@.5, mAP@.75, AR@100) the report holds a
per-class table (instances, AP50, AP), precision and recall at the operating point (score
>= ``conf``, greedy same-class matching at IoU >= 0.5) and a confusion matrix at the same point.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from fashionvision.data.annotations import atomic_write_text
from fashionvision.output_guard import atomic_write


def gt_to_coco(images: Sequence[dict], class_names: Sequence[str]) -> dict:
    """COCO ground truth from ``{"id", "height", "width", "boxes": int [N, 5] x1,y1,x2,y2,cls}``."""
    coco_images, annotations = [], []
    for img in images:
        coco_images.append({"id": int(img["id"]), "height": int(img["height"]), "width": int(img["width"])})
        for x1, y1, x2, y2, c in np.asarray(img["boxes"]).reshape(-1, 5).tolist():
            w, h = x2 - x1 + 1, y2 - y1 + 1
            annotations.append({"id": len(annotations) + 1, "image_id": int(img["id"]), "category_id": int(c),
                                "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0})
    categories = [{"id": i, "name": n} for i, n in enumerate(class_names)]
    return {"info": {}, "licenses": [], "images": coco_images, "annotations": annotations,
            "categories": categories}


def predictions_to_coco(image_id: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> list[dict]:
    """COCO results entries for one image (boxes xyxy in original pixels)."""
    out = []
    for (x1, y1, x2, y2), s, c in zip(np.asarray(boxes, dtype=float).reshape(-1, 4).tolist(),
                                      np.asarray(scores, dtype=float).tolist(),
                                      np.asarray(labels).astype(int).tolist()):
        out.append({"image_id": int(image_id), "category_id": int(c),
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "score": round(s, 5)})
    return out


def run_cocoeval(gt: dict, results: list[dict]):
    """A finished ``COCOeval`` (bbox) or None when there are no predictions; output silenced."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results or not gt["annotations"]:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))  # loadRes adds keys to the dicts
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xywh boxes ``[N, 4]`` and ``[M, 4]`` -> ``[N, M]``."""
    from pycocotools import mask as mask_utils

    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return mask_utils.iou(a.tolist(), b.tolist(), [0] * len(b))


def match_operating_point(gt: dict, results: list[dict], conf: float, iou: float = 0.5
                          ) -> tuple[dict, np.ndarray]:
    """Precision/recall at score >= ``conf`` and the ``(C+1) x (C+1)`` confusion matrix.

    Precision/recall: per image and class, detections (best score first) greedily take the
    unmatched ground truth of their class with the highest IoU >= ``iou``. Confusion matrix
    (rows = true class, columns = predicted, last = background): each detection is matched
    to any unmatched ground truth by IoU regardless of class, best IoU first.
    """
    nc = len(gt["categories"])
    by_img_gt: dict[int, list] = {}
    for a in gt["annotations"]:
        by_img_gt.setdefault(a["image_id"], []).append(a)
    by_img_dt: dict[int, list] = {}
    for r in results:
        if r["score"] >= conf:
            by_img_dt.setdefault(r["image_id"], []).append(r)
    tp = fp = 0
    n_gt = len(gt["annotations"])
    cm = np.zeros((nc + 1, nc + 1), dtype=np.int64)
    for img in gt["images"]:
        g = by_img_gt.get(img["id"], [])
        d = sorted(by_img_dt.get(img["id"], []), key=lambda r: -r["score"])
        gb = np.array([a["bbox"] for a in g], dtype=float).reshape(-1, 4)
        gc = np.array([a["category_id"] for a in g], dtype=int)
        db = np.array([r["bbox"] for r in d], dtype=float).reshape(-1, 4)
        dc = np.array([r["category_id"] for r in d], dtype=int)
        ious = _iou(db, gb)
        taken = np.zeros(len(g), dtype=bool)
        for i in range(len(d)):
            cand = np.where((gc == dc[i]) & ~taken & (ious[i] >= iou))[0] if len(g) else []
            if len(cand):
                taken[cand[np.argmax(ious[i, cand])]] = True
                tp += 1
            else:
                fp += 1
        # confusion matrix: class-agnostic one-to-one matching, best pairs first
        pairs = np.argwhere(ious >= iou)
        d_used, g_used = np.zeros(len(d), bool), np.zeros(len(g), bool)
        for di, gi in sorted(pairs.tolist(), key=lambda p: -ious[p[0], p[1]]):
            if not d_used[di] and not g_used[gi]:
                d_used[di] = g_used[gi] = True
                cm[gc[gi], dc[di]] += 1
        for gi in np.where(~g_used)[0]:
            cm[gc[gi], nc] += 1
        for di in np.where(~d_used)[0]:
            cm[nc, dc[di]] += 1
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_gt if n_gt else 0.0
    return {"precision": precision, "recall": recall, "tp": tp, "fp": fp, "num_gt": n_gt}, cm


def summarize(gt: dict, results: list[dict], class_names: Sequence[str], ev=None) -> dict:
    """The metrics dict: COCO summary plus the per-class table (an empty run gives zeros)."""
    ev = ev if ev is not None else run_cocoeval(gt, results)
    counts = np.bincount([a["category_id"] for a in gt["annotations"]], minlength=len(class_names))
    names = ("map", "map50", "map75", "map_small", "map_medium", "map_large",
             "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")
    stats = [0.0] * len(names) if ev is None else [max(0.0, float(s)) for s in ev.stats]
    metrics = dict(zip(names, stats))
    per_class = []
    for k, name in enumerate(class_names):
        ap50 = ap = 0.0
        if ev is not None and k in ev.params.catIds:
            ki = ev.params.catIds.index(k)
            p = ev.eval["precision"][:, :, ki, 0, -1]  # [T, R] at area all, maxDets 100
            ap = float(p[p > -1].mean()) if (p > -1).any() else 0.0
            p50 = p[0]
            ap50 = float(p50[p50 > -1].mean()) if (p50 > -1).any() else 0.0
        per_class.append({"class": name, "instances": int(counts[k]), "ap50": ap50, "ap": ap})
    metrics["per_class"] = per_class
    return metrics


def subset_metrics(gt: dict, results: list[dict], fields: Sequence[str], labels: Sequence[Sequence[int] | None],
                   keep: Sequence[str] = ("scale", "occlusion", "zoom_in", "viewpoint")) -> dict:
    """Box AP per subset of the ground truth (DeepFashion2's occlusion / zoom_in / viewpoint / scale).

    ``labels[i]`` holds the values of ``fields`` for ``gt["annotations"][i]`` (None: unknown).
    For each field in ``keep`` and each value seen, the boxes outside the subset become crowd
    regions, which COCOeval ignores (a detection on them is neither a hit nor a false alarm):
    the way COCO itself scores its small/medium/large subsets.

    Returns ``{field: {value: {"map", "map50", "instances"}}}``.
    """
    out: dict = {}
    for field in keep:
        if field not in fields:
            continue
        column = list(fields).index(field)
        values = sorted({int(row[column]) for row in labels if row is not None})
        out[field] = {}
        for value in values:
            inside = [row is not None and int(row[column]) == value for row in labels]
            subset = dict(gt, annotations=[dict(a, iscrowd=0 if hit else 1) for a, hit in zip(gt["annotations"], inside)])
            ev = run_cocoeval(subset, results)
            stats = [0.0, 0.0] if ev is None else [max(0.0, float(ev.stats[0])), max(0.0, float(ev.stats[1]))]
            out[field][str(value)] = {"map": stats[0], "map50": stats[1], "instances": int(sum(inside))}
    return out


def plot_pr_curve(ev, class_names: Sequence[str], path: Path, instances: dict | None = None) -> None:
    """Mean precision-recall curve at IoU 0.5 (and the 5 most frequent classes, thin).

    ``instances`` maps category id to its ground-truth count (picks the frequent classes).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    recall = np.linspace(0, 1, 101)
    if ev is not None:
        p = ev.eval["precision"][0, :, :, 0, -1]  # [R, K]
        valid = (p > -1).any(0)
        counts = instances or {}
        frequent = sorted(np.where(valid)[0], key=lambda k: -counts.get(ev.params.catIds[k], 0))[:5]
        for k in frequent:
            ax.plot(recall, np.clip(p[:, k], 0, 1), lw=0.8, alpha=0.6,
                    label=str(class_names[ev.params.catIds[k]]))
        if valid.any():
            mean = np.where(p[:, valid] > -1, p[:, valid], 0).mean(1)
            ax.plot(recall, mean, lw=2.5, color="k", label=f"all classes (AP50 {mean.mean():.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01), title="PR curve, IoU 0.5")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=7)
    else:
        ax.text(0.5, 0.5, "no detections", ha="center", va="center")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)


#: cell values are written when at most this many rows are shown (else they cannot be read)
ANNOTATE_MAX_CLASSES = 30


def confusion_view(cm: np.ndarray, class_names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """The matrix as plotted: classes without ground truth in the split left out.

    Rows and columns keep the classes with at least one ground-truth box, then "background".
    Predictions of left-out classes are not lost: they are summed into a last column,
    "not in split", when there are any.
    """
    cm = np.asarray(cm, dtype=np.int64)
    nc = len(class_names)
    keep = [k for k in range(nc) if cm[k, :].sum() > 0]
    dropped = [k for k in range(nc) if k not in keep]
    rows = keep + [nc]
    view = cm[np.ix_(rows, rows)]
    names = [str(class_names[k]) for k in keep] + ["background"]
    other = cm[np.ix_(rows, dropped)].sum(axis=1) if dropped else np.zeros(len(rows), dtype=np.int64)
    if other.any():
        view = np.concatenate([view, other[:, None]], axis=1)
    return view, names + (["not in split"] if other.any() else [])


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: Path, conf: float | None = None,
                          iou: float | None = None) -> dict:
    """Row-normalised confusion matrix at the operating point, with a colour bar and cell values.

    Only classes present in the split's ground truth are shown (:func:`confusion_view`); the
    title names the score and IoU thresholds the matching used. Returns what was drawn
    (``rows``, ``columns``, ``annotated``) for tests and reports.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    view, names = confusion_view(cm, class_names)
    rows = [n for n in names if n != "not in split"]
    norm = view / np.maximum(view.sum(1, keepdims=True), 1)
    size = max(6.0, 0.3 * len(names) + 2.5)
    fig = Figure(figsize=(size + 1.2, size))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fontsize = 7 if len(names) > 20 else 9
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(len(rows)), rows, fontsize=fontsize)
    where = []
    if conf is not None:
        where.append(f"score >= {conf:g}")
    if iou is not None:
        where.append(f"IoU >= {iou:g}")
    title = "confusion matrix" + (f" at {', '.join(where)}" if where else "") + "\n(rows: true class, normalised)"
    ax.set(xlabel="predicted", ylabel="true", title=title)
    annotated = len(rows) <= ANNOTATE_MAX_CLASSES
    if annotated:
        for r, c in zip(*np.nonzero(view)):
            value = norm[r, c]
            ax.text(c, r, f"{value:.2f}".lstrip("0") if value < 1 else "1", ha="center", va="center",
                    fontsize=max(5, fontsize - 2), color="white" if value > 0.5 else "black")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("share of the true class's boxes")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))
    return {"rows": rows, "columns": names, "annotated": annotated, "title": title}


def write_report(output_dir: str | Path, gt: dict, results: list[dict], class_names: Sequence[str],
                 conf: float, iou: float = 0.5, extra: dict | None = None) -> dict:
    """Compute everything and write ``metrics.json``, ``predictions.json`` and the two PNGs."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ev = run_cocoeval(gt, results)
    metrics = summarize(gt, results, class_names, ev)
    op, cm = match_operating_point(gt, results, conf, iou)
    metrics["operating_point"] = {"conf": conf, "iou": iou, **op}
    metrics["precision"], metrics["recall"] = op["precision"], op["recall"]
    metrics["num_images"] = len(gt["images"])
    metrics["num_predictions"] = len(results)
    metrics.update(extra or {})
    atomic_write_text(out / "predictions.json", json.dumps(results))
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    instances: dict = {}
    for annotation in gt["annotations"]:
        instances[annotation["category_id"]] = instances.get(annotation["category_id"], 0) + 1
    plot_pr_curve(ev, class_names, out / "pr_curve.png", instances)
    plot_confusion_matrix(cm, class_names, out / "confusion_matrix.png", conf=conf, iou=iou)
    return metrics
