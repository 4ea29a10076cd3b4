"""``fashion-eval`` scores the pipeline users run: its detections equal ``fashion-predict``'s.

Both go through one preprocessing (the square letterbox of
:func:`fashionvision.data.prepare.prepare_image`) and one decoding (:meth:`DetectionTask.predict`);
this test runs each front end on a few real CCP photos and compares the boxes as sets (tied
scores may come out in another order; batched and single forwards differ by float noise).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EVAL_CONF = 0.001
MAX_DET = 2000  # above the count this model gives, so no cut-off at max_det decides a tie


@pytest.fixture(scope="module")
def detector_checkpoint(tiny_ccp: Path, tmp_path_factory) -> Path:
    """A tiny YOLOv3 with random (Kaiming) weights and low objectness biases: boxes that depend
    on the photo's pixels, some hundreds per image above 0.001, scored for five classes."""
    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.engine.checkpoint import save_checkpoint
    from fashionvision.families.yolov3.task import YOLOv3Task

    torch.manual_seed(0)
    model_cfg = {"name": "yolo", "width": 0.125, "depth": 0.34, "image_size": 128,
                 "eval_conf": EVAL_CONF, "eval_iou": 0.6, "max_det": MAX_DET}
    anchors_cfg = {"name": "values", "values": [[8, 10], [12, 30], [20, 16], [20, 40], [30, 25],
                                                [30, 60], [50, 40], [50, 90], [90, 110]]}
    task = YOLOv3Task(model_cfg, ConvertedDataset.open(tiny_ccp), None, anchors_cfg)
    model = task.build_model()
    for module in model.modules():  # the default init leaves the heads' inputs near 0
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="leaky_relu")
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # running statistics = the mean over the calibration pass
    photos = task.build_dataset("test", train=False)
    model.train()
    with torch.no_grad():  # batch-norm statistics of these photos: features of unit scale
        model(torch.stack([photos[i]["image"] for i in range(len(photos))]).float() / 255.0)
        for head in (model.head1, model.head2, model.head3):
            head.out.weight.normal_(0.0, 0.5)
            bias = head.out.bias.view(3, -1)
            bias[:, :4] = 0.0
            bias[:, 4] = -10.0
            bias[:, 5:] = -12.0
            bias[:, 5:10] = torch.randn(3, 5)
    path = tmp_path_factory.mktemp("eval_predict") / "best.pt"
    config = {"model": model_cfg, "anchors": anchors_cfg, "dataset": {"path": str(tiny_ccp)}}
    save_checkpoint(path, {"version": 1, "model": model.state_dict(), "config": config, "task": task.describe()})
    return path


def _match(evaluated: list[dict], predicted: dict, conf: float) -> None:
    """Every box of one side has a partner of the same class, score and place on the other
    (boxes within float noise of the score threshold may be on one side only)."""
    mine = [(int(p["category_id"]), float(p["score"]), np.asarray(p["bbox"], dtype=float)) for p in evaluated]
    boxes = np.asarray(predicted["boxes"], dtype=float).reshape(-1, 4)
    theirs = [(int(c), float(s), np.array([b[0], b[1], b[2] - b[0], b[3] - b[1]]))
              for b, s, c in zip(boxes, predicted["scores"], predicted["labels"])]
    assert abs(len(mine) - len(theirs)) <= 2, (len(mine), len(theirs))
    unused = list(range(len(theirs)))
    for label, score, box in mine:
        hit = next((j for j in unused if theirs[j][0] == label and abs(theirs[j][1] - score) < 2e-4
                    and np.abs(theirs[j][2] - box).max() < 0.05), None)
        if hit is None:
            assert score < conf + 2e-4, f"fashion-eval box {label} {score} {box} not in fashion-predict's"
            continue
        unused.remove(hit)
    assert all(theirs[j][1] < conf + 2e-4 for j in unused), "fashion-predict boxes not in fashion-eval's"


def test_fashion_eval_predictions_equal_fashion_predict(detector_checkpoint, tiny_ccp, tmp_path):
    from fashionvision.cli.eval import evaluate
    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.data.image_io import read_image
    from fashionvision.inference.predictor import load_predictor

    out = tmp_path / "eval"
    # fashion-eval's defaults: batches of 8, so the photos go through one batched forward
    report = evaluate({"ckpt": str(detector_checkpoint), "split": "test", "device": "cpu", "workers": 0},
                      out)
    evaluated = json.loads((out / "predictions.json").read_text())
    records = ConvertedDataset.open(tiny_ccp).records("test")
    assert report["eval"]["images"] == len(records) >= 3

    predictor = load_predictor(detector_checkpoint)  # fashion-predict's loader and Predictor
    evaluation_task = load_predictor(detector_checkpoint, dataset_path=str(tiny_ccp)).task
    item = evaluation_task.build_dataset("test", train=False)[0]
    assert tuple(item["image"].shape[1:]) == (128, 128)  # evaluation items: the square letterbox
    data = ConvertedDataset.open(tiny_ccp)
    total = 0
    for image_id, record in enumerate(records):
        image = read_image(data.image_path(record))
        predicted = predictor(image, conf=EVAL_CONF, iou=0.6)
        assert 0 < len(predicted["scores"]) < MAX_DET
        total += len(predicted["scores"])
        _match([p for p in evaluated if p["image_id"] == image_id], predicted, EVAL_CONF)
    assert total == pytest.approx(len(evaluated), abs=2 * len(records))
