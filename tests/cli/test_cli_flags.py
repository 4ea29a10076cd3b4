"""Every command as users of Hydra expect it: flags anywhere, one dataset spelling, typos caught,
a --help that says what the command does and lists only its own config groups."""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fashionvision.cli._argv import reorder

# command -> (an override it accepts, the config groups its --help must list)
COMMANDS = {
    "anchors": ("k=6", {"dataset", "paths"}),
    "compare": ("split=val", {"dataset", "paths"}),
    "convert": ("seed=3", {"paths"}),
    "download": ("timeout=5", {"dataset", "paths"}),
    "eval": ("ckpt=x", {"dataset", "paths"}),
    "export": ("opset=16", {"paths"}),
    "predict": ("conf=0.4", {"paths"}),
    "serve": ("port=8123", {"paths"}),
    "show": ("n=3", {"dataset", "paths"}),
    "summary": ("image_size=64", {"dataset", "model", "paths"}),
    "train": ("model=unet", {"anchors", "augment", "dataset", "experiment", "hparams_search", "model", "paths", "study", "trainer"}),
    "validate": ("file=train.txt", {"paths"}),
}
ALL_GROUPS = {"anchors", "augment", "dataset", "experiment", "hparams_search", "model", "paths", "study", "trainer"}


@pytest.fixture(autouse=True)
def data_dirs(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("FASHION_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FASHION_CONVERTED_DIR", str(tmp_path / "converted"))
    monkeypatch.chdir(tmp_path)


def run_command(monkeypatch, capsys, command: str, *args: str) -> tuple[int, str, str]:
    """``fashion-<command> *args`` in this process; (exit code, stdout, stderr)."""
    module = importlib.import_module(f"fashionvision.cli.{command}")
    monkeypatch.setattr(sys, "argv", [f"fashion-{command}", *args])
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in ("hydra", "fashionvision"))]
    saved = [(lg, lg.handlers[:], lg.level) for lg in loggers]
    try:
        with pytest.raises(SystemExit) as exit_info:
            module.main()
            raise SystemExit(0)  # Hydra returns after --cfg/--help/--info when run_hydra does not exit
    finally:  # Hydra's --info configures logging on the captured (soon closed) streams
        for lg, handlers, level in saved:
            lg.handlers[:] = handlers
            lg.setLevel(level)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_reorder_moves_overrides_before_flags():
    assert reorder(["p", "model=unet", "--cfg", "job", "x=1"]) == ["p", "model=unet", "x=1", "--cfg", "job"]
    assert reorder(["p", "--info", "defaults", "a=1"]) == ["p", "a=1", "--info", "defaults"]
    assert reorder(["p", "--info", "a=1"]) == ["p", "a=1", "--info"]  # --info's value is optional
    assert reorder(["p", "--help", "ccp", "seed=1"], "converter") == ["p", "converter=ccp", "seed=1", "--help"]
    assert reorder(["p", "-c", "job", "--resolve", "k=v"]) == ["p", "k=v", "-c", "job", "--resolve"]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cfg_job_after_an_override(monkeypatch, capsys, command: str):
    override, _ = COMMANDS[command]
    code, out, err = run_command(monkeypatch, capsys, command, override, "--cfg", "job")
    assert code == 0, err
    assert "unrecognized arguments" not in err
    key, value = override.split("=")
    cfg = yaml.safe_load(out)
    if key == "model":
        assert cfg["model"]["name"] == value
    else:
        assert str(cfg[key]) == value


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_after_an_override_lists_only_the_commands_groups(monkeypatch, capsys, command: str):
    override, groups = COMMANDS[command]
    code, out, err = run_command(monkeypatch, capsys, command, override, "--help")
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith(f"fashion-{command}: ") and first.endswith(".") and len(first.split()) > 6, first
    section = out.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = {line.split(":")[0] for line in section.splitlines() if ": " in line and "group=option" not in line}
    assert listed == groups, section
    assert not (ALL_GROUPS - groups) & listed


def test_convert_help_and_info_with_a_bare_word(monkeypatch, capsys):
    for args in (["ccp", "--help"], ["--help", "ccp"]):
        code, out, _ = run_command(monkeypatch, capsys, "convert", *args)
        assert code == 0 and "converter: ccp" in out and "trainer:" not in out
    code, out, err = run_command(monkeypatch, capsys, "train", "model=unet", "--info", "defaults")
    assert code == 0, err
    assert "model/unet" in out + err


@pytest.mark.parametrize("command", ["eval", "compare", "show", "anchors"])
def test_one_dataset_spelling(monkeypatch, capsys, command: str, tmp_path: Path):
    folder = tmp_path / "my converted"
    extra = {"eval": ["ckpt=x"], "compare": ["detector=a", "segmenter=b"]}.get(command, [])
    for spelling in (f"dataset.path={folder}", f"dataset={folder}", f"data={folder}"):
        code, out, err = run_command(monkeypatch, capsys, command, *extra, spelling, "--cfg", "job")
        assert code == 0, (spelling, err)
        assert yaml.safe_load(out)["dataset"]["path"] == str(folder), spelling
    code, out, err = run_command(monkeypatch, capsys, command, *extra, "dataset=fashionpedia", "--cfg", "job",
                                 "--resolve")
    assert code == 0, err
    assert yaml.safe_load(out)["dataset"]["path"] == str(tmp_path / "converted" / "fashionpedia")


@pytest.mark.parametrize("command, typo, hint", [
    ("train", "trainer.batch_sz=4", "trainer.batch_size"),
    ("train", "model.widht=0.5", "model.width"),
    ("eval", "splt=val", "split"),
    ("predict", "splt=val", None),
    ("train", "model=unnet", "model=unet"),
    ("train", "traner.epochs=3", "trainer.epochs"),
])
def test_typos_get_did_you_mean(monkeypatch, capsys, command: str, typo: str, hint: str | None):
    code, out, err = run_command(monkeypatch, capsys, command, "ckpt=x", typo) if command != "train" else \
        run_command(monkeypatch, capsys, command, typo, "--cfg", "job")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert typo.split("=")[0].split(".")[-1] in lines[0]
    if hint:
        assert f"did you mean '{hint}'" in lines[0]
    else:
        assert "did you mean" not in lines[0]


def test_every_typo_is_reported_at_once(monkeypatch, capsys):
    code, _, err = run_command(monkeypatch, capsys, "train", "trainer.batch_sz=4", "model.widht=0.5")
    assert code == 2 and "trainer.batch_size" in err and "model.width" in err


def test_console_entry_point_with_flags_after_overrides(tmp_path: Path):
    """The real process (no monkeypatching): what the issue reported."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "fashionvision.cli.train", "model=unet", "--cfg", "job",
                           "trainer.epochs=3"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    cfg = yaml.safe_load(done.stdout)
    assert cfg["model"]["name"] == "unet" and cfg["trainer"]["epochs"] == 3
    assert not (tmp_path / "outputs").exists()
