"""Each command's own example of writing over the user's data, refused.

Every case runs the command in this process (as the console script does) and checks that it
ends in one ``error:`` line with exit code 2 and that nothing of the user's was modified.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_one_line_errors import assert_one_error, run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- fashion-convert replaces only a folder that is verifiably one of our conversions --------
def test_convert_keeps_a_folder_with_a_stray_metadata_json(synthetic_ccp, tmp_path, capsys):
    """``echo '{}' > p/metadata.json; echo x > p/notes/thesis.txt; fashion-convert ccp output=p``."""
    folder = tmp_path / "p"
    (folder / "notes").mkdir(parents=True)
    (folder / "metadata.json").write_text("{}\n")
    (folder / "notes" / "thesis.txt").write_text("x\n")
    before = snapshot(folder)
    result = run_cli("convert", ["ccp", f"source={synthetic_ccp}", f"output={folder}", "progress=false",
                                 "workers=1"], tmp_path, capsys)
    assert_one_error(result, str(folder), "not one of fashion-convert's")
    assert snapshot(folder) == before


def test_convert_keeps_a_conversion_with_a_foreign_file(synthetic_ccp, tmp_path, capsys):
    folder = tmp_path / "p"
    code, text, _ = run_cli("convert", ["ccp", f"source={synthetic_ccp}", f"output={folder}", "progress=false",
                                        "workers=1"], tmp_path, capsys)
    assert code == 0, text
    (folder / "masks" / "thesis.txt").write_text("mine")
    before = snapshot(folder)
    result = run_cli("convert", ["ccp", f"source={synthetic_ccp}", f"output={folder}", "progress=false",
                                 "workers=1", "seed=3"], tmp_path, capsys)
    assert_one_error(result, "masks/thesis.txt")
    assert snapshot(folder) == before
    (folder / "masks" / "thesis.txt").unlink()  # a conversion and nothing else: replaced
    code, text, _ = run_cli("convert", ["ccp", f"source={synthetic_ccp}", f"output={folder}", "progress=false",
                                        "workers=1", "seed=3"], tmp_path, capsys)
    assert code == 0, text
    assert json.loads((folder / "metadata.json").read_text())["seed"] == 3


# --- fashion-eval save_masks=true output=<the converted dataset> -----------------------------
def test_eval_masks_never_overwrite_the_ground_truth(tiny_ccp, tiny_runs, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_ccp, data)
    before = snapshot(data)
    result = run_cli("eval", [f"ckpt={tiny_runs['segmenter']}", f"dataset.path={data}", f"output={data}",
                              "save_masks=true", "split=test", "device=cpu", "workers=0"], tmp_path, capsys)
    assert_one_error(result, "is the converted dataset")
    assert snapshot(data) == before


# --- fashion-show output=<the image root> ----------------------------------------------------
@pytest.fixture()
def flat_dataset(tmp_path) -> tuple[Path, Path]:
    """A converted folder whose image root holds ``x.jpg`` and ``x.png`` (two different photos)."""
    root = tmp_path / "photos"
    root.mkdir()
    Image.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(root / "x.jpg")
    Image.fromarray(np.full((40, 50, 3), 30, np.uint8)).save(root / "x.png")
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_text("x.jpg 2,2,20,20,0\nx.png 5,5,30,30,0\n")
    (data / "classes.txt").write_text("shirt\n")
    (data / "metadata.json").write_text(json.dumps({"source_name": "hand", "image_root": str(root)}))
    return data, root


def test_show_never_overwrites_the_photos(flat_dataset, tmp_path, capsys):
    data, root = flat_dataset
    before = snapshot(root)
    result = run_cli("show", [f"dataset.path={data}", f"output={root}", "n=2"], tmp_path, capsys)
    assert_one_error(result, "is the image folder")
    assert snapshot(root) == before


def test_show_draws_same_stem_photos_to_two_files(flat_dataset, tmp_path, capsys):
    data, _ = flat_dataset
    out = tmp_path / "pics"
    code, text, _ = run_cli("show", [f"dataset.path={data}", f"output={out}", "n=2"], tmp_path, capsys)
    assert code == 0, text
    assert sorted(p.name for p in out.iterdir()) == ["x.jpg.png", "x.png.png"]


# --- fashion-predict never writes through a planted symlink ----------------------------------
def test_predict_never_writes_through_a_planted_symlink(tiny_runs, shared_data, tmp_path, capsys):
    """``ln -s ~/important.txt out/0001.jpg.jpg`` must not turn important.txt into a JPEG."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(shared_data / "fashionpedia-sample" / "input.jpg", photos / "0001.jpg")
    important = tmp_path / "important.txt"
    important.write_text("my notes\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "0001.jpg.jpg").symlink_to(important)
    result = run_cli("predict", [f"ckpt={tiny_runs['detector']}", f"source={photos}", f"output={out}",
                                 "progress=false"], tmp_path, capsys)
    assert_one_error(result, "0001.jpg.jpg", "symbolic link")
    assert important.read_text() == "my notes\n"
    assert (out / "0001.jpg.jpg").is_symlink()


# --- fashion-eval output=<a training run folder> ---------------------------------------------
def test_eval_never_replaces_a_run_folders_metrics(tiny_runs, tmp_path, capsys):
    run = tmp_path / "run_copy"
    shutil.copytree(tiny_runs["detector"], run)
    before = snapshot(run)
    result = run_cli("eval", [f"ckpt={run}", f"output={run}", "split=test", "device=cpu", "workers=0"],
                     tmp_path, capsys)
    assert_one_error(result, "is the training run folder")
    assert snapshot(run) == before


# --- the other commands that write go through the same guard -------------------------------
def test_anchors_never_overwrite_a_split_file(hand_converted_ccp, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(hand_converted_ccp, data)
    before = snapshot(data)
    result = run_cli("anchors", [f"dataset.path={data}", "k=3", f"output={data / 'train.txt'}"], tmp_path, capsys)
    assert_one_error(result, "is the dataset file")
    assert snapshot(data) == before


def test_export_never_overwrites_its_checkpoint(tiny_runs, tmp_path, capsys):
    run = tmp_path / "run_copy"
    shutil.copytree(tiny_runs["detector"], run)
    ckpt = run / "checkpoints" / "best.pt"
    before = ckpt.read_bytes()
    result = run_cli("export", [f"ckpt={ckpt}", f"output={ckpt}", "overwrite=true"], tmp_path, capsys)
    assert_one_error(result, "is the checkpoint")
    assert ckpt.read_bytes() == before


def test_a_conversion_with_its_anchor_file_is_still_replaced(synthetic_ccp, tmp_path, capsys):
    folder = tmp_path / "p"
    code, text, _ = run_cli("convert", ["ccp", f"source={synthetic_ccp}", f"output={folder}", "progress=false",
                                        "workers=1"], tmp_path, capsys)
    assert code == 0, text
    (folder / "anchors_k9_416.json").write_text("{}")  # fashion-anchors' default output
    code, text, _ = run_cli("convert", ["ccp", f"source={synthetic_ccp}", f"output={folder}", "progress=false",
                                        "workers=1", "seed=5"], tmp_path, capsys)
    assert code == 0, text
