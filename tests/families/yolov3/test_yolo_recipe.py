"""The detector recipe's pieces: more positives per box, balanced loss terms, the NaN
guard, the flip of non-square images, the close-mosaic phase and trainer.seed reaching the
per-item augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fashionvision.data.transforms import build_train_transform
from fashionvision.families.yolov3.loss import YOLOLoss, assign_targets, valid_targets
from fashionvision.families.yolov3.model import COCO_ANCHORS_PX, YOLOv3

ANCHORS = torch.tensor(COCO_ANCHORS_PX, dtype=torch.float32).view(3, 3, 2)
SHAPES = [(52, 52), (26, 26), (13, 13)]  # 416 x 416 input
STRIDES = (8, 16, 32)


def _positives(assigned) -> int:
    return sum(len(a["b"]) for a in assigned)


def test_multi_anchor_and_neighbour_cells_give_several_positives_per_box():
    # a 60x100 garment centred at (203, 150): off-centre in its cells on every scale
    targets = torch.tensor([[0, 2, 173.0, 100.0, 233.0, 200.0], [1, 5, 10.0, 12.0, 40.0, 70.0]])
    one = _positives(assign_targets(targets, ANCHORS, STRIDES, SHAPES))
    assert one == 2  # the published rule: one anchor in one cell per box
    multi = assign_targets(targets, ANCHORS, STRIDES, SHAPES, multi_anchor_iou=0.2)
    both = assign_targets(targets, ANCHORS, STRIDES, SHAPES, multi_anchor_iou=0.2, neighbor_cells=True)
    n_multi, n_both = _positives(multi), _positives(both)
    assert n_multi >= 4
    # every anchor positive also in its nearest horizontal and vertical neighbour (all inside the map)
    assert n_both == 3 * n_multi
    # the neighbour rule picks the side the centre leans to: x frac .375 -> left, y frac .75 -> down
    t = torch.tensor([[0, 0, 195.0, 142.0, 211.0, 158.0]])  # 16x16 centred at (203, 150), stride 8 only
    a = assign_targets(t, ANCHORS, STRIDES, SHAPES, neighbor_cells=True)[0]
    assert set(zip(a["gy"].tolist(), a["gx"].tolist())) == {(18, 25), (18, 24), (19, 25)}


def test_neighbour_cells_stay_inside_the_map():
    t = torch.tensor([[0, 0, 0.0, 0.0, 6.0, 6.0]])  # centre (3, 3): the left/up neighbours are outside
    a = assign_targets(t, ANCHORS, STRIDES, SHAPES, neighbor_cells=True)[0]
    assert set(zip(a["gy"].tolist(), a["gx"].tolist())) == {(0, 0)}


def test_per_scale_reduction_strengthens_box_term_and_raw_terms_are_logged():
    torch.manual_seed(0)
    model = YOLOv3(4, width=0.125, depth=0.34)
    x = torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 1, 5, 5, 40, 50], [1, 3, 10, 20, 30, 60], [1, 2, 2, 2, 60, 62]], dtype=torch.float32)
    outputs = model(x)
    glob = YOLOLoss(4, multi_anchor_iou=0.2)(outputs, targets, model.anchors, model.strides)
    scale = YOLOLoss(4, multi_anchor_iou=0.2, reduction="scale")(outputs, targets, model.anchors, model.strides)
    assert torch.isclose(glob["obj"], scale["obj"])
    assert scale["box"] > 1.5 * glob["box"]  # positives on 2-3 scales: each scale's mean counts
    for losses in (glob, scale):
        for k in ("box", "obj", "cls"):
            assert losses[f"raw_{k}"].requires_grad is False
            assert torch.isfinite(losses[f"raw_{k}"])


@pytest.mark.parametrize("bad", [[0, 1, 15.0, 15.0, 15.0, 15.0], [0, 1, 15.0, 10.0, 15.0, 20.0],
                                 [0, 1, 10.0, 15.0, 20.0, 15.0], [0, 1, 10.0, float("nan"), 20.0, 30.0]])
def test_degenerate_box_does_not_make_the_loss_nan(bad):
    torch.manual_seed(0)
    model = YOLOv3(4, width=0.125, depth=0.34)
    targets = torch.tensor([[0, 2, 5, 5, 40, 50], bad], dtype=torch.float32)
    assert len(valid_targets(targets)) == 1
    losses = YOLOLoss(4, iou_aware_obj=0.5, multi_anchor_iou=0.2)(
        model(torch.rand(1, 3, 64, 64)), targets, model.anchors, model.strides)
    total = losses["box"] + losses["obj"] + losses["cls"]
    assert torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_horizontal_flip_of_a_portrait_image_uses_its_width():
    # 60 wide x 100 high; a box touching the left edge must touch the right edge after the flip
    image = np.zeros((100, 60, 3), np.uint8)
    image[10:30, 0:20] = 255
    sample = {"image": image, "boxes": np.array([[0.0, 10.0, 20.0, 30.0]], np.float32),
              "labels": np.array([1])}
    t = build_train_transform({"hflip": 1.0}, (100, 60), "detection")
    out = t(sample, np.random.default_rng(0))
    assert out["image"].shape == (100, 60, 3)
    np.testing.assert_allclose(out["boxes"], [[40.0, 10.0, 60.0, 30.0]])
    ys, xs = np.nonzero(out["image"][..., 0])
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (40, 60, 10, 30)
    # and a vertical flip uses the height
    t = build_train_transform({"vflip": 1.0}, (100, 60), "detection")
    np.testing.assert_allclose(t(sample, np.random.default_rng(0))["boxes"], [[0.0, 70.0, 20.0, 90.0]])


def test_close_mosaic_turns_mosaic_off_for_the_last_fraction():
    t = build_train_transform({"mosaic": 1.0, "close_mosaic": 0.25}, 64, "detection")
    assert t.mosaic_at(0.0) == 1.0 and t.mosaic_at(0.74) == 1.0
    assert t.mosaic_at(0.75) == 0.0 and t.mosaic_at(1.0) == 0.0
    with pytest.raises(ValueError, match="close_mosaic"):
        build_train_transform({"close_mosaic": 1.5}, 64, "detection")


def _task(folder: Path, augment: dict):
    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.families.yolov3.task import YOLOv3Task as DetectionTask

    return DetectionTask({"name": "yolo", "image_size": 96, "width": 0.0625}, ConvertedDataset.open(folder),
                         augment, {"name": "coco"})


def test_close_mosaic_phase_reaches_the_dataset(tiny_ccp: Path):
    from fashionvision.engine.build import EpochAware

    task = _task(tiny_ccp, {"mosaic": 1.0, "close_mosaic": 0.3})
    data = EpochAware(task.build_dataset("train", train=True))
    plain = task.build_dataset("train", train=False)
    base = data.dataset
    counts = [len(base.records[i].boxes) for i in range(len(base))]
    data.set_progress(0.1)
    mosaic = [data[i] for i in range(len(base))]
    assert any(tuple(m["image"].shape[1:]) == (96, 96) and len(m["boxes"]) != c for m, c in zip(mosaic, counts))
    data.set_progress(0.8)  # closing phase: whole photos, exactly the evaluation letterbox here
    for i in range(len(base)):
        assert len(data[i]["boxes"]) == len(plain[i]["boxes"])
    # with no other augmentation, an item of the closing phase is the plain letterboxed photo
    task2 = _task(tiny_ccp, {"mosaic": 1.0, "close_mosaic": 0.3})
    d2 = task2.build_dataset("train", train=True)
    d2.set_progress(0.9)
    ref = task2.build_dataset("train", train=True)
    ref.transform.mosaic = 0.0
    assert torch.equal(d2[0]["image"], ref[0]["image"])


def test_trainer_seed_reaches_the_augmentation_of_two_loaders(tiny_ccp: Path, one_torch_thread):
    from fashionvision.cli._hydra import compose
    from fashionvision.families import task_for_config as build_task
    from fashionvision.engine.trainer import Trainer

    def first_batch(seed: int, run: Path) -> dict:
        cfg = compose("train", ["model=yolo", "model.width=0.0625", "model.image_size=64", "anchors=coco",
                                "trainer=smoke", "trainer.workers=0", "trainer.batch_size=3",
                                f"trainer.seed={seed}", f"dataset.path={tiny_ccp}"])
        trainer = Trainer(build_task(cfg), cfg["trainer"], run, cfg)
        trainer.setup()
        assert trainer.task.seed == seed
        trainer.train_set.set_epoch(0)
        trainer.train_loader.generator.manual_seed(0)  # same sampling order: only the augmentation differs
        trainer.sampler.set_epoch(0)
        return next(iter(trainer.train_loader))

    a = first_batch(7, Path(tiny_ccp).parent / "seed_a")
    b = first_batch(7, Path(tiny_ccp).parent / "seed_b")
    c = first_batch(8, Path(tiny_ccp).parent / "seed_c")
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["targets"], b["targets"])
    assert not torch.equal(a["images"], c["images"])


def test_evaluation_inputs_are_the_prediction_square_and_map_back(tiny_ccp: Path):
    task = _task(tiny_ccp, {})
    item = task.build_dataset("val", train=False)[0]
    assert tuple(item["image"].shape[1:]) == (96, 96)  # the square letterbox fashion-predict uses
    assert not task.rect_input
    # older checkpoints carry rect_eval: accepted, and evaluation still uses the square
    from fashionvision.families.yolov3.task import YOLOv3Task

    legacy = YOLOv3Task({"name": "yolo", "image_size": 96, "width": 0.0625, "rect_eval": True},
                        task.data, {}, {"name": "coco"})
    assert tuple(legacy.build_dataset("val", train=False)[0]["image"].shape[1:]) == (96, 96)
    task.cfg.rect_train = True
    assert tuple(task.build_dataset("train", train=True)[0]["image"].shape[1:]) == (96, 64)
