"""Time the parts of one CPU training step of the U-Net recipe that the engine controls, the
earlier way ("before") and the engine's way ("after"): the optimizer step, the EMA update and
the cross-entropy (results in ``benchmarks/HISTORY.md``).

    python scripts/bench_step_parts.py [--threads 2] [--batch 8] [--crop 128] [--repeats 20] \
        [--out benchmarks/cpu_step_parts.json]

"before" is the plain per-tensor way, written out here as the reference:
torch's default (per-tensor) Nesterov SGD, a Python loop of ``mul_``/``add_`` per tensor for
the EMA, and ``F.cross_entropy`` on the 4-D channels-last logits. "after" calls the engine
itself: :func:`fashionvision.engine.schedule.build_optimizer` (fused on a CPU),
:class:`fashionvision.engine.ema.ModelEMA` and :func:`fashionvision.families.unet.losses.
cross_entropy`. The network is the recipe's (``experiment=unet_cpu_10m``: MobileNetV2 U-Net,
59 CCP classes, bf16 autocast, channels-last, 128-px patches, batch 8). The whole step is timed
both ways too. Run it on a quiet machine; it writes one JSON and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from benchmark_peers import commit, machine, milliseconds  # noqa: E402

from fashionvision.engine.ema import ModelEMA  # noqa: E402
from fashionvision.engine.schedule import build_optimizer, param_groups  # noqa: E402
from fashionvision.families import build_model  # noqa: E402
from fashionvision.families.unet.losses import cross_entropy  # noqa: E402

CLASSES = 59  # the mask classes of CCP (mask_classes.txt: "null" and 58 named ones)


def old_ema_update(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """The per-tensor EMA rule: a Python loop of ``mul_``/``add_`` per tensor (the "before" reference)."""
    source = model.state_dict()
    with torch.no_grad():
        for name, value in average.state_dict().items():
            new = source[name].detach()
            if value.dtype.is_floating_point:
                value.mul_(decay).add_(new.to(value.dtype), alpha=1.0 - decay)
            else:
                value.copy_(new)


def old_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the 4-D logits, the "before" reference (same value as the engine's)."""
    valid = (target != 255).sum().clamp(min=1)
    return F.cross_entropy(logits.float(), target, ignore_index=255, reduction="sum") / valid


def measure(threads: int, batch: int, crop: int, repeats: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model({"name": "unet", "encoder": "mobilenet_v2", "encoder_weights": None}, CLASSES)
    model = model.to(memory_format=torch.channels_last).train()
    images = torch.rand(batch, 3, crop, crop).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, CLASSES, (batch, crop, crop))
    target[:, : crop // 8] = 255  # some letterbox padding, as in real batches

    new_opt = build_optimizer(model, "sgd", 0.05, 5e-4, momentum=0.9)
    old_opt = torch.optim.SGD(param_groups(model, 5e-4), lr=0.05, momentum=0.9, nesterov=True)
    ema = ModelEMA(model, decay=0.9998, ramp=2000)
    old_average = copy.deepcopy(model)
    for param in model.parameters():
        param.grad = torch.randn_like(param) * 1e-3

    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images).detach()
    parts = {
        "optimizer_step": (lambda: old_opt.step(), lambda: new_opt.step()),
        "ema_update": (lambda: old_ema_update(old_average, model, 0.9), lambda: ema.update(model)),
    }

    def ce(function):
        def run():
            leaf = logits.clone().requires_grad_()
            function(leaf, target).backward()
        return run

    parts["cross_entropy_fwd_bwd"] = (ce(old_cross_entropy), ce(cross_entropy))

    def step(loss_fn, opt, ema_fn):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(images)
            loss = loss_fn(out, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema_fn()
        return run

    parts["whole_step"] = (step(old_cross_entropy, old_opt, lambda: old_ema_update(old_average, model, 0.9)),
                           step(cross_entropy, new_opt, lambda: ema.update(model)))
    results = {}
    for name, (before, after) in parts.items():
        # alternate so that a change of the machine's speed hits both alike
        b1, a1 = milliseconds(before, repeats), milliseconds(after, repeats)
        b2, a2 = milliseconds(before, repeats), milliseconds(after, repeats)
        results[name] = {"before_ms": round((b1 + b2) / 2, 2), "after_ms": round((a1 + a2) / 2, 2)}
        results[name]["speedup"] = round(results[name]["before_ms"] / results[name]["after_ms"], 2)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    results = measure(args.threads, args.batch, args.crop, args.repeats)
    print("| part | before (ms) | after (ms) | speed-up |\n|---|---|---|---|")
    for name, row in results.items():
        print(f"| {name} | {row['before_ms']} | {row['after_ms']} | {row['speedup']}x |")
    if args.out is not None:
        record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "commit": commit(), "machine": machine(), "threads": args.threads, "batch": args.batch,
                  "crop": args.crop, "classes": CLASSES, "repeats": args.repeats,
                  "command": "python scripts/bench_step_parts.py " + " ".join(argv or sys.argv[1:]),
                  "results": results}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
