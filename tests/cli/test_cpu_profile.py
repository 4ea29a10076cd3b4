"""`fashion-train` on a machine without CUDA picks the model's CPU profile."""

from __future__ import annotations

import pytest

from fashionvision.cli._hydra import compose
from fashionvision.cli.cpu_profile import cpu_profile_overrides, profile_for
from fashionvision.engine.build import clamp_workers


def test_no_argument_without_cuda_picks_the_cpu_profile(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv, note = cpu_profile_overrides(["fashion-train"], env={})
    assert argv == ["fashion-train", "experiment=yolo_cpu_12m"]
    assert note.startswith("no GPU found: using the CPU profile experiment=yolo_cpu_12m (")
    assert "pass trainer.device=cpu experiment=... to choose" in note and "\n" not in note
    cfg = compose("train", argv[1:])
    assert cfg["trainer"]["device"] == "cpu" and cfg["trainer"]["max_time"] == "12m"
    assert cfg["model"]["width"] < 1.0  # not the full YOLOv3 at 416 px

    argv, note = cpu_profile_overrides(["fashion-train", "model=unet", "trainer.epochs=3"], env={})
    assert "experiment=unet_cpu_10m" in argv and "trainer.max_time=null" in argv
    cfg = compose("train", argv[1:])
    assert cfg["model"]["encoder"] == "mobilenet_v2" and cfg["trainer"]["epochs"] == 3
    assert cfg["trainer"]["max_time"] is None  # the user asked for epochs


def test_cuda_present_or_an_explicit_choice_changes_nothing(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cpu_profile_overrides(["fashion-train"], env={}) == (["fashion-train"], None)
    for chosen in ("trainer=smoke", "experiment=yolo_ccp_3min", "trainer.device=cpu", "+experiment=x"):
        assert cpu_profile_overrides(["fashion-train", chosen], cuda_available=False, env={}) == (
            ["fashion-train", chosen], None)
    assert cpu_profile_overrides(["fashion-train"], cuda_available=False, env={"WORLD_SIZE": "2"})[1] is None
    # a chosen dataset keeps its folders: only the CPU trainer is added
    argv, note = cpu_profile_overrides(["fashion-train", "dataset=fashionpedia"], cuda_available=False, env={})
    assert argv[-1] == "trainer=cpu" and "not applied to this dataset" in note
    # a converted folder (dataset.path=DIR or its alias dataset=DIR) keeps the profile and the folder
    for given in ("dataset.path=/data/mine", "dataset=/data/mine"):
        argv, note = cpu_profile_overrides(["fashion-train", given], cuda_available=False, env={})
        assert argv == ["fashion-train", given, "experiment=yolo_cpu_12m"]
    assert compose("train", ["dataset.path=/data/mine", "experiment=yolo_cpu_12m"])["dataset"]["path"] == "/data/mine"


def test_the_mapping_is_data_in_the_model_configs() -> None:
    assert profile_for("yolo") == "yolo_cpu_12m" and profile_for("unet") == "unet_cpu_10m"
    assert profile_for("no_such_model") is None
    assert compose("train", ["model=unet"])["model"]["cpu_profile"] == "unet_cpu_10m"


def test_loader_workers_never_exceed_the_cores(monkeypatch, caplog) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    with caplog.at_level("INFO", logger="fashionvision.engine"):
        assert clamp_workers(4, cores=2) == 2
    assert "trainer.workers=4 but 2 core(s) are available: using 2 loader workers" in caplog.text
    assert clamp_workers(1, cores=2) == 1 and clamp_workers(0, cores=2) == 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four ranks share the machine's cores
    assert clamp_workers(4, cores=8) == 2


@pytest.mark.slow
def test_fashion_train_without_cuda_says_which_profile(tmp_path) -> None:
    """The one line is logged by the real command (stopped right after by a missing dataset folder)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-m", "fashionvision.cli.train", f"dataset.path={tmp_path / 'none'}",
                           "convert_if_missing=false", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    log = (tmp_path / "run" / "train.log").read_text()
    assert "no GPU found: using the CPU profile experiment=yolo_cpu_12m" in log
    assert "error: dataset.path=" in done.stderr
