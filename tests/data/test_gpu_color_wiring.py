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


def _jittered(task, item, rank):
    task.gpu_color, task.rank = True, rank
    return task.gpu_augment(task.collate([item]))["images"][0]


def test_each_rank_draws_its_own_jitter_reproducibly(hand_converted_ccp, monkeypatch):
    """The colour stream is a generator of the task's own, seeded from (seed, rank): two ranks
    jitter differently, a rank is reproducible, and the global generator is left alone."""
    data = ConvertedDataset.open(hand_converted_ccp)
    task = DetectionTask(MODEL_CFG, data, COLOUR_ONLY, {"name": "coco"})
    task.gpu_color = True
    item = task.build_dataset("train", train=True)[0]

    torch.manual_seed(0)
    expected_global = torch.rand(3)
    torch.manual_seed(0)
    rank0 = _jittered(DetectionTask(MODEL_CFG, data, COLOUR_ONLY, {"name": "coco"}), item, 0)
    assert torch.equal(torch.rand(3), expected_global)  # the global stream did not move
    rank1 = _jittered(DetectionTask(MODEL_CFG, data, COLOUR_ONLY, {"name": "coco"}), item, 1)
    again = _jittered(DetectionTask(MODEL_CFG, data, COLOUR_ONLY, {"name": "coco"}), item, 0)
    assert not torch.equal(rank0, rank1)
    assert torch.equal(rank0, again)

    # the stream goes on from batch to batch, and its state continues it after a resume
    first = DetectionTask(MODEL_CFG, data, COLOUR_ONLY, {"name": "coco"})
    _jittered(first, item, 0)
    saved = first.color_rng.state_dict()
    second_batch = _jittered(first, item, 0)
    assert not torch.equal(second_batch, rank0)
    resumed = DetectionTask(MODEL_CFG, data, COLOUR_ONLY, {"name": "coco"})
    resumed.rank = 0
    resumed.color_rng.load_state_dict(saved)
    assert torch.equal(_jittered(resumed, item, 0), second_batch)

    # without an explicit rank the task reads torchrun's RANK; another seed, another stream
    from_env = DetectionTask(MODEL_CFG, data, COLOUR_ONLY, {"name": "coco"})
    monkeypatch.setenv("RANK", "1")
    assert torch.equal(_jittered(from_env, item, None), rank1)
    other_seed = DetectionTask(MODEL_CFG, data, COLOUR_ONLY, {"name": "coco"})
    other_seed.seed = 7
    assert not torch.equal(_jittered(other_seed, item, 1), rank1)
