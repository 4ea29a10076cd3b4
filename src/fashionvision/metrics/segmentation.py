"""Segmentation metrics from one confusion matrix, and the report ``fashion-eval`` writes.

Why a confusion matrix: every honest figure (IoU per class, mIoU, pixel accuracy, mean class
accuracy, frequency-weighted IoU) follows from it, it accumulates on the GPU with a single
``bincount`` per batch, and it adds across processes. Pixel accuracy alone hides failures
(the study's U-Net reached 89.8 % while labelling skirts as dresses): background dominates
it, so mIoU and per-class IoU are reported beside it.

Conventions (rows = ground truth, columns = prediction):

* ``miou`` (the headline, the convention of mmsegmentation and torchmetrics): per-class IoU
  over the whole split, averaged over every class that occurs in the ground truth **or** in the
  predictions. A class predicted but absent from the ground truth counts with IoU 0, so a
  decoding that moves pixels toward rare classes (logit adjustment) pays for its false alarms.
  Classes neither seen nor predicted have no IoU and are left out.
* ``miou_gt_classes``: the lenient figure, kept for comparison with older reports: the mean
  over the classes present in the ground truth only; a hallucinated class still lowers the IoU
  of the classes it covers, but its own 0 is not averaged in.
* ``miou_all``: the sum of IoU over **all** classes divided by the class count, a class that
  never occurs and is never predicted counting as 0: the stricter figure, comparable across
  splits that lack some classes only in the same way.
* ``pixel_acc`` = correct pixels / labelled pixels; ``mean_class_acc`` = mean recall over the
  present classes; ``fwiou`` = IoU weighted by ground-truth pixel share.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fashionvision.output_guard import atomic_write, atomic_write_text


#: names datasets give their background class (index 0); every table and figure says "background"
BACKGROUND_ALIASES = ("null", "", "bg", "_background_", "__background__", "background")


def background_name(name: str, index: int) -> str:
    """``"background"`` for class 0 under any of its dataset names (CCP calls it ``null``), else ``name``."""
    return "background" if index == 0 and str(name).strip().lower() in BACKGROUND_ALIASES else str(name)


class ConfusionMatrix:
    """A ``[C, C]`` int64 confusion matrix accumulated on ``device``.

    Args:
        num_classes: C.
        ignore_index: ground-truth value of pixels that are not counted.
        device: where the counts live (the model's device; no copies per batch).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add predictions and targets of the same shape (any shape, class indices)."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        c = self.num_classes
        pred = pred.to(self.matrix.device, torch.int64).reshape(-1)
        target = target.to(self.matrix.device, torch.int64).reshape(-1)
        # Ignored or out-of-range targets go to an extra bin that is dropped: no boolean
        # indexing, hence no host synchronisation for the mask's size.
        valid = (target != self.ignore_index) & (target >= 0) & (target < c) & (pred >= 0) & (pred < c)
        index = torch.where(valid, target * c + pred, torch.full_like(target, c * c))
        self.matrix += torch.bincount(index, minlength=c * c + 1)[: c * c].view(c, c)

    def all_reduce(self) -> None:
        """Sum the matrix over distributed ranks (no-op when not distributed)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.matrix)

    def compute(self, class_names: list[str] | None = None) -> dict:
        """All metrics (see :func:`metrics_from_confusion`)."""
        return metrics_from_confusion(self.matrix.cpu().numpy(), class_names)


def metrics_from_confusion(matrix: np.ndarray, class_names: list[str] | None = None) -> dict:
    """Metrics of a confusion matrix (rows ground truth, columns prediction).

    Returns:
        a JSON-ready dict: ``miou``, ``miou_gt_classes``, ``miou_all``, ``pixel_acc``,
        ``mean_class_acc``, ``fwiou``, ``classes_present`` (in the ground truth),
        ``classes_scored`` (in the ground truth or the predictions: the classes ``miou``
        averages), ``num_classes``, ``pixels``, and ``per_class``: a
        list of ``{class, iou, acc, gt_pixels, pred_pixels, present}`` (``iou``/``acc`` None
        where undefined).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    c = matrix.shape[0]
    names = [background_name(n, i) for i, n in enumerate(class_names)] if class_names is not None \
        else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for a {c}-class confusion matrix")
    tp = np.diag(matrix)
    gt = matrix.sum(axis=1)
    pred = matrix.sum(axis=0)
    union = gt + pred - tp
    total = matrix.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    present = gt > 0
    scored = union > 0  # in the ground truth or in the predictions
    n_present, n_scored = int(present.sum()), int(scored.sum())
    return {
        "miou": float(iou[scored].mean()) if n_scored else 0.0,
        "miou_gt_classes": float(iou[present].mean()) if n_present else 0.0,
        "miou_all": float(np.nan_to_num(iou, nan=0.0).sum() / c),
        "pixel_acc": float(tp.sum() / total) if total else 0.0,
        "mean_class_acc": float(acc[present].mean()) if n_present else 0.0,
        "fwiou": float((gt[present] * iou[present]).sum() / total) if total else 0.0,
        "classes_present": n_present,
        "classes_scored": n_scored,
        "num_classes": c,
        "pixels": int(total),
        "per_class": [
            {"class": names[i], "iou": None if np.isnan(iou[i]) else float(iou[i]),
             "acc": None if np.isnan(acc[i]) else float(acc[i]),
             "gt_pixels": int(gt[i]), "pred_pixels": int(pred[i]), "present": bool(present[i])}
            for i in range(c)
        ],
    }


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """The scalar part of :func:`metrics_from_confusion` (what the engine logs)."""
    keys = ("miou", "miou_gt_classes", "miou_all", "pixel_acc", "mean_class_acc", "fwiou")
    return {k: float(metrics[k]) for k in keys}


def _figure(size: tuple[float, float]):
    """A matplotlib Figure drawn by the Agg canvas, without pyplot: no global backend state
    is touched, so plotting works on headless servers and inside the web app's threads."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: str | Path) -> Path:
    """Row-normalised confusion matrix as a PNG (rows: ground truth; empty rows stay blank)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = matrix / matrix.sum(axis=1, keepdims=True)
    norm = np.nan_to_num(norm)
    class_names = [background_name(n, i) for i, n in enumerate(class_names)]
    c = len(class_names)
    size = max(6.0, 0.22 * c + 2.0)
    fig = _figure((size, size))
    ax = fig.subplots()
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(c), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(c), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion matrix (each row sums to 1)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))
    return Path(path)


def plot_iou_bars(metrics: dict, path: str | Path) -> Path:
    """Per-class IoU bars (the classes the mIoU averages: in the ground truth or predicted),
    labelled with ground-truth pixel counts."""
    rows = [r for r in metrics["per_class"] if r["iou"] is not None]
    rows.sort(key=lambda r: r["iou"] or 0.0, reverse=True)
    fig = _figure((10, max(3.0, 0.25 * len(rows) + 1.5)))
    ax = fig.subplots()
    ax.barh(range(len(rows)), [r["iou"] or 0.0 for r in rows], color="tab:blue")
    ax.set_yticks(range(len(rows)), [f"{r['class']} ({r['gt_pixels']:,} px)" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.axvline(metrics["miou"], color="tab:red", linestyle="--", label=f"mIoU {metrics['miou']:.3f}")
    ax.set_xlabel("IoU")
    ax.set_title(f"per-class IoU ({metrics['classes_scored']} classes in the ground truth or predicted; "
                 f"{metrics['classes_present']} in the ground truth)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))
    return Path(path)


def write_report(matrix: np.ndarray, class_names: list[str], output_dir: str | Path,
                 extra: dict | None = None) -> dict:
    """Write ``metrics.json``, ``confusion_matrix.png``, ``per_class_iou.png`` and the raw
    matrix (``confusion_matrix.npy``) into ``output_dir``; returns the metrics dict."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    matrix = np.asarray(matrix)
    metrics = metrics_from_confusion(matrix, class_names)
    metrics.update(extra or {})
    atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write(output_dir / "confusion_matrix.npy", lambda tmp: np.save(tmp, matrix.astype(np.int64)))
    plot_confusion(matrix, class_names, output_dir / "confusion_matrix.png")
    plot_iou_bars(metrics, output_dir / "per_class_iou.png")
    return metrics
