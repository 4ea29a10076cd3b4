"""Side-by-side ablations of the CPU U-Net recipe (issue 9): two variants at once, one thread each.

    python scripts/ablate_seg.py NAME_A "override ..." NAME_B "override ..." [--budget 3m] [--split val]

Each variant is ``fashion-train experiment=unet_cpu_10m trainer.max_time=BUDGET <overrides>`` in
its own process with ``OMP_NUM_THREADS=1``, then ``fashion-eval`` on ``--split`` (default val:
recipes are chosen on the validation split, the test split is kept for the final benchmark).
Each result (command, steps, epochs, mIoU, pixel accuracy) is appended to
``benchmarks/ablations_unet_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASET = "data/converted/ccp-416"


def one_thread_env() -> dict:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = "1"
    env.setdefault("PYTHONPATH", str(ROOT / "src"))
    return env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="+", help="NAME OVERRIDES pairs")
    parser.add_argument("--budget", default="3m")
    parser.add_argument("--split", default="val")
    parser.add_argument("--experiment", default="unet_cpu_10m")
    parser.add_argument("--no-eval", action="store_true",
                        help="score with the run's final validation (the same evaluator on the val split) "
                             "instead of a separate fashion-eval process")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "ablations_unet_cpu.json"))
    args = parser.parse_args()
    pairs = list(zip(args.variants[0::2], args.variants[1::2]))
    env = one_thread_env()
    procs = []
    for name, overrides in pairs:
        run = ROOT / "runs" / "ablations" / name
        cmd = [sys.executable, "-m", "fashionvision.cli.train", f"experiment={args.experiment}",
               f"dataset.path={DATASET}", f"trainer.max_time={args.budget}", *shlex.split(overrides),
               f"hydra.run.dir={run}"]
        run.parent.mkdir(parents=True, exist_ok=True)
        log = open(run.parent / f"{name}.log", "w")
        procs.append((name, overrides, run, cmd, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)))
    started = time.time()
    results = []
    for name, overrides, run, cmd, proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"{name}: training failed, see runs/ablations/{name}.log")
    evals = []
    for name, overrides, run, cmd, proc in procs if not args.no_eval else []:
        ecmd = [sys.executable, "-m", "fashionvision.cli.eval", f"ckpt={run}", f"split={args.split}",
                f"dataset={DATASET}", "workers=0", f"output={run}/eval_{args.split}", f"hydra.run.dir={run}/eval_{args.split}"]
        evals.append((ecmd, subprocess.Popen(ecmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)))
    for k, (name, overrides, run, cmd, _) in enumerate(procs):
        train = json.loads((run / "metrics.json").read_text())
        if args.no_eval:
            score = train["final"]
        else:
            ecmd, proc = evals[k]
            if proc.wait() != 0:
                raise SystemExit(f"{name}: evaluation failed: {' '.join(ecmd)}")
            score = json.loads((run / f"eval_{args.split}" / "metrics.json").read_text())
        results.append({"name": name, "overrides": overrides, "budget": args.budget, "threads": 1,
                        "side_by_side_with": [n for n, *_ in procs if n != name],
                        "command": "OMP_NUM_THREADS=1 fashion-train " + " ".join(shlex.quote(c) for c in cmd[3:]),
                        "eval_split": "val" if args.no_eval else args.split,
                        "scored_by": "final validation of the run" if args.no_eval else "fashion-eval", "steps": train["steps"], "epochs": train["epochs"],
                        "train_seconds": train["train_seconds"], "miou": round(score["miou"], 4),
                        "pixel_acc": round(score["pixel_acc"], 4)})
        print(f"{name:28s} steps {train['steps']:4d}  mIoU {score['miou']:.4f}  pixacc {score['pixel_acc']:.4f}")
    out = Path(args.out)
    existing = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    existing["runs"].extend(results)
    out.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"{time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
