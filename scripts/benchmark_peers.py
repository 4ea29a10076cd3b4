#!/usr/bin/env python
"""Our recipes against the peers on equal compute, scored by our evaluator (issue 9).

On one converted dataset and split, with the same wall-clock budget, image size, thread count
and device for every contestant, it trains from scratch

* detection (``scripts/peers/detection.py``): our YOLOv3 recipe against ultralytics YOLOv8n on
  a CPU (YOLOv8s and YOLOv3u on a GPU);
* segmentation (``scripts/peers/segmentation.py``, when present): our U-Net against a plain
  segmentation-models-pytorch loop with the same encoder;

then scores every contestant with **our** evaluator on the same images and writes one JSON
(machine, torch version, commit, date, budgets, per-contestant figures and commands) and
prints a markdown table for benchmarks/README.md::

    python scripts/benchmark_peers.py --family det --dataset data/converted/ccp-416 --split test \\
        --budget-det 12m --threads 1 --side-by-side --device cpu --out benchmarks/peers_cpu_ccp416_det.json

Fair runs: ``--side-by-side`` starts a family's contestants at once, each with ``--threads``
threads (one each on a 2-core machine); without it they run one after another (then use a
quiet machine). Families always run one after the other. The peers need the optional extra
``pip install -e ".[peers]"``; without it they are listed as skipped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "src"))

from fashionvision.engine.config import parse_duration  # noqa: E402

FAMILIES = {"det": ("detection", "run_detection"), "seg": ("segmentation", "run_segmentation")}


def default_image_size(family: str, device: str) -> int:
    """The recipes' sizes: 256 px on a CPU (yolo_cpu_12m, unet_cpu_10m), 416 on a GPU."""
    return 416 if device.startswith("cuda") else 256


def machine() -> dict:
    """What the numbers were measured on."""
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def milliseconds(fn, repeats: int, warmups: int = 3) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` calls, after ``warmups`` uncounted ones."""
    import time

    for _ in range(warmups):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def host_probe(threads: int, repeats: int = 5) -> float:
    """Median milliseconds of one forward and backward pass of a fixed small network (ResNet-18,
    float32, 8 images of 128 px) on the CPU with ``threads`` threads.

    A yardstick of the host at that moment: a shared VM's speed varies by the hour (round 11's
    detector seed 1 ran both contestants at half the image rate of round 3), so each JSON says
    how fast the machine was when it started and when it ended. The thread count is restored.
    """
    import torch
    from torchvision.models import resnet18

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        net = resnet18(num_classes=10)
        images = torch.randn(8, 3, 128, 128, generator=generator)
        # the first pass warms up the kernels: not counted
        return round(milliseconds(lambda: net(images).square().mean().backward(), repeats, warmups=1), 1)
    finally:
        torch.set_num_threads(before)


def commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def load_family(key: str):
    """The family's ``run_*`` function, or a reason why it is not available."""
    module, func = FAMILIES[key]
    if not (REPO / "scripts" / "peers" / f"{module}.py").is_file():
        return None, f"scripts/peers/{module}.py is not there"
    return getattr(importlib.import_module(f"peers.{module}"), func), None


def run_family(key: str, args: argparse.Namespace, budget_s: float, image_size: int) -> list[dict]:
    func, reason = load_family(key)
    family = FAMILIES[key][0]
    if func is None:
        print(f"[peers] {family}: skipped: {reason}", flush=True)
        return [{"name": f"{family} (all contestants)", "family": family, "budget_s": budget_s, "steps": None,
                 "epochs": None, "img_per_s": None, "command": None, "skipped": reason}]
    kwargs = dict(dataset_dir=Path(args.dataset), split=args.split, budget_s=budget_s, image_size=image_size,
                  threads=args.threads, out_dir=Path(args.work) / key, device=args.device, quick=args.quick)
    if "seed" in inspect.signature(func).parameters:
        kwargs["seed"] = args.seed
    elif args.seed:
        print(f"[peers] {family}: its runner has no seed option; it uses its default", flush=True)
    if "side_by_side" in inspect.signature(func).parameters:
        kwargs["side_by_side"] = args.side_by_side
    elif args.side_by_side:
        print(f"[peers] {family}: its runner has no side_by_side option; contestants run as it decides", flush=True)
    return func(**kwargs)


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(results: list[dict], info: dict) -> str:
    """The benchmarks/README.md table: budget, epochs / steps, img/s and the family's two scores per contestant."""
    probe = info.get("host_probe_ms") or {}
    speed = (f", host probe {probe['start']:.0f} / {probe['end']:.0f} ms at start / end"
             if probe.get("start") is not None and probe.get("end") is not None else "")
    lines = [f"Machine: {info['machine']['cpu']} ({info['machine']['cpu_count']} cores"
             f"{', ' + info['machine']['gpu'] if 'gpu' in info['machine'] else ''}), {info['threads']} thread(s) "
             f"per contestant, {'side by side' if info['side_by_side'] else 'one after another'}, "
             f"split '{info['split']}' of {info['dataset']}, torch {info['machine']['torch']}{speed}.", "",
             "| family | contestant | budget | epochs | steps | img/s | mAP50 / mIoU | mAP50-95 / pixel acc |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        first = r.get("map50", r.get("miou"))
        second = r.get("map50_95", r.get("pixel_accuracy"))
        if r.get("skipped"):
            lines.append(f"| {r['family']} | {r['name']} | {r['budget_s']:.0f} s | skipped: {r['skipped']} | | | | |")
            continue
        lines.append(f"| {r['family']} | {r['name']} | {r['budget_s']:.0f} s | {_fmt(r.get('epochs'))} | "
                     f"{_fmt(r.get('steps'))} | {_fmt(r.get('img_per_s'), 1)} | {_fmt(first)} | {_fmt(second)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", choices=["det", "seg", "both"], default="both")
    p.add_argument("--dataset", default="data/converted/ccp-416", help="a converted dataset folder")
    p.add_argument("--split", default="test", help="the split every contestant is scored on")
    p.add_argument("--budget-det", default="12m", help="wall-clock training budget per detector (180s, 12m, ...)")
    p.add_argument("--budget-seg", default="10m", help="wall-clock training budget per segmenter")
    p.add_argument("--image-size", type=int, default=None, help="for every contestant (default: 256 CPU, 416 GPU)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per contestant")
    p.add_argument("--side-by-side", action="store_true", help="a family's contestants at the same time")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", default=None, help="the JSON (default benchmarks/peers_<device>_<date>.json)")
    p.add_argument("--work", default=None, help="run folders (default runs/peers/<date>)")
    p.add_argument("--seed", type=int, default=0,
                   help="every contestant's seed: our trainer.seed, ultralytics' seed=, the smp loop's "
                        "initialisation and data order")
    p.add_argument("--quick", action="store_true", help="tiny models and data: a smoke test of the script")
    args = p.parse_args(argv)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d_%H%M%S")
    args.work = args.work or str(REPO / "runs" / "peers" / stamp)
    out = Path(args.out or REPO / "benchmarks" / f"peers_{args.device.split(':')[0]}_{stamp}.json")
    if not Path(args.dataset).joinpath("train.txt").is_file():
        print(f"error: --dataset {args.dataset} is not a converted dataset (no train.txt); run fashion-convert first",
              file=sys.stderr)
        return 2
    budgets = {"det": parse_duration(args.budget_det), "seg": parse_duration(args.budget_seg)}
    keys = ["det", "seg"] if args.family == "both" else [args.family]
    started = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    probe_repeats = 1 if args.quick else 5
    probe_before = host_probe(args.threads, probe_repeats)
    results, sizes = [], {}
    for key in keys:
        sizes[key] = args.image_size or default_image_size(key, args.device)
        results += run_family(key, args, budgets[key], sizes[key])
    info = {"date": started.isoformat(timespec="seconds"), "commit": commit(), "machine": machine(),
            "dataset": str(args.dataset), "split": args.split, "device": args.device, "threads": args.threads,
            "seed": args.seed,
            "side_by_side": args.side_by_side, "budgets_s": {k: budgets[k] for k in keys},
            "image_sizes": sizes, "quick": args.quick,
            "load_average_1_5_15_min": {"start": load_before,
                                        "end": os.getloadavg() if hasattr(os, "getloadavg") else None},
            "host_probe_ms": {"start": probe_before, "end": host_probe(args.threads, probe_repeats),
                              "what": f"median ms of a ResNet-18 forward+backward (8 x 128 px, float32) on the "
                                      f"CPU, {args.threads} thread(s): higher = a slower host at that moment"},
            "command": " ".join(["python", "scripts/benchmark_peers.py", *(argv if argv is not None else sys.argv[1:])])}
    report = {**info, "results": results}
    table = markdown(results, info)
    report["markdown"] = table
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(table)
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
