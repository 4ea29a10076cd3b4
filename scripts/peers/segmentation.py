"""Segmentation contestants of the peer benchmark (issue 9): our U-Net recipe against the plain
segmentation-models-pytorch loop with the same encoder, same budget, same images, same evaluator.

``run_segmentation(...)`` trains both (side by side, or one after another with ``--sequential``),
each in its own process with ``threads`` torch threads, then scores both with OUR evaluator
(:meth:`fashionvision.tasks.segmentation.SegmentationTask.evaluate`: mIoU over the classes
present, pixel accuracy, logits resized to each image's original resolution) on ``split``.

* ``ours``: ``fashion-train experiment=unet_cpu_10m`` (``unet_ccp_130s`` on a GPU) with the
  budget and image size given, then ``fashion-eval``.
* ``smp_loop``: :func:`plain_smp_loop`, what a user writes in 40 lines (targets.md): images
  resized to a long side of ``image_size`` and zero-padded (after ImageNet mean/std) to a
  multiple of 32 (CCP: 256x192), ``F.cross_entropy`` over the mask labels, horizontal flip
  with p = 0.5, AdamW 1e-3 with the LR cosine over the wall-clock budget, batch 8, from
  scratch, no validation. Its weights are saved, wrapped in our ``UNet`` and scored like ours.

Run alone (until ``scripts/benchmark_peers.py`` drives it)::

    python scripts/peers/segmentation.py --dataset data/converted/ccp-416 --budget 600 \
        --image-size 256 --threads 1 --out runs/peers_seg
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUICK_IMAGES = 4  # quick mode: train on this many images (a smoke test of the whole pipeline)


def _env(threads: int) -> dict:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def experiment_for(device: str) -> str:
    return "unet_ccp_130s" if device.startswith("cuda") else "unet_cpu_10m"


def _experiment_model(experiment: str) -> dict:
    import yaml

    cfg = yaml.safe_load((ROOT / "src" / "fashionvision" / "configs" / "experiment" / f"{experiment}.yaml").read_text())
    return dict(cfg["model"])


def experiment_encoder(experiment: str) -> str:
    """The encoder our recipe uses, so that the loop gets the same one."""
    return str(_experiment_model(experiment)["encoder"])


def experiment_tta_scales(experiment: str) -> list[float] | None:
    """Our recipe's multi-scale TTA ratios (``model.tta_scales``), so that both contestants can
    also be scored with them; None when the recipe has none."""
    scales = _experiment_model(experiment).get("tta_scales")
    return [float(v) for v in scales] if scales and len(scales) > 1 else None


# --- the plain loop ------------------------------------------------------------------------------
def plain_smp_loop(dataset_dir: Path, encoder: str, image_size: int, budget_s: float, out_path: Path,
                   device: str = "cpu", batch_size: int = 8, limit: int | None = None, seed: int = 0) -> dict:
    """Train ``smp.Unet(encoder)`` from scratch for ``budget_s`` seconds; save its state_dict."""
    import cv2
    import numpy as np
    import segmentation_models_pytorch as smp
    import torch
    import torch.nn.functional as F

    from fashionvision.data.converted import ConvertedDataset

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = ConvertedDataset.open(dataset_dir)  # only for the split list and the file paths
    pairs = [(data.image_path(r), data.mask_path(r)) for r in data.records("train")[:limit]]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    def load(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = cv2.cvtColor(cv2.imread(str(pairs[i][0])), cv2.COLOR_BGR2RGB)
        mask = cv2.imread(str(pairs[i][1]), cv2.IMREAD_UNCHANGED)
        h, w = mask.shape
        s = image_size / max(h, w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        if rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        x = (torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255 - mean) / std
        y = torch.from_numpy(mask.astype(np.int64))
        ph, pw = -size[1] % 32, -size[0] % 32   # centred zero padding to a multiple of 32
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        return F.pad(x, pad), F.pad(y, pad, value=255)

    model = smp.Unet(encoder, encoder_weights=None, classes=len(data.mask_classes)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    steps, images, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < budget_s:
        order = rng.permutation(len(pairs))
        for k in range(0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size):
            elapsed = time.perf_counter() - started
            if elapsed >= budget_s:
                break
            for group in optimizer.param_groups:
                group["lr"] = 1e-3 * 0.5 * (1 + math.cos(math.pi * elapsed / budget_s))
            batch = [load(int(i)) for i in order[k:k + batch_size]]
            x = torch.stack([b[0] for b in batch]).to(device)
            y = torch.stack([b[1] for b in batch]).to(device)
            loss = F.cross_entropy(model(x), y, ignore_index=255)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps, images = steps + 1, images + len(batch)
    seconds = time.perf_counter() - started
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_path)
    return {"steps": steps, "epochs": images / len(pairs), "img_per_s": images / seconds,
            "train_seconds": seconds, "batch_size": batch_size, "encoder": encoder}


def score_state_dict(weights: Path, dataset_dir: Path, split: str, encoder: str, image_size: int,
                     device: str, output_dir: Path | None, tta_flip: bool = False,
                     tta_scales: list[float] | None = None) -> dict:
    """Our evaluator on a bare smp Unet state_dict, through our ``UNet`` wrapper and task
    (plain argmax; ``tta_flip`` averages each image's logits with its mirror's and ``tta_scales``
    with those of the photo at other sizes, as ``model.tta_flip`` / ``model.tta_scales`` do for ours)."""
    import torch

    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.engine.build import build_loader
    from fashionvision.families import family
    from fashionvision.families.unet.model import load_weights

    task = family("unet")({"name": "unet", "encoder": encoder, "encoder_weights": None,
                             "image_size": image_size, "tta_flip": tta_flip, "tta_scales": tta_scales},
                            ConvertedDataset.open(dataset_dir))
    model = task.build_model()
    skipped = load_weights(model, weights)
    if skipped:
        raise RuntimeError(f"{weights}: {len(skipped)} tensors did not fit our UNet wrapper: {skipped[:3]}")
    model.to(device).eval()
    loader = build_loader(task.build_dataset(split, train=False), 8, 0, task.collate)
    with torch.no_grad():
        return task.evaluate(model, loader, torch.device(device), output_dir)


# --- running the contestants --------------------------------------------------------------------
def _ours_commands(dataset_dir: Path, split: str, budget_s: float, image_size: int, run: Path,
                   device: str, quick: bool, seed: int = 0) -> tuple[list[str], list[str]]:
    train = [sys.executable, "-m", "fashionvision.cli.train", f"experiment={experiment_for(device)}",
             f"dataset.path={dataset_dir}", f"trainer.max_time={budget_s:g}s",
             f"model.image_size={image_size}", f"trainer.device={device}", f"hydra.run.dir={run}"]
    if seed:
        train.append(f"trainer.seed={seed}")
    if quick:
        train += [f"trainer.limit_images={QUICK_IMAGES}", "trainer.batch_size=2", "trainer.workers=0",
                  "trainer.cache_images=false"]
    evaluate = [sys.executable, "-m", "fashionvision.cli.eval", f"ckpt={run}", f"split={split}",
                f"dataset={dataset_dir}", f"device={device}", "workers=0", f"output={run}/eval_{split}",
                f"hydra.run.dir={run}/eval_{split}"]
    return train, evaluate


def _decoding_variants(evaluate: list[str], run: Path, split: str,
                       scales: list[float] | None = None) -> dict[str, tuple[Path, list[str]]]:
    """The evaluation command again with test-time augmentation forced: none, the flip alone and
    (with ``scales``) the flip plus those scales, so that both contestants are also compared on
    equal decoding (``miou_no_tta`` / ``miou_tta_flip`` / ``miou_tta_flip_scales``):
    ``{key: (report folder, command)}``."""
    variants = {"miou_no_tta": ["tta_flip=false", "tta_scales=[1]"],
                "miou_tta_flip": ["tta_flip=true", "tta_scales=[1]"]}
    if scales:
        variants["miou_tta_flip_scales"] = ["tta_flip=true", "tta_scales=[" + ",".join(f"{v:g}" for v in scales) + "]"]
    out = {}
    for key, flags in variants.items():
        folder = run / f"eval_{split}_{key.removeprefix('miou_')}"
        command = [arg for arg in evaluate if not arg.startswith(("output=", "hydra.run.dir="))]
        out[key] = (folder, command + [f"output={folder}", f"hydra.run.dir={folder}", *flags])
    return out


def _loop_command(dataset_dir: Path, split: str, budget_s: float, image_size: int, run: Path,
                  device: str, quick: bool, encoder: str, seed: int = 0,
                  scales: list[float] | None = None) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--contestant", "smp_loop",
           "--dataset", str(dataset_dir), "--split", split, "--budget", f"{budget_s:g}",
           "--image-size", str(image_size), "--device", device, "--encoder", encoder, "--out", str(run)]
    if seed:
        cmd += ["--seed", str(seed)]
    if scales:
        cmd += ["--tta-scales", ",".join(f"{v:g}" for v in scales)]
    return cmd + (["--quick"] if quick else [])


def _shown(cmd: list[str], threads: int) -> str:
    return f"OMP_NUM_THREADS={threads} " + " ".join(shlex.quote(c) for c in cmd[1:])


def run_segmentation(dataset_dir: Path, split: str, budget_s: float, image_size: int, threads: int,
                     out_dir: Path, device: str, quick: bool, side_by_side: bool = True,
                     seed: int = 0) -> list[dict]:
    """Train and score our U-Net and the plain smp loop; one dict per contestant.

    ``side_by_side``: both at once (give each ``threads`` = cores / 2); otherwise ours first
    (training and scoring), then the loop, each with the whole machine.

    Keys: name, family, budget_s, steps, epochs, img_per_s, miou, pixel_accuracy, command,
    skipped (None, or why the contestant did not run). ``quick`` trains on a handful of
    images (a smoke test of the pipeline, not a measurement). ``seed`` goes to both (our
    ``trainer.seed``, the loop's initialisation and data order): repeat runs with other seeds
    show how much of a difference is run-to-run noise.
    """
    dataset_dir, out_dir = Path(dataset_dir).resolve(), Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    env = _env(threads)
    experiment = experiment_for(device)
    encoder = experiment_encoder(experiment)
    scales = experiment_tta_scales(experiment)
    ours_run, loop_run = out_dir / "ours", out_dir / "smp_loop"
    train, evaluate = _ours_commands(dataset_dir, split, budget_s, image_size, ours_run, device, quick, seed)
    loop = _loop_command(dataset_dir, split, budget_s, image_size, loop_run, device, quick, encoder, seed, scales)
    base = {"family": "segmentation", "budget_s": float(budget_s), "steps": None, "epochs": None,
            "img_per_s": None, "miou": None, "pixel_accuracy": None, "skipped": None}
    results = {"ours": {**base, "name": f"ours ({experiment}, {encoder})",
                        "command": _shown(train, threads) + " && " + _shown(evaluate, threads)},
               "smp_loop": {**base, "name": f"smp loop (Unet {encoder})", "command": _shown(loop, threads)}}
    logs = {name: open(out_dir / f"{name}.log", "w") for name in results}
    def start_loop() -> subprocess.Popen:
        return subprocess.Popen(loop, cwd=ROOT, env=env, stdout=logs["smp_loop"], stderr=subprocess.STDOUT)

    procs = {"ours": subprocess.Popen(train, cwd=ROOT, env=env, stdout=logs["ours"], stderr=subprocess.STDOUT)}
    if side_by_side:
        procs["smp_loop"] = start_loop()
    if procs["ours"].wait() == 0:  # score ours while the loop may still be scoring itself
        procs["ours"] = subprocess.Popen(evaluate, cwd=ROOT, env=env, stdout=logs["ours"], stderr=subprocess.STDOUT)
        code = procs["ours"].wait()
    else:
        code = procs["ours"].returncode
    if code != 0:
        results["ours"]["skipped"] = f"failed with exit code {code}, see {out_dir / 'ours.log'}"
    else:
        summary = json.loads((ours_run / "metrics.json").read_text())
        score = json.loads((ours_run / f"eval_{split}" / "metrics.json").read_text())
        import yaml

        batch = int(yaml.safe_load((ours_run / ".hydra" / "config.yaml").read_text())["trainer"]["batch_size"])
        results["ours"].update(steps=summary["steps"], epochs=summary["epochs"],
                               img_per_s=summary["steps"] * batch / max(summary["train_seconds"], 1e-9),
                               miou=score["miou"], pixel_accuracy=score["pixel_acc"])
        for key, (folder, command) in _decoding_variants(evaluate, ours_run, split, scales).items():
            if subprocess.run(command, cwd=ROOT, env=env, stdout=logs["ours"], stderr=subprocess.STDOUT).returncode == 0:
                results["ours"][key] = json.loads((folder / "metrics.json").read_text())["miou"]
    if not side_by_side:
        procs["smp_loop"] = start_loop()
    if procs["smp_loop"].wait() != 0:
        results["smp_loop"]["skipped"] = (f"failed with exit code {procs['smp_loop'].returncode}, "
                                          f"see {out_dir / 'smp_loop.log'}")
    else:
        results["smp_loop"].update(json.loads((loop_run / "result.json").read_text()))
    for handle in logs.values():
        handle.close()
    return list(results.values())


def _loop_main(args: argparse.Namespace) -> None:
    """One contestant process: train the plain loop, save, score with our evaluator."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    out = Path(args.out)
    trained = plain_smp_loop(Path(args.dataset), args.encoder, args.image_size, args.budget,
                             out / "smp_unet.pt", args.device, batch_size=2 if args.quick else 8,
                             limit=QUICK_IMAGES if args.quick else None, seed=args.seed)
    score = score_state_dict(out / "smp_unet.pt", Path(args.dataset), args.split, args.encoder,
                             args.image_size, args.device, out / f"eval_{args.split}")
    # the same weights with flip test-time augmentation, so that a recipe using it can be
    # compared with the loop on equal decoding too
    flipped = score_state_dict(out / "smp_unet.pt", Path(args.dataset), args.split, args.encoder,
                               args.image_size, args.device, None, tta_flip=True)
    result = {"steps": trained["steps"], "epochs": round(trained["epochs"], 3),
              "img_per_s": trained["img_per_s"], "miou": score["miou"], "pixel_accuracy": score["pixel_acc"],
              "miou_no_tta": score["miou"], "miou_tta_flip": flipped["miou"]}
    if args.tta_scales:  # and with the flip plus our recipe's scales
        scales = [float(v) for v in args.tta_scales.split(",")]
        result["miou_tta_flip_scales"] = score_state_dict(
            out / "smp_unet.pt", Path(args.dataset), args.split, args.encoder, args.image_size, args.device,
            None, tta_flip=True, tta_scales=scales)["miou"]
    (out / "result.json").write_text(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="data/converted/ccp-416")
    parser.add_argument("--split", default="test")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of training per contestant")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/peers_seg")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="both contestants' seed (our trainer.seed)")
    parser.add_argument("--sequential", action="store_true",
                        help="one contestant after the other (each with --threads), instead of side by side")
    parser.add_argument("--json", help="also write the results, machine and versions to this JSON file")
    parser.add_argument("--contestant", choices=["smp_loop"], help=argparse.SUPPRESS)
    parser.add_argument("--encoder", help=argparse.SUPPRESS)
    parser.add_argument("--tta-scales", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contestant == "smp_loop":
        _loop_main(args)
        return
    results = run_segmentation(Path(args.dataset), args.split, args.budget, args.image_size, args.threads,
                               Path(args.out), args.device, args.quick, side_by_side=not args.sequential,
                               seed=args.seed)
    print(json.dumps(results, indent=2))
    if args.json:
        report = {"benchmark": "segmentation peers (issue 9)", "dataset": args.dataset, "split": args.split,
                  "budget_s": args.budget, "image_size": args.image_size, "threads_per_contestant": args.threads,
                  "side_by_side": not args.sequential, "device": args.device, "seed": args.seed, **environment(),
                  "contestants": results}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


def environment() -> dict:
    """Machine, library versions and commit, for the benchmark JSON."""
    import platform

    import segmentation_models_pytorch as smp
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"machine": f"{cpu}, {os.cpu_count()} cores", "python": platform.python_version(),
            "torch": torch.__version__, "segmentation_models_pytorch": smp.__version__, "commit": commit}


if __name__ == "__main__":
    main()
