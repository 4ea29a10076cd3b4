"""A crafted checkpoint's config fails fast, in one line, before the model is built."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fashionvision.data.converted import ConvertedDataset
from fashionvision.engine.checkpoint import save_checkpoint
from fashionvision.inference.loading import load_for_inference
from fashionvision.errors import UserError
from fashionvision.families import family as task_class

CLASSES = ["shirt", "skirt", "shoes"]
MODELS = {
    "yolo": {"name": "yolo", "width": 0.0625, "depth": 0.34, "image_size": 64},
    "unet": {"name": "unet", "encoder": "vanilla", "width": 0.0625, "image_size": 64},
}


def _checkpoint(folder: Path, kind: str, **model_overrides) -> Path:
    """A small genuine checkpoint whose stored config is then edited (as an attacker would)."""
    data = ConvertedDataset.from_classes(CLASSES, ["background", *CLASSES])
    task = task_class(kind)(dict(MODELS[kind]), data, None, {"name": "coco"})
    state = {"model": task.build_model().state_dict(), "task": task.describe(),
             "config": {"model": {**MODELS[kind], **model_overrides}, "anchors": {"name": "coco"}}}
    path = folder / f"{kind}-{'-'.join(f'{k}{v}' for k, v in model_overrides.items()) or 'genuine'}.pt"
    return save_checkpoint(path, state)


@pytest.mark.parametrize("kind", ["yolo", "unet"])
def test_crafted_configs_fail_fast_in_one_line(kind: str, tmp_path: Path) -> None:
    task, _, _ = load_for_inference(_checkpoint(tmp_path, kind))  # the genuine file loads
    assert task.class_names[-1] == "shoes"
    for overrides, reason in [({"width": 64}, "outside the range"), ({"image_size": 100000}, "outside the range"),
                              ({"width": float("nan")}, "not a finite number"),
                              ({"width": 1.0}, "do not fit the model")]:  # in range, but not these weights
        started = time.perf_counter()
        with pytest.raises(UserError, match=reason) as info:
            load_for_inference(_checkpoint(tmp_path, kind, **overrides))
        assert time.perf_counter() - started < 10
        assert "\n" not in str(info.value) and "checkpoint '" in str(info.value)


def test_too_many_classes_are_refused(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path, "yolo")
    state = torch.load(path, weights_only=True)
    state["task"]["classes"] = [f"c{i}" for i in range(100_000)]
    torch.save(state, path)
    with pytest.raises(UserError, match="100000 classes"):
        load_for_inference(path)


@pytest.mark.slow  # a subprocess (torch import): ~5 s
def test_crafted_width_under_a_memory_cap_is_a_one_line_error(tmp_path: Path) -> None:
    """What the fault-injection pass did: fashion-predict with model.width=64, here under a 3 GB cap."""
    ckpt = _checkpoint(tmp_path, "yolo", width=64)
    photo = tmp_path / "photo.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(photo), np.zeros((32, 32, 3), np.uint8))
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30)); "
            "from fashionvision.cli.predict import main; sys.argv = sys.argv[1:]; main()")
    done = subprocess.run([sys.executable, "-c", code, "fashion-predict", f"ckpt={ckpt}", f"source={photo}",
                           f"output={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'h'}"],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model.width=64" in errors[0] and "Traceback" not in done.stderr
