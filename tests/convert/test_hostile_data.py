"""Bad data must not change results silently.

* an unreadable test image is left out of evaluation (not replaced by the next one);
* boxes past their image are clipped (outside: dropped) with FILE:LINE by the dataset, the
  anchors and fashion-show, and absurd values are refused by the reader;
* fashion-show skips unreadable images; the CCP converter notices truncated photos; the
  Fashionpedia converter counts annotations of unknown images.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashionvision.data.annotations import AnnotationError
from fashionvision.data.converted import ConvertedDataset
from fashionvision.data.dataset import FashionDataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _copy_converted(src: Path, dst: Path, image_root: Path | None = None) -> Path:
    """A copy of a converted folder (small files only), optionally pointing at another image root."""
    shutil.copytree(src, dst)
    if image_root is not None:
        meta = json.loads((dst / "metadata.json").read_text())
        meta["image_root"] = meta["image_root_abs"] = str(image_root)
        (dst / "metadata.json").write_text(json.dumps(meta))
    return dst


# --- an unreadable image is left out of evaluation, not replaced by the next one -------------
def test_evaluation_leaves_an_unreadable_image_out(tiny_ccp, tiny_runs, tmp_path):
    """mAP with one corrupted test image equals the clean evaluation of the other images."""
    from fashionvision.cli.eval import evaluate

    photos = tmp_path / "photos_root"
    shutil.copytree(ConvertedDataset.open(tiny_ccp).image_root / "photos", photos / "photos")
    broken = _copy_converted(tiny_ccp, tmp_path / "broken", photos)
    lines = (broken / "test.txt").read_text().splitlines()
    assert len(lines) == 3
    bad_rel = lines[1].split()[0]
    data = (photos / bad_rel).read_bytes()
    (photos / bad_rel).write_bytes(data[: len(data) // 3])  # truncated: unreadable
    clean = _copy_converted(broken, tmp_path / "clean")
    (clean / "test.txt").write_text("\n".join([lines[0], lines[2]]) + "\n")

    cfg = {"ckpt": str(tiny_runs["detector"]), "split": "test", "workers": 1, "batch_size": 2}
    got = evaluate({**cfg, "dataset": {"path": str(broken)}}, tmp_path / "eval_broken")
    assert got["eval"]["skipped_images"] == 1 and got["eval"]["images"] == 2
    want = _evaluate_quietly(tiny_runs["detector"], clean)  # the same scoring, without the plots
    for key in ("map", "map50", "map75", "precision", "recall"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    # the bad image's boxes are not counted as misses, and it has no predictions
    assert [r["instances"] for r in got["per_class"]] == [r["instances"] for r in want["per_class"]]
    predicted = {p["image_id"] for p in json.loads((tmp_path / "eval_broken" / "predictions.json").read_text())}
    assert 1 not in predicted and predicted <= {0, 2}


def _evaluate_quietly(run: Path, dataset: Path) -> dict:
    import torch

    from fashionvision.engine.build import build_loader
    from fashionvision.inference.loading import load_for_inference

    task, model, _ = load_for_inference(run, dataset_path=str(dataset))
    data = task.build_dataset("test", train=False)
    loader = build_loader(data, 2, 0, task.collate)
    metrics = task.evaluate(model, loader, torch.device("cpu"), None)
    assert data.bad_images == 0 and len(data) == 2
    return metrics


# --- boxes past their image are clipped or dropped, absurd values refused --------------------
@pytest.fixture()
def outside_boxes(hand_converted_ccp, tmp_path) -> tuple[Path, dict]:
    """hand_converted_ccp with, on line 2, a box reaching far past the image and one wholly outside."""
    folder = _copy_converted(hand_converted_ccp, tmp_path / "outside")
    lines = (folder / "train.txt").read_text().splitlines()
    path = lines[1].split()[0]
    image = Image.open(ConvertedDataset.open(folder).image_root / path)
    width, height = image.size
    lines[1] += f" 10,20,60000,50000,3 {width + 5},{height + 5},{width + 50},{height + 90},4"
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    return folder, {"path": path, "width": width, "height": height, "line": 2}


def test_dataset_clips_and_drops_boxes_outside_the_image(outside_boxes, caplog):
    folder, info = outside_boxes
    data = ConvertedDataset.open(folder)
    dataset = FashionDataset(data, "train", 128, False, None, "detection")
    with caplog.at_level(logging.WARNING):
        sample = dataset.load_sample(1)
    scale = sample["resize_scale"]
    boxes = sample["boxes"] / scale
    clipped = boxes[np.isclose(boxes[:, 0], 10) & np.isclose(boxes[:, 1], 20)]
    # continuous x2 = last pixel + 1
    np.testing.assert_allclose(clipped, [[10, 20, info["width"], info["height"]]], rtol=1e-5)
    assert len(boxes) == len(dataset.records[1].boxes) - 1, "the box wholly outside is dropped"
    where = f"{folder / 'train.txt'}:{info['line']}: warning:"
    assert f"{where} box" in caplog.text and "clipped" in caplog.text and "dropped" in caplog.text


def test_anchors_are_not_pulled_by_boxes_outside_the_image(outside_boxes, caplog):
    from fashionvision.families.yolov3.anchors import compute_anchors

    folder, info = outside_boxes
    with caplog.at_level(logging.WARNING):
        anchors, _ = compute_anchors(folder, k=3, image_size=416, seed=0)
    assert anchors.max() <= 416, anchors  # the whole image at most (was 2770 with the broken box)
    assert f"{folder / 'train.txt'}:{info['line']}: warning: box" in caplog.text


def test_show_draws_a_file_with_boxes_outside_the_image(outside_boxes, tmp_path, capsys):
    from fashionvision.cli.show import show

    folder, info = outside_boxes
    written = show(folder, "train", 1, [info["path"]], 0, tmp_path / "out", masks=False)
    assert len(written) == 1 and Image.open(written[0]).size == (info["width"], info["height"])
    out = capsys.readouterr().out
    assert f"train.txt:{info['line']}: warning:" in out and "clipped" in out


@pytest.mark.parametrize("value", ["99999999999999999999999", str(2 ** 63), "70000"])
def test_absurd_coordinates_are_refused_with_file_and_line(hand_converted_ccp, tmp_path, value):
    from fashionvision.families.yolov3.anchors import compute_anchors
    from fashionvision.cli.show import show

    folder = _copy_converted(hand_converted_ccp, tmp_path / "absurd")
    lines = (folder / "train.txt").read_text().splitlines()
    lines[2] += f" 0,0,{value},5,1"
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    for run in (lambda: compute_anchors(folder, k=3), lambda: show(folder, "train", 4, None, 0, tmp_path / "o")):
        with pytest.raises(AnnotationError, match=r"train\.txt:3: box \d+ .* above 65535"):
            run()


# --- unreadable or unknown images are skipped and counted ------------------------------------
def test_show_skips_and_counts_unreadable_images(hand_converted_ccp, tmp_path, capsys):
    from fashionvision.cli.show import show

    photos = tmp_path / "root"
    wanted = {f"{stem}.jpg" for stem in ("0001", "0002", "0003", "0004")}
    shutil.copytree(ConvertedDataset.open(hand_converted_ccp).image_root / "photos", photos / "photos",
                    ignore=lambda folder, names: [n for n in names if n not in wanted])
    folder = _copy_converted(hand_converted_ccp, tmp_path / "conv", photos)
    (photos / "photos" / "0001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    skipped: list[str] = []
    written = show(folder, "train", 4, None, 0, tmp_path / "out", masks=False, skipped=skipped)
    assert len(written) == 3 and len(skipped) == 1 and "0001.jpg" in skipped[0]
    assert "skipped:" in capsys.readouterr().out


def test_ccp_converter_reports_a_truncated_photo(shared_data, tmp_path):
    from fashionvision.convert import ccp

    source = tmp_path / "ccp"
    (source / "annotations" / "pixel-level").mkdir(parents=True)
    (source / "photos").mkdir()
    shutil.copy(shared_data / "ccp-416" / "label_list.mat", source / "label_list.mat")
    for stem in ("0001", "0002", "0003"):
        shutil.copy(shared_data / "ccp-416" / "annotations" / "pixel-level" / f"{stem}.mat",
                    source / "annotations" / "pixel-level" / f"{stem}.mat")
        shutil.copy(shared_data / "ccp-416" / "photos" / f"{stem}.jpg", source / "photos" / f"{stem}.jpg")
    data = (source / "photos" / "0002.jpg").read_bytes()
    (source / "photos" / "0002.jpg").write_bytes(data[: len(data) // 2])  # the header is intact
    summary = ccp.convert(source, tmp_path / "out", workers=1, progress_bar=False, split=(1, 0, 0))
    assert summary.images["train"] == 2
    (skip,) = summary.skipped
    assert skip.file.endswith("0002.mat") and "truncated" in skip.reason
    assert json.loads((tmp_path / "out" / "metadata.json").read_text())["skipped"]["count"] == 1
    assert "skipped: 1" in summary.text()


def test_fashionpedia_converter_counts_annotations_of_unknown_images(shared_data, tmp_path):
    from fashionvision.convert import fashionpedia

    coco = json.loads((shared_data / "fashionpedia-sample" / "sample.json").read_text())
    orphan = dict(coco["annotations"][0], id=987654321, image_id=123456789)
    coco["annotations"].append(orphan)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "sample.json").write_text(json.dumps(coco))
    summary = fashionpedia.convert(tmp_path / "src", tmp_path / "out", files=["sample.json"], masks=False,
                                   require_images=False, workers=1, progress_bar=False)
    orphans = [s for s in summary.skipped if "unknown image_id" in s.reason]
    assert len(orphans) == 1 and "987654321" in orphans[0].file and "123456789" in orphans[0].reason
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert meta["annotation_counts"]["annotations_orphan"] == 1
    assert any("unknown image_id" in s["reason"] for s in meta["skipped"]["listed"])
    assert "without image 1" in summary.text()
