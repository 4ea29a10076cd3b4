"""Segmentation contestants of the peer benchmark: our U-Net recipe against the plain
segmentation-models-pytorch loop with the same encoder, same budget, same images, same evaluator.

``run_segmentation(...)`` trains both (side by side, or one after another with ``--sequential``),
each in its own process with ``threads`` torch threads, then scores both with OUR evaluator
(:meth:`fashionvision.tasks.segmentation.SegmentationTask.evaluate`: the standard mIoU over the
classes in the ground truth or the predictions, ``miou_gt_classes`` beside it, pixel accuracy,
logits resized to each image's original resolution, inference ms per photo) on the val split
and on ``split``. Three rows (:func:`segmentation_rows`):

* ours with its own decoding (logit adjustment, flip, scales: ``model.logit_adjust``,
  ``model.tta_flip``, ``model.tta_scales`` of the recipe);
* the loop with plain argmax;
* the loop with **our** decoding: the same rule, its logit adjustment computed from the
  training masks the loop trained on, the flip and the scales. This is the row ours is
  compared with (the decoding is a free post-hoc rule the loop can use too; it costs each
  row the inference time shown beside it).

* ``ours``: ``fashion-train experiment=unet_cpu_10m`` (``unet_ccp_130s`` on a GPU) with the
  budget and image size given, then ``fashion-eval``.
* ``smp_loop``: :func:`plain_smp_loop`, what a user writes in 40 lines (targets.md): images
  resized to a long side of ``image_size`` and zero-padded (after ImageNet mean/std) to a
  multiple of 32 (CCP: 256x192), ``F.cross_entropy`` over the mask labels, horizontal flip
  with p = 0.5, AdamW 1e-3 with the LR cosine over the wall-clock budget, batch 8, from
  scratch, no validation. Its weights are saved, wrapped in our ``UNet`` and scored like ours.
  On a GPU it is the loop an smp user writes there: batch 16, a ``DataLoader`` with worker
  processes and pinned memory, channels-last, bf16 autocast.

Run alone (until ``scripts/benchmark_peers.py`` drives it)::

    python scripts/peers/segmentation.py --dataset data/converted/ccp-416 --budget 600 \
        --image-size 256 --threads 1 --out runs/peers_seg
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: the peers package

from peers.common import REPO as ROOT, commit, read_json, run_logged, set_torch_threads, shown, start  # noqa: E402

QUICK_IMAGES = 4  # quick mode: train on this many images (a smoke test of the whole pipeline)
VAL_SPLIT = "val"
#: what a row reports of each split it is scored on
ROW_FIGURES = ("miou", "miou_gt_classes", "pixel_accuracy", "ms_per_image")


def experiment_for(device: str) -> str:
    return "unet_ccp_130s" if device.startswith("cuda") else "unet_cpu_10m"


def _experiment_model(experiment: str) -> dict:
    import yaml

    cfg = yaml.safe_load((ROOT / "src" / "fashionvision" / "configs" / "experiment" / f"{experiment}.yaml").read_text())
    return dict(cfg["model"])


def experiment_encoder(experiment: str) -> str:
    """The encoder our recipe uses, so that the loop gets the same one."""
    return str(_experiment_model(experiment)["encoder"])


def experiment_decoding(experiment: str) -> dict:
    """Our recipe's post-hoc decoding: ``{logit_adjust, tta_flip, tta_scales}`` (the keys of the
    ``model`` group), so that the loop can be scored with exactly the same rule."""
    model = _experiment_model(experiment)
    return {"logit_adjust": float(model.get("logit_adjust") or 0.0), "tta_flip": bool(model.get("tta_flip")),
            "tta_scales": experiment_tta_scales(experiment)}


def describe_decoding(decoding: dict) -> str:
    """``logit adjustment 0.25, flip, scales 0.875/1/1.125`` (``plain argmax`` when none)."""
    parts = []
    if decoding.get("logit_adjust"):
        parts.append(f"logit adjustment {decoding['logit_adjust']:g}")
    if decoding.get("tta_flip"):
        parts.append("flip")
    if decoding.get("tta_scales"):
        parts.append("scales " + "/".join(f"{v:g}" for v in decoding["tta_scales"]))
    return ", ".join(parts) or "plain argmax"


def experiment_tta_scales(experiment: str) -> list[float] | None:
    """Our recipe's multi-scale TTA ratios (``model.tta_scales``), so that both contestants can
    also be scored with them; None when the recipe has none."""
    scales = _experiment_model(experiment).get("tta_scales")
    return [float(v) for v in scales] if scales and len(scales) > 1 else None


# --- the plain loop ------------------------------------------------------------------------------
class LoopPairs:
    """The loop's training set: (image, mask) resized to a long side of ``image_size``, a
    horizontal flip with p = 0.5, ImageNet mean/std, centred zero padding to a multiple of 32.

    A plain ``torch.utils.data.Dataset``, so a ``DataLoader`` can run it in worker processes;
    the flip of item ``i`` in epoch ``e`` is drawn from ``(seed, e, i)``, the same in any worker.
    """

    def __init__(self, pairs: list[tuple[Path, Path]], image_size: int, seed: int = 0):
        self.pairs, self.image_size, self.seed, self.epoch = pairs, image_size, seed, 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        import cv2
        import numpy as np
        import torch
        import torch.nn.functional as F

        mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        image = cv2.cvtColor(cv2.imread(str(self.pairs[i][0])), cv2.COLOR_BGR2RGB)
        mask = cv2.imread(str(self.pairs[i][1]), cv2.IMREAD_UNCHANGED)
        h, w = mask.shape
        s = self.image_size / max(h, w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        if np.random.default_rng((self.seed, self.epoch, i)).random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        x = (torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255 - mean) / std
        y = torch.from_numpy(mask.astype(np.int64))
        ph, pw = -size[1] % 32, -size[0] % 32   # centred zero padding to a multiple of 32
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        return F.pad(x, pad), F.pad(y, pad, value=255)


def loop_settings(device: str, quick: bool = False) -> dict:
    """Batch, loader workers, pinned memory, channels-last and bf16 autocast of the loop: on a
    GPU what an smp user writes there (batch 16 as in targets.md, workers, pinned memory,
    channels-last, bf16); on a CPU the plain loop of targets.md (batch 8, loading in the
    contestant's one process, float32)."""
    if device.startswith("cuda"):
        return {"batch_size": 2 if quick else 16, "workers": min(8, max(1, (os.cpu_count() or 2) - 1)),
                "pin_memory": True, "channels_last": True, "bf16": True}
    return {"batch_size": 2 if quick else 8, "workers": 0, "pin_memory": False, "channels_last": False,
            "bf16": False}


def plain_smp_loop(dataset_dir: Path, encoder: str, image_size: int, budget_s: float, out_path: Path,
                   device: str = "cpu", batch_size: int | None = None, limit: int | None = None,
                   seed: int = 0, settings: dict | None = None) -> dict:
    """Train ``smp.Unet(encoder)`` from scratch for ``budget_s`` seconds; save its state_dict.

    ``settings`` (default :func:`loop_settings` for ``device``): ``batch_size``, ``workers``,
    ``pin_memory``, ``channels_last``, ``bf16``.
    """
    import segmentation_models_pytorch as smp
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from fashionvision.data.converted import ConvertedDataset

    settings = {**loop_settings(device), **(settings or {})}
    if batch_size is not None:
        settings["batch_size"] = batch_size
    batch_size = int(settings["batch_size"])
    torch.manual_seed(seed)
    data = ConvertedDataset.open(dataset_dir)  # only for the split list and the file paths
    pairs = [(data.image_path(r), data.mask_path(r)) for r in data.records("train")[:limit]]
    dataset = LoopPairs(pairs, image_size, seed)
    workers = int(settings["workers"])
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(pairs) >= batch_size,
                        num_workers=workers, pin_memory=bool(settings["pin_memory"]),
                        persistent_workers=False, generator=torch.Generator().manual_seed(seed))
    model = smp.Unet(encoder, encoder_weights=None, classes=len(data.mask_classes)).to(device)
    memory_format = torch.channels_last if settings["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    steps, images, epoch, started = 0, 0, 0, time.perf_counter()
    while time.perf_counter() - started < budget_s:
        dataset.epoch = epoch  # read by the workers started for this epoch's iteration
        for x, y in loader:
            elapsed = time.perf_counter() - started
            if elapsed >= budget_s:
                break
            for group in optimizer.param_groups:
                group["lr"] = 1e-3 * 0.5 * (1 + math.cos(math.pi * elapsed / budget_s))
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bool(settings["bf16"])):
                loss = F.cross_entropy(model(x), y, ignore_index=255)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps, images = steps + 1, images + len(x)
        epoch += 1
    if device_type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.to(memory_format=torch.contiguous_format).state_dict(), out_path)
    return {"steps": steps, "epochs": images / len(pairs), "img_per_s": images / seconds,
            "train_seconds": seconds, "batch_size": batch_size, "encoder": encoder, "loop": settings}


def score_state_dict(weights: Path, dataset_dir: Path, split: str, encoder: str, image_size: int,
                     device: str, output_dir: Path | None, tta_flip: bool = False,
                     tta_scales: list[float] | None = None, logit_adjust: float = 0.0) -> dict:
    """Our evaluator on a bare smp Unet state_dict, through our ``UNet`` wrapper and task
    (plain argmax; ``tta_flip`` averages each image's logits with its mirror's and ``tta_scales``
    with those of the photo at other sizes, as ``model.tta_flip`` / ``model.tta_scales`` do for
    ours; ``logit_adjust`` subtracts ``tau * log(prior)`` before the argmax, the prior counted on
    the training masks of ``dataset_dir``, the ones the loop trained on, as ``model.logit_adjust``)."""
    import torch

    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.engine.loaders import build_loader
    from fashionvision.families import family
    from fashionvision.families.unet.model import load_weights

    task = family("unet")({"name": "unet", "encoder": encoder, "encoder_weights": None,
                             "image_size": image_size, "tta_flip": tta_flip, "tta_scales": tta_scales,
                             "logit_adjust": float(logit_adjust)},
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


def _figures(report: dict) -> dict:
    """A metrics.json of our evaluator -> the row figures of one split."""
    return {"miou": report.get("miou"), "miou_gt_classes": report.get("miou_gt_classes"),
            "pixel_accuracy": report.get("pixel_acc"), "ms_per_image": report.get("ms_per_image")}


def segmentation_rows(experiment: str, encoder: str, decoding: dict, ours: dict | None, loop: dict | None,
                      base: dict, split: str = "test") -> list[dict]:
    """The table rows of the segmentation pair.

    Args:
        experiment, encoder, decoding: our recipe, its encoder and its post-hoc decoding
            (:func:`experiment_decoding`).
        ours: ``{"train": {steps, epochs, img_per_s}, "scores": {"own": {split: metrics, "val": ...},
            ...}}`` or None (failed; ``base["skipped"]`` says why).
        loop: the loop worker's ``result.json``: the same with ``scores`` ``plain`` and ``ours``.
        base: keys every row has (``family``, ``budget_s``, ``command`` ...).

    Returns:
        ours with its own decoding, the loop with plain argmax, the loop with our decoding
        (``compare_row``: the one ours is compared with); each with the ``split`` figures
        (``miou``, ``miou_gt_classes``, ``pixel_accuracy``, ``ms_per_image``) and the val ones
        (``val_*``), plus the other decodings' mIoU where they were scored.
    """
    said = describe_decoding(decoding)
    specs = [("ours", ours, "own", f"ours ({experiment}, {encoder}): {said}", False),
             ("peer", loop, "plain", f"smp loop (Unet {encoder}): plain argmax", False),
             ("peer", loop, "ours", f"smp loop (Unet {encoder}) + our decoding: {said}", True)]
    rows = []
    for kind, result, key, name, compare in specs:
        row = {**{k: v for k, v in base.items() if k not in ("ours", "peer")}, **base.get(kind, {}),
               "name": name, "kind": kind, "decoding": key if kind == "peer" else "own",
               "compare_row": compare, **{f: None for f in ROW_FIGURES}, **{f"val_{f}": None for f in ROW_FIGURES}}
        if result is None or key not in (result.get("scores") or {}):
            row["skipped"] = row.get("skipped") or "not scored"
            rows.append(row)
            continue
        train = result.get("train") or {}
        row.update({k: train.get(k) for k in ("steps", "epochs", "img_per_s")})
        scores = result["scores"][key]
        row.update(_figures(scores.get(split) or {}))
        row.update({f"val_{k}": v for k, v in _figures(scores.get(VAL_SPLIT) or {}).items()})
        for other, values in (result.get("variants") or {}).items():
            row[other] = values
        rows.append(row)
    return rows


def run_segmentation(dataset_dir: Path, split: str, budget_s: float, image_size: int, threads: int,
                     out_dir: Path, device: str, quick: bool, side_by_side: bool = True,
                     seed: int = 0) -> list[dict]:
    """Train and score our U-Net and the plain smp loop; the rows of :func:`segmentation_rows`.

    ``side_by_side``: both at once (give each ``threads`` = cores / 2); otherwise ours first
    (training and scoring), then the loop, each with the whole machine.

    ``quick`` trains on a handful of images (a smoke test of the pipeline, not a
    measurement). ``seed`` goes to both (our ``trainer.seed``, the loop's initialisation and
    data order): repeat runs with other seeds show how much of a difference is run-to-run noise.
    """
    dataset_dir, out_dir = Path(dataset_dir).resolve(), Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    experiment = experiment_for(device)
    encoder = experiment_encoder(experiment)
    decoding = experiment_decoding(experiment)
    scales = decoding["tta_scales"]
    ours_run, loop_run = out_dir / "ours", out_dir / "smp_loop"
    train, evaluate = _ours_commands(dataset_dir, split, budget_s, image_size, ours_run, device, quick, seed)
    _, evaluate_val = _ours_commands(dataset_dir, VAL_SPLIT, budget_s, image_size, ours_run, device, quick, seed)
    loop = _loop_command(dataset_dir, split, budget_s, image_size, loop_run, device, quick, encoder, seed, scales)
    base = {"family": "segmentation", "budget_s": float(budget_s), "steps": None, "epochs": None,
            "img_per_s": None, "skipped": None,
            "ours": {"command": shown(train, threads) + " && " + shown(evaluate, threads)},
            "peer": {"command": shown(loop, threads)}}
    logs = {"ours": out_dir / "ours.log", "smp_loop": out_dir / "smp_loop.log"}
    procs = {"ours": start(train, logs["ours"], threads)}
    if side_by_side:
        procs["smp_loop"] = start(loop, logs["smp_loop"], threads)
    ours_result = None
    code = procs["ours"].close()
    if code == 0:  # score ours while the loop may still be scoring itself
        code = run_logged(evaluate, logs["ours"], threads) or run_logged(evaluate_val, logs["ours"], threads)
    if code != 0:
        base["ours"]["skipped"] = f"failed with exit code {code}, see {logs['ours']}"
    else:
        summary = read_json(ours_run / "metrics.json")
        import yaml

        batch = int(yaml.safe_load((ours_run / ".hydra" / "config.yaml").read_text())["trainer"]["batch_size"])
        ours_result = {"train": {"steps": summary["steps"], "epochs": summary["epochs"],
                                 "img_per_s": summary["steps"] * batch / max(summary["train_seconds"], 1e-9)},
                       "scores": {"own": {split: read_json(ours_run / f"eval_{split}" / "metrics.json"),
                                          VAL_SPLIT: read_json(ours_run / f"eval_{VAL_SPLIT}" / "metrics.json")}},
                       "variants": {}}
        for key, (folder, command) in _decoding_variants(evaluate, ours_run, split, scales).items():
            if run_logged(command, logs["ours"], threads) == 0:
                ours_result["variants"][key] = read_json(folder / "metrics.json")["miou"]
    if not side_by_side:
        procs["smp_loop"] = start(loop, logs["smp_loop"], threads)
    loop_result = None
    if procs["smp_loop"].close() != 0:
        base["peer"]["skipped"] = (f"failed with exit code {procs['smp_loop'].process.returncode}, "
                                   f"see {logs['smp_loop']}")
    else:
        loop_result = read_json(loop_run / "result.json")
    return segmentation_rows(experiment, encoder, decoding, ours_result, loop_result, base, split)


def _loop_main(args: argparse.Namespace) -> None:
    """One contestant process: train the plain loop, save, score with our evaluator on val and
    on the split: plain argmax and our recipe's decoding (and the flip alone, the flip and the
    scales, for the record)."""
    set_torch_threads()
    out = Path(args.out)
    weights = out / "smp_unet.pt"
    settings = loop_settings(args.device, args.quick)
    trained = plain_smp_loop(Path(args.dataset), args.encoder, args.image_size, args.budget, weights,
                             args.device, limit=QUICK_IMAGES if args.quick else None, seed=args.seed,
                             settings=settings)
    decoding = experiment_decoding(experiment_for(args.device))
    if args.tta_scales:
        decoding["tta_scales"] = [float(v) for v in args.tta_scales.split(",")]

    def score(split: str, folder: Path | None = None, **rule) -> dict:
        return score_state_dict(weights, Path(args.dataset), split, args.encoder, args.image_size,
                                args.device, folder, **rule)

    # val first: the first scoring pays the one-time start-up costs, so the test split's
    # ms per photo are warm for both decodings
    scores = {"plain": {VAL_SPLIT: score(VAL_SPLIT)}, "ours": {VAL_SPLIT: score(VAL_SPLIT, **decoding)}}
    scores["plain"][args.split] = score(args.split, out / f"eval_{args.split}")
    scores["ours"][args.split] = score(args.split, out / f"eval_{args.split}_our_decoding", **decoding)
    variants = {"miou_no_tta": scores["plain"][args.split]["miou"],
                "miou_tta_flip": score(args.split, tta_flip=True)["miou"]}
    if decoding["tta_scales"]:
        variants["miou_tta_flip_scales"] = score(args.split, tta_flip=True, tta_scales=decoding["tta_scales"])["miou"]
    keep = ("miou", "miou_gt_classes", "miou_all", "pixel_acc", "ms_per_image", "images")
    result = {"train": {"steps": trained["steps"], "epochs": round(trained["epochs"], 3),
                        "img_per_s": trained["img_per_s"], "loop": trained["loop"]},
              "scores": {k: {split: {f: m.get(f) for f in keep} for split, m in v.items()} for k, v in scores.items()},
              "variants": variants, "decoding": decoding}
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
        report = {"benchmark": "segmentation peers", "dataset": args.dataset, "split": args.split,
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
    return {"machine": f"{cpu}, {os.cpu_count()} cores", "python": platform.python_version(),
            "torch": torch.__version__, "segmentation_models_pytorch": smp.__version__, "commit": commit()}


if __name__ == "__main__":
    main()
