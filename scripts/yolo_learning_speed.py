#!/usr/bin/env python
"""Learning speed of the YOLOv3 loss/assignment options: a proxy that fits a busy CPU.

The loop of tests/test_yolo_overfit.py (one batch of 8 real CCP-416 images, no augmentation,
AdamW 3e-3, one thread, width 0.25, depth 0.34, 128 px) for each named variant of the model
options, printing mAP50 on those images every 30 steps (benchmarks/ablations_yolo_cpu.json):

    python scripts/yolo_learning_speed.py old scale_only multi_only neigh_only new
"""
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import build_hand_converted_ccp
from fashionvision.data.converted import ConvertedDataset
from fashionvision.engine.loaders import build_loader
from fashionvision.families.yolov3.task import YOLOv3Task as DetectionTask
torch.set_num_threads(1)
ccp = Path(os.environ.get("FASHION_DATA_DIR", "../shared/data")) / "ccp-416"
stems = sorted(p.stem for p in (ccp / "annotations" / "pixel-level").glob("*.mat"))[:8]
folder = Path(tempfile.gettempdir()) / "yolo_learning_speed_ccp8"
if not (folder / "train.txt").exists():
    build_hand_converted_ccp(ccp, folder, stems, masks=False)
variants = {"old": {}, "new": {"multi_anchor_iou": 0.2, "neighbor_cells": True, "xy_scale": 2.0, "loss_reduction": "scale"},
            "new_noneigh": {"multi_anchor_iou": 0.2, "loss_reduction": "scale"},
            "multi_only": {"multi_anchor_iou": 0.2}, "scale_only": {"loss_reduction": "scale"},
            "neigh_global": {"multi_anchor_iou": 0.2, "neighbor_cells": True, "xy_scale": 2.0},
            "neigh_only": {"neighbor_cells": True, "xy_scale": 2.0}}
which = sys.argv[1:]
for name in which:
    torch.manual_seed(0)
    model_cfg = {"name": "yolo", "width": 0.25, "depth": 0.34, "image_size": 128, **variants[name]}
    anchors_cfg = {"name": "kmeans", "k": 9, "seed": 0, "file": str(folder / "anchors.json")}
    task = DetectionTask(model_cfg, ConvertedDataset.open(folder), None, anchors_cfg)
    model = task.build_model()
    loader = build_loader(task.build_dataset("train", train=False), 8, 0, task.collate)
    batch = next(iter(loader))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    hist = []
    for step in range(1, 121):
        model.train()
        losses = task.compute_losses(model, batch)
        opt.zero_grad()
        sum(v for k, v in losses.items() if not k.startswith("raw_")).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if step % 30 == 0:
            hist.append((step, round(task.evaluate(model, loader, torch.device("cpu"))["map50"], 4)))
            print(name, hist[-1], flush=True)
    print("RESULT", name, hist, flush=True)
