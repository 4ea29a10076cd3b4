"""Typed config groups: every shipped config parses; typos and senseless values fail in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fashionvision.cli._hydra import CONFIG_DIR, compose
from fashionvision.config import parse_section
from fashionvision.data.augment_config import AugmentConfig
from fashionvision.engine.config import parse_trainer_config
from fashionvision.errors import UserError
from fashionvision.families import FAMILIES, family
from fashionvision.families.unet.config import UNetConfig
from fashionvision.families.yolov3.config import AnchorsConfig, YOLOv3Config

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("overrides", [["model=yolo"], ["model=unet"], ["model=yolo", "anchors=kmeans"],
                                       ["augment=none"], *([f"experiment={e}"] for e in EXPERIMENTS)])
def test_every_shipped_config_parses(overrides: list[str], tmp_path: Path) -> None:
    cfg = compose("train", [*overrides, f"dataset.path={tmp_path}"])
    parse_trainer_config(cfg["trainer"])
    family(cfg["model"]["name"]).check_config(cfg["model"], cfg["augment"], cfg["anchors"])


def test_registry_lists_the_families_on_a_typo() -> None:
    assert set(FAMILIES) == {"yolo", "unet"}
    with pytest.raises(UserError, match="unknown model 'yolov'; choose one of: unet, yolo"):
        family("yolov")


@pytest.mark.parametrize("cls, section, raw, message", [
    (YOLOv3Config, "model", {"widht": 0.5}, r"unknown model setting 'widht' \(did you mean 'width'\?\)"),
    (UNetConfig, "model", {"encodr": "vanilla"}, r"'encodr' \(did you mean 'encoder'\?\)"),
    (AugmentConfig, "augment", {"hfilp": 0.5}, r"'hfilp' \(did you mean 'hflip'\?\)"),
    (AnchorsConfig, "anchors", {"kk": 9}, r"unknown anchors setting 'kk'"),
    (YOLOv3Config, "model", {"width": 0.0}, r"^model.width must be > 0, got 0.0$"),
    (YOLOv3Config, "model", {"width": -1}, r"model.width must be > 0, got -1.0"),
    (UNetConfig, "model", {"width": 0}, r"model.width must be > 0, got 0.0"),
    (YOLOv3Config, "model", {"conf": 1.5}, r"^model.conf must be between 0 and 1, got 1.5$"),
    (YOLOv3Config, "model", {"iou": -0.1}, r"model.iou must be between 0 and 1, got -0.1"),
    (YOLOv3Config, "model", {"eval_conf": 2}, r"model.eval_conf must be between 0 and 1, got 2.0"),
    (YOLOv3Config, "model", {"image_size": 100}, r"^model.image_size must be at least 32 and a multiple of 32, got 100$"),
    (UNetConfig, "model", {"image_size": 0}, r"model.image_size must be at least 32 and a multiple of 32, got 0"),
    (YOLOv3Config, "model", {"image_size": "big"}, r"model.image_size must be an integer"),
    (AnchorsConfig, "anchors", {"k": 0}, r"^anchors.k must be > 0, got 0$"),
    (AnchorsConfig, "anchors", {"name": "kmean"}, r"unknown anchors 'kmean'"),
    (AugmentConfig, "augment", {"hflip": 2.0}, r"augment.hflip must be between 0 and 1, got 2.0"),
    (AugmentConfig, "augment", {"scale": [1.4, 0.6]}, r"augment.scale must be \[low, high\] with 0 < low <= high, got \[1.4, 0.6\]"),
])
def test_bad_groups_fail_with_one_line_naming_the_key(cls, section, raw, message) -> None:
    with pytest.raises(UserError, match=message) as info:
        parse_section(cls, raw, section)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("raw, message", [
    ({"lr": 0.0}, r"^trainer.lr must be a positive number, got 0.0$"),
    ({"lr": -1e-3}, r"trainer.lr must be a positive number, got -0.001"),
    ({"workers": -1}, r"^trainer.workers must be 0 \(load in the main process\) or more, got -1$"),
    ({"grad_clip": -1.0}, r"trainer.grad_clip must be >= 0 \(or null\), got -1.0"),
    ({"ema_decay": 1.0}, r"^trainer.ema_decay must be in \[0, 1\), got 1.0$"),
    ({"ema_decay": -0.5}, r"trainer.ema_decay must be in \[0, 1\), got -0.5"),
    ({"batch_size": 0}, r"trainer.batch_size must be at least 1, got 0"),
    ({"optimizer": "adam"}, r"trainer.optimizer='adam'; choose one of adamw, sgd"),
])
def test_trainer_ranges(raw, message) -> None:
    with pytest.raises(UserError, match=message):
        parse_trainer_config(raw)
    parse_trainer_config({"grad_clip": None, "ema_decay": 0.0, "workers": 0})  # the edges are fine


def test_typed_values_are_parsed_once_into_the_task(hand_converted_ccp) -> None:
    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.families import build_task

    task = build_task({"name": "yolo", "width": 1, "image_size": 64, "conf": 0.25}, ConvertedDataset.open(hand_converted_ccp),
                      {"hflip": 0.5}, {"name": "coco"})
    assert isinstance(task.cfg, YOLOv3Config) and task.cfg.width == 1.0 and isinstance(task.cfg.width, float)
    assert task.default_thresholds() == (0.25, 0.45) and task.role == "detector" and not task.rect_input
    assert task.augment.hflip == 0.5 and task.augment_cfg["mosaic"] == 0.0


def test_fashion_train_refuses_a_bad_value_before_converting(tmp_path: Path) -> None:
    """`fashion-train model.width=0` stops before any download, conversion or checkpoint."""
    from fashionvision.cli.train import check_model_fits_dataset

    source = tmp_path / "nowhere"
    cfg = compose("train", ["model=yolo", "model.width=0", f"dataset.path={tmp_path / 'converted'}",
                            f"dataset.source={source}", "convert_if_missing=true"])
    with pytest.raises(UserError, match="model.width must be > 0, got 0.0"):
        check_model_fits_dataset(cfg)
    cfg = compose("train", ["model=unet", "trainer.ema_decay=1.0", f"dataset.path={tmp_path / 'converted'}"])
    with pytest.raises(UserError, match="trainer.ema_decay must be in"):
        check_model_fits_dataset(cfg)
    assert not (tmp_path / "converted").exists() and not source.exists()
    assert json.dumps(cfg)  # plain data all the way
