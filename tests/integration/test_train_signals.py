"""SIGTERM / Ctrl-C sent to fashion-train's whole process group, loader workers included.

What ``timeout``, Slurm, container stops, ``kill -- -PGID`` and a terminal's Ctrl-C do. The
run starts in its own process group (session); the signal goes to the group after the first
optimizer step has been checkpointed (``trainer.checkpoint_every_steps=1``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # real fashion-train subprocesses with two loader workers: ~15-25 s each


def _start(tiny_ccp: Path, run: Path) -> subprocess.Popen:
    log = open(run.parent / f"{run.name}.log", "w+")
    cmd = [sys.executable, "-m", "fashionvision.cli.train", "model=unet", "model.encoder=vanilla",
           "model.width=0.125", "model.image_size=64", "trainer=smoke", "trainer.epochs=1000",
           "trainer.workers=2", "trainer.checkpoint_every_steps=1", f"dataset.path={tiny_ccp}",
           f"hydra.run.dir={run}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group, as a job under a shell
    proc.log = log  # type: ignore[attr-defined]
    return proc


def _output(proc: subprocess.Popen) -> str:
    proc.log.seek(0)  # type: ignore[attr-defined]
    return proc.log.read()  # type: ignore[attr-defined]


def _after_first_step(proc: subprocess.Popen, run: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not (run / "checkpoints" / "last.pt").is_file():
        assert proc.poll() is None, _output(proc)
        assert time.monotonic() < deadline, "no checkpoint after the first step"
        time.sleep(0.05)


def _stop(proc: subprocess.Popen, *signals: signal.Signals, expect: int) -> str:
    for sig in signals:
        os.killpg(proc.pid, sig)  # the whole group: the main process and its loader workers
        time.sleep(0.05)
    try:
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = _output(proc)
    assert code == expect, out[-4000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-4000:]
    assert "DataLoader worker" not in out, out[-4000:]
    return out


def _valid_last(run: Path) -> dict:
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] >= 1 and all(torch.isfinite(v).all() for v in state["model"].values()
                                       if v.is_floating_point())
    return state


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_to_the_process_group_checkpoints_and_exits(tiny_ccp: Path, tmp_path: Path, sig, code) -> None:
    run = tmp_path / "run"
    proc = _start(tiny_ccp, run)
    _after_first_step(proc, run)
    out = _stop(proc, sig, expect=code)
    assert f"{signal.Signals(sig).name} received" in out
    assert f"trainer.resume=auto hydra.run.dir={run}" in out  # the command that continues the run
    state = _valid_last(run)
    # the step in flight was finished and saved: nothing since the last epoch is lost
    assert state["step"] >= 2 or state["batch_in_epoch"] >= 1


def test_second_ctrl_c_aborts_at_once(tiny_ccp: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _start(tiny_ccp, run)
    _after_first_step(proc, run)
    started = time.monotonic()
    out = _stop(proc, signal.SIGINT, signal.SIGINT, expect=130)
    assert time.monotonic() - started < 10
    assert "aborted (second Ctrl-C)" in out
    _valid_last(run)  # written atomically: the last good checkpoint survives the abort
