"""Hostile input ends in one ``error:`` line and exit code 2, never a traceback.

The commands run in this process (Hydra included, as the console scripts run them): a
subprocess per case would cost seconds of imports each. An exception that escaped the command
would propagate here (or Hydra would print its stack trace), so each test also proves that
nothing but the one line comes out.
"""

from __future__ import annotations

import errno
import json
import shutil
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: further variants of a case the fast suite already covers once: run with `-m slow`
more = pytest.mark.slow


def run_cli(module: str, args: list[str], tmp_path: Path, capsys, run_dir: bool = True) -> tuple[int, str]:
    """Run ``python -m fashionvision.cli.<module> args`` in-process; return (exit code, stdout+stderr)."""
    import importlib

    main = importlib.import_module(f"fashionvision.cli.{module}").main
    argv = [f"fashion-{module}", *args]
    if run_dir and not any(a.startswith("hydra.run.dir=") for a in args):
        argv.append(f"hydra.run.dir={tmp_path / 'run'}")
    saved = sys.argv
    sys.argv = argv
    try:
        with pytest.raises(SystemExit) as info:
            main()
    finally:
        sys.argv = saved
    captured = capsys.readouterr()
    return info.value.code, captured.out + captured.err, captured.err


def assert_one_error(result: tuple[int, str, str], *fragments: str) -> str:
    code, text, err = result
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, text
    assert len(errors) == 1, text
    assert "Traceback" not in text and "HYDRA_FULL_ERROR" not in text, text
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def copy_converted(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- annotations --------------------------------------------------------------------------------
@pytest.mark.parametrize("value, command", [("99999999999999999999999", "anchors"), ("1_000", "show"),
                                            pytest.param("\u0661\u0662", "anchors", marks=more),
                                            pytest.param(str(2 ** 63), "show", marks=more)])
def test_bad_integer_in_an_annotation(hand_converted_ccp, tmp_path, capsys, value, command):
    folder = copy_converted(hand_converted_ccp, tmp_path / "data")
    lines = (folder / "train.txt").read_text().splitlines()
    lines[1] += f" 1,2,{value},40,0"
    (folder / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_cli(command, [f"dataset.path={folder}", f"output={tmp_path / command}"], tmp_path, capsys)
    assert_one_error(result, "1 bad annotation line")
    assert "train.txt:2: box" in result[1]
    if command == "anchors":  # the validator reports the line rather than crashing on the overflow
        code, text, _ = run_cli("validate", [f"file={folder / 'train.txt'}"], tmp_path, capsys)
        assert code != 0 and "Traceback" not in text and "train.txt:2: box" in text


# --- converted folders and sources -----------------------------------------------------------
@pytest.mark.parametrize("damage, fragment", [
    (lambda f: (f / "metadata.json").write_text("{ not json"), "not readable JSON"),
    pytest.param(lambda f: (f / "metadata.json").write_text("[1, 2]"), "expected a JSON object", marks=more),
    pytest.param(lambda f: (f / "metadata.json").write_bytes(b"\xff\xfe{}"), "not readable JSON", marks=more),
    (lambda f: (f / "classes.txt").unlink(), "classes.txt is missing"),
    pytest.param(lambda f: (f / "classes.txt").write_text(""), "lists no classes", marks=more),
])
def test_damaged_converted_folder(hand_converted_ccp, tmp_path, capsys, damage, fragment):
    folder = copy_converted(hand_converted_ccp, tmp_path / "data")
    damage(folder)
    assert_one_error(run_cli("show", [f"dataset.path={folder}"], tmp_path, capsys), fragment)


@pytest.mark.parametrize("keep", [0, 20, pytest.param(130, marks=more), pytest.param(600, marks=more)])
def test_truncated_ccp_label_list(shared_data, tmp_path, capsys, keep):
    source = tmp_path / "ccp"
    (source / "annotations" / "pixel-level").mkdir(parents=True)
    data = (shared_data / "ccp-416" / "label_list.mat").read_bytes()
    (source / "label_list.mat").write_bytes(data[:keep])
    result = run_cli("convert", ["ccp", f"source={source}", f"output={tmp_path / 'out'}", "progress=false"],
                     tmp_path, capsys)
    assert_one_error(result, "label_list.mat", "label_list")
    assert not (tmp_path / "out").exists()


def test_fashionpedia_file_whose_top_level_is_a_list(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.json").write_text(json.dumps([{"images": []}]))
    result = run_cli("convert", ["fashionpedia", f"source={tmp_path / 'src'}", f"output={tmp_path / 'out'}",
                                 "fashionpedia.files=[a.json]", "progress=false"], tmp_path, capsys)
    assert_one_error(result, "a.json", "top level is a JSON list")


def test_deepfashion_list_with_a_non_utf8_byte(tmp_path, capsys):
    from fixtures.deepfashion_lists import make_deepfashion

    source = make_deepfashion(tmp_path / "df")
    bbox = source / "Anno" / "list_bbox.txt"
    lines = bbox.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"Blouse", b"Blous\xe9", 1)
    bbox.write_bytes(b"\n".join(lines))
    result = run_cli("convert", ["deepfashion", f"source={source}", f"output={tmp_path / 'out'}", "progress=false"],
                     tmp_path, capsys)
    assert_one_error(result, "DeepFashion list files have")
    assert f"{bbox}:4: not valid UTF-8 text (byte 0xe9" in result[1]


# --- resume ------------------------------------------------------------------------------------
def _resume_args(tiny_ccp: Path, tiny_runs: dict, model: list[str]) -> list[str]:
    last = tiny_runs["detector"] / "checkpoints" / "last.pt"
    return [*model, "trainer=smoke", "trainer.epochs=1", "trainer.limit_images=2", "trainer.device=cpu",
            f"dataset.path={tiny_ccp}", f"trainer.resume={last}"]


def test_resume_with_a_changed_width(tiny_ccp, tiny_runs, tmp_path, capsys):
    args = _resume_args(tiny_ccp, tiny_runs, ["model=yolo", "model.width=0.125", "model.image_size=64",
                                             "anchors=coco"])
    line = assert_one_error(run_cli("train", args, tmp_path, capsys), "cannot resume",
                            "model.width=0.0625 in the checkpoint, 0.125 now")
    assert "size mismatch" not in line


def test_resume_with_another_model_family(tiny_ccp, tiny_runs, tmp_path, capsys):
    args = _resume_args(tiny_ccp, tiny_runs, ["model=unet", "model.encoder=vanilla", "model.width=0.125",
                                             "model.image_size=64"])
    line = assert_one_error(run_cli("train", args, tmp_path, capsys), "cannot resume",
                            "model=yolo (detection) run", "model=unet (segmentation)")
    assert "classes" not in line


# --- settings of the wrong type or range ---------------------------------------------------------
@pytest.mark.parametrize("setting, fragment", [
    pytest.param("trainer.lr=abc", "trainer.lr must be a number", marks=more),
    ("trainer.lr=-0.1", "trainer.lr must be a positive number"),
    pytest.param("trainer.workers=many", "trainer.workers must be an integer", marks=more),
    ("trainer.workers=-2", "trainer.workers must be 0"),
    ("model.image_size=big", "model.image_size must be an integer"),
    pytest.param("model.image_size=0", "model.image_size must be at least 32", marks=more),
])
def test_invalid_training_settings(tiny_ccp, tmp_path, capsys, setting, fragment):
    args = ["model=yolo", "model.width=0.0625", "model.image_size=64", "anchors=coco", "trainer=smoke",
            "trainer.device=cpu", f"dataset.path={tiny_ccp}", setting]
    assert_one_error(run_cli("train", args, tmp_path, capsys), fragment)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("setting, fragment", [
    ("workers=abc", "invalid literal for int()"),
    pytest.param("workers=-1", "workers must be at least 0", marks=more),
    pytest.param("batch_size=[1]", "wrong type", marks=more),
])
def test_invalid_eval_settings(tiny_ccp, tiny_runs, tmp_path, capsys, setting, fragment):
    args = [f"ckpt={tiny_runs['detector']}", f"dataset={tiny_ccp}", setting]
    assert_one_error(run_cli("eval", args, tmp_path, capsys), fragment)


@pytest.mark.parametrize("port", ["99999", pytest.param("-1", marks=more), pytest.param("http", marks=more)])
def test_serve_port_out_of_range(tiny_runs, tmp_path, capsys, port):
    result = run_cli("serve", [f"ckpt={tiny_runs['detector']}", f"port={port}"], tmp_path, capsys)
    assert_one_error(result, "is not a TCP port")


# --- folders that cannot be written ------------------------------------------------------------
def test_run_folder_under_a_file(hand_converted_ccp, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    result = run_cli("show", [f"dataset.path={hand_converted_ccp}", f"hydra.run.dir={tmp_path / 'afile' / 'run'}"],
                     tmp_path, capsys)
    assert_one_error(result, "hydra.run.dir=", "lies under", "which is a file")


def test_run_folder_is_a_device(hand_converted_ccp, tmp_path, capsys):
    result = run_cli("show", [f"dataset.path={hand_converted_ccp}", "hydra.run.dir=/dev/full"], tmp_path, capsys)
    assert_one_error(result, "/dev/full", "is a file, not a folder")


def test_output_folder_is_a_device(tiny_runs, shared_data, tmp_path, capsys):
    photo = shared_data / "fashionpedia-sample" / "input.jpg"
    result = run_cli("predict", [f"ckpt={tiny_runs['detector']}", f"source={photo}", "output=/dev/full",
                                 "progress=false"], tmp_path, capsys)
    assert_one_error(result, "cannot use '/dev/full'")


def test_output_folder_under_a_file(hand_converted_ccp, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    result = run_cli("show", [f"dataset.path={hand_converted_ccp}", f"output={tmp_path / 'afile' / 'pics'}", "n=1"],
                     tmp_path, capsys)
    assert_one_error(result, "cannot use", "afile")


def test_output_file_is_not_a_regular_file(hand_converted_ccp, tmp_path, capsys):
    """Renaming over a device or FIFO (e.g. output=/dev/full as root) would replace it: refused."""
    import os
    import stat

    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    result = run_cli("anchors", [f"dataset.path={hand_converted_ccp}", "k=3", f"output={fifo}"], tmp_path, capsys)
    assert_one_error(result, "cannot use", "fifo.json", "not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_disk_full_while_writing(hand_converted_ccp, tmp_path, capsys, monkeypatch):
    """ENOSPC from the file system (simulated: no test can fill a real disk safely)."""
    import fashionvision.families.yolov3.anchors as anchors_module

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(anchors_module, "atomic_write_text", full)
    result = run_cli("anchors", [f"dataset.path={hand_converted_ccp}", "k=3", f"output={tmp_path / 'a.json'}"],
                     tmp_path, capsys)
    assert_one_error(result, "No space left on device", "a.json")


# --- crafted ONNX metadata (the library test in test_export.py covers every kind) ----------------
def test_crafted_onnx_metadata(tiny_runs, shared_data, tmp_path, capsys):
    import onnx

    from fashionvision.inference.export import export_onnx
    from fashionvision.inference.predictor import load_predictor

    path = tmp_path / "m.onnx"
    export_onnx(load_predictor(tiny_runs["detector"]), path, check=False)
    proto = onnx.load(str(path))
    for entry in proto.metadata_props:
        if entry.key == "fashionvision":
            meta = json.loads(entry.value)
            meta["task"]["classes"] = {"a": 1}
            entry.value = json.dumps(meta)
    onnx.save(proto, str(path))
    result = run_cli("predict", [f"ckpt={path}", f"source={shared_data / 'fashionpedia-sample' / 'input.jpg'}",
                                 f"output={tmp_path / 'out'}", "progress=false"], tmp_path, capsys)
    assert_one_error(result, "crafted", "task.classes")


def test_a_refusal_is_printed_once_and_kept_in_the_run_log(tmp_path, capsys):
    """The error line reaches the terminal once (Hydra's console log handler must not repeat it
    as ``[...][ERROR] - ...``) and the run folder's log file still records it."""
    missing = tmp_path / "no_such_annotations.txt"
    code, text, _ = run_cli("validate", [f"file={missing}"], tmp_path, capsys)
    assert code == 2 and text.count("no_such_annotations.txt") == 1, text
    logs = list((tmp_path / "run").glob("*.log"))
    assert logs and "no_such_annotations.txt" in "".join(p.read_text() for p in logs)
