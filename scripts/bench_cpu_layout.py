"""Time the forward and backward pass of a CPU recipe's network in both memory layouts,
NCHW (contiguous) and channels-last, under the recipe's bf16 autocast or in float32 (``--amp none``,
what the trainer falls back to on a CPU without bf16 units; results in ``benchmarks/README.md``).

    python scripts/bench_cpu_layout.py [--experiment yolo_cpu_12m] [--threads 1] [--batch 16] \
        [--height 256 --width 192] [--repeats 10] [--amp bf16|none] [--out benchmarks/cpu_layout_yolo.json]

The network is the experiment's own (``model.*`` of the composed config, CCP's 56 box classes
for the detector, 59 mask classes for a U-Net), fed a random batch of the recipe's training
shape (the detector trains on 256x192 portraits). The loss is the mean of the outputs: the
layout changes the convolutions, not the loss, whose share of the step is small. Run it on a
quiet machine; it writes one JSON and prints one line per layout.
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

from benchmark_peers import commit, machine, milliseconds  # noqa: E402

from fashionvision.cli._hydra import compose  # noqa: E402
from fashionvision.families import build_model  # noqa: E402

CLASSES = {"yolo": 56, "unet": 59}  # CCP converted: box classes (classes.txt), mask classes


def step_ms(model_cfg: dict, batch: int, height: int, width: int, channels_last: bool, repeats: int,
            amp: str = "bf16") -> float:
    """Median ms of one forward + backward pass of a fresh network in one layout."""
    torch.manual_seed(0)
    model = build_model(model_cfg, CLASSES[model_cfg["name"]]).train()
    images = torch.randn(batch, 3, height, width)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            outputs = model(images)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            loss = sum(o.float().mean() for o in outputs)
        loss.backward()

    return milliseconds(step, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default="yolo_cpu_12m")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--amp", choices=("bf16", "none"), default="bf16",
                   help="bf16 autocast (the recipe) or float32 (the fallback on CPUs without bf16 units)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model_cfg = compose("train", [f"experiment={a.experiment}"])["model"]
    results = {}
    for name, layout in (("nchw", False), ("channels_last", True)):
        results[f"{name}_ms"] = round(step_ms(model_cfg, a.batch, a.height, a.width, layout, a.repeats, a.amp), 1)
        print(f"{a.experiment} {name}: {results[f'{name}_ms']} ms a forward + backward pass "
              f"(batch {a.batch}, {a.height}x{a.width}, {a.amp if a.amp == 'bf16' else 'float32'}, "
              f"{a.threads} thread(s))")
    results["speedup"] = round(results["nchw_ms"] / results["channels_last_ms"], 2)
    print(f"channels-last speed-up: {results['speedup']}x")
    if a.out:
        argv = " ".join(sys.argv[1:])
        report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "commit": commit(), "machine": machine(), "command": f"python scripts/bench_cpu_layout.py {argv}",
                  "experiment": a.experiment, "threads": a.threads, "batch": a.batch,
                  "shape": [a.height, a.width], "repeats": a.repeats, "amp": a.amp, "results": results}
        a.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
