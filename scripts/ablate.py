"""Side-by-side ablations of the CPU recipes (issue 9): variants at once, one torch thread each.

    python scripts/ablate.py NAME_A "override ..." NAME_B "override ..." \
        [--experiment yolo_cpu_12m] [--budget 12m] [--group R1] [--out benchmarks/ablations_cpu.json]

Each variant is ``fashion-train experiment=EXPERIMENT trainer.max_time=BUDGET <overrides>`` in its
own process with ``OMP_NUM_THREADS=1``, the variants of one call at the same time (two on a
2-core machine: each gets one core, so they share the machine alike). Each is scored by the
run's final validation (our evaluator on the val split; the test split is kept for the final
benchmark): mAP50 and mAP50-95 for a detector, mIoU and pixel accuracy for a segmenter.
Each result (command, steps, epochs, training seconds, scores) is appended to ``--out``.

``--collect NAME=RUN_DIR ...`` records runs that were started by hand the same way (their
command is read back from the run's ``.hydra/overrides.yaml``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATASET = "data/converted/ccp-416"
SCORES = ("map50", "map", "miou", "pixel_acc")


def one_thread_env() -> dict:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = "1"
    env.setdefault("PYTHONPATH", str(ROOT / "src"))
    return env


def result_of(name: str, run: Path, group: str, beside: list[str]) -> dict:
    """One JSON entry from a finished run folder (its overrides, steps and final validation)."""
    train = json.loads((run / "metrics.json").read_text())
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    final = train["final"]
    entry = {"name": name, "group": group, "side_by_side_with": beside, "threads": 1,
             "command": "OMP_NUM_THREADS=1 fashion-train " + " ".join(shlex.quote(o) for o in overrides),
             "eval_split": "val", "scored_by": "final validation of the run",
             "steps": train["steps"], "epochs": train["epochs"], "train_seconds": train["train_seconds"]}
    entry.update({k: round(float(final[k]), 4) for k in SCORES if k in final})
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variants", nargs="*", help="NAME OVERRIDES pairs")
    parser.add_argument("--budget", default="12m")
    parser.add_argument("--experiment", default="yolo_cpu_12m")
    parser.add_argument("--group", default="", help="a label for this side-by-side group")
    parser.add_argument("--collect", nargs="*", default=[], metavar="NAME=RUN_DIR")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "ablations_cpu.json"))
    args = parser.parse_args()
    env = one_thread_env()
    finished: list[tuple[str, Path]] = [(n, Path(d)) for n, d in (c.split("=", 1) for c in args.collect)]
    procs = []
    for name, overrides in zip(args.variants[0::2], args.variants[1::2]):
        run = ROOT / "runs" / "ablations" / name
        cmd = [sys.executable, "-m", "fashionvision.cli.train", f"experiment={args.experiment}",
               f"dataset.path={DATASET}", f"trainer.max_time={args.budget}", *shlex.split(overrides),
               f"hydra.run.dir={run}", "trainer.overwrite=true"]
        run.parent.mkdir(parents=True, exist_ok=True)
        log = open(run.parent / f"{name}.log", "w")
        procs.append((name, run, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)))
    for name, run, proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"{name}: training failed, see runs/ablations/{name}.log")
        finished.append((name, run))
    names = [n for n, _ in finished]
    results = [result_of(n, run, args.group, [m for m in names if m != n]) for n, run in finished]
    for r in results:
        print(f"{r['name']:28s} steps {r['steps']:5d}  " + "  ".join(f"{k} {r[k]:.4f}" for k in SCORES if k in r))
    out = Path(args.out)
    existing = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    existing["runs"].extend(results)
    out.write_text(json.dumps(existing, indent=2) + "\n")


if __name__ == "__main__":
    main()
