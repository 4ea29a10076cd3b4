"""The engine in real processes: SIGKILL + exact resume, SIGTERM -> 143, 2-process DDP (gloo).

Subprocess tests: in the slow tier (``python -m pytest -m slow``), which CI also runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toy_task import make_toy_dataset

TOY_TRAIN = Path(__file__).resolve().parents[1] / "toy_train.py"

pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def _start(data: Path, run: Path, *overrides: str, **env: str) -> subprocess.Popen:
    # output goes to a file: an unread pipe could fill up and block the child
    log = open(run.parent / f"{run.name}.log", "w+")
    proc = subprocess.Popen([sys.executable, str(TOY_TRAIN), str(data), str(run), *overrides],
                            env=_env(**env), stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def _output(proc: subprocess.Popen) -> str:
    proc.log.seek(0)  # type: ignore[attr-defined]
    return proc.log.read()  # type: ignore[attr-defined]


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"tensor {name} differs"


@pytest.fixture()
def toy_data(tmp_path: Path) -> Path:
    return make_toy_dataset(tmp_path / "data", n_train=8, n_val=2)


def test_sigkill_then_resume_gives_identical_weights(toy_data: Path, tmp_path: Path) -> None:
    # 4 steps per epoch; checkpoints at steps 3, 4 (epoch end), 6; killed inside step 7 (mid-epoch 2)
    args = ("epochs=3", "checkpoint_every_steps=3")
    reference = _start(toy_data, tmp_path / "reference", *args)  # side by side: 2 cores
    victim = _start(toy_data, tmp_path / "victim", *args, TOY_SIGKILL_AT_BATCH="7")
    assert victim.wait(timeout=120) == -signal.SIGKILL, _output(victim)
    assert reference.wait(timeout=120) == 0, _output(reference)
    killed = torch.load(tmp_path / "victim" / "checkpoints" / "last.pt", weights_only=True)
    assert (killed["step"], killed["epoch"], killed["batch_in_epoch"]) == (6, 1, 2)

    resumed = subprocess.run([sys.executable, str(TOY_TRAIN), str(toy_data), str(tmp_path / "victim"), *args,
                              "resume=auto"], env=_env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    ref = torch.load(tmp_path / "reference" / "final_rank0.pt", weights_only=True)
    out = torch.load(tmp_path / "victim" / "final_rank0.pt", weights_only=True)
    _assert_identical(ref, out)
    last_ref = torch.load(tmp_path / "reference" / "checkpoints" / "last.pt", weights_only=True)
    last_out = torch.load(tmp_path / "victim" / "checkpoints" / "last.pt", weights_only=True)
    _assert_identical(last_ref["ema"]["module"], last_out["ema"]["module"])
    assert last_out["step"] == last_ref["step"] == 12
    assert last_out["metrics"] == last_ref["metrics"]


def test_sigterm_checkpoints_and_exits_143(toy_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _start(toy_data, run, "epochs=50", TOY_SIGTERM_AT_BATCH="6")  # inside step 6 (epoch 2)
    assert proc.wait(timeout=120) == 143, _output(proc)
    assert "SIGTERM" in _output(proc)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    # the step in flight was finished, then the position was saved mid-epoch
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (6, 1, 2)
    assert not (run / "final_rank0.pt").exists()
    import json  # a preempted run leaves its metrics.json too

    assert json.loads((run / "metrics.json").read_text())["status"] == "preempted"
    resumed = _start(toy_data, run, "epochs=2", "resume=auto")
    assert resumed.wait(timeout=120) == 0, _output(resumed)
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 8


def test_ddp_two_gloo_processes_end_with_identical_weights(toy_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0",
           "--rdzv_backend=c10d", "--rdzv_endpoint=localhost:0", str(TOY_TRAIN), str(toy_data), str(run),
           "epochs=2", "accumulate=2", "sync_bn=true",  # sync_bn is ignored (with a warning) on the CPU
           "checkpoint_background=true", "checkpoint_every_steps=1"]  # rank 0 writes while rank 1 goes on
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = torch.load(run / "final_rank0.pt", weights_only=True)
    rank1 = torch.load(run / "final_rank1.pt", weights_only=True)
    _assert_identical(rank0, rank1)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == 2
    assert state["step"] == 2  # 8 images / (2 ranks x batch 2 x accumulate 2) = 1 step per epoch
    assert (run / "metrics.json").is_file()


def test_ddp_with_a_time_budget_ends_on_every_rank_at_the_same_step(tmp_path: Path) -> None:
    """Rank 0 keeps back more of the budget than rank 1 (it alone holds the validation split) and
    rank 1 runs slower: the stop is one all-reduced decision, so both leave the loop at the same
    step, exit 0 and end within the budget (a rank that stopped alone would leave the other in a
    DDP forward that dies with "Connection closed by peer", or hangs under NCCL)."""
    data = make_toy_dataset(tmp_path / "data", n_train=64, n_val=16)
    run = tmp_path / "ddp_budget"
    budget = 15.0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0",
           "--rdzv_backend=c10d", "--rdzv_endpoint=localhost:0", str(TOY_TRAIN), str(data), str(run),
           "epochs=100000", f"max_time={budget:g}s", "val_every=1000"]
    done = subprocess.run(cmd, env=_env(TOY_SLOW_RANK="1:0.03"), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_identical(torch.load(run / "final_rank0.pt", weights_only=True),
                      torch.load(run / "final_rank1.pt", weights_only=True))
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "time_budget" and summary["steps"] > 10 and summary["final"]
    assert summary["train_seconds"] <= budget + 2.0
