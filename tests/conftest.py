"""Shared test fixtures.

Real data (read-only, never copied into the repo) is found through ``FASHION_DATA_DIR`` if set,
else ``<repo>/../shared/data``. Tests that need it skip with a reason when it is absent; the
small CCP folders that the model, predict, export and compare tests use fall back to a
synthetic CCP-format source generated at test time (``tests/fixtures/synthetic_ccp.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """Where the shared real data lives (may not exist)."""
    env = os.environ.get("FASHION_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder (``ccp/``, ``ccp-416/``, ``fashionpedia-sample/``); skip if missing."""
    path = shared_data_dir()
    if not (path / "ccp").is_dir():
        pytest.skip(f"shared data not found at {path} (set FASHION_DATA_DIR)")
    return path


# --- a small converted CCP folder built by hand from the real files --------------------------
# Independent of fashionvision.convert on purpose: tests of anchors/show must not break when
# the converter changes. Applies the documented CCP box rule with scipy.ndimage directly.

CCP_EXCLUDED = (0, 19, 41)  # null, hair, skin


def ccp_label_names(ccp: Path) -> list[str]:
    import scipy.io

    cell = scipy.io.loadmat(ccp / "label_list.mat")["label_list"].ravel()
    return [str(entry.ravel()[0]) if entry.size else "" for entry in cell]


def ccp_boxes_from_mat(mat_path: Path, min_area_fraction: float = 0.0005):
    """(groundtruth, boxes [N, 5] with detection class ids) by the CCP box rule."""
    import numpy as np
    import scipy.io
    from scipy import ndimage

    gt = scipy.io.loadmat(mat_path)["groundtruth"]
    height, width = gt.shape
    keep = [v for v in range(59) if v not in CCP_EXCLUDED]
    det_id = {v: i for i, v in enumerate(keep)}
    boxes = []
    for value in np.unique(gt):
        if value in CCP_EXCLUDED:
            continue
        labels, _ = ndimage.label(gt == value, structure=np.ones((3, 3)))
        areas = np.bincount(labels.ravel())
        for index, sl in enumerate(ndimage.find_objects(labels), start=1):
            if sl is not None and areas[index] >= min_area_fraction * height * width:
                boxes.append([sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1, det_id[int(value)]])
    return gt, np.array(boxes, dtype=np.int64).reshape(-1, 5)


def build_hand_converted_ccp(ccp: Path, folder: Path, stems: list[str], masks: bool = True) -> Path:
    """Write train.txt (all ``stems``), classes.txt, mask_classes.txt, masks/ and metadata.json."""
    import json

    import cv2

    names = ccp_label_names(ccp)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for stem in stems:
        gt, boxes = ccp_boxes_from_mat(ccp / "annotations" / "pixel-level" / f"{stem}.mat")
        rel = f"photos/{stem}.jpg"
        lines.append(" ".join([rel, *(",".join(str(v) for v in b) for b in boxes)]))
        if masks:
            (folder / "masks" / "photos").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / "masks" / "photos" / f"{stem}.png"), gt)
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    (folder / "classes.txt").write_text("".join(f"{n}\n" for i, n in enumerate(names) if i not in CCP_EXCLUDED))
    if masks:
        (folder / "mask_classes.txt").write_text("".join(f"{n}\n" for n in names))
    meta = {"source_name": "ccp", "image_root": str(ccp.resolve()), "image_root_abs": str(ccp.resolve())}
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="session")
def synthetic_ccp(tmp_path_factory) -> Path:
    """A CCP-format source of 6 synthetic photos (native layout: photos/, .mat masks, label_list.mat)."""
    from fixtures.synthetic_ccp import make_synthetic_ccp

    return make_synthetic_ccp(tmp_path_factory.mktemp("synthetic_ccp"), count=6)


def _ccp_source(name: str, tmp_path_factory) -> Path:
    """The shared CCP folder ``name`` when present, else the synthetic one (same layout)."""
    real = shared_data_dir() / name
    if (real / "label_list.mat").is_file():
        return real
    from fixtures.synthetic_ccp import make_synthetic_ccp

    return make_synthetic_ccp(tmp_path_factory.mktemp(f"synthetic_{name}"), count=6)


@pytest.fixture(scope="session")
def hand_converted_ccp(tmp_path_factory) -> Path:
    """A converted folder (train split only) of 4 CCP images (real when available), with masks."""
    stems = ["0001", "0002", "0003", "0004"]
    return build_hand_converted_ccp(_ccp_source("ccp", tmp_path_factory), tmp_path_factory.mktemp("hand_ccp"),
                                    stems)


# --- compare / predict / export / serve: one tiny detector and one tiny segmenter ----
# Trained ONCE per session (CPU, trainer=smoke, 64 px, tiny widths) and shared by
# test_compare.py, test_predict.py, test_export.py, test_serve.py and test_browser.py.

TINY_STEMS = ["0001", "0002", "0003", "0004", "0005", "0006"]


@pytest.fixture(scope="session")
def tiny_ccp(tmp_path_factory) -> Path:
    """6 CCP-416 images (real when available; boxes by the CCP rule, masks): train = all, val = 2, test = 3."""
    folder = build_hand_converted_ccp(_ccp_source("ccp-416", tmp_path_factory), tmp_path_factory.mktemp("tiny_ccp"),
                                      TINY_STEMS)
    lines = (folder / "train.txt").read_text().splitlines()
    (folder / "val.txt").write_text("\n".join(lines[:2]) + "\n")
    (folder / "test.txt").write_text("\n".join(lines[3:]) + "\n")
    return folder


def train_tiny(kind: str, dataset: Path, run_dir: Path) -> Path:
    """Train a tiny yolo or unet with trainer=smoke (one epoch) through the Trainer API; return the run dir."""
    import torch

    from fashionvision.cli._hydra import compose
    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.engine.trainer import Trainer
    from fashionvision.families import build_task

    overrides = {
        "yolo": ["model=yolo", "model.width=0.0625", "model.image_size=64", "anchors=coco"],
        "unet": ["model=unet", "model.encoder=vanilla", "model.width=0.125", "model.image_size=64"],
    }[kind]
    cfg = compose("train", overrides + ["trainer=smoke", "trainer.epochs=1", "trainer.limit_images=2",
                                        f"dataset.path={dataset}"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest, and immune to a busy machine
    try:
        task = build_task(cfg["model"], ConvertedDataset.open(dataset), cfg["augment"], cfg["anchors"])
        Trainer(task, cfg["trainer"], run_dir, cfg).fit()
    finally:
        torch.set_num_threads(threads)
    return run_dir


@pytest.fixture(scope="session")
def tiny_runs(tiny_ccp: Path, tmp_path_factory) -> dict[str, Path]:
    """``{"detector": run dir, "segmenter": run dir}`` of two tiny models trained on ``tiny_ccp``."""
    root = tmp_path_factory.mktemp("tiny_runs")
    return {"detector": train_tiny("yolo", tiny_ccp, root / "yolo"),
            "segmenter": train_tiny("unet", tiny_ccp, root / "unet")}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a test module with one torch thread (tiny models: OpenMP spin-waits cost more than they give)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def two_torch_threads():
    """Run a test with two torch threads (the CI machine's cores), restoring the previous count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def independent_ccp_gt(folder: Path, ccp: Path) -> dict:
    """COCO ground truth straight from the .mat files (image id = line of train.txt)."""
    from PIL import Image

    images, annotations = [], []
    for image_id, line in enumerate((folder / "train.txt").read_text().split("\n")):
        if not line.strip():
            continue
        rel = line.split()[0]
        width, height = Image.open(ccp / rel).size
        images.append({"id": image_id, "width": width, "height": height})
        _, boxes = ccp_boxes_from_mat(ccp / "annotations" / "pixel-level" / f"{Path(rel).stem}.mat")
        for x1, y1, x2, y2, c in boxes.tolist():
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": c,
                                "bbox": [x1, y1, x2 - x1 + 1, y2 - y1 + 1], "area": (x2 - x1 + 1) * (y2 - y1 + 1),
                                "iscrowd": 0})
    classes = (folder / "classes.txt").read_text().split("\n")[:-1]
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for i, n in enumerate(classes)]}
