"""YOLOv3Task on real CCP images: anchors, losses on a real batch, predictions, describe()."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fashionvision.data.converted import ConvertedDataset
from fashionvision.errors import UserError
from fashionvision.families import family
from fashionvision.families.yolov3.task import YOLOv3Task as DetectionTask

MODEL_CFG = {"name": "yolo", "width": 0.125, "depth": 0.34, "image_size": 96, "conf": 0.0, "iou": 0.5}


def test_registry_and_kmeans_anchors_round_trip(hand_converted_ccp, tmp_path):
    assert family("yolo") is DetectionTask
    data = ConvertedDataset.open(hand_converted_ccp)
    file = tmp_path / "anchors.json"
    task = DetectionTask(MODEL_CFG, data, None, {"name": "kmeans", "k": 9, "seed": 0, "file": str(file)})
    described = task.describe()
    assert file.is_file()  # computed from the train split on first use
    assert described["task"] == "detection" and len(described["anchors"]) == 9
    model = task.build_model()
    assert np.allclose(model.anchors.reshape(-1, 2).numpy(), described["anchors"], atol=0.01)
    # what the engine rebuilds from a checkpoint
    again = DetectionTask(MODEL_CFG, data, None, {"name": "values", "values": described["anchors"]})
    assert np.allclose(again.anchors, task.anchors, atol=0.01)
    with pytest.raises(UserError, match="9 anchors"):
        _ = DetectionTask(MODEL_CFG, data, None, {"name": "values", "values": [[1, 2]] * 6}).anchors


def test_losses_and_predictions_on_a_real_batch(hand_converted_ccp):
    torch.manual_seed(0)
    task = DetectionTask(MODEL_CFG, ConvertedDataset.open(hand_converted_ccp), None, {"name": "coco"})
    model = task.build_model()
    dataset = task.build_dataset("train", train=False)
    batch = task.collate([dataset[0], dataset[1]])
    assert batch["images"].dtype == torch.uint8 and batch["targets"].shape[1] == 6
    losses = task.compute_losses(model, batch)
    assert set(losses) == {"box", "obj", "cls", "raw_box", "raw_obj", "raw_cls"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    preds = task.predict(model, batch["images"], batch["metas"], conf=0.0001, iou=0.5, max_det=50)
    assert len(preds) == 2
    for pred, meta in zip(preds, batch["metas"]):
        h, w = meta["orig_size"]
        assert 0 < len(pred["boxes"]) <= 50
        assert pred["boxes"][:, 0::2].max() <= w and pred["boxes"][:, 1::2].max() <= h  # original pixels
        assert pred["scores"].shape == pred["labels"].shape
        assert torch.all(pred["scores"][:-1] >= pred["scores"][1:])
