"""One trainer per run folder, through fashion-train: a second trainer into a run folder in use is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_one_line_errors import assert_one_error, run_cli

ROOT = Path(__file__).resolve().parents[2]
HOLD = ("import sys, time; from fashionvision.engine.run_lock import acquire; acquire(sys.argv[1]); "
        "print('held', flush=True); time.sleep(120)")


def hold_in_another_process(folder: Path) -> subprocess.Popen:
    """A process that takes ``folder``'s lock and keeps it (as a running trainer does)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_fashion_train_into_a_folder_in_use_is_refused(tiny_ccp, tmp_path, capsys):
    """The CLI refuses in one line before Hydra writes anything into the first run's folder."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("first run\n")
    holder = hold_in_another_process(run)
    try:
        result = run_cli("train", ["model=yolo", "model.width=0.0625", "model.image_size=64", "anchors=coco",
                                   "trainer=smoke", "trainer.epochs=1", "trainer.limit_images=2",
                                   f"dataset.path={tiny_ccp}", "trainer.resume=auto", f"hydra.run.dir={run}"],
                         tmp_path, capsys)
    finally:
        holder.kill()
        holder.wait()
    assert_one_error(result, str(run), f"PID {holder.pid}")
    assert (run / ".hydra" / "config.yaml").read_text() == "first run\n"
    assert not (run / "checkpoints").exists()


@pytest.mark.slow  # two real trainers in subprocesses, ~30 s on 2 cores
def test_two_trainers_one_second_apart(tiny_ccp, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "fashionvision.cli.train", "model=yolo", "model.width=0.0625",
            "model.image_size=64", "anchors=coco", "trainer=smoke", "trainer.epochs=3", f"dataset.path={tiny_ccp}",
            "trainer.resume=auto", f"hydra.run.dir={run}"]
    first = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    second = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert second.returncode == 2, second.stderr[-3000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"PID {first.pid}" in errors[0], second.stderr[-2000:]
