"""Every config option composes and resolves with every primary config that uses its group.

Groups and options are discovered from the files, so groups, options and commands added
later are covered without editing this test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fashionvision.cli._hydra import CONFIG_DIR, compose

PRIMARIES = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
GROUPS = {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(CONFIG_DIR.iterdir()) if d.is_dir()}


def groups_in_defaults(primary: str) -> list[str]:
    """Config groups named in a primary config's defaults list."""
    data = yaml.safe_load((CONFIG_DIR / f"{primary}.yaml").read_text(encoding="utf-8")) or {}
    groups = []
    for entry in data.get("defaults", []):
        if not isinstance(entry, dict):
            continue  # _self_ or a plain config name
        for key in entry:
            name = key.replace("optional ", "").replace("override ", "").strip().lstrip("/").split("@")[0]
            if name in GROUPS:
                groups.append(name)
    return groups


CASES = [
    pytest.param(primary, group, option, id=f"{primary}-{group}={option}")
    for primary in PRIMARIES
    for group in groups_in_defaults(primary)
    for option in GROUPS[group]
]


@pytest.fixture(autouse=True)
def data_dirs(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("FASHION_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FASHION_CONVERTED_DIR", str(tmp_path / "converted"))


def test_discovery_found_the_known_configs():
    assert {"train", "eval", "convert", "validate", "anchors", "download", "show"} <= set(PRIMARIES)
    assert {"dataset", "model", "anchors", "augment", "trainer", "experiment", "paths"} <= set(GROUPS)
    assert {"dataset", "model", "anchors", "augment", "trainer"} <= set(groups_in_defaults("train"))


@pytest.mark.parametrize("primary", PRIMARIES)
def test_primary_composes_and_resolves(primary: str, tmp_path: Path):
    cfg = compose(primary)
    assert isinstance(cfg, dict)
    assert cfg["data_dir"] == str(tmp_path / "data")


@pytest.mark.parametrize("primary, group, option", CASES)
def test_every_option_composes_with_every_primary(primary: str, group: str, option: str, tmp_path: Path):
    if group == "hparams_search":
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")  # its searches choose hydra/sweeper=optuna
    cfg = compose(primary, [f"{group}={option}"])
    if group in ("experiment", "study", "hparams_search"):
        return  # @package _global_: they set keys across groups
    if group == "paths":
        assert cfg["converted_dir"] == str(tmp_path / "converted")
        return
    section = cfg[group]
    assert isinstance(section, dict) and section, f"{group}={option} composed to an empty section"
    if "name" in section:
        assert section["name"] == option, f"configs/{group}/{option}.yaml has name '{section['name']}'"


def test_every_group_is_used_by_some_primary():
    used = {g for p in PRIMARIES for g in groups_in_defaults(p)}
    assert set(GROUPS) <= used, f"groups no command uses: {sorted(set(GROUPS) - used)}"


def test_hydra_run_dir_override_for_validate(tmp_path: Path):
    (tmp_path / "train.txt").write_text("a.jpg 0,0,1,1,0\n")
    run = tmp_path / "my-run"
    exe = shutil.which("fashion-validate")
    cmd = [exe] if exe else [sys.executable, "-m", "fashionvision.cli.validate"]
    proc = subprocess.run([*cmd, "train.txt", f"hydra.run.dir={run}"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (run / ".hydra" / "config.yaml").is_file()
    saved = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert saved["file"] == "train.txt"
    assert not (tmp_path / "outputs").exists(), "the default run folder must not be created"


@pytest.mark.parametrize("study", GROUPS["study"])
def test_every_study_sweeps_existing_experiments_and_seeds(study: str):
    """The study's grid names the six recipes of the thesis, each an experiment that exists, and seeds."""
    data = yaml.safe_load((CONFIG_DIR / "study" / f"{study}.yaml").read_text(encoding="utf-8"))
    params = data["hydra"]["sweeper"]["params"]
    experiments = params["experiment"].split(",")
    assert experiments == ["yolo_kmeans_aug", "yolo_coco_aug", "yolo_kmeans_noaug",
                           "unet_resnet50", "unet_mobilenet_v2", "unet_vanilla"]
    assert all((CONFIG_DIR / "experiment" / f"{e}.yaml").is_file() for e in experiments)
    assert len(str(params["trainer.seed"]).split(",")) >= 2
    for experiment in experiments:  # the study's one budget wins over each experiment's epochs
        cfg = compose("train", [f"study={study}", f"experiment={experiment}"])
        assert cfg["trainer"]["max_time"] == data["trainer"]["max_time"]
        assert cfg["dataset"]["name"] == "ccp"
