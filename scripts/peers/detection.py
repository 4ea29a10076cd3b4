"""Detection contestants of ``scripts/benchmark_peers.py``: our YOLOv3 recipe against ultralytics.

Each contestant trains from scratch in its own process (``threads`` torch threads, no loader
workers when ``threads == 1``) for the same wall-clock budget and image size, then its boxes
on the ``split`` images are scored by **our** evaluator (COCO mAP through pycocotools,
``fashionvision.metrics.detection``, boxes at the original resolution):

* ``ours``: ``fashion-train experiment=yolo_cpu_12m`` (CPU) or ``yolo_ccp_3min`` (GPU), then
  ``fashion-eval``;
* ``yolov8n`` (CPU), ``yolov8s`` and ``yolov3u`` (GPU): ultralytics from a model YAML (no
  weights), its defaults, ``time=`` budget in hours, ``plots=False``, AMP check off, trained on
  a YOLO-format copy of our converted split written into the run folder (hard links).

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
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEERS_DISABLE_ENV = "FASHION_PEERS_DISABLE"  # comma-separated: "ultralytics" acts as if it were not installed
EVAL_CONF, EVAL_IOU, MAX_DET = 0.001, 0.6, 300  # our evaluator's settings (configs/model/yolo.yaml)


@dataclass(frozen=True)
class Contestant:
    name: str
    kind: str      # "ours" or "ultralytics"
    model: str     # our experiment config, or the ultralytics model YAML (from scratch)
    batch: int


def contestants(device: str) -> list[Contestant]:
    """CPU: our recipe vs YOLOv8n; GPU: our 3-minute recipe vs YOLOv8s and YOLOv3u (issue 9)."""
    if device.startswith("cuda"):
        return [Contestant("ours: YOLOv3 yolo_ccp_3min", "ours", "yolo_ccp_3min", 32),
                Contestant("ultralytics YOLOv8s", "ultralytics", "yolov8s.yaml", 32),
                Contestant("ultralytics YOLOv3u", "ultralytics", "yolov3u.yaml", 32)]
    return [Contestant("ours: YOLOv3 yolo_cpu_12m", "ours", "yolo_cpu_12m", 16),
            Contestant("ultralytics YOLOv8n", "ultralytics", "yolov8n.yaml", 16)]


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
    return cmd + (["--quick"] if quick else [])


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a contestant process: ``threads`` OpenMP/MKL threads, offline ultralytics."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), YOLO_OFFLINE="1")
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_detection(dataset_dir: Path, split: str, budget_s: float, image_size: int, threads: int,
                  out_dir: Path, device: str, quick: bool, side_by_side: bool = False, seed: int = 0) -> list[dict]:
    """Train and score every detection contestant; one result dict each (see module docstring).

    ``side_by_side`` starts all contestants at once (each with ``threads`` threads: give them
    one each on a 2-core machine), otherwise they run one after another. ``seed`` goes to every
    contestant (our ``trainer.seed``: initialisation, data order and augmentation; ultralytics'
    ``seed=``), so repeat runs with other seeds show how much of a gap is run-to-run noise.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    missing = ultralytics_missing()
    jobs, results = [], {}
    for c in contestants(device):
        folder = out_dir / c.model.replace(".yaml", "")
        cmd = _worker_command(c, Path(dataset_dir), split, budget_s, image_size, threads, folder, device, quick, seed)
        base = {"name": c.name, "family": "detection", "budget_s": float(budget_s), "steps": None, "epochs": None,
                "img_per_s": None, "map50": None, "map50_95": None, "command": shlex.join(cmd), "skipped": None}
        if c.kind == "ultralytics" and missing:
            results[c.name] = {**base, "skipped": missing}
            print(f"[peers] {c.name}: skipped: {missing}", flush=True)
            continue
        jobs.append((c, folder, cmd, base))
    running = []
    for c, folder, cmd, base in jobs:
        folder.mkdir(parents=True, exist_ok=True)
        log = open(folder / "worker.log", "w")
        print(f"[peers] start {c.name}: {shlex.join(cmd)}", flush=True)
        proc = subprocess.Popen(cmd, env=thread_env(threads), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        running.append((c, folder, proc, log, base))
        if not side_by_side:
            proc.wait()
    for c, folder, proc, log, base in running:
        code = proc.wait()
        log.close()
        result_file = folder / "result.json"
        if code != 0 or not result_file.is_file():
            tail = (folder / "worker.log").read_text(errors="replace").strip().splitlines()[-3:]
            results[c.name] = {**base, "skipped": f"failed (exit {code}): {' | '.join(tail)}"}
            print(f"[peers] {c.name}: FAILED, see {folder / 'worker.log'}", flush=True)
            continue
        results[c.name] = {**base, **json.loads(result_file.read_text())}
        print(f"[peers] {c.name}: mAP50 {results[c.name]['map50']:.4f}", flush=True)
    return [results[c.name] for c in contestants(device) if c.name in results]


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
    print(f"{log_prefix}$ {shlex.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def ours_commands(a: argparse.Namespace, run: Path) -> tuple[list[str], list[str]]:
    """The fashion-train and fashion-eval command lines of our contestant (run folder ``run``)."""
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
    evaluate = [sys.executable, "-m", "fashionvision.cli.eval", f"ckpt={run}", f"split={a.split}",
                f"device={a.device}", f"output={run / 'eval'}", "workers=0", f"hydra.run.dir={run / 'eval'}"]
    return train, evaluate


def work_ours(a: argparse.Namespace) -> dict:
    """Our recipe: fashion-train for the budget, then fashion-eval on the split."""
    run = Path(a.out) / "run"
    shutil.rmtree(run, ignore_errors=True)
    train, evaluate = ours_commands(a, run)
    _run(train, "[ours] ")
    _run(evaluate, "[ours] ")
    summary = json.loads((run / "metrics.json").read_text())
    report = json.loads((run / "eval" / "metrics.json").read_text())
    from fashionvision.engine.checkpoint import load_checkpoint

    batch = int(load_checkpoint(run / "checkpoints" / "last.pt").get("trainer", {}).get("batch_size", a.batch))
    seconds = float(summary["train_seconds"])
    return {"steps": int(summary["steps"]), "epochs": int(summary["epochs"]),
            "img_per_s": round(summary["steps"] * batch / max(seconds, 1e-9), 2), "train_seconds": seconds,
            "map50": float(report["map50"]), "map50_95": float(report["map"]),
            "command": f"{shlex.join(train)} && {shlex.join(evaluate)}"}


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
    """``YOLO.train`` keywords: ultralytics' defaults but our budget, image size, batch, device and seed."""
    out = Path(a.out)
    args = dict(data=str(data_yaml), epochs=1000, time=a.budget / 3600.0, imgsz=a.image_size, batch=a.batch,
                workers=0 if a.threads == 1 else min(a.threads, 8), device=a.device.replace("cuda:", "").replace("cuda", "0"),
                plots=False, amp=not a.device == "cpu", val=False, pretrained=False, project=str(out), name="train",
                exist_ok=True, seed=a.seed, verbose=False)
    if a.quick:
        args.update(batch=2, fraction=0.01, mosaic=0.0)
    return args


def work_ultralytics(a: argparse.Namespace) -> dict:
    """An ultralytics model from its YAML (no weights), its defaults, our budget and image size."""
    import torch

    torch.set_num_threads(a.threads)
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
    weights = Path(trainer.last if Path(trainer.last).is_file() else trainer.best)
    best = YOLO(str(weights))
    predictions = []
    for path, _ in split_images(Path(a.dataset), a.split):
        r = best.predict(str(path), imgsz=a.image_size, conf=EVAL_CONF, iou=EVAL_IOU, max_det=MAX_DET,
                         device=args["device"], verbose=False)[0]
        predictions.append((r.boxes.xyxy.cpu().numpy(), r.boxes.conf.cpu().numpy(), r.boxes.cls.cpu().numpy()))
    scores = score_boxes(Path(a.dataset), a.split, predictions)
    call = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return {"steps": steps, "epochs": epochs, "img_per_s": round(steps * args["batch"] / max(seconds, 1e-9), 2),
            "train_seconds": round(seconds, 1), "map50": scores["map50"], "map50_95": scores["map50_95"],
            "command": f"YOLO({a.model!r}).train({call})"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="one detection contestant (run by scripts/benchmark_peers.py)")
    p.add_argument("kind", choices=["ours", "ultralytics"])
    for name in ("model", "dataset", "split", "device", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--budget", type=float, required=True)
    for name in ("image-size", "threads", "batch"):
        p.add_argument(f"--{name}", type=int, required=True)
    p.add_argument("--seed", type=int, default=0, help="our trainer.seed and ultralytics' seed")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    result = work_ours(a) if a.kind == "ours" else work_ultralytics(a)
    (Path(a.out) / "result.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
