"""Detection contestants of ``scripts/benchmark_peers.py``: our YOLOv3 recipe against ultralytics.

Each contestant trains from scratch in its own process (``threads`` torch threads, no loader
workers when ``threads == 1``) for the same wall-clock budget and image size, then its boxes
on the ``split`` images are scored by **our** evaluator (COCO mAP through pycocotools,
``fashionvision.metrics.detection``, boxes at the original resolution):

* ``ours``: ``fashion-train experiment=yolo_cpu_12m`` (CPU) or ``yolo_ccp_3min`` (GPU), then
  ``fashion-eval``;
* ``yolov8n`` (CPU), ``yolov8s`` and ``yolov3u`` (GPU): ultralytics from a model YAML (no
  weights), ``time=`` budget in hours, ``plots=False``, AMP check off, trained on a YOLO-format
  copy of our converted split written into the run folder (hard links), in each of the
  configurations its users would pick (:data:`PEER_CONFIGS`, ``--peer-configs``):

  - ``sgd``: ultralytics' own SGD hyperparameters, ``optimizer=SGD lr0=0.01 momentum=0.937``,
    with ``nbs`` = the batch (an update every batch, no gradient accumulation);
  - ``adamw``: ``optimizer=AdamW lr0=0.001``, ``nbs`` = the batch;
  - ``auto``: ultralytics' defaults (``optimizer=auto``, ``nbs=64``). On 640 images with
    ``epochs=1000`` it plans under 10,000 iterations, so it picks AdamW at
    ``0.002 * 5 / (4 + nc)`` (about 1.7e-4 for CCP's 56 classes) and accumulates to 64 images
    per update: the README's old figures measured this one.

  The benchmark compares our recipe with the best of them **on val** (``benchmark_peers.py``).

Both sides are decoded alike and pick their checkpoint alike:

* decoding: multi-label NMS at ``conf 0.001``, ``IoU 0.6``, at most 300 boxes (ours:
  ``eval_conf``/``eval_iou``/``max_det`` of ``configs/model/yolo.yaml``). ultralytics' own
  ``val`` is multi-label, its ``predict`` single-label: the peer's ``predict`` runs with
  multi-label NMS (:func:`multi_label_nms`), as its validator does;
* checkpoint: ``best.pt`` for both, the weights each trainer picked on val (ours validates
  every ``trainer.val_every`` epochs and when the budget ends; ultralytics with ``val=False``
  validates the final epoch; at the CPU budgets both validate once, at the end, so best is
  the final EMA weights for both);
* both are scored on the val split (for choosing the peer's configuration) and on ``split``
  (the final table), by our evaluator, at the original resolution.

ultralytics is the optional extra ``pip install -e ".[peers]"``; the package never imports
it. When it is missing (or listed in ``FASHION_PEERS_DISABLE``, e.g. to test the skip path)
its contestants come back with ``skipped`` set to the reason.

This file is also the worker each contestant process runs:
``python scripts/peers/detection.py ours|ultralytics --out DIR ...`` (see :func:`main`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: the peers package

from peers.common import REPO, read_json, set_torch_threads, shown, start  # noqa: E402

PEERS_DISABLE_ENV = "FASHION_PEERS_DISABLE"  # comma-separated: "ultralytics" acts as if it were not installed
EVAL_CONF, EVAL_IOU, MAX_DET = 0.001, 0.6, 300  # our evaluator's settings (configs/model/yolo.yaml)
VAL_SPLIT = "val"  # where the peer's configuration is chosen

#: the ultralytics configurations a user would pick for a short run; ``nbs: "batch"`` = the
#: nominal batch equals the real one, so ultralytics updates every batch (no accumulation)
PEER_CONFIGS: dict[str, dict] = {
    "sgd": {"optimizer": "SGD", "lr0": 0.01, "momentum": 0.937, "nbs": "batch"},
    "adamw": {"optimizer": "AdamW", "lr0": 0.001, "nbs": "batch"},
    "auto": {"optimizer": "auto"},
}
DEFAULT_PEER_CONFIGS = ("sgd", "adamw", "auto")


@dataclass(frozen=True)
class Contestant:
    name: str
    kind: str      # "ours" or "ultralytics"
    model: str     # our experiment config, or the ultralytics model YAML (from scratch)
    batch: int
    config: str | None = None  # the ultralytics configuration (a key of PEER_CONFIGS)

    @property
    def folder(self) -> str:
        stem = self.model.replace(".yaml", "")
        return f"{stem}_{self.config}" if self.config else stem

    @property
    def peer(self) -> str | None:
        """The peer model this row is one configuration of (``ultralytics YOLOv8n``), None for ours."""
        return self.name.split(" (")[0] if self.kind == "ultralytics" else None


def describe_config(config: str, batch: int) -> str:
    """``optimizer=SGD lr0=0.01 momentum=0.937 nbs=16`` (what the row's name says)."""
    values = {k: (batch if v == "batch" else v) for k, v in PEER_CONFIGS[config].items()}
    return " ".join(f"{k}={v}" for k, v in values.items()) + ("" if "nbs" in values else " nbs=64")


def contestants(device: str, peer_configs: tuple[str, ...] | list[str] = DEFAULT_PEER_CONFIGS) -> list[Contestant]:
    """CPU: our recipe vs YOLOv8n; GPU: our 3-minute recipe vs YOLOv8s and YOLOv3u;
    each ultralytics model once per configuration of ``peer_configs``."""
    unknown = [c for c in peer_configs if c not in PEER_CONFIGS]
    if unknown:
        raise ValueError(f"unknown peer configuration(s) {unknown}; valid: {', '.join(PEER_CONFIGS)}")
    if device.startswith("cuda"):
        ours, batch = Contestant("ours: YOLOv3 yolo_ccp_3min", "ours", "yolo_ccp_3min", 32), 32
        peers = [("ultralytics YOLOv8s", "yolov8s.yaml"), ("ultralytics YOLOv3u", "yolov3u.yaml")]
    else:
        ours, batch = Contestant("ours: YOLOv3 yolo_cpu_12m", "ours", "yolo_cpu_12m", 16), 16
        peers = [("ultralytics YOLOv8n", "yolov8n.yaml")]
    return [ours] + [Contestant(f"{name} ({describe_config(config, batch)})", "ultralytics", model, batch, config)
                     for name, model in peers for config in peer_configs]


def ultralytics_missing() -> str | None:
    """Why the ultralytics contestants cannot run, or None when they can."""
    disabled = {p.strip() for p in os.environ.get(PEERS_DISABLE_ENV, "").split(",")}
    if "ultralytics" in disabled:
        return f"ultralytics disabled by {PEERS_DISABLE_ENV}"
    if importlib.util.find_spec("ultralytics") is None:
        return "ultralytics is not installed (the optional extra: pip install -e \".[peers]\")"
    return None


# ----------------------------------------------------------------------------- the driver side
def _worker_command(c: Contestant, dataset_dir: Path, split: str, budget_s: float, image_size: int,
                    threads: int, out: Path, device: str, quick: bool, seed: int = 0) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), c.kind, "--model", c.model, "--dataset", str(dataset_dir),
           "--split", split, "--budget", f"{budget_s:g}", "--image-size", str(image_size),
           "--threads", str(threads), "--batch", str(c.batch), "--device", device, "--out", str(out),
           "--seed", str(seed)]
    if c.config:
        cmd += ["--peer-config", c.config]
    return cmd + (["--quick"] if quick else [])


def slots(threads: int, side_by_side: bool, cores: int | None = None) -> int:
    """How many contestants run at once: 1 one after another, else the cores over the threads
    (never more threads than cores, so that each contestant keeps its share of the machine)."""
    if not side_by_side:
        return 1
    return max(1, (cores or os.cpu_count() or 1) // max(1, threads))


def run_detection(dataset_dir: Path, split: str, budget_s: float, image_size: int, threads: int,
                  out_dir: Path, device: str, quick: bool, side_by_side: bool = False, seed: int = 0,
                  peer_configs: tuple[str, ...] | list[str] = DEFAULT_PEER_CONFIGS) -> list[dict]:
    """Train and score every detection contestant; one result dict each (see module docstring).

    ``side_by_side`` runs as many contestants at once as the cores allow at ``threads`` threads
    each (:func:`slots`: on 2 cores with 1 thread, two at a time: ours beside the first peer
    configuration, then the next two), otherwise one after another. ``seed`` goes to every contestant (our ``trainer.seed``:
    initialisation, data order and augmentation; ultralytics' ``seed=``), so repeat runs with
    other seeds show how much of a gap is run-to-run noise. Each row has the ``split`` figures
    (``map50``, ``map50_95``) and the val figures (``val_map50``, ``val_map50_95``), and for the
    peer its ``peer`` (model) and ``config``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    missing = ultralytics_missing()
    jobs, results = [], {}
    for c in contestants(device, peer_configs):
        folder = out_dir / c.folder
        cmd = _worker_command(c, Path(dataset_dir), split, budget_s, image_size, threads, folder, device, quick, seed)
        base = {"name": c.name, "family": "detection", "kind": c.kind, "peer": c.peer, "config": c.config,
                "budget_s": float(budget_s), "steps": None, "epochs": None, "img_per_s": None,
                "map50": None, "map50_95": None, "val_map50": None, "val_map50_95": None,
                "command": shown(cmd, threads), "skipped": None}
        if c.kind == "ultralytics" and missing:
            results[c.name] = {**base, "skipped": missing}
            print(f"[peers] {c.name}: skipped: {missing}", flush=True)
            continue
        jobs.append((c, folder, cmd, base))
    running, at_once = [], slots(threads, side_by_side)
    for c, folder, cmd, base in jobs:
        while sum(st.process.poll() is None for _, _, st, _ in running) >= at_once:
            time.sleep(0.5)
        running.append((c, folder, start(cmd, folder / "worker.log", threads), base))
    for c, folder, started, base in running:
        code = started.close()
        result_file = folder / "result.json"
        if code != 0 or not result_file.is_file():
            results[c.name] = {**base, "skipped": f"failed (exit {code}): {started.tail()}"}
            print(f"[peers] {c.name}: FAILED, see {folder / 'worker.log'}", flush=True)
            continue
        results[c.name] = {**base, **read_json(result_file)}
        print(f"[peers] {c.name}: mAP50 {results[c.name]['map50']:.4f} "
              f"(val {results[c.name]['val_map50']:.4f})", flush=True)
    return [results[c.name] for c in contestants(device, peer_configs) if c.name in results]


# ----------------------------------------------------------------------------- scoring
def split_images(dataset_dir: Path, split: str) -> list[tuple[Path, "object"]]:
    """``(image path, Record)`` of every image of a converted split."""
    from fashionvision.data.converted import ConvertedDataset

    data = ConvertedDataset.open(dataset_dir)
    return [(data.image_path(r), r) for r in data.records(split)]


def score_boxes(dataset_dir: Path, split: str, predictions: list[tuple]) -> dict:
    """Our COCO metrics for ``[(boxes xyxy original px, scores, labels)]`` in split order."""
    from PIL import Image

    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.metrics import detection as M

    data = ConvertedDataset.open(dataset_dir)
    images, results = [], []
    for k, ((path, record), (boxes, scores, labels)) in enumerate(zip(split_images(dataset_dir, split), predictions)):
        with Image.open(path) as im:
            w, h = im.size
        images.append({"id": k, "height": h, "width": w, "boxes": record.boxes})
        results += M.predictions_to_coco(k, boxes, scores, labels)
    metrics = M.summarize(M.gt_to_coco(images, data.classes), results, data.classes)
    return {"map50": metrics["map50"], "map50_95": metrics["map"], "images": len(images)}


# ----------------------------------------------------------------------------- workers
def _run(cmd: list[str], log_prefix: str) -> None:
    print(f"{log_prefix}$ {shown(cmd)}", flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def ours_commands(a: argparse.Namespace, run: Path, split: str | None = None) -> tuple[list[str], list[str]]:
    """The fashion-train and fashion-eval command lines of our contestant (run folder ``run``;
    the evaluation on ``split``, by default ``a.split``, into ``run/eval_<split>``). fashion-eval
    reads ``best.pt``: the checkpoint our trainer picked on val."""
    split = split or a.split
    train = [sys.executable, "-m", "fashionvision.cli.train", f"experiment={a.model}", f"dataset.path={a.dataset}",
             f"trainer.max_time={a.budget}s", f"model.image_size={a.image_size}", f"trainer.device={a.device}",
             f"hydra.run.dir={run}"]
    if a.threads == 1 and not a.device.startswith("cuda"):
        train.append("trainer.workers=0")  # the contestant gets one core: no loader process beside it
    if a.seed:
        train.append(f"trainer.seed={a.seed}")
    if a.quick:  # a smoke test of the pipeline: tiny model and data
        train += ["model.width=0.0625", "anchors=coco", "trainer.limit_images=4", "trainer.batch_size=2",
                  "trainer.val_every=1000", "trainer.cache_images=false"]
    folder = run / f"eval_{split}"
    evaluate = [sys.executable, "-m", "fashionvision.cli.eval", f"ckpt={run}", f"split={split}",
                f"device={a.device}", f"output={folder}", "workers=0", f"hydra.run.dir={folder}"]
    return train, evaluate


def work_ours(a: argparse.Namespace) -> dict:
    """Our recipe: fashion-train for the budget, then fashion-eval on val and on the split."""
    run = Path(a.out) / "run"
    shutil.rmtree(run, ignore_errors=True)
    train, evaluate = ours_commands(a, run)
    _, evaluate_val = ours_commands(a, run, VAL_SPLIT)
    _run(train, "[ours] ")
    _run(evaluate_val, "[ours] ")
    _run(evaluate, "[ours] ")
    summary = read_json(run / "metrics.json")
    report, val = read_json(run / f"eval_{a.split}" / "metrics.json"), read_json(run / f"eval_{VAL_SPLIT}" / "metrics.json")
    from fashionvision.engine.checkpoint import load_checkpoint

    batch = int(load_checkpoint(run / "checkpoints" / "last.pt").get("trainer", {}).get("batch_size", a.batch))
    seconds = float(summary["train_seconds"])
    return {"steps": int(summary["steps"]), "epochs": int(summary["epochs"]),
            "img_per_s": round(summary["steps"] * batch / max(seconds, 1e-9), 2), "train_seconds": seconds,
            "map50": float(report["map50"]), "map50_95": float(report["map"]),
            "val_map50": float(val["map50"]), "val_map50_95": float(val["map"]),
            "ms_per_image": report.get("ms_per_image"), "checkpoint": "best.pt",
            "command": f"{shown(train)} && {shown(evaluate)}"}


def yolo_dataset(dataset_dir: Path, folder: Path, splits=("train", "val")) -> Path:
    """Write our converted splits as an ultralytics YOLO dataset (hard-linked images) -> data YAML."""
    from PIL import Image

    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.data.dataset import record_boxes

    data = ConvertedDataset.open(dataset_dir)
    for split in splits:
        images, labels = folder / "images" / split, folder / "labels" / split
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        for k, record in enumerate(data.records(split)):
            src = data.image_path(record)
            dst = images / f"{k:05d}{src.suffix.lower()}"
            if not dst.exists():
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
            with Image.open(src) as im:
                w, h = im.size
            boxes, cls = record_boxes(record)  # continuous corners (inclusive x2 -> x2 + 1)
            lines = [f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                     for (x1, y1, x2, y2), c in zip(boxes.tolist(), cls.tolist())]
            (labels / f"{dst.stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    names = "\n".join(f"  {i}: {json.dumps(n)}" for i, n in enumerate(data.classes))
    yaml = folder / "data.yaml"
    yaml.write_text(f"path: {folder.resolve()}\ntrain: images/{splits[0]}\nval: images/{splits[1]}\nnames:\n{names}\n")
    return yaml


def ultralytics_train_args(a: argparse.Namespace, data_yaml: Path) -> dict:
    """``YOLO.train`` keywords: ultralytics' defaults but our budget, image size, batch, device
    and seed, and the optimizer settings of ``a.peer_config`` (:data:`PEER_CONFIGS`)."""
    out = Path(a.out)
    args = dict(data=str(data_yaml), epochs=1000, time=a.budget / 3600.0, imgsz=a.image_size, batch=a.batch,
                workers=0 if a.threads == 1 else min(a.threads, 8), device=a.device.replace("cuda:", "").replace("cuda", "0"),
                plots=False, amp=not a.device == "cpu", val=False, pretrained=False, project=str(out), name="train",
                exist_ok=True, seed=a.seed, verbose=False)
    if a.quick:
        args.update(batch=2, fraction=0.01, mosaic=0.0)
    config = PEER_CONFIGS[getattr(a, "peer_config", None) or "auto"]
    args.update({k: (args["batch"] if v == "batch" else v) for k, v in config.items()})
    return args


def multi_label_nms():
    """Make ultralytics' ``predict`` decode as its ``val`` (and our evaluator) do: multi-label
    NMS (a box may keep several classes), and no per-image time limit that would cut the list
    short on a slow CPU. Returns the function that undoes it."""
    from ultralytics.utils import nms

    original = nms.non_max_suppression

    def non_max_suppression(*args, **kwargs):
        kwargs.update(multi_label=True, max_time_img=60.0)
        return original(*args, **kwargs)

    nms.non_max_suppression = non_max_suppression
    return lambda: setattr(nms, "non_max_suppression", original)


def predict_split(model, dataset_dir: Path, split: str, image_size: int, device: str) -> list[tuple]:
    """The peer's boxes on every image of ``split``: ``[(xyxy original px, scores, labels)]``."""
    predictions = []
    for path, _ in split_images(dataset_dir, split):
        r = model.predict(str(path), imgsz=image_size, conf=EVAL_CONF, iou=EVAL_IOU, max_det=MAX_DET,
                          device=device, verbose=False)[0]
        predictions.append((r.boxes.xyxy.cpu().numpy(), r.boxes.conf.cpu().numpy(), r.boxes.cls.cpu().numpy()))
    return predictions


def work_ultralytics(a: argparse.Namespace) -> dict:
    """An ultralytics model from its YAML (no weights) in configuration ``a.peer_config``, our
    budget and image size; ``best.pt`` scored on val and on the split."""
    set_torch_threads(a.threads)
    out = Path(a.out)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(out / "ultralytics_config"))
    import ultralytics.data.utils as ud
    from ultralytics import YOLO

    ud.check_font = lambda *args, **kwargs: None  # plots are off: never fetch a font
    data_yaml = yolo_dataset(Path(a.dataset), out / "yolo_data")
    model = YOLO(a.model)  # a YAML: built from scratch, nothing downloaded
    args = ultralytics_train_args(a, data_yaml)
    started = time.perf_counter()
    model.train(**args)
    seconds = time.perf_counter() - started
    trainer = model.trainer
    epochs = int(trainer.epoch) + 1
    steps = epochs * len(trainer.train_loader)
    # the same rule as ours: the checkpoint the trainer picked on val (last.pt only if it wrote no best.pt)
    weights = Path(trainer.best if Path(trainer.best).is_file() else trainer.last)
    best = YOLO(str(weights))
    undo = multi_label_nms()
    try:
        started = time.perf_counter()
        predictions = predict_split(best, Path(a.dataset), a.split, a.image_size, args["device"])
        ms = 1000.0 * (time.perf_counter() - started) / max(len(predictions), 1)
        val_predictions = predict_split(best, Path(a.dataset), VAL_SPLIT, a.image_size, args["device"])
    finally:
        undo()
    scores = score_boxes(Path(a.dataset), a.split, predictions)
    val = score_boxes(Path(a.dataset), VAL_SPLIT, val_predictions)
    call = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return {"steps": steps, "epochs": epochs, "img_per_s": round(steps * args["batch"] / max(seconds, 1e-9), 2),
            "train_seconds": round(seconds, 1), "map50": scores["map50"], "map50_95": scores["map50_95"],
            "val_map50": val["map50"], "val_map50_95": val["map50_95"], "ms_per_image": round(ms, 2),
            "checkpoint": weights.name, "accumulate": int(getattr(trainer, "accumulate", 0) or 0) or None,
            "optimizer": type(trainer.optimizer).__name__ if getattr(trainer, "optimizer", None) else None,
            "command": f"YOLO({a.model!r}).train({call})"}


def parser() -> argparse.ArgumentParser:
    """The worker's arguments (one contestant process)."""
    p = argparse.ArgumentParser(description="one detection contestant (run by scripts/benchmark_peers.py)")
    p.add_argument("kind", choices=["ours", "ultralytics"])
    for name in ("model", "dataset", "split", "device", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--budget", type=float, required=True)
    for name in ("image-size", "threads", "batch"):
        p.add_argument(f"--{name}", type=int, required=True)
    p.add_argument("--seed", type=int, default=0, help="our trainer.seed and ultralytics' seed")
    p.add_argument("--peer-config", choices=list(PEER_CONFIGS), default="auto",
                   help="the ultralytics configuration: " + "; ".join(
                       f"{k}: {describe_config(k, 'BATCH')}" for k in PEER_CONFIGS))
    p.add_argument("--quick", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    result = work_ours(a) if a.kind == "ours" else work_ultralytics(a)
    (Path(a.out) / "result.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
