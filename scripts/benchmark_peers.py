#!/usr/bin/env python
"""Our recipes against the peers on equal compute, scored by our evaluator.

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
        --budget-det 12m --threads 1 --side-by-side --device cpu --seeds 1,2,3 \\
        --out benchmarks/peers_cpu_ccp416_det.json

Seeds and splits: every contestant runs once per seed of ``--seeds`` and is scored
on the val split and on ``--split``. Decisions are made on val only (which ultralytics
configuration is the peer's best, :func:`choose_compared`); the table reports ``--split``
(the test split) as mean, std, min and max over the seeds, and :func:`verdict` calls a ratio
a win only when the whole seed spread clears the target (1.5x). See ``docs/comparison.md``.

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
import math
import os
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "src"))

from fashionvision.engine.config import parse_duration  # noqa: E402
from peers.common import commit, spread  # noqa: E402

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

    A yardstick of the host at that moment: a shared VM's speed varies by the hour (one run can
    see both contestants at half the image rate of another; see ``benchmarks/HISTORY.md``), so
    each JSON says how fast the machine was when it started and when it ended. The thread count is restored.
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


def load_family(key: str):
    """The family's ``run_*`` function, or a reason why it is not available."""
    module, func = FAMILIES[key]
    if not (REPO / "scripts" / "peers" / f"{module}.py").is_file():
        return None, f"scripts/peers/{module}.py is not there"
    return getattr(importlib.import_module(f"peers.{module}"), func), None


def run_family(key: str, args: argparse.Namespace, budget_s: float, image_size: int,
               seed: int | None = None) -> list[dict]:
    """One family's contestants at one seed (``seed``, else ``args.seed``); each row gets ``seed``."""
    seed = args.seed if seed is None else seed
    func, reason = load_family(key)
    family = FAMILIES[key][0]
    if func is None:
        print(f"[peers] {family}: skipped: {reason}", flush=True)
        return [{"name": f"{family} (all contestants)", "family": family, "budget_s": budget_s, "steps": None,
                 "epochs": None, "img_per_s": None, "command": None, "skipped": reason}]
    kwargs = dict(dataset_dir=Path(args.dataset), split=args.split, budget_s=budget_s, image_size=image_size,
                  threads=args.threads, out_dir=Path(args.work) / key / f"seed{seed}", device=args.device,
                  quick=args.quick)
    parameters = inspect.signature(func).parameters
    if "seed" in parameters:
        kwargs["seed"] = seed
    elif seed:
        print(f"[peers] {family}: its runner has no seed option; it uses its default", flush=True)
    if "side_by_side" in parameters:
        kwargs["side_by_side"] = args.side_by_side
    elif args.side_by_side:
        print(f"[peers] {family}: its runner has no side_by_side option; contestants run as it decides", flush=True)
    if "peer_configs" in parameters and getattr(args, "peer_configs", None):
        kwargs["peer_configs"] = args.peer_configs
    return [{**row, "seed": seed} for row in func(**kwargs)]


# ----------------------------------------------------------------------------- over seeds
#: the figures summarised over seeds (those a row has)
FIGURES = ("map50", "map50_95", "val_map50", "val_map50_95", "miou", "miou_gt_classes", "pixel_accuracy",
           "val_miou", "val_miou_gt_classes", "val_pixel_accuracy", "ms_per_image", "val_ms_per_image",
           "miou_no_tta", "miou_tta_flip", "miou_tta_flip_scales", "img_per_s", "steps", "epochs")
#: per family: the headline figure of the final table and the val figure decisions are made on
HEADLINE = {"detection": ("map50", "val_map50"), "segmentation": ("miou", "val_miou")}
TARGET = 1.5


def aggregate(rows: list[dict]) -> list[dict]:
    """Rows of every seed -> one row per contestant (same family and name), first-seen order:
    its settings, ``seeds``, ``runs`` (each seed's figures) and for every figure of
    :data:`FIGURES` that some seed has a ``{mean, std, min, max, n}``."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row.get("family"), row.get("name")), []).append(row)
    out = []
    for (family, name), runs in groups.items():
        scored = [r for r in runs if not r.get("skipped")]
        first = dict(scored[0] if scored else runs[0])
        merged = {k: v for k, v in first.items() if k not in FIGURES and k != "seed"}
        merged.update(name=name, family=family, seeds=[r.get("seed") for r in runs],
                      skipped=None if scored else runs[0].get("skipped"),
                      runs=[{"seed": r.get("seed"), "skipped": r.get("skipped"),
                             **{k: r.get(k) for k in FIGURES if r.get(k) is not None}} for r in runs])
        for figure in FIGURES:
            summary = spread([r.get(figure) for r in scored])
            if summary is not None:  # a family's own figures only (no mIoU on a detector's row)
                merged[figure] = summary
        out.append(merged)
    return out


def _mean(row: dict, figure: str) -> float | None:
    value = row.get(figure)
    return value["mean"] if isinstance(value, dict) else value


def choose_compared(rows: list[dict]) -> dict[str, dict]:
    """Per family, ``{"ours": row, "peer": row}``: the peer row we compare with, chosen on val.

    Detection: of the ultralytics rows (every model and configuration), the one with the best
    mean val mAP50. Segmentation: the plain loop with our decoding (``compare_row``), so both
    sides decode alike; without it, the best peer row on val mIoU. Marks the chosen rows with
    ``compared: True``.
    """
    chosen = {}
    for family, (_, val_figure) in HEADLINE.items():
        ours = [r for r in rows if r.get("family") == family and r.get("kind") == "ours" and not r.get("skipped")
                and r.get("decoding", "own") == "own"]
        peers = [r for r in rows if r.get("family") == family and r.get("kind") not in (None, "ours")
                 and not r.get("skipped")]
        if not ours or not peers:
            continue
        preferred = [r for r in peers if r.get("compare_row")]
        peer = preferred[0] if preferred else max(peers, key=lambda r: _mean(r, val_figure) or 0.0)
        for row in rows:
            if row.get("family") == family:
                row["compared"] = row is ours[0] or row is peer
        chosen[family] = {"ours": ours[0], "peer": peer}
    return chosen


def verdict(ours: list[float], peer: list[float], target: float = TARGET) -> dict:
    """Whether ``ours`` leads ``peer`` by ``target`` (a ratio), given their values over seeds.

    The ratio of the means is reported with the range the seeds allow, from the lowest of ours
    over the highest of the peer's to the highest over the lowest. ``win`` only when even the
    low end clears the target, ``miss`` when even the high end falls short, otherwise
    ``within spread`` (the seed spread covers the target: not a win). Fewer than 3 seeds on
    either side is never a win (``too few seeds``).
    """
    ours, peer = [float(v) for v in ours], [float(v) for v in peer]
    if not ours or not peer:
        return {"ratio": None, "low": None, "high": None, "target": target, "verdict": "no data"}

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else (math.inf if a > 0 else 1.0)

    mean_ratio = ratio(sum(ours) / len(ours), sum(peer) / len(peer))
    low, high = ratio(min(ours), max(peer)), ratio(max(ours), min(peer))
    if min(len(ours), len(peer)) < 3:
        call = "too few seeds"
    elif low >= target - 1e-9:  # 0.15 / 0.1 is 1.4999999999999998 in floating point
        call = "win"
    elif high < target - 1e-9:
        call = "miss"
    else:
        call = "within spread"
    return {"ratio": mean_ratio, "low": low, "high": high, "target": target, "verdict": call,
            "seeds": [len(ours), len(peer)]}


def verdicts(rows: list[dict], target: float = TARGET) -> dict[str, dict]:
    """:func:`verdict` per family on the headline figure of the test split, ours vs the compared peer."""
    out = {}
    for family, pair in choose_compared(rows).items():
        figure = HEADLINE[family][0]
        values = {side: [run[figure] for run in row["runs"] if run.get(figure) is not None]
                  for side, row in pair.items()}
        out[family] = {"figure": figure, "ours": pair["ours"]["name"], "peer": pair["peer"]["name"],
                       **verdict(values["ours"], values["peer"], target)}
    return out


def _fmt(value, digits: int = 4) -> str:
    """A figure, or its seeds' ``mean ± std [min, max]``."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        if value.get("n", 1) == 1:
            return _fmt(value["mean"], digits)
        return (f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f} "
                f"[{value['min']:.{digits}f}, {value['max']:.{digits}f}]")
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(results: list[dict], info: dict) -> str:
    """The benchmarks/README.md table: budget, epochs / steps, img/s and the family's two scores per contestant."""
    probe = info.get("host_probe_ms") or {}
    speed = (f", host probe {probe['start']:.0f} / {probe['end']:.0f} ms at start / end"
             if probe.get("start") is not None and probe.get("end") is not None else "")
    seeds = info.get("seeds") or [info.get("seed", 0)]
    lines = [f"Machine: {info['machine']['cpu']} ({info['machine']['cpu_count']} cores"
             f"{', ' + info['machine']['gpu'] if 'gpu' in info['machine'] else ''}), {info['threads']} thread(s) "
             f"per contestant, {'side by side' if info['side_by_side'] else 'one after another'}, "
             f"split '{info['split']}' of {info['dataset']}, torch {info['machine']['torch']}{speed}; "
             f"seeds {', '.join(str(v) for v in seeds)} (mean ± std [min, max]); decisions on val, "
             f"figures of '{info['split']}'.", "",
             "| family | contestant | budget | epochs | steps | img/s | mAP50 / mIoU | mAP50-95 / pixel acc "
             "| val mAP50 / val mIoU | ms per photo |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        first = r.get("map50", r.get("miou"))
        second = r.get("map50_95", r.get("pixel_accuracy"))
        val = r.get("val_map50", r.get("val_miou"))
        name = r["name"] + (" **(compared)**" if r.get("compared") else "")
        if r.get("skipped"):
            lines.append(f"| {r['family']} | {name} | {r['budget_s']:.0f} s | skipped: {r['skipped']} | | | | | | |")
            continue
        lines.append(f"| {r['family']} | {name} | {r['budget_s']:.0f} s | {_fmt(r.get('epochs'), 1)} | "
                     f"{_fmt(r.get('steps'), 0)} | {_fmt(r.get('img_per_s'), 1)} | {_fmt(first)} | {_fmt(second)} | "
                     f"{_fmt(val)} | {_fmt(r.get('ms_per_image'), 1)} |")
    for family, v in (info.get("verdicts") or {}).items():
        if v.get("ratio") is None:
            continue
        lines.append(f"\n{family}: ours / peer on {v['figure']} = {v['ratio']:.2f}x (seed range "
                     f"{v['low']:.2f}x to {v['high']:.2f}x; target {v['target']:g}x): **{v['verdict']}**")
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
                        "initialisation and data order (one seed; see --seeds)")
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds, e.g. 1,2,3: every contestant runs once per seed and the "
                        "table shows mean, std, min and max (a verdict needs at least 3)")
    p.add_argument("--peer-configs", default=None,
                   help="the ultralytics configurations, comma-separated (default: sgd,adamw,auto, all "
                        "three in one invocation; the best on val is the compared row)")
    p.add_argument("--quick", action="store_true", help="tiny models and data: a smoke test of the script")
    args = p.parse_args(argv)
    seeds = [int(v) for v in args.seeds.split(",") if v.strip()] if args.seeds else [args.seed]
    if args.peer_configs:
        args.peer_configs = [v.strip() for v in args.peer_configs.split(",") if v.strip()]
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
    rows, sizes = [], {}
    for key in keys:
        sizes[key] = args.image_size or default_image_size(key, args.device)
        for seed in seeds:
            rows += run_family(key, args, budgets[key], sizes[key], seed)
    results = aggregate(rows)
    judged = verdicts(results)
    info = {"date": started.isoformat(timespec="seconds"), "commit": commit(), "machine": machine(),
            "dataset": str(args.dataset), "split": args.split, "val_split": "val", "device": args.device,
            "threads": args.threads, "seed": seeds[0], "seeds": seeds, "verdicts": judged,
            "side_by_side": args.side_by_side, "budgets_s": {k: budgets[k] for k in keys},
            "image_sizes": sizes, "quick": args.quick,
            "load_average_1_5_15_min": {"start": load_before,
                                        "end": os.getloadavg() if hasattr(os, "getloadavg") else None},
            "host_probe_ms": {"start": probe_before, "end": host_probe(args.threads, probe_repeats),
                              "what": f"median ms of a ResNet-18 forward+backward (8 x 128 px, float32) on the "
                                      f"CPU, {args.threads} thread(s): higher = a slower host at that moment"},
            "command": " ".join(["python", "scripts/benchmark_peers.py", *(argv if argv is not None else sys.argv[1:])])}
    report = {**info, "results": results, "per_seed": rows}
    table = markdown(results, info)
    report["markdown"] = table
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(table)
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
