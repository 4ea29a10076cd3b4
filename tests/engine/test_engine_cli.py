"""`fashion-train` end to end on a tiny converted CCP folder, and its one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fashionvision.cli.train import distributed_overrides


@pytest.fixture(scope="module")
def tiny_ccp(shared_data: Path, tmp_path_factory) -> Path:
    """10 CCP images (long side 416) converted: 8 train, 1 val, 1 test."""
    out = tmp_path_factory.mktemp("ccp") / "converted"
    source = shared_data / "ccp-416" if (shared_data / "ccp-416").is_dir() else shared_data / "ccp"
    try:
        from fashionvision.convert import get_converter
    except ImportError:  # converter not there: the hand-built folder of conftest plus a val split
        from conftest import build_hand_converted_ccp

        build_hand_converted_ccp(source, out, ["0001", "0002", "0003", "0004"])
        shutil.copy(out / "train.txt", out / "val.txt")
        return out
    get_converter("ccp")(source, out, limit=10, workers=1, progress_bar=False)
    return out


def _train(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, "-m", "fashionvision.cli.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # ~15 s on 2 idle cores: a real YOLOv3 (narrow) through Hydra in a subprocess
def test_fashion_train_yolo_smoke_writes_the_run_folder(tiny_ccp: Path, tmp_path: Path) -> None:
    from fashionvision.inference.loading import load_for_inference
    from fashionvision.tasks.detection import DetectionTask

    run = tmp_path / "run"
    done = _train(tmp_path, "model=yolo", "trainer=smoke", f"dataset.path={tiny_ccp}", "model.width=0.0625",
                  "model.image_size=64", "anchors=coco", f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("checkpoints/last.pt", "checkpoints/best.pt", ".hydra/config.yaml", "metrics.json"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    log_text = next(run.glob("*.log")).read_text()
    assert "epoch 2" in log_text
    # the run report: the header before the first step, the per-class table and the files at the end
    assert "device CPU: " in log_text and "train 4 images" in log_text and "M parameters" in log_text
    assert log_text.index("device CPU: ") < log_text.index("epoch 1:")
    assert "on the validation split (1 image)" in log_text and "instances      ap50" in log_text
    assert "completed after " in log_text and f"files in {run}: checkpoints/best.pt" in log_text
    assert [line.split(",")[0] for line in (run / "results.csv").read_text().splitlines()] == ["epoch", "1", "2"]
    assert (run / "results.png").is_file()
    assert "\r" not in done.stderr  # not a terminal: plain progress lines only
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "completed" and "map50" in summary["final"]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["config"]["model"]["width"] == 0.0625 and state["task"]["model"] == "yolo"
    task, model, config = load_for_inference(run)
    assert isinstance(task, DetectionTask) and len(task.class_names) == 56
    assert config["trainer"]["epochs"] == 2


@pytest.mark.slow  # ~20 s on 2 idle cores: a narrow YOLOv3 through Hydra, started from a Darknet file
def test_fashion_train_starts_from_a_coco_darknet_file(tiny_ccp: Path, tmp_path: Path) -> None:
    from fixtures.darknet_files import randomise_batch_norm, write_weights

    from fashionvision.families.yolov3.model import YOLOv3

    coco = write_weights(tmp_path / "yolov3.weights", randomise_batch_norm(YOLOv3(80, width=0.0625), seed=0))
    run = tmp_path / "run"
    done = _train(tmp_path, "model=yolo", "trainer=smoke", f"dataset.path={tiny_ccp}", "model.width=0.0625",
                  "model.image_size=64", "anchors=coco", f"model.weights={coco}", "trainer.epochs=1",
                  f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    log_text = next(run.glob("*.log")).read_text()
    assert ("loaded 72 of 75 convolutions; skipped head1.out, head2.out, head3.out "
            "(80 classes in the file, 56 in the model)") in log_text


@pytest.mark.slow  # ~20 s on 2 idle cores: a mobilenet_v2 U-Net through Hydra, its encoder from a file
def test_fashion_train_unet_encoder_from_a_local_file(tiny_ccp: Path, tmp_path: Path) -> None:
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    encoder = smp.Unet("mobilenet_v2", encoder_weights=None, classes=2).encoder
    torch.save(encoder.state_dict(), tmp_path / "mobilenet_v2_encoder.pth")
    run = tmp_path / "run"
    done = _train(tmp_path, "model=unet", "model.encoder=mobilenet_v2", "trainer=smoke", f"dataset.path={tiny_ccp}",
                  "model.image_size=64", f"model.encoder_weights={tmp_path / 'mobilenet_v2_encoder.pth'}",
                  "trainer.epochs=1", f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    log_text = next(run.glob("*.log")).read_text()
    assert "tensors into the encoder; the decoder starts fresh" in log_text
    (tmp_path / "mobilenet_v2_encoder.pth").unlink()  # the run's checkpoint needs it no more
    from fashionvision.inference.loading import load_for_inference

    _, model, _ = load_for_inference(run)
    assert model.net.encoder.features[0][0].weight.shape == encoder.features[0][0].weight.shape


def test_errors_are_one_line(tmp_path: Path) -> None:
    done = _train(tmp_path, "model=unet", "dataset=deepfashion", f"hydra.run.dir={tmp_path / 'r1'}")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no segmentation masks" in errors[0]


def test_torchrun_needs_one_run_folder(monkeypatch) -> None:
    argv = ["fashion-train", "trainer=ddp"]
    assert distributed_overrides(argv, {}) == argv
    with pytest.raises(SystemExit):
        distributed_overrides(argv, {"WORLD_SIZE": "2", "RANK": "0"})
    rank0 = distributed_overrides(argv, {"WORLD_SIZE": "2", "RANK": "0", "FASHION_RUN_DIR": "/runs/a"})
    assert rank0 == [*argv, "hydra.run.dir=/runs/a"]
    rank1 = distributed_overrides([*argv, "hydra.run.dir=/runs/a"], {"WORLD_SIZE": "2", "RANK": "1"})
    assert "hydra.output_subdir=null" in rank1 and any("train_rank1.log" in a for a in rank1)


def test_fashion_train_refuses_a_run_folder_with_checkpoints(tmp_path: Path) -> None:
    """A fresh run over an earlier run's files, through the CLI: one line before any data work; old files stay."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes(b"earlier run")
    done = _train(tmp_path, f"dataset.path={tmp_path / 'not-there'}", f"hydra.run.dir={run}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "trainer.resume=auto" in errors[0] and "hydra.run.dir" in errors[0]
    assert (run / "checkpoints" / "best.pt").read_bytes() == b"earlier run"
