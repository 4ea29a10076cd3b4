"""The segmenter on a huge photo needs memory in proportion to the photo, not C times it."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fashionvision.tasks.seg_upsample import labels_at_original
from fashionvision.tasks.segmentation import logits_to_original

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("orig, model, pad", [((832, 550), (128, 96), (1, 0)), ((301, 300), (64, 64), (0, 10))])
def test_banded_labels_equal_the_full_bilinear_argmax(orig, model, pad) -> None:
    torch.manual_seed(0)
    logits = torch.randn(59, *model) * 3  # noisy on purpose: almost every pixel sits on a class border
    meta = {"orig_size": orig, "scale": min(model[0] / orig[0], model[1] / orig[1]), "pad": pad}
    full = logits_to_original(logits, meta)
    labels, confidence = labels_at_original(logits, meta, confidence=True, band_pixels=4096)
    assert labels.shape == confidence.shape == orig
    assert (labels == full.argmax(0)).float().mean() > 0.9999  # equal up to float rounding at ties
    assert bool(((confidence > 0) & (confidence <= 1)).all())


def test_evaluation_metrics_unchanged_on_real_ccp(tiny_runs, shared_data: Path) -> None:
    """The evaluation's labels at original resolution (real CCP photos, trained tiny U-Net) are the same."""
    from conftest import ccp_boxes_from_mat
    from fashionvision.data.image_io import read_image
    from fashionvision.metrics.segmentation import ConfusionMatrix
    from fashionvision.inference.predictor import load_predictor, prepare_images

    predictor = load_predictor(tiny_runs["segmenter"])
    task, model = predictor.task, predictor.model
    stems = ["0010", "0011", "0012"]
    images = [read_image(shared_data / "ccp" / "photos" / f"{s}.jpg") for s in stems]
    truths = [torch.from_numpy(ccp_boxes_from_mat(shared_data / "ccp" / "annotations" / "pixel-level" / f"{s}.mat")[0]
                               .astype(np.int64)) for s in stems]
    batch, metas = prepare_images(task, images)
    with torch.no_grad():
        logits = model(batch.float() / 255)
    new = task.predict(model, batch, metas, return_probs=False)
    before, after = ConfusionMatrix(59, 255), ConfusionMatrix(59, 255)
    for i, truth in enumerate(truths):
        old = logits_to_original(logits[i], metas[i]).argmax(0)
        assert (new[i]["mask"] == old).float().mean() > 0.9999
        before.update(old, truth)
        after.update(new[i]["mask"], truth)
    assert abs(before.compute()["miou"] - after.compute()["miou"]) < 1e-4


@pytest.mark.slow  # a 6000 x 6000 photo through fashion-predict's code in a subprocess: ~20-60 s on 2 cores
def test_6000px_png_through_the_predictor_under_a_memory_cap(tmp_path: Path) -> None:
    import cv2

    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.engine.checkpoint import save_checkpoint
    from fashionvision.families import family as task_class

    names = ["background"] + [f"class{i}" for i in range(58)]  # CCP's 59 mask labels
    cfg = {"name": "unet", "encoder": "vanilla", "width": 0.0625, "image_size": 64}
    task = task_class("unet")(dict(cfg), ConvertedDataset.from_classes(names[1:], names), None, None)
    ckpt = save_checkpoint(tmp_path / "unet.pt", {"model": task.build_model().state_dict(),
                                                   "task": task.describe(), "config": {"model": cfg}})
    photo = np.zeros((6000, 6000, 3), np.uint8)
    photo[1500:4500, 2000:4000] = (200, 40, 40)
    cv2.imwrite(str(tmp_path / "huge.png"), photo)
    assert (tmp_path / "huge.png").stat().st_size < 300_000  # tiny upload, huge image
    del photo
    # the old code allocated 59 x 36 Mpx x 4 B = 8.5 GB of logits (and as much again for softmax)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30)); "
            "import torch; torch.set_num_threads(2); "
            "from fashionvision.inference.predictor import load_predictor; from fashionvision.inference.files import predict_source; "
            "print(predict_source(load_predictor(sys.argv[1]), sys.argv[2], sys.argv[3], progress=False).text())")
    done = subprocess.run([sys.executable, "-c", code, str(ckpt), str(tmp_path / "huge.png"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "predicted 1 image(s)" in done.stdout
    record = json.loads((tmp_path / "out" / "huge.png.json").read_text())
    assert record["size"] == [6000, 6000] and (tmp_path / "out" / "huge.png.jpg").is_file()
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    assert peak_gb < 3.5, f"peak RSS {peak_gb:.2f} GB"
