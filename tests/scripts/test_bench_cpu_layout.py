"""scripts/bench_cpu_layout.py: both layouts of the recipe's network are timed and written down."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("bench_cpu_layout", ROOT / "scripts" / "bench_cpu_layout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_times_both_layouts_of_the_detector_recipe(tmp_path: Path, monkeypatch) -> None:
    bench = _script()
    out = tmp_path / "layout.json"
    monkeypatch.setattr(sys, "argv", ["bench_cpu_layout.py", "--batch", "1", "--height", "64", "--width", "32",
                                      "--repeats", "1", "--out", str(out)])
    bench.main()
    report = json.loads(out.read_text())
    assert report["experiment"] == "yolo_cpu_12m" and report["shape"] == [64, 32]
    results = report["results"]
    assert results["nchw_ms"] > 0 and results["channels_last_ms"] > 0
    assert results["speedup"] == round(results["nchw_ms"] / results["channels_last_ms"], 2)
    assert report["command"].startswith("python scripts/bench_cpu_layout.py --batch 1")


def test_float32_timing_runs_without_autocast(tmp_path: Path, monkeypatch) -> None:
    """``--amp none`` times what the trainer runs on a CPU without bf16 units: no autocast."""
    bench = _script()
    enabled = []
    real_autocast = bench.torch.autocast

    def recording_autocast(*args, **kwargs):
        enabled.append(kwargs.get("enabled", True))
        return real_autocast(*args, **kwargs)

    monkeypatch.setattr(bench.torch, "autocast", recording_autocast)
    out = tmp_path / "layout.json"
    monkeypatch.setattr(sys, "argv", ["bench_cpu_layout.py", "--batch", "1", "--height", "64", "--width", "32",
                                      "--repeats", "1", "--amp", "none", "--out", str(out)])
    bench.main()
    report = json.loads(out.read_text())
    assert report["amp"] == "none" and report["results"]["channels_last_ms"] > 0
    assert enabled and not any(enabled)
