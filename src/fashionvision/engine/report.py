"""What a training run tells its user, as ultralytics users expect it.

* :func:`header_lines`: before the first step, the device, the model (parameters, GFLOPs),
  the data (images and boxes per split), the length (epochs or time budget), batch,
  precision and the run folder.
* :class:`ResultsLog`: ``results.csv`` (one row per epoch: losses, lr, validation metrics,
  seconds) and ``results.png`` (the curves) in the run folder, rewritten after every epoch.
* :func:`epoch_line`: the one log line per epoch.
* :func:`final_lines`: at the end, the per-class table of the best checkpoint on the
  validation split (the table ``fashion-eval`` prints), the time taken and where the files are.

The :class:`~fashionvision.engine.hooks.RunReport` hook calls these at the run's points.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch

log = logging.getLogger("fashionvision.engine")

RESULTS_CSV = "results.csv"
RESULTS_PNG = "results.png"


# ---------------------------------------------------------------------------- header
def cpu_count() -> int:
    """Cores this process may use (the affinity mask: containers and ``taskset`` shrink it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def device_description(device: torch.device) -> str:
    """``NVIDIA H100 80GB HBM3 (cuda:0, 79.1 GiB)`` or ``CPU: 2 cores, 2 torch threads (model name)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"{props.name} (cuda:{index}, {props.total_memory / 2**30:.1f} GiB)"
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    return f"CPU: {cpu_count()} cores, {torch.get_num_threads()} torch threads" + (f" ({name})" if name else "")


def model_complexity(model: torch.nn.Module, image_size: int | None) -> dict:
    """Parameters and forward GFLOPs of one ``image_size`` square image (what fashion-summary prints).

    ``torch.utils.flop_counter`` counts a multiply-add as 2 FLOPs. The model runs once in eval
    mode on zeros (no RNG drawn, no BatchNorm statistics touched); ``gflops`` is None when the
    forward pass fails (an unusual input contract).
    """
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters())
    gflops = None
    if image_size:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
        was_training = model.training
        model.eval()
        try:
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                model(torch.zeros(1, 3, int(image_size), int(image_size), device=device))
            gflops = counter.get_total_flops() / 1e9
        except Exception as exc:  # the header must never stop a run
            log.debug("FLOP count failed: %s", exc)
        finally:
            model.train(was_training)
    return {"params": params, "gflops": gflops}


def split_counts(data: Any, limit: int | None = None) -> dict[str, tuple[int, int]]:
    """``{split: (images, boxes)}`` of a converted folder (``limit``: first N images, as trained)."""
    from fashionvision.data.converted import SPLITS

    counts = {}
    for split in SPLITS:
        try:
            if not data.split_file(split).is_file():
                continue
            records = data.records(split)[:limit] if limit else data.records(split)
        except Exception:
            continue
        counts[split] = (len(records), int(sum(len(r.boxes) for r in records)))
    return counts


def _model_words(model_cfg: dict) -> str:
    keys = ("encoder", "width", "depth")
    extra = ", ".join(f"{k} {model_cfg[k]}" for k in keys if model_cfg.get(k) is not None)
    return f"{model_cfg.get('name', '?')}" + (f" ({extra})" if extra else "")


def header_lines(trainer: Any) -> list[str]:
    """The run header: device, model, data, length, batch, precision, run folder."""
    import fashionvision

    cfg, task = trainer.cfg, trainer.task
    model_cfg = dict(getattr(task, "model_cfg", {}) or {})
    size = model_cfg.get("image_size")
    from fashionvision.engine.distributed import unwrap

    stats = model_complexity(unwrap(trainer.model), size)
    model = f"{_model_words(model_cfg)}, {len(task.class_names)} classes"
    if size:
        model += f", {size} px"
    model += f": {stats['params'] / 1e6:.2f} M parameters"
    if stats["gflops"] is not None:
        model += f", {stats['gflops']:.2f} GFLOPs per image"
    lines = [f"fashionvision {fashionvision.__version__}, torch {torch.__version__}, "
             f"device {device_description(trainer.device)}"
             + (f" x {trainer.dist.world_size} processes" if trainer.dist.world_size > 1 else ""),
             f"model   {model}"]
    data = getattr(task, "data", None)
    if data is not None and hasattr(data, "split_file"):
        counts = split_counts(data, cfg.limit_images)
        shown = ", ".join(f"{split} {n:,} images {b:,} boxes" for split, (n, b) in counts.items())
        lines.append(f"data    {data.folder} ({getattr(data, 'name', '?')}): {shown}")
    if cfg.max_seconds is not None:
        length = f"time budget {cfg.max_time} ({cfg.max_seconds:.0f} s, validation and checkpoints included)"
    else:
        length = f"{cfg.epochs} epochs"
    precision = (str(trainer.amp_dtype).removeprefix("torch.") + " autocast") if trainer.amp else "fp32"
    lines.append(f"train   {length}, {trainer.batches_per_epoch} batches per epoch, batch {cfg.batch_size}"
                 + (f" x accumulate {cfg.accumulate}" if cfg.accumulate > 1 else "")
                 + f", {precision}, {cfg.optimizer} lr {cfg.lr:g}, workers {trainer.workers}")
    lines.append(f"run     {trainer.run_dir} (checkpoints/, {RESULTS_CSV}, {RESULTS_PNG}, tensorboard/)")
    return lines


# ---------------------------------------------------------------------------- per epoch
def epoch_line(epoch: int, train_losses: dict, metrics: dict | None, primary: str, best: float,
               best_epoch: int) -> str:
    """``epoch 3: loss 1.23, 45 img/s, map50 0.1234 (best 0.1234 at epoch 3)``.

    An epoch whose batches all ran before a restart (resumed at its very end) has no loss: it
    says so instead of ``loss nan, 0 img/s``.
    """
    if "loss" in train_losses:
        text = f"epoch {epoch}: loss {train_losses['loss']:.4g}, {train_losses.get('img_per_s', 0):.3g} img/s"
    else:
        text = f"epoch {epoch}: its batches ran before the restart"
    if metrics and primary in metrics:
        text += f", {primary} {metrics[primary]:.4f} (best {best:.4f} at epoch {best_epoch})"
    return text


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else str(value)


class ResultsLog:
    """``results.csv`` and ``results.png`` in the run folder, rewritten after every epoch.

    The CSV is rewritten whole (through a temporary file) so that a column first seen late
    (the validation metrics with ``val_every`` > 1) still gets its header, and a crash never
    leaves half a file. A resumed run keeps the rows of the epochs already done.

    Drawing the PNG takes about half a second; with epochs of a few seconds (small data on a
    GPU) it is redrawn only when the last drawing is older than 20 times its drawing time
    (at most ~5 % of the run), and always by :meth:`finish`.
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, keep_epochs: int = 0):
        self.path = Path(run_dir) / RESULTS_CSV
        self.png = Path(run_dir) / RESULTS_PNG
        self.enabled = enabled
        self.rows: list[dict] = []
        self.plot_seconds = 0.0  # how long the last drawing took (the time budget reserves it)
        self.drawn_at: float | None = None
        self._stale = False
        if enabled and self.path.is_file() and keep_epochs > 0:
            with open(self.path, newline="", encoding="utf-8") as handle:
                for row in csv.DictReader(handle):
                    try:
                        if int(row.get("epoch", 0)) <= keep_epochs:
                            self.rows.append({k: v for k, v in row.items() if v != ""})
                    except ValueError:
                        continue

    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.update(dict.fromkeys(row))
        return list(seen)

    def add(self, row: dict) -> None:
        """Append one epoch's row and rewrite both files."""
        if not self.enabled:
            return
        self.rows = [r for r in self.rows if int(r["epoch"]) < int(row["epoch"])] + [row]
        columns = self.columns()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: _fmt(r.get(k)) for k in columns})
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
        os.replace(tmp, self.path)
        self._stale = True
        now = time.perf_counter()
        if self.drawn_at is None or now - self.drawn_at >= 20 * self.plot_seconds:
            self.draw()

    def draw(self) -> None:
        """Redraw ``results.png`` from the rows."""
        started = time.perf_counter()
        try:
            plot_results(self.rows, self.columns(), self.png)
        except Exception as exc:  # a plot must never stop a run
            log.warning("could not draw %s: %s", self.png, exc)
        self.drawn_at = time.perf_counter()
        self.plot_seconds = self.drawn_at - started
        self._stale = False

    def finish(self) -> None:
        """Draw the last rows if the throttle skipped them."""
        if self.enabled and self._stale and self.rows:
            self.draw()


def plot_results(rows: Sequence[dict], columns: Sequence[str], path: Path) -> None:
    """One small panel per column against the epoch (matplotlib Agg, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def number(value: Any) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan

    names = [c for c in columns if c not in ("epoch", "elapsed")
             and any(not math.isnan(number(r.get(c))) for r in rows)]
    if not names:
        return
    ncols = min(5, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), squeeze=False)
    epochs = [number(r.get("epoch")) for r in rows]
    for ax, name in zip(axes.ravel(), names):
        points = [(e, number(r.get(name))) for e, r in zip(epochs, rows) if not math.isnan(number(r.get(name)))]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, linewidth=1.5)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def epoch_row(trainer: Any, train_losses: dict, metrics: dict | None, seconds: float) -> dict:
    """One ``results.csv`` row: epoch, train losses, lr, validation metrics, seconds."""
    row: dict[str, Any] = {"epoch": trainer.epoch}
    row.update({f"train/{k}": v for k, v in train_losses.items() if k != "img_per_s"})
    row["img_per_s"] = train_losses.get("img_per_s") if "loss" in train_losses else None  # not 0 after a restart
    row["lr"] = trainer.optimizer.param_groups[0]["lr"]
    row.update({f"val/{k}": v for k, v in (metrics or {}).items()})
    row["seconds"] = round(seconds, 2)
    # of which validating and writing checkpoints (what a short GPU epoch can be dominated by)
    row["val_seconds"] = round(trainer.state.epoch_val_seconds, 2)
    row["checkpoint_seconds"] = round(trainer.state.epoch_save_seconds, 2)
    row["elapsed"] = round(trainer.train_seconds, 1)
    return row


# ---------------------------------------------------------------------------- the end
def per_class_lines(rows: Sequence[dict]) -> list[str]:
    """The per-class table ``fashion-eval`` prints (classes without instances left out)."""
    rows = [r for r in rows if r.get("instances", 1) and r.get("present", True)]
    if not rows:
        return []
    cols = [k for k in rows[0] if k != "class"]
    lines = [f"  {'class':24s} " + " ".join(f"{c:>9s}" for c in cols)]
    for r in rows:
        lines.append(f"  {str(r['class'])[:24]:24s} " + " ".join(
            f"{r[c]:9.3f}" if isinstance(r[c], float) else f"{'-' if r[c] is None else r[c]!s:>9}"
            for c in cols))
    return lines


def final_lines(trainer: Any, seconds: float) -> list[str]:
    """The per-class table of the best checkpoint on the validation split, time and files."""
    from fashionvision.progress import format_seconds

    primary = trainer.task.primary_metric
    lines = []
    rows = getattr(trainer, "best_per_class", None)
    if trainer.best_epoch >= 0:
        val_images = len(trainer.val_set) if hasattr(trainer, "val_set") else 0
        tta = trainer.task.tta_summary()
        plain = f"; without the test-time augmentation ({tta}) that fashion-eval applies" if tta else ""
        lines.append(f"best epoch {trainer.best_epoch}: {primary} {trainer.best_metric:.4f} on the validation "
                     f"split ({val_images} image{'s' if val_images != 1 else ''}{plain})")
        lines += per_class_lines(rows or [])
    folder = trainer.run_dir
    length = f"{trainer.epoch} epochs, {trainer.step} steps"
    lines.append(f"{trainer.status} after {format_seconds(seconds)} ({length})")
    files = [name for name in ("checkpoints/best.pt", "checkpoints/last.pt", RESULTS_CSV, RESULTS_PNG,
                               "metrics.json", "tensorboard") if (folder / name).exists()]
    lines.append(f"files in {folder}: {', '.join(files)}")
    if (folder / "checkpoints/best.pt").exists():
        lines.append(f"next: fashion-eval ckpt={folder} split=test")
    return lines
