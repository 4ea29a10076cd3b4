"""fashion-compare: every report section on one image list; exact scores for perfect models; mismatches refused."""

from __future__ import annotations

import hashlib
import json
import shutil
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from fashionvision.cli._hydra import compose
from fashionvision.compare.evaluation import check_compatible, evaluate_both
from fashionvision.compare.report import SECTIONS, run_compare
from fashionvision.data.converted import ConvertedDataset
from fashionvision.data.image_io import read_image
from fashionvision.errors import UserError
from fashionvision.inference.predictor import load_predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_compare_cli_writes_every_section_on_one_image_list(tiny_runs, tiny_ccp, tmp_path):
    from fashionvision.cli.compare import compare

    out = tmp_path / "report"
    cfg = compose("compare", [f"detector={tiny_runs['detector']}", f"segmenter={tiny_runs['segmenter']}",
                              f"dataset.path={tiny_ccp}", f"output={out}", "n_images=2", "device=cpu",
                              "speed.batch_sizes=[1,4]", "speed.min_seconds=0.05", "speed.max_iters=2"])
    assert compare(cfg) == 0
    report = json.loads((out / "report.json").read_text())
    markdown = (out / "report.md").read_text()
    for section in SECTIONS:
        assert f"## {section}" in markdown
    test_paths = [line.split()[0] for line in (tiny_ccp / "test.txt").read_text().splitlines()]
    assert report["setup"]["images"] == test_paths and report["setup"]["num_images"] == 3
    assert report["grid_images"] == test_paths[:2]
    for family in ("detector", "segmenter"):
        assert {"map", "map50", "per_class"} <= set(report["detection"][family])
        assert {"miou", "miou_gt_classes", "pixel_acc", "per_class", "miou_shared_classes"} <= set(report["segmentation"][family])
        speed = report["speed"][family]
        assert speed["params"] > 0 and speed["gflops"] > 0
        assert speed["ms_per_image_small"] > 0 and speed["images_per_s_large"] > 0
    assert report["speed"]["device"].startswith("CPU")
    rows = {r["class"]: r for r in report["per_class"]}
    assert "null" not in rows and rows["background"]["seg_index"] == 0  # CCP's raw name is not shown
    assert len(rows) == 59 and rows["hair"]["det_index"] is None and rows["accessories"]["det_index"] == 0 and rows["bag"]["det_index"] == 1
    assert set(report["wins"]) == {"ap50", "iou"}
    grid = read_image(out / "grid.png")
    assert grid.shape[0] > 2 * 256 and grid.shape[1] >= 4 * 320 + 150  # 2 rows of 4 panels and a legend
    assert (out / "per_class.png").stat().st_size > 0


class Oracle:
    """A perfect 'model' that returns the ground truth of the image it is shown."""

    def __init__(self, kind: str, data: ConvertedDataset):
        self.kind = kind
        name = "detection" if kind == "detector" else "segmentation"
        self.task = SimpleNamespace(name=name, cfg=SimpleNamespace(eval_conf=0.001, eval_iou=0.6), ignore_index=255)
        self.class_names = list(data.classes if kind == "detector" else data.mask_classes)
        self.truth = {}
        for record in data.records("test"):
            image = read_image(data.image_path(record))
            self.truth[hashlib.sha1(image.tobytes()).hexdigest()] = (record, data.mask_path(record))

    def default_thresholds(self):
        return (0.5, 0.5) if self.kind == "detector" else (None, None)

    def __call__(self, image, conf=None, iou=None):
        record, mask_path = self.truth[hashlib.sha1(image.tobytes()).hexdigest()]
        if self.kind == "detector":  # inclusive annotation -> continuous prediction coordinates
            boxes = record.boxes[:, :4].astype(np.float32) + np.array([0, 0, 1, 1], dtype=np.float32)
            return {"boxes": boxes, "scores": np.full(len(boxes), 0.9, np.float32), "labels": record.boxes[:, 4]}
        return {"mask": cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED).astype(np.int64), "confidence": None}


def test_perfect_models_score_perfectly_through_both_conversions(tiny_ccp):
    """Ground-truth masks turned into boxes reproduce the ground-truth boxes exactly (AP 1.0)."""
    data = ConvertedDataset.open(tiny_ccp)
    ev = evaluate_both(Oracle("detector", data), Oracle("segmenter", data), data, "test", n_samples=1)
    assert len(ev.images) == 3 and len(ev.samples) == 1
    assert ev.detection["detector"]["map"] == pytest.approx(1.0)
    assert ev.detection["segmenter"]["map"] == pytest.approx(1.0)  # mask -> box conversion is exact
    assert ev.segmentation["segmenter"]["miou"] == pytest.approx(1.0)
    painted = ev.segmentation["detector"]
    # boxes are coarser than masks and cannot produce hair or skin
    assert 0.1 < painted["miou"] < 1.0 and 0 < painted["pixel_acc"] < 1.0
    assert painted["per_class"][data.mask_classes.index("hair")]["iou"] == 0.0
    assert painted["miou_shared_classes"] > painted["miou"]


def test_runs_that_do_not_match_are_refused(tiny_runs, tiny_ccp, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("metadata.json", "mask_classes.txt", "test.txt"):
        shutil.copy(tiny_ccp / name, other / name)
    classes = (tiny_ccp / "classes.txt").read_text().replace("bag\n", "handbag\n")
    (other / "classes.txt").write_text(classes)
    det, seg = load_predictor(tiny_runs["detector"]), load_predictor(tiny_runs["segmenter"])
    with pytest.raises(UserError, match="detector's classes differ .*class 1 is 'bag' vs 'handbag'"):
        run_compare(str(tiny_runs["detector"]), str(tiny_runs["segmenter"]), str(other), "test", tmp_path / "r")
    with pytest.raises(UserError, match="not a detector"):
        check_compatible(seg, seg, ConvertedDataset.open(tiny_ccp))
    seg.config = {**seg.config, "dataset": {"name": "fashionpedia"}}
    with pytest.raises(UserError, match="different datasets: detector on 'ccp', segmenter on 'fashionpedia'"):
        check_compatible(det, seg, ConvertedDataset.open(tiny_ccp))


@pytest.mark.parametrize("name", ["predict", "export", "serve", "compare"])
def test_configs_compose(name):
    required = {"predict": ["ckpt=x", "source=y"], "export": ["ckpt=x"], "serve": ["ckpt=x"],
                "compare": ["detector=x", "segmenter=y"]}[name]
    cfg = compose(name, required)
    assert cfg.get("output", None) is None or name == "serve"
    if name == "serve":
        assert cfg["host"] == "127.0.0.1"


def test_grid_is_legible_with_a_legend(tiny_ccp, tmp_path):
    """Panels at least 320 px wide, titles about 12 px tall, a legend with each shown mask class."""
    from fashionvision.compare.report import LEGEND_WIDTH, PANEL_WIDTH, draw_grid, legend_classes
    from fashionvision.tasks.visualize import class_colors

    data = ConvertedDataset.open(tiny_ccp)
    record = data.records("test")[0]
    image = read_image(data.image_path(record))
    mask = cv2.imread(str(data.mask_path(record)), cv2.IMREAD_UNCHANGED).astype(np.int64)
    sample = {"path": record.path, "image": image, "gt_mask": mask, "gt_boxes": record.boxes,
              "detector": {"boxes": record.boxes[:, :4].astype(np.float32), "labels": record.boxes[:, 4],
                           "scores": np.full(len(record.boxes), 0.9)},
              "segmenter": {"mask": mask}, "derived_boxes": (record.boxes, None)}
    path = draw_grid(SimpleNamespace(samples=[sample]), data.classes, tmp_path / "grid.png", data.mask_classes)
    grid = read_image(path)
    assert PANEL_WIDTH >= 320 and grid.shape[1] >= 4 * PANEL_WIDTH + LEGEND_WIDTH
    header = grid[:30, :PANEL_WIDTH]
    ink_rows = np.where((header < 100).all(axis=2).any(axis=1))[0]
    assert ink_rows.max() - ink_rows.min() >= 9, "titles must be readable at 100 %"
    legend = grid[:, -LEGEND_WIDTH:].reshape(-1, 3)
    palette = class_colors(len(data.mask_classes))
    shown = legend_classes(mask)
    assert shown and 0 not in shown
    for cls in shown:  # every class in the masks has its swatch
        assert (legend == palette[cls]).all(axis=1).sum() >= 18 * 18, data.mask_classes[cls]
