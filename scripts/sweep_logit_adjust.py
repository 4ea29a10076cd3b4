"""Score trained segmenters at several logit-adjustment strengths (issue 9, round 7).

    python scripts/sweep_logit_adjust.py RUN_DIR [RUN_DIR ...] [--split val] \
        [--taus 0,0.1,0.2,0.25,0.3,0.4] [--dataset data/converted/ccp-416] \
        [--out benchmarks/logit_adjust_cpu.json] [--tta-flip] [--tta-scales 0.875,1,1.125]

The training is untouched: each checkpoint is evaluated by our evaluator (mIoU at the original
resolution) once per ``tau``, through the same decision rule ``fashion-eval`` uses
(``model.logit_adjust=tau``: the argmax of ``logits - tau * log(prior)``, the prior being each
class's share of the dataset's training pixels). Pick ``tau`` on the val split; the test split
is for the final benchmark. Writes one JSON (each run's mIoU per ``tau`` and the mean over the
runs) and prints a table. ``--tta-flip`` scores each ``tau`` a second time with flip test-time
augmentation (``model.tta_flip``; keys ``"<tau>+flip"``); ``--tta-scales 0.875,1,1.125`` scores
everything again with multi-scale test-time augmentation (``model.tta_scales``; keys ``...+scales``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str:
    out = subprocess.run(["git", "describe", "--always", "--dirty=+dirty"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def sweep(run: Path, dataset: str, split: str, taus: list[float], flips: tuple[bool, ...] = (False,),
          scales: list[float] | None = None) -> dict[str, float]:
    """mIoU of one checkpoint at each ``tau`` and flip setting (the network runs once per pair);
    with ``scales``, each pair again with multi-scale TTA (``model.tta_scales``, keys ``...+scales``)."""
    from fashionvision.engine.loaders import build_loader
    from fashionvision.families import build_task
    from fashionvision.inference.loading import load_for_inference

    device = torch.device("cpu")
    task, model, _ = load_for_inference(run, device=device, dataset_path=dataset)
    loader = build_loader(task.build_dataset(split, train=False), 8, 0, task.collate, pin_memory=False)
    scores = {}
    for scale_set in (None, scales) if scales else (None,):
        for flip in flips:
            for tau in taus:
                adjusted = build_task({**task.model_cfg, "logit_adjust": tau, "tta_flip": flip,
                                       "tta_scales": scale_set}, task.data)
                key = f"{tau:g}" + ("+flip" if flip else "") + ("+scales" if scale_set else "")
                scores[key] = round(float(adjusted.evaluate(model, loader, device)["miou"]), 4)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders or checkpoints of trained segmenters")
    parser.add_argument("--split", default="val")
    parser.add_argument("--taus", default="0,0.1,0.2,0.25,0.3,0.4")
    parser.add_argument("--dataset", default=str(ROOT / "data" / "converted" / "ccp-416"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "logit_adjust_cpu.json"))
    parser.add_argument("--tta-flip", action="store_true", help="also score each tau with flip test-time augmentation")
    parser.add_argument("--tta-scales", default=None,
                        help="e.g. 0.875,1,1.125: also score everything with these multi-scale TTA ratios")
    args = parser.parse_args()
    taus = [float(t) for t in args.taus.split(",")]
    flips = (False, True) if args.tta_flip else (False,)
    scales = [float(v) for v in args.tta_scales.split(",")] if args.tta_scales else None
    rows = []
    for run in args.runs:
        scores = sweep(Path(run), args.dataset, args.split, taus, flips, scales)
        rows.append({"run": str(run), "miou": scores})
        print(f"{Path(run).name[:28]:28s}", " ".join(f"{v:.4f}" for v in scores.values()), flush=True)
    mean = {key: round(sum(r["miou"][key] for r in rows) / len(rows), 4) for key in rows[0]["miou"]}
    print(f"{'mean':28s}", " ".join(f"{v:.4f}" for v in mean.values()))
    report = {"date": datetime.date.today().isoformat(), "commit": commit(), "dataset": args.dataset,
              "split": args.split, "taus": taus, "threads": torch.get_num_threads(),
              "command": "python scripts/sweep_logit_adjust.py " + " ".join(args.runs)
                         + f" --split {args.split} --taus {args.taus}" + (" --tta-flip" if args.tta_flip else "")
                         + (f" --tta-scales {args.tta_scales}" if args.tta_scales else ""),
              "runs": rows, "mean": mean}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
