"""What the peer scripts share (``detection.py``, ``segmentation.py``, ``benchmark_peers.py``).

Starting a contestant process with its thread settings and log file, reading the JSON it
leaves behind, the torch thread count inside a worker, the commit the figures were measured
at, and the mean and spread of a figure over seeds. The package never imports this module.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence

REPO = Path(__file__).resolve().parents[2]
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a contestant process: ``threads`` OpenMP/MKL/OpenBLAS threads, our
    ``src`` first on ``PYTHONPATH`` and ultralytics offline (it never downloads anything)."""
    env = dict(os.environ)
    env.update({key: str(threads) for key in THREAD_VARIABLES})
    env["YOLO_OFFLINE"] = "1"
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def set_torch_threads(threads: int | None = None) -> int:
    """Inside a worker: torch's intra-op threads = ``threads``, else the ``OMP_NUM_THREADS`` the
    driver set (:func:`thread_env`). Returns the count set."""
    import torch

    count = int(threads or os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads())
    torch.set_num_threads(count)
    return count


def shown(cmd: Sequence[str], threads: int | None = None) -> str:
    """A command line as a user would type it (the interpreter shown as ``python``)."""
    words = ["python" if k == 0 and c == sys.executable else c for k, c in enumerate(cmd)]
    prefix = f"OMP_NUM_THREADS={threads} " if threads else ""
    return prefix + shlex.join(words)


@dataclass
class Started:
    """A contestant process writing to its log file."""

    process: subprocess.Popen
    log: IO[str]
    log_path: Path

    def wait(self) -> int:
        code = self.process.wait()
        self.log.flush()
        return code

    def close(self) -> int:
        code = self.wait()
        self.log.close()
        return code

    def tail(self, lines: int = 3) -> str:
        self.log.flush()
        text = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        return " | ".join(text)


def start(cmd: Sequence[str], log_path: Path, threads: int, append: bool = False) -> Started:
    """Start ``cmd`` in the repository root with :func:`thread_env`, output to ``log_path``."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a" if append else "w")
    print(f"[peers] start: {shown(cmd, threads)}", flush=True)
    process = subprocess.Popen(list(cmd), cwd=REPO, env=thread_env(threads), stdout=log,
                               stderr=subprocess.STDOUT)
    return Started(process, log, log_path)


def run_logged(cmd: Sequence[str], log_path: Path, threads: int) -> int:
    """Run ``cmd`` to the end (appending to ``log_path``); its exit code."""
    return start(cmd, log_path, threads, append=True).close()


def read_json(path: Path) -> dict:
    """A JSON a run left behind (its ``metrics.json``, a worker's ``result.json``)."""
    return json.loads(Path(path).read_text())


def commit() -> str | None:
    """``git rev-parse HEAD`` of the repository, ``+dirty`` with uncommitted tracked changes."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def spread(values: Sequence[float | None]) -> dict | None:
    """``{mean, std, min, max, n}`` of the values that are there (``std``: sample standard
    deviation, 0 for one value); None when there is none."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    mean = sum(present) / len(present)
    std = math.sqrt(sum((v - mean) ** 2 for v in present) / (len(present) - 1)) if len(present) > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(present), "max": max(present), "n": len(present)}
