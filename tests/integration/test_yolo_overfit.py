"""A tiny YOLOv3 overfits 8 real CCP images on the CPU, then fashion-eval agrees with pycocotools.

Direct training loop (no engine): the whole 8-image batch, no augmentation, AdamW. Slow on
2 cores (a few minutes), hence marked; run with ``pytest -m slow tests/integration/test_yolo_overfit.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import build_hand_converted_ccp
from conftest import independent_ccp_gt

MAX_STEPS = 600
EVAL_EVERY = 50


@pytest.mark.slow
def test_tiny_yolo_overfits_eight_ccp_images(shared_data, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from fashionvision.cli.eval import evaluate
    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.engine.build import build_loader
    from fashionvision.engine.checkpoint import save_checkpoint
    from fashionvision.families.yolov3.task import YOLOv3Task as DetectionTask

    torch.set_num_threads(2)
    torch.manual_seed(0)
    ccp = shared_data / "ccp-416"  # same images, long side 416: faster to decode
    stems = sorted(p.stem for p in (ccp / "annotations" / "pixel-level").glob("*.mat"))[:8]
    folder = build_hand_converted_ccp(ccp, tmp_path / "ccp8", stems, masks=False)
    model_cfg = {"name": "yolo", "width": 0.25, "depth": 0.34, "image_size": 160, "multi_anchor_iou": 0.3}
    anchors_cfg = {"name": "kmeans", "k": 9, "seed": 0, "file": str(folder / "anchors.json")}
    task = DetectionTask(model_cfg, ConvertedDataset.open(folder), None, anchors_cfg)
    model = task.build_model()
    loader = build_loader(task.build_dataset("train", train=False), 8, 0, task.collate)
    batch = next(iter(loader))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    best = 0.0
    for step in range(1, MAX_STEPS + 1):
        model.train()
        losses = task.compute_losses(model, batch)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        if step % EVAL_EVERY == 0:
            best = task.evaluate(model, loader, torch.device("cpu"))["map50"]
            if best > 0.6:
                break
    assert best > 0.5, f"mAP@.5 on the training images only {best:.3f} after {step} steps"

    # the trained model through fashion-eval's code path equals a direct pycocotools run
    ckpt = tmp_path / "run" / "best.pt"
    ckpt.parent.mkdir()
    config = {"model": model_cfg, "anchors": anchors_cfg, "dataset": {"path": str(folder)}}
    save_checkpoint(ckpt, {"version": 1, "model": model.state_dict(), "config": config, "task": task.describe()})
    out = tmp_path / "eval"
    metrics = evaluate({"ckpt": str(ckpt.parent), "split": "train", "device": "cpu", "workers": 0,
                        "batch_size": 4}, out)
    assert metrics["map50"] == pytest.approx(best, abs=1e-6)
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(independent_ccp_gt(folder, ccp)))
    coco = COCO(str(gt_file))
    ev = COCOeval(coco, coco.loadRes(str(out / "predictions.json")), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    for key, index in (("map", 0), ("map50", 1), ("map75", 2), ("ar100", 8)):
        assert metrics[key] == pytest.approx(ev.stats[index], abs=1e-9), key
    assert json.loads(Path(out / "metrics.json").read_text())["per_class"]
