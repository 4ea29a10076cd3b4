"""`fashion-train -m` in-process: every job its own clock, folder and log; failures do not stop
the sweep; the summary; the metric returned to a sweeper (Optuna, when the plugin is installed).

In-process (the basic launcher runs the jobs in this process); the joblib and submitit launchers
run the study in subprocesses in ``tests/integration/test_study.py``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_YOLO = ["model=yolo", "anchors=coco", "model.width=0.0625", "model.image_size=64", "trainer=smoke",
             "trainer.limit_images=2", "trainer.epochs=1000", "trainer.val_every=1000", "trainer.log_images=0"]


def multirun(args: list[str], sweep: Path, capsys, monkeypatch) -> tuple[int, str]:
    """``fashion-train -m args`` in this process (the basic launcher): (exit code, output)."""
    from fashionvision.cli import train

    monkeypatch.setattr(sys, "argv", ["fashion-train", "-m", *args, f"hydra.sweep.dir={sweep}"])
    with pytest.raises(SystemExit) as info:
        train.main()
    captured = capsys.readouterr()
    return info.value.code, captured.out + captured.err


def job(sweep: Path, num: int, name: str = "metrics.json") -> dict:
    return json.loads((sweep / str(num) / name).read_text())


@pytest.mark.slow  # several trainings and evaluations: tens of seconds on 2 cores
def test_every_job_has_its_own_budget_folder_and_log(tiny_ccp, tmp_path, capsys, monkeypatch):
    sweep = tmp_path / "sweep"
    code, out = multirun([*TINY_YOLO, f"dataset.path={tiny_ccp}", "trainer.max_time=5s", "trainer.seed=0,1"],
                         sweep, capsys, monkeypatch)
    assert code == 0, out
    first, second = job(sweep, 0), job(sweep, 1)
    for summary in (first, second):
        # the budget spent (the engine stops a little early when the final validation would overrun it)
        assert summary["status"] in ("time_budget", "completed") and summary["train_seconds"] >= 2.5
    # each job's clock starts with the job (with one clock per process job 1's would include job 0)
    for num, summary in enumerate((first, second)):
        assert summary["train_seconds"] <= job(sweep, num, "job.json")["seconds"] + 0.5
    for num in (0, 1):
        log_text = (sweep / str(num) / "train.log").read_text()
        assert f"run     {sweep / str(num)}" in log_text and f"{sweep / str(1 - num)} " not in log_text
        record = job(sweep, num, "job.json")
        assert record["status"] == "ok" and record["metric"] == "map50"
        assert record["value"] == pytest.approx(job(sweep, num)["best"])
        assert f"trainer.seed={num}" in record["overrides"]
    rows = json.loads((sweep / "summary.json").read_text())
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert "sweep: 2 job(s), 2 ok, 0 failed" in out and f"job 1: ok      map50" in out


@pytest.mark.slow  # three jobs (~20 s on 2 busy cores)
def test_a_failing_job_does_not_stop_the_sweep(tiny_ccp, tmp_path, capsys, monkeypatch):
    from fashionvision.engine.trainer import Trainer

    fit = Trainer.fit

    def crashing_fit(self):  # a bug, not a user's mistake: an exception of no known kind
        if self.cfg.seed == 1:
            raise RuntimeError("boom in job 1")
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", crashing_fit)
    sweep = tmp_path / "sweep"
    code, out = multirun([*TINY_YOLO, f"dataset.path={tiny_ccp}", "trainer.max_time=1s", "trainer.seed=0,1,2",
                          "trainer.threads=1"], sweep, capsys, monkeypatch)
    assert code == 1, out  # the sweep reports the failure in its exit code, after every job ran
    statuses = [job(sweep, n, "job.json")["status"] for n in range(3)]
    assert statuses == ["ok", "failed", "ok"]
    assert "boom in job 1" in job(sweep, 1, "job.json")["error"]
    assert "RuntimeError: boom in job 1" in (sweep / "1" / "train.log").read_text()  # the traceback, in its log
    assert (sweep / "2" / "metrics.json").is_file()
    assert "sweep: 3 job(s), 2 ok, 1 failed" in out and "job 1: failed" in out
    assert "| 1 | failed |" in (sweep / "summary.md").read_text()


@pytest.mark.slow  # two trials (~20 s on 2 busy cores)
def test_optuna_gets_the_validation_metric(tiny_ccp, tmp_path, capsys, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import yaml

    sweep = tmp_path / "sweep"
    code, out = multirun([*TINY_YOLO, f"dataset.path={tiny_ccp}", "trainer.max_time=1s", "hparams_search=yolo_optuna",
                          "hydra.sweeper.n_trials=2"], sweep, capsys, monkeypatch)
    assert code == 0, out
    values = [job(sweep, n, "job.json")["value"] for n in range(2)]
    assert all(isinstance(v, float) for v in values)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(max(values))


def test_threads_are_set_per_job(monkeypatch):
    import torch

    from fashionvision.cli import train

    before = torch.get_num_threads()
    monkeypatch.setattr(train, "DEFAULT_THREADS", None)
    try:
        train.set_threads(1)
        assert torch.get_num_threads() == 1
        train.set_threads(None)  # a later job that sets none gets the process default back
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


def test_the_clock_is_per_job(monkeypatch):
    from types import SimpleNamespace

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from fashionvision.cli import train

    for mode, first in ((RunMode.RUN, 12.5), (RunMode.MULTIRUN, None)):
        monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda mode=mode: SimpleNamespace(mode=mode)))
        monkeypatch.setattr(train, "STARTED_AT", 12.5)
        before = time.perf_counter()
        clock = train.take_clock()
        # a single run counts from the process start; a sweep's first job from its own start
        assert clock == 12.5 if first else clock >= before
        assert train.take_clock() >= before and train.STARTED_AT is None  # any later job: its own start


def test_a_stop_signal_stops_the_sweep(tmp_path, monkeypatch, capsys):
    """SIGTERM or Ctrl-C in a job (it checkpoints and returns 143 or 130): no further job starts."""
    from fashionvision.cli import _sweep
    from fashionvision.cli._hydra import Outcome

    sweep = tmp_path / "sweep"
    for num in (0, 1):
        (sweep / str(num) / ".hydra").mkdir(parents=True)
        monkeypatch.setattr(_sweep, "_job_folder", lambda num=num: (sweep / str(num), [f"trainer.seed={num}"], num, sweep))
        if num == 0:
            assert _sweep.run_job(lambda: Outcome(0, 0.5, "map50")) == 0.5
    with pytest.raises(SystemExit) as info:
        _sweep.run_job(lambda: Outcome(143))
    assert info.value.code == 143
    assert json.loads((sweep / "1" / "job.json").read_text())["status"] == "stopped"
    assert "job 1: stopped" in capsys.readouterr().out
