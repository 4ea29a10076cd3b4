"""fashion-predict: preprocessing identical to evaluation, a real photo, a folder with a corrupt file, a video."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fashionvision.data.converted import ConvertedDataset
from fashionvision.data.image_io import read_image
from fashionvision.inference.predictor import load_predictor, prepare_images
from fashionvision.inference.files import predict_source
from fashionvision.families import build_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def photo(shared_data: Path) -> Path:
    path = shared_data / "fashionpedia-sample" / "input.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.mark.parametrize("model_cfg", [
    {"name": "yolo", "image_size": 96, "width": 0.0625},
    {"name": "unet", "encoder": "vanilla", "image_size": 96, "width": 0.125},
])
def test_prepare_images_matches_the_evaluation_dataset(tiny_ccp, model_cfg):
    """Inference input pixels and metas are exactly what fashion-eval feeds the model."""
    data = ConvertedDataset.open(tiny_ccp)
    task = build_task(model_cfg, data, None, {"name": "coco"})
    dataset = task.build_dataset("test", train=False)  # what fashion-eval and validation read
    items = [dataset[i] for i in range(len(dataset))]
    images = [read_image(p) for p in dataset.image_paths]
    batch, metas = prepare_images(task, images)
    for k, item in enumerate(items):
        h, w = item["image"].shape[1:]
        assert torch.equal(batch[k, :, :h, :w], item["image"])
        for key in ("orig_size", "pad"):
            assert tuple(metas[k][key]) == tuple(item["meta"][key])
        assert metas[k]["scale"] == pytest.approx(item["meta"]["scale"])


def test_predict_real_photo_both_families(tiny_runs, photo, tmp_path):
    height, width = read_image(photo).shape[:2]
    for kind, run in tiny_runs.items():
        predictor = load_predictor(run)
        assert predictor.kind == kind
        out = tmp_path / kind
        # conf=0.001: even an untrained detector lists boxes, so the JSON fields are exercised
        summary = predict_source(predictor, str(photo), out, conf=0.001, iou=0.6, progress=False)
        assert summary.ok == 1 and not summary.skipped
        record = json.loads((out / "input.jpg.json").read_text())
        assert record["size"] == [height, width] and record["task"] == predictor.task.name
        drawn = read_image(out / "input.jpg.jpg")
        assert drawn.shape[0] == height
        if kind == "detector":
            assert record["items"], "no box even at conf 0.001"
            scores = [it["score"] for it in record["items"]]
            assert scores == sorted(scores, reverse=True)
            for item in record["items"]:
                x1, y1, x2, y2 = item["box"]
                assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
                assert item["class"] == predictor.class_names[item["class_id"]]
        else:
            assert record["items"]
            assert sum(it["pixels"] for it in record["items"]) <= height * width
            assert all(it["class"] != "null" for it in record["items"])
            big = record["items"][0]
            assert 0 < big["fraction"] <= 1 and 0 <= big["score"] <= 1
            assert big["polygons"] and all(len(poly) >= 3 for poly in big["polygons"])
            xs = [x for poly in big["polygons"] for x, _ in poly]
            assert 0 <= min(xs) and max(xs) < width


def test_predict_cli_folder_with_a_corrupt_file(tiny_runs, photo, tmp_path):
    """The CLI predicts the good file, reports the corrupt one (path + reason) and goes on."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(photo, folder / "sub" / "good.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (folder / "notes.txt").write_text("not an image; not listed")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "fashionvision.cli.predict", f"ckpt={tiny_runs['detector']}",
                             f"source={folder}", f"output={out}", "conf=0.001", "progress=false",
                             f"hydra.run.dir={tmp_path / 'hydra'}"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "predicted 1 image(s), skipped 1" in result.stdout
    assert "broken.jpg" in result.stdout and "not a readable image" in result.stdout
    assert (out / "sub" / "good.jpg.json").is_file() and (out / "sub" / "good.jpg.jpg").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] == 1 and summary["skipped"][0]["path"].endswith("broken.jpg")


def test_predict_video_frames_with_stride(tiny_runs, tmp_path):
    predictor = load_predictor(tiny_runs["segmenter"])
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    if not writer.isOpened():
        pytest.skip("OpenCV cannot write MJPG videos here")
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, dtype=np.uint8))
    writer.release()
    summary = predict_source(predictor, str(video), tmp_path / "out", video_stride=2, progress=False)
    assert summary.ok == 3  # frames 0, 2, 4
    assert sorted(p.name for p in (tmp_path / "out").glob("*.json") if p.name != "summary.json") == [
        "clip.avi_f000000.json", "clip.avi_f000002.json", "clip.avi_f000004.json"]


def _results(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json") if p.name != "summary.json")


def test_same_stem_different_suffix_gives_two_results(tiny_runs, photo, tmp_path):
    """x.jpg and x.png in one folder must not share one result file."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(photo, folder / "x.jpg")
    cv2.imwrite(str(folder / "x.png"), cv2.imread(str(photo))[::2, ::2])  # a different picture
    out = tmp_path / "out"
    summary = predict_source(load_predictor(tiny_runs["detector"]), str(folder), out, conf=0.001, progress=False)
    assert summary.ok == 2
    assert _results(out) == ["x.jpg.json", "x.png.json"]
    sizes = {json.loads((out / name).read_text())["image"].rsplit(".", 1)[1]:
             json.loads((out / name).read_text())["size"] for name in _results(out)}
    assert sizes["jpg"] != sizes["png"]
    assert (out / "x.jpg.jpg").is_file() and (out / "x.png.jpg").is_file()


def test_glob_keeps_relative_folders(tiny_runs, photo, tmp_path):
    """a/0001.jpg and b/0001.jpg from one glob give two result files."""
    for sub in ("a", "b"):
        (tmp_path / "in" / sub).mkdir(parents=True)
        shutil.copy(photo, tmp_path / "in" / sub / "0001.jpg")
    out = tmp_path / "out"
    summary = predict_source(load_predictor(tiny_runs["segmenter"]), str(tmp_path / "in" / "*" / "*.jpg"), out,
                             progress=False)
    assert summary.ok == 2
    assert _results(out) == ["a/0001.jpg.json", "b/0001.jpg.json"]
    sources = {json.loads((out / name).read_text())["image"] for name in _results(out)}
    assert len(sources) == 2


def test_missing_source_and_model_are_clear_errors(tiny_runs, tmp_path):
    from fashionvision.errors import UserError

    predictor = load_predictor(tiny_runs["detector"])
    with pytest.raises(UserError, match="does not exist"):
        predict_source(predictor, str(tmp_path / "nope.jpg"), tmp_path / "out")
    with pytest.raises(UserError, match="matches no files"):
        predict_source(predictor, str(tmp_path / "*.png"), tmp_path / "out")
    with pytest.raises(UserError, match="does not exist"):
        load_predictor(tmp_path / "missing_run")


def test_predict_video_writes_an_annotated_video(tiny_runs, tmp_path):
    """A video in gives an annotated video out (mp4v), plus the JSON per frame."""
    predictor = load_predictor(tiny_runs["detector"])
    video = tmp_path / "walk.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    if not writer.isOpened():
        pytest.skip("OpenCV cannot write mp4v videos here")
    for i in range(6):
        frame = np.full((64, 96, 3), 30 * i, dtype=np.uint8)
        cv2.rectangle(frame, (10 + 5 * i, 10), (40 + 5 * i, 50), (0, 0, 255), -1)
        writer.write(frame)
    writer.release()
    out = tmp_path / "out"
    summary = predict_source(predictor, str(video), out, video_stride=2, progress=False, conf=0.0)
    annotated = out / "walk.mp4.mp4"  # the input's name, suffix kept (as for pictures: x.jpg -> x.jpg.jpg)
    assert summary.ok == 3 and summary.videos == [str(annotated)]
    assert "annotated video" in summary.text()
    capture = cv2.VideoCapture(str(annotated))
    frames = []
    while True:
        ok, picture = capture.read()
        if not ok:
            break
        frames.append(picture)
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    assert len(frames) == 3 and frames[0].shape == (64, 96, 3)
    assert fps == pytest.approx(5.0)  # the source rate divided by the stride
    assert not list(out.glob("*.jpg")) and not list(out.glob(".*partial*"))  # frames only on request
    assert len(list(out.glob("walk.mp4_f*.json"))) == 3
    assert json.loads((out / "summary.json").read_text())["videos"] == [str(annotated)]


def test_output_in_the_source_folder_never_overwrites_a_photo(tiny_runs, shared_data, tmp_path):
    """output=SOURCE (or inside it, or a photo's own folder) is refused; the photo is untouched."""
    from fashionvision.errors import UserError

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(shared_data / "ccp" / "photos" / "0001.jpg", folder / "0001.jpg")
    original = (folder / "0001.jpg").read_bytes()
    predictor = load_predictor(tiny_runs["segmenter"])
    for source, output in [(folder, folder), (folder, folder / "pred"), (folder / "0001.jpg", folder),
                           (folder / "*.jpg", folder)]:
        with pytest.raises(UserError, match="source folder") as info:
            predict_source(predictor, str(source), output, progress=False)
        assert "\n" not in str(info.value)
    assert (folder / "0001.jpg").read_bytes() == original
    assert sorted(p.name for p in folder.iterdir()) == ["0001.jpg"]  # nothing written, no folder made
    summary = predict_source(predictor, str(folder), tmp_path / "out", progress=False)  # outside: fine
    assert summary.ok == 1 and (tmp_path / "out" / "0001.jpg.jpg").is_file()
    assert (folder / "0001.jpg").read_bytes() == original
