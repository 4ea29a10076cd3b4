"""fashion-eval end to end: a checkpoint on real CCP images; metrics equal a direct pycocotools run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import independent_ccp_gt


@pytest.fixture(scope="module")
def checkpoint(hand_converted_ccp: Path, tmp_path_factory) -> Path:
    """A tiny YOLOv3 checkpoint in the engine's format whose heads emit fixed, anchor-sized boxes.

    Zero output weights and chosen biases make every cell predict its anchor box at the cell
    centre, scored for the classes present in the images: deterministic predictions in
    original-image coordinates. (Their mAP is about 0; the slow overfit test runs the same
    comparison on a trained model, where the values are far from 0.)
    """
    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.engine.checkpoint import save_checkpoint
    from fashionvision.families.yolov3.task import YOLOv3Task as DetectionTask

    torch.manual_seed(0)
    model_cfg = {"name": "yolo", "width": 0.125, "depth": 0.34, "image_size": 128,
                 "conf": 0.3, "eval_conf": 0.001, "eval_iou": 0.6, "max_det": 300}
    anchors_cfg = {"name": "values", "values": [[8, 10], [12, 30], [20, 16], [20, 40], [30, 25],
                                                [30, 60], [50, 40], [50, 90], [90, 110]]}
    task = DetectionTask(model_cfg, ConvertedDataset.open(hand_converted_ccp), None, anchors_cfg)
    model = task.build_model()
    present = sorted({int(c) for r in task.data.records("train") for c in r.boxes[:, 4]})
    rng = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for head in (model.head1, model.head2, model.head3):
            head.out.weight.zero_()
            bias = head.out.bias.view(3, -1)
            bias[:, :4] = 0.0
            bias[:, 4] = 2.0
            bias[:, 5:] = -9.0  # classes absent from these images never score
            bias[:, 5 + torch.tensor(present)] = torch.randn(3, len(present), generator=rng)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    config = {"model": model_cfg, "anchors": anchors_cfg, "dataset": {"path": str(hand_converted_ccp)}}
    save_checkpoint(path, {"version": 1, "model": model.state_dict(), "config": config, "task": task.describe()})
    return path


def test_fashion_eval_matches_pycocotools(checkpoint, hand_converted_ccp, shared_data, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = tmp_path / "eval"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    run = subprocess.run([sys.executable, "-m", "fashionvision.cli.eval", f"ckpt={checkpoint.parent}",
                          "split=train", f"output={out}", "device=cpu", "workers=0", "batch_size=2",
                          f"hydra.run.dir={tmp_path / 'hydra'}"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "map50" in run.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("predictions.json", "pr_curve.png", "confusion_matrix.png"):
        assert (out / name).is_file()
    assert metrics["eval"]["split"] == "train" and metrics["eval"]["images"] == 4
    assert metrics["ms_per_image"] > 0 and len(metrics["per_class"]) == 56

    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(independent_ccp_gt(hand_converted_ccp, shared_data / "ccp")))
    predictions = json.loads((out / "predictions.json").read_text())
    assert predictions and {p["image_id"] for p in predictions} <= {0, 1, 2, 3}
    boxes = np.array([p["bbox"] for p in predictions])
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 550.01).all()  # original pixels
    coco = COCO(str(gt_file))
    ev = COCOeval(coco, coco.loadRes(str(out / "predictions.json")), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    for key, index in (("map", 0), ("map50", 1), ("map75", 2), ("ar100", 8)):
        assert metrics[key] == pytest.approx(max(ev.stats[index], 0.0), abs=1e-9), key


def test_fashion_eval_reports_a_missing_checkpoint(tmp_path):
    run = subprocess.run([sys.executable, "-m", "fashionvision.cli.eval", f"ckpt={tmp_path / 'nope'}",
                          f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "does not exist" in run.stderr
