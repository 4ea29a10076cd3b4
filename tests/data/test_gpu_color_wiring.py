"""Colour jitter moves from the loader to the batch when the engine sets ``task.gpu_color``."""

from __future__ import annotations

import torch

from fashionvision.data.converted import ConvertedDataset
from fashionvision.families.yolov3.task import YOLOv3Task as DetectionTask

# training items letterboxed to the same square as evaluation items
MODEL_CFG = {"name": "yolo", "width": 0.125, "depth": 0.34, "image_size": 96}
COLOUR_ONLY = {"hflip": 0.0, "vflip": 0.0, "hsv_h": 0.02, "hsv_s": 0.6, "hsv_v": 0.4, "contrast": 0.3,
               "scale": [1.0, 1.0], "translate": 0.0, "rotate": 0.0, "crop": 0.0, "mosaic": 0.0}


def test_colour_runs_on_the_batch_not_in_the_loader(hand_converted_ccp):
    data = ConvertedDataset.open(hand_converted_ccp)
    task = DetectionTask(MODEL_CFG, data, COLOUR_ONLY, {"name": "coco"})
    plain = task.build_dataset("train", train=False)[0]["image"]

    jittered_on_cpu = task.build_dataset("train", train=True)[0]["image"]
    assert not torch.equal(jittered_on_cpu, plain)  # colour applied in the loader by default

    task.gpu_color = True
    loader_item = task.build_dataset("train", train=True)[0]
    assert torch.equal(loader_item["image"], plain)  # the loader now leaves colour alone
    batch = task.gpu_augment(task.collate([loader_item]))
    assert batch["images"].dtype == torch.uint8
    assert not torch.equal(batch["images"][0], plain)  # ... and the batch gets it

    task.gpu_color = False
    untouched = task.collate([loader_item])
    assert torch.equal(task.gpu_augment(untouched)["images"][0], plain)
