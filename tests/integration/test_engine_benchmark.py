"""scripts/benchmark.py runs end to end with tiny settings on the CPU (the real numbers need a GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # builds YOLOv3 and a resnet50 U-Net and runs the real loop: ~30 s on 2 cores
def test_benchmark_quick_on_cpu(shared_data: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--device", "cpu", "--quick",
                           "--out", str(tmp_path), "--peak-tflops", "1.0"],
                          capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "FASHION_DATA_DIR": str(shared_data)})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(next(tmp_path.glob("cpu_*_quick.json")).read_text())
    assert [m["model"] for m in report["models"]] == ["yolo", "unet"]
    for m in report["models"]:
        assert m["fwd_gflop_per_img"] > 0 and m["train_img_s"] > 0 and m["e2e_img_s"] > 0
        assert m["infer_b1_img_s"] > 0 and m["train_peak_share"] == pytest.approx(m["train_tflops"])
        # the whole loop (Trainer.fit): validation after each of its 2 epochs and checkpoints included
        assert m["loop_epochs"] == 2 and m["loop_steps"] > 0 and m["loop_img_s"] > 0
        assert m["loop_vs_bare"] == pytest.approx(m["loop_img_s"] / m["train_img_s"])
        assert m["loop_validate_seconds"] > 0 and m["loop_checkpoint_seconds"] > 0
