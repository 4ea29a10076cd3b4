"""Score finished segmentation pairs of the peer benchmark with and without flip test-time
augmentation (issue 9, round 8), and with multi-scale TTA on top (round 9).

    python scripts/score_tta_flip.py runs/peers/TIMESTAMP [...] [--split test] [--tau 0.25] \
        [--dataset data/converted/ccp-416] [--out benchmarks/tta_flip_cpu_test.json] \
        [--tta-scales 0.875,1,1.125]

Each argument is a folder written by ``scripts/benchmark_peers.py --family seg`` (``seg/ours``:
our run folder, ``seg/smp_loop/smp_unet.pt``: the plain loop's weights). The weights are not
touched: both contestants are scored by our evaluator on the same images, once with the plain
forward pass and once with ``model.tta_flip`` (the mean of the logits of each image and of its
mirror image). Ours decides with logit adjustment ``--tau`` (the recipe's 0.25; checkpoints
trained before round 7 store 0), the loop with the plain argmax. ``--tta-scales`` adds a third
scoring of both, flip plus ``model.tta_scales`` (keys ``ours_tta_scales``, ``loop_tta_scales``).
Writes one JSON and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from sweep_logit_adjust import commit  # noqa: E402  (the scripts folder is on the path from here)


def score_pair(folder: Path, dataset: str, split: str, tau: float, loop_encoder: str = "mobilenet_v2",
               scales: list[float] | None = None) -> dict:
    """mIoU of ours and of the loop in one benchmark folder, without and with flip TTA (and with
    flip plus multi-scale TTA at ``scales``).

    Ours goes through :func:`sweep_logit_adjust.sweep` (the same decision rule fashion-eval uses),
    the loop through the benchmark's own scorer, at our run's image size."""
    from fashionvision.engine.checkpoint import load_checkpoint, resolve_checkpoint
    from peers.segmentation import score_state_dict
    from sweep_logit_adjust import sweep

    ours = sweep(folder / "seg" / "ours", dataset, split, [tau], (False, True), scales)
    row = {"folder": str(folder), "ours": ours[f"{tau:g}"], "ours_tta_flip": ours[f"{tau:g}+flip"]}
    if scales:
        row["ours_tta_scales"] = ours[f"{tau:g}+flip+scales"]
    image_size = load_checkpoint(resolve_checkpoint(folder / "seg" / "ours"))["config"]["model"]["image_size"]
    variants = {"loop": (False, None), "loop_tta_flip": (True, None)}
    if scales:
        variants["loop_tta_scales"] = (True, scales)
    for key, (flip, scale_set) in variants.items():
        score = score_state_dict(folder / "seg" / "smp_loop" / "smp_unet.pt", Path(dataset), split, loop_encoder,
                                 image_size, "cpu", None, tta_flip=flip, tta_scales=scale_set)
        row[key] = round(float(score["miou"]), 4)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", help="benchmark_peers.py output folders (runs/peers/<timestamp>)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--tau", type=float, default=0.25, help="our logit adjustment (model.logit_adjust)")
    parser.add_argument("--dataset", default=str(ROOT / "data" / "converted" / "ccp-416"))
    parser.add_argument("--loop-encoder", default="mobilenet_v2", help="the plain loop's smp encoder")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "tta_flip_cpu_test.json"))
    parser.add_argument("--tta-scales", default=None,
                        help="e.g. 0.875,1,1.125: also score both with flip plus these multi-scale TTA ratios")
    args = parser.parse_args()
    scales = [float(v) for v in args.tta_scales.split(",")] if args.tta_scales else None
    keys = ["ours", "ours_tta_flip", "loop", "loop_tta_flip"] + (["ours_tta_scales", "loop_tta_scales"] if scales else [])
    rows = []
    print(f"{'folder':28s} " + " ".join(f"{k:>16s}" for k in keys))
    for folder in args.folders:
        row = score_pair(Path(folder), args.dataset, args.split, args.tau, args.loop_encoder, scales)
        rows.append(row)
        print(f"{Path(folder).name[:28]:28s} " + " ".join(f"{row[k]:16.4f}" for k in keys), flush=True)
    mean = {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in keys}
    def ratio(a: str, b: str) -> float | None:
        return round(mean[a] / mean[b], 3) if mean[b] > 0 else None

    ratios = {"plain_vs_plain": ratio("ours", "loop"), "flip_vs_plain": ratio("ours_tta_flip", "loop"),
              "flip_vs_flip": ratio("ours_tta_flip", "loop_tta_flip")}
    if scales:
        ratios.update({"scales_vs_plain": ratio("ours_tta_scales", "loop"),
                       "scales_vs_scales": ratio("ours_tta_scales", "loop_tta_scales")})
    print(f"{'mean':28s} " + " ".join(f"{mean[k]:16.4f}" for k in keys), f"ratios {ratios}")
    report = {"date": datetime.date.today().isoformat(), "commit": commit(), "dataset": args.dataset,
              "split": args.split, "tau": args.tau, "tta_scales": scales, "threads": torch.get_num_threads(),
              "command": "python scripts/score_tta_flip.py " + " ".join(args.folders)
                         + f" --split {args.split} --tau {args.tau:g}"
                         + (f" --tta-scales {args.tta_scales}" if scales else ""),
              "pairs": rows, "mean": mean, "ratio_of_means": ratios}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
