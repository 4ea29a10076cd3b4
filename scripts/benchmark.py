#!/usr/bin/env python
"""Training and inference speed of the project's models, in one run.

For each model (``yolo`` and ``unet`` with a resnet50 encoder by default) it prints and
writes to ``benchmarks/<device>_<time>.json``:

* **bare step**: img/s of forward + backward + optimizer step on a batch already on the
  device (bf16 autocast, channels_last), and the share of the GPU's dense bf16 peak, with
  forward FLOPs counted by ``torch.utils.flop_counter`` and a step counted as 3x forward;
* **end to end**: img/s of the real training loop (the engine's ``Trainer``: loader, decoding
  cache, augmentation, EMA) on a converted CCP folder, and its ratio to the bare step;
* **whole loop**: img/s of ``Trainer.fit()`` as a user runs it, validation after every epoch and
  checkpoint writes included (setup excluded), its ratio to the bare step, and the seconds that
  went to validating and checkpointing;
* **inference**: forward img/s (and TFLOP/s) at batch 1 and batch 32.

    python scripts/benchmark.py                      # on the GPU, real sizes
    python scripts/benchmark.py --device cpu --quick # tiny settings, a smoke test of the script

Peak numbers are NVIDIA's datasheet dense (no sparsity) BF16 tensor-core figures; pass
``--peak-tflops`` for another GPU or a measured peak (targets.md uses ~790 for the H200).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent

# Dense BF16 tensor TFLOP/s, from NVIDIA's product datasheets (H100/H200 SXM: 1979 with
# sparsity, 989 dense). Longest name first: "H100 PCIe" must win over "H100".
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,
    "H200": 989.0,
    "GH200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
}

MODELS = {"yolo": ["model=yolo", "anchors=coco"], "unet": ["model=unet", "model.encoder=resnet50"]}


def peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "unknown for CPUs (pass --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_BF16_TFLOPS[key], f"NVIDIA datasheet, dense BF16, {key}"
    return None, f"'{name}' not in the table (pass --peak-tflops)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def prepare_data(args) -> Path:
    """A converted CCP folder: --data, else the default one, else converted now into a temp folder."""
    from fashionvision.data.converted import dataset_ready

    for candidate in (args.data, os.environ.get("FASHION_CONVERTED_DIR", "data/converted") + "/ccp"):
        if candidate and dataset_ready(candidate):
            return Path(candidate)
    from fashionvision.convert import get_converter

    shared = Path(os.environ.get("FASHION_DATA_DIR", REPO.parent / "shared" / "data"))
    source = Path(args.source) if args.source else next(
        (p for p in (shared / "ccp-416", shared / "ccp", Path("data/ccp")) if p.is_dir()), None)
    if source is None:
        sys.exit("no converted CCP folder (--data) and no CCP source (--source) to convert")
    out = Path(tempfile.mkdtemp(prefix="fv-bench-")) / "ccp"
    print(f"converting {source} -> {out}", file=sys.stderr)
    get_converter("ccp")(source, out, limit=16 if args.quick else None, workers=4, progress_bar=False)
    return out


def bare_step_and_inference(task, args, device: torch.device, peak: float | None) -> dict:
    """Bare training step and inference speed on one real batch already on the device."""
    from torch.utils.flop_counter import FlopCounterMode

    from fashionvision.engine.loaders import to_device
    from fashionvision.engine.schedule import build_optimizer

    amp = device.type == "cuda" and args.amp == "bf16"
    cl = device.type == "cuda"
    dataset = task.build_dataset("train", train=True, limit=args.batch, cache=False)
    items = [dataset[i % len(dataset)] for i in range(args.batch)]
    batch = to_device(task.collate(items), device, channels_last=cl)
    model = task.build_model().to(device)
    if cl:
        model.to(memory_format=torch.channels_last)
    train_model = torch.compile(model) if args.compile else model
    optimizer = build_optimizer(model, "sgd", 1e-3, 5e-4)
    x = batch["images"].float() / 255.0

    model.eval()
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=amp), FlopCounterMode(display=False) as fc:
        model(x[:1])
    fwd_flops = fc.get_total_flops()  # per image

    def step() -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            loss = sum(task.compute_losses(train_model, batch).values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    train_ips = args.batch / timed(step, device, args.warmup, args.steps)
    result = {"batch": args.batch, "image_size": args.image_size, "amp": "bf16" if amp else "none",
              "channels_last": cl, "compile": args.compile,
              "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
              "fwd_gflop_per_img": fwd_flops / 1e9, "train_img_s": train_ips,
              "train_tflops": 3 * fwd_flops * train_ips / 1e12}
    result["train_peak_share"] = result["train_tflops"] / peak if peak else None

    model.eval()
    for bs in (1, args.infer_batch):
        xb = x[:1].expand(bs, -1, -1, -1).contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)

        def infer() -> None:
            with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=amp):
                train_model(xb)

        ips = bs / timed(infer, device, args.warmup, args.steps)
        result[f"infer_b{bs}_img_s"] = ips
        result[f"infer_b{bs}_tflops"] = fwd_flops * ips / 1e12
        result[f"infer_b{bs}_peak_share"] = fwd_flops * ips / 1e12 / peak if peak else None
    return result


def bench_model(name: str, args, device: torch.device, data: Path, peak: float | None) -> dict:
    from fashionvision.cli._hydra import compose
    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.families import build_task
    from fashionvision.engine.trainer import Trainer

    overrides = [*MODELS[name], f"dataset.path={data}", f"model.image_size={args.image_size}"]
    if args.quick and name == "yolo":
        overrides.append("model.width=0.0625")
    cfg = compose("train", overrides)
    task = build_task(cfg["model"], ConvertedDataset.open(cfg["dataset"]["path"]), cfg.get("augment"), cfg.get("anchors"))
    result = {"model": name, "overrides": overrides, **bare_step_and_inference(task, args, device, peak)}
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the bare-step model is gone; the loop builds its own

    # the real loop: Trainer setup + whole epochs; the first epoch (cache filling, warm-up) is dropped
    trainer_cfg = {**cfg["trainer"], "device": str(device), "batch_size": args.batch, "workers": args.workers,
                   "amp": args.amp, "compile": args.compile, "limit_images": args.e2e_images,
                   "log_images": 0, "deterministic": False}
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(task, trainer_cfg, Path(run), cfg)
        trainer.setup()
        speeds = []
        for _ in range(args.e2e_epochs):
            speeds.append(trainer.train_one_epoch()["img_per_s"])
            trainer.epoch += 1
            trainer.batch_in_epoch = 0
        trainer.logger.close()
    result["e2e_img_s"] = max(speeds[1:] or speeds)
    result["e2e_vs_bare"] = result["e2e_img_s"] / result["train_img_s"]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    result.update(whole_loop(task, cfg, {**trainer_cfg, "epochs": args.loop_epochs, "val_every": 1}, device))
    result["loop_vs_bare"] = result["loop_img_s"] / result["train_img_s"]
    return result


def _timed_method(obj, name: str, totals: dict) -> None:
    """Wrap ``obj.name`` (if it exists) so that its calls and seconds add up in ``totals[name]``."""
    method = getattr(obj, name, None)
    if method is None:
        return
    totals[name] = [0, 0.0]

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            totals[name][0] += 1
            totals[name][1] += time.perf_counter() - started

    setattr(obj, name, wrapper)


def whole_loop(task, cfg: dict, trainer_cfg: dict, device: torch.device) -> dict:
    """img/s of ``Trainer.fit()`` (validation every epoch, checkpoints), setup excluded.

    The public methods the loop goes through are timed by wrapping them on the instances:
    ``Trainer.setup`` and ``Trainer.save`` and the validation hook's ``evaluate`` (what every
    validation of the loop calls); one that is never called (or no longer exists) is reported as
    None. Columns of ``results.csv`` named ``*seconds`` are summed over the epochs as well.
    """
    import csv

    from fashionvision.engine.trainer import Trainer

    totals: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(task, trainer_cfg, Path(run), cfg)
        for name in ("setup", "save"):
            _timed_method(trainer, name, totals)
        _timed_method(trainer.validation, "evaluate", totals)
        sync(device)
        started = time.perf_counter()
        trainer.fit()
        sync(device)
        fit_seconds = time.perf_counter() - started
        summary = json.loads((Path(run) / "metrics.json").read_text())
        columns: dict[str, float] = {}
        results = Path(run) / "results.csv"
        if results.is_file():
            with open(results, newline="", encoding="utf-8") as handle:
                for row in csv.DictReader(handle):
                    for key, value in row.items():
                        if key and key.endswith("seconds") and value not in (None, ""):
                            columns[key] = columns.get(key, 0.0) + float(value)
    setup_seconds = totals.get("setup", [0, 0.0])[1]
    loop_seconds = max(fit_seconds - setup_seconds, 1e-9)
    images = int(summary["steps"]) * int(trainer_cfg["batch_size"]) * int(trainer_cfg.get("accumulate", 1))

    def seconds(name: str) -> float | None:
        calls, spent = totals.get(name, (0, 0.0))
        return round(spent, 3) if calls else None

    # what is neither an epoch (results.csv "seconds": training + validation) nor a checkpoint:
    # the results.png drawing, TensorBoard flushes, the final metrics (None without the column)
    other = (loop_seconds - columns["seconds"] - (seconds("save") or 0.0)) if "seconds" in columns else None
    return {"loop_epochs": int(summary["epochs"]), "loop_steps": int(summary["steps"]),
            "loop_other_seconds": None if other is None else round(other, 3),
            "loop_img_s": images / loop_seconds, "loop_seconds": round(loop_seconds, 3),
            "loop_setup_seconds": round(setup_seconds, 3), "loop_validate_seconds": seconds("evaluate"),
            "loop_checkpoint_seconds": seconds("save"),
            "loop_results_csv_seconds": {k: round(v, 3) for k, v in columns.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--infer-batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=416)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--amp", default="bf16", choices=["bf16", "none"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--e2e-epochs", type=int, default=3)
    parser.add_argument("--e2e-images", type=int, default=None, help="limit the training split")
    parser.add_argument("--loop-epochs", type=int, default=3,
                        help="epochs of the whole loop (Trainer.fit: validation and checkpoints included)")
    parser.add_argument("--data", help="converted CCP folder for the end-to-end loop")
    parser.add_argument("--source", help="CCP source to convert when no converted folder exists")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's bf16 peak (overrides the table)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, not the speed")
    parser.add_argument("--out", default=str(REPO / "benchmarks"))
    args = parser.parse_args()
    if args.quick:
        args.batch, args.infer_batch, args.image_size, args.steps, args.warmup = 2, 2, 64, 2, 1
        args.e2e_epochs, args.e2e_images, args.workers, args.loop_epochs = 2, 4, 0, 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but no CUDA GPU is visible")
    peak, peak_source = peak_tflops(device, args.peak_tflops)
    data = prepare_data(args)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = {"device": gpu, "torch": torch.__version__, "peak_bf16_tflops": peak, "peak_source": peak_source,
              "quick": args.quick, "data": str(data), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "models": []}
    try:
        for name in args.models:
            report["models"].append(bench_model(name, args, device, data, peak))
    finally:
        if data.parent.name.startswith("fv-bench-"):  # converted here: remove it again
            shutil.rmtree(data.parent, ignore_errors=True)
    for result in report["models"]:
        name = result["model"]
        share = f"{result['train_peak_share']:.0%}" if result["train_peak_share"] is not None else "n/a"
        print(f"{name:5s} fwd {result['fwd_gflop_per_img']:.1f} GFLOP/img | train {result['train_img_s']:.0f} img/s, "
              f"{result['train_tflops']:.1f} TFLOP/s ({share} of peak) | end-to-end {result['e2e_img_s']:.0f} img/s "
              f"({result['e2e_vs_bare']:.0%} of bare) | whole loop {result['loop_img_s']:.0f} img/s "
              f"({result['loop_vs_bare']:.0%} of bare; validation {result['loop_validate_seconds']} s, "
              f"checkpoints {result['loop_checkpoint_seconds']} s, other {result['loop_other_seconds']} s) | infer b1 {result['infer_b1_img_s']:.0f}, "
              f"b{args.infer_batch} {result[f'infer_b{args.infer_batch}_img_s']:.0f} img/s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
    path = out / f"{slug}_{time.strftime('%Y%m%d-%H%M%S')}{'_quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
