"""One trainer per run folder; a crashed one leaves no lock behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fashionvision.engine import run_lock
from fashionvision.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
HOLD = ("import sys, time; from fashionvision.engine.run_lock import acquire; acquire(sys.argv[1]); "
        "print('held', flush=True); time.sleep(120)")


def hold_in_another_process(folder: Path) -> subprocess.Popen:
    """A process that takes ``folder``'s lock and keeps it (as a running trainer does)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_holder_is_refused_naming_the_first_pid(tmp_path):
    holder = hold_in_another_process(tmp_path / "run")
    try:
        with pytest.raises(UserError, match=rf"in use by another fashion-train \(PID {holder.pid}\)") as info:
            run_lock.acquire(tmp_path / "run")
        assert "\n" not in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL cannot release anything by hand: the kernel drops the flock, no stale lock remains
    with run_lock.hold_run_folder(tmp_path / "run"):
        with run_lock.hold_run_folder(tmp_path / "run"):  # the same process may take it again
            pass
    assert (tmp_path / "run" / ".lock").read_text().split()[0] == str(os.getpid())


def test_taking_the_lock_removes_an_interrupted_runs_temporaries(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    stale = [run / "checkpoints" / ".last.pt.tmp-4242", run / ".metrics.json.tmp", run / ".results.csv.tmp",
             run / "checkpoints" / ".last.pt.x1y2z3.tmp.pt"]
    kept = [run / "checkpoints" / "last.pt", run / "metrics.json", run / "train.log"]
    for path in stale + kept:
        path.write_bytes(b"x")
    with run_lock.hold_run_folder(run):
        pass
    assert [p for p in stale if p.exists()] == [] and all(p.exists() for p in kept)
