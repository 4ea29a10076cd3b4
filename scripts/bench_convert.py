#!/usr/bin/env python
"""Time the converters: Fashionpedia at full scale (synthetic) and the 800 real CCP images.

Each conversion runs in its own child process (``python -m fashionvision.cli.convert``), so the
figures are that command's alone: wall seconds, CPU seconds (user + system, workers included),
the largest single-process peak RSS (``getrusage(RUSAGE_CHILDREN)``) and the peak of the summed
PSS of the whole process tree (sampled from ``/proc`` every 0.2 s; PSS shares pages between the
forked workers fairly instead of counting them twice). The load average at the start is
recorded because other work on the machine slows wall time down but not CPU time.

Usage::

    python scripts/bench_convert.py [--work /tmp/fashionvision-bench] [--ccp ../shared/data/ccp]
        [--skip-masks] [--skip-ccp] [--skip-fashionpedia] [--coco]

Writes ``benchmarks/convert_fashionpedia.json`` and ``benchmarks/convert_ccp.json``; with
``--coco`` also ``benchmarks/convert_coco.json``: ``fashion-convert coco`` on the same synthetic
file, to check that it stays within the time and memory of the Fashionpedia converter.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from benchmark_peers import machine as describe_machine  # noqa: E402
from make_synthetic_fashionpedia import write_synthetic  # noqa: E402


def tree_pss_kb(root: int) -> int:
    """Summed PSS (kB) of ``root`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


# A fresh wrapper process per run, so RUSAGE_CHILDREN (max RSS, CPU) covers that run alone.
WRAPPER = (
    "import json, resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print('RUSAGE ' + json.dumps({'maxrss_kb': u.ru_maxrss, 'cpu': u.ru_utime + u.ru_stime}), flush=True); "
    "sys.exit(code)"
)


def run_measured(args: list[str]) -> dict:
    """Run a command; return wall/CPU seconds, peak RSS, peak tree PSS and its output."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", WRAPPER, *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=REPO)
    peak = {"pss": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak["pss"] = max(peak["pss"], tree_pss_kb(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"command failed ({process.returncode}): {' '.join(args)}\n{output}")
    lines = output.strip().splitlines()
    usage = json.loads(lines[-1].split(" ", 1)[1])
    output = "\n".join(lines[:-1])
    return {
        "command": " ".join(args),
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(usage["cpu"], 1),
        "peak_rss_largest_process_gb": round(usage["maxrss_kb"] / 1024**2, 2),
        "peak_pss_process_tree_gb": round(peak["pss"] / 1024**2, 2),
        "load_average_at_start": round(load, 2),
        "summary": output.strip().splitlines()[-12:],
    }


def convert_args(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "fashionvision.cli.convert", *overrides, "progress=false",
            "hydra.run.dir=/tmp/fashionvision-bench/hydra", "hydra.output_subdir=null"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fashionvision-bench"))
    parser.add_argument("--ccp", type=Path, default=REPO.parent / "shared" / "data" / "ccp")
    parser.add_argument("--images", type=int, default=45000)
    parser.add_argument("--annotations", type=int, default=330000)
    parser.add_argument("--skip-masks", action="store_true")
    parser.add_argument("--skip-ccp", action="store_true")
    parser.add_argument("--skip-fashionpedia", action="store_true")
    parser.add_argument("--coco", action="store_true", help="also time fashion-convert coco on the synthetic file")
    args = parser.parse_args(argv)
    out_dir = REPO / "benchmarks"
    out_dir.mkdir(exist_ok=True)
    machine = {"cpus": os.cpu_count(), **describe_machine()}  # the processor's name among them

    synthetic = args.work / "fashionpedia" / "synthetic_train.json"
    sidecar = synthetic.with_suffix(".counts.json")
    wanted = {"images": args.images, "annotations": args.annotations}
    previous = json.loads(sidecar.read_text()) if sidecar.is_file() and synthetic.is_file() else {}
    if {k: previous.get(k) for k in wanted} == wanted:
        generated = previous  # same parameters: reuse the file (generation takes a minute)
    else:
        data_dir = Path(os.environ.get("FASHION_DATA_DIR") or REPO.parent / "shared" / "data")
        generated = write_synthetic(synthetic, args.images, args.annotations, 180, 0,
                                    data_dir / "fashionpedia-sample" / "category_attributes_descriptions.json")
        sidecar.write_text(json.dumps(generated))
    for converter, wanted_run in (("fashionpedia", not args.skip_fashionpedia), ("coco", args.coco)):
        if not wanted_run:
            continue
        if converter == "fashionpedia":
            common = ["fashionpedia", f"source={synthetic.parent}", "fashionpedia.files=[synthetic_train.json]",
                      "fashionpedia.require_images=false", "workers=2"]
        else:  # the generic converter, with the parts dropped as the Fashionpedia preset does
            common = ["coco", f"source={synthetic.parent}", "annotations=synthetic_train.json",
                      "coco.require_images=false", "coco.strict=false",
                      "coco.drop_supercategories=[garment parts,closures,decorations]", "workers=2"]
        runs = {"boxes_only": run_measured(convert_args(*common, f"output={args.work}/out-{converter}-boxes",
                                                        f"{converter}.masks=false"))}
        print(json.dumps(runs["boxes_only"], indent=2))
        if not args.skip_masks:
            runs["with_masks"] = run_measured(convert_args(*common, f"output={args.work}/out-{converter}-masks",
                                                           f"{converter}.masks=true"))
            print(json.dumps(runs["with_masks"], indent=2))
        result = {"synthetic_file": generated, "runs": runs, "machine": machine,
                  "requirement": "under 120 s and under 6 GB on 2 cores"}
        (out_dir / f"convert_{converter}.json").write_text(json.dumps(result, indent=2) + "\n")

    if not args.skip_ccp:
        ccp = run_measured(convert_args("ccp", f"source={args.ccp}", f"output={args.work}/out-ccp", "workers=2"))
        print(json.dumps(ccp, indent=2))
        (out_dir / "convert_ccp.json").write_text(json.dumps(
            {"run": ccp, "machine": machine, "requirement": "800 images under 60 s on 2 cores"}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
