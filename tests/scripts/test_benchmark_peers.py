"""scripts/benchmark_peers.py end to end on CPU at a tiny budget (issue 9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_peers_runs_end_to_end_with_peers_skipped(tiny_ccp: Path, tmp_path: Path):
    out = tmp_path / "peers.json"
    env = {**os.environ, "FASHION_PEERS_DISABLE": "ultralytics", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark_peers.py"), "--family", "det", "--dataset", str(tiny_ccp),
         "--split", "test", "--budget-det", "4s", "--image-size", "64", "--threads", "1", "--side-by-side",
         "--device", "cpu", "--quick", "--out", str(out), "--work", str(tmp_path / "work")],
        env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["threads"] == 1 and report["side_by_side"] and report["budgets_s"] == {"det": 4.0}
    assert report["machine"]["torch"] and report["date"]
    ours, peer = report["results"]
    assert ours["family"] == "detection" and ours["skipped"] is None
    assert ours["steps"] >= 1 and ours["epochs"] >= 1 and ours["img_per_s"] > 0
    assert 0.0 <= ours["map50"] <= 1.0 and 0.0 <= ours["map50_95"] <= ours["map50"] + 1e-9
    assert "fashionvision.cli.train" in ours["command"] and "experiment=yolo_cpu_12m" in ours["command"]
    assert peer["name"] == "ultralytics YOLOv8n" and "FASHION_PEERS_DISABLE" in peer["skipped"]
    assert "skipped: ultralytics disabled" in proc.stdout
    assert "| detection | ultralytics YOLOv8n |" in report["markdown"]
    probe = report["host_probe_ms"]
    assert probe["start"] > 0 and probe["end"] > 0 and "ResNet-18" in probe["what"]
    assert "host probe" in report["markdown"]


def test_missing_segmentation_module_is_reported_as_skipped(monkeypatch):
    sys.path.insert(0, str(REPO / "scripts"))
    import benchmark_peers

    monkeypatch.setattr(benchmark_peers, "REPO", Path("/nonexistent"))
    func, reason = benchmark_peers.load_family("seg")
    assert func is None and "segmentation.py is not there" in reason


def test_ultralytics_absence_is_detected(monkeypatch):
    sys.path.insert(0, str(REPO / "scripts"))
    from peers import detection

    monkeypatch.setenv("FASHION_PEERS_DISABLE", "ultralytics")
    assert "FASHION_PEERS_DISABLE" in detection.ultralytics_missing()
    monkeypatch.delenv("FASHION_PEERS_DISABLE")
    monkeypatch.setattr(detection.importlib.util, "find_spec", lambda name: None)
    assert "pip install" in detection.ultralytics_missing()


def test_host_probe_times_the_machine_and_restores_the_thread_count():
    sys.path.insert(0, str(REPO / "scripts"))
    import benchmark_peers

    before = torch.get_num_threads()
    one = benchmark_peers.host_probe(threads=1, repeats=1)
    assert torch.get_num_threads() == before
    assert 0 < one < 60_000
    info = {"machine": {"cpu": "x", "cpu_count": 2, "torch": "t"}, "threads": 1, "side_by_side": False,
            "split": "test", "dataset": "d", "host_probe_ms": {"start": one, "end": 2 * one}}
    assert f"host probe {one:.0f} / {2 * one:.0f} ms at start / end" in benchmark_peers.markdown([], info)
    del info["host_probe_ms"]  # the JSONs written before the probe existed still print
    assert "host probe" not in benchmark_peers.markdown([], info)


def test_seed_reaches_every_detection_contestant(tmp_path: Path, monkeypatch):
    """--seed must reach our trainer.seed and ultralytics' seed=, so repeat seeds measure the noise."""
    sys.path.insert(0, str(REPO / "scripts"))
    from peers import detection

    ours, peer = detection.contestants("cpu")
    worker = detection._worker_command(ours, tmp_path, "test", 60, 256, 2, tmp_path / "o", "cpu", False, seed=3)
    parser_args = worker[2:]  # after the interpreter and the script
    seen = {}

    def fake_worker(a):
        seen["args"] = a
        return {}

    monkeypatch.setattr(detection, "work_ours", fake_worker)
    assert detection.main(parser_args) == 0
    a = seen["args"]
    assert a.seed == 3
    train, _ = detection.ours_commands(a, tmp_path / "run")
    assert "trainer.seed=3" in train
    a.model, a.quick = peer.model, False
    assert detection.ultralytics_train_args(a, tmp_path / "data.yaml")["seed"] == 3
    a.seed = 0  # the default adds nothing to our command line (the config's seed 0 applies)
    assert not any(arg.startswith("trainer.seed") for arg in detection.ours_commands(a, tmp_path / "run")[0])


@pytest.mark.slow
def test_step_parts_script_times_before_and_after_and_writes_json(tmp_path: Path):
    """scripts/bench_step_parts.py (README round 10) runs at a toy size and records each part
    of the step both ways, with the machine and the command."""
    import importlib.util

    path = REPO / "scripts" / "bench_step_parts.py"
    spec = importlib.util.spec_from_file_location("bench_step_parts", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "parts.json"
    threads = torch.get_num_threads()
    try:
        assert module.main(["--threads", "1", "--batch", "2", "--crop", "64", "--repeats", "1",
                            "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    record = json.loads(out.read_text())
    assert set(record["results"]) == {"optimizer_step", "ema_update", "cross_entropy_fwd_bwd", "whole_step"}
    for row in record["results"].values():
        assert row["before_ms"] > 0 and row["after_ms"] > 0
        assert row["speedup"] == pytest.approx(row["before_ms"] / row["after_ms"], abs=0.01)
    assert record["machine"]["cpu_count"] >= 1 and "--crop 64" in record["command"]
