"""fashion-export: ONNX parity with PyTorch, dynamic batch, and predicting from the .onnx file."""

from __future__ import annotations


import numpy as np
import pytest

from fashionvision.data.image_io import read_image
from fashionvision.errors import UserError
from fashionvision.inference.export import DEFAULT_ATOL, export_onnx
from fashionvision.inference.onnx import read_metadata
from fashionvision.inference.predictor import load_predictor

PARITY_ATOL = DEFAULT_ATOL  # 1e-4 on raw fp32 outputs, the tolerance export promises

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tiny_runs, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("onnx")
    out = {}
    for kind, run in tiny_runs.items():
        predictor = load_predictor(run)
        report = export_onnx(predictor, folder / f"{kind}.onnx", atol=PARITY_ATOL)
        out[kind] = (predictor, folder / f"{kind}.onnx", report)
    return out


@pytest.mark.parametrize("kind", ["detector", "segmenter"])
def test_onnx_raw_outputs_match_pytorch(exported, kind):
    predictor, path, report = exported[kind]
    assert path.is_file() and report["parity_ok"]
    # batch 1, batch 2 (the dynamic batch axis) and another input height (dynamic spatial axes)
    for key in ("max_abs_diff_batch1", "max_abs_diff_batch2", "max_abs_diff_other_size"):
        assert 0 <= report[key] <= PARITY_ATOL, (key, report[key])
    meta = read_metadata(path)
    assert meta["task"]["task"] == predictor.task.name
    assert meta["task"]["classes"] == predictor.class_names if kind == "detector" else True
    assert meta["model_cfg"]["image_size"] == 64
    if kind == "detector":
        assert np.asarray(meta["buffers"]["anchors"]["data"]).shape == (3, 3, 2)


def above_the_cut(prediction: dict, max_det: int = 300) -> dict:
    """The detections that rank above the ``max_det`` cut: when the list is full, the boxes tied
    with its last score (to float noise) may be kept on one path and dropped on the other."""
    scores = prediction["scores"]
    if len(scores) < max_det:
        return prediction
    keep = scores > scores.min() + 1e-4
    return {k: v[keep] for k, v in prediction.items() if k in ("boxes", "scores", "labels")}


def match_detections(a: dict, b: dict) -> np.ndarray:
    """The index into ``b`` of each detection of ``a``: the one-to-one matching with the least
    total difference (box coordinates plus a large penalty for another label or score), so that
    two lists equal as sets compare equal whatever order their tied scores were sorted in."""
    from scipy.optimize import linear_sum_assignment

    cost = np.abs(a["boxes"][:, None, :] - b["boxes"][None, :, :]).max(axis=2)
    cost += 1e3 * (a["labels"][:, None] != b["labels"][None, :])
    cost += 1e3 * np.abs(a["scores"][:, None] - b["scores"][None, :])
    rows, cols = linear_sum_assignment(cost)
    order = np.empty(len(rows), dtype=int)
    order[rows] = cols
    return order


@pytest.mark.parametrize("kind", ["detector", "segmenter"])
def test_predict_from_onnx_equals_pytorch(exported, kind, shared_data):
    """Same postprocessing on both paths: predictions agree to numerical noise."""
    predictor, path, _ = exported[kind]
    onnx_predictor = load_predictor(path)
    assert onnx_predictor.kind == kind and onnx_predictor.class_names == predictor.class_names
    image = read_image(shared_data / "fashionpedia-sample" / "input.jpg")
    image = np.ascontiguousarray(image[::4, ::4])  # 256x171: the probability maps stay small
    a, b = predictor(image, conf=0.001, iou=0.6), onnx_predictor(image, conf=0.001, iou=0.6)
    if kind == "detector":
        assert len(a["boxes"]) == len(b["boxes"]) > 0
        np.testing.assert_allclose(np.sort(b["scores"]), np.sort(a["scores"]), atol=1e-4)
        # (the raw outputs are compared above; which of many tied boxes fill the list is not)
        a, b = above_the_cut(a), above_the_cut(b)
        assert len(a["boxes"]) == len(b["boxes"])
        order = match_detections(a, b)  # tied scores may come out in another order on each path
        np.testing.assert_allclose(b["boxes"][order], a["boxes"], atol=1e-2)
        np.testing.assert_allclose(b["scores"][order], a["scores"], atol=1e-4)
        np.testing.assert_array_equal(b["labels"][order], a["labels"])
    else:
        assert a["mask"].shape == b["mask"].shape == image.shape[:2]
        assert (a["mask"] == b["mask"]).mean() > 0.999
        np.testing.assert_allclose(b["confidence"], a["confidence"], atol=1e-4)


def test_foreign_onnx_file_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "foreign.onnx")
    with pytest.raises(UserError, match="not exported by fashion-export"):
        load_predictor(tmp_path / "foreign.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a readable ONNX file"):
        load_predictor(tmp_path / "junk.onnx")


def test_export_cli_puts_the_onnx_beside_the_checkpoint_and_says_one_sentence(tiny_runs, tmp_path, capsys):
    """`fashion-export ckpt=RUN` -> RUN/checkpoints/best.onnx and one line."""
    import shutil

    from fashionvision.cli.export import export

    run = tmp_path / "run"
    shutil.copytree(tiny_runs["detector"] / "checkpoints", run / "checkpoints")
    assert export({"ckpt": str(run), "format": "onnx", "opset": 17, "atol": PARITY_ATOL, "check": True}) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    onnx_file = run / "checkpoints" / "best.onnx"
    assert onnx_file.is_file() and len(printed) == 1
    size_mb = onnx_file.stat().st_size / 1e6
    assert printed[0].startswith(f"exported {onnx_file} ({size_mb:.1f} MB, opset 17, detection)")
    assert "onnxruntime matches PyTorch: max |diff|" in printed[0] and "<= atol 0.0001" in printed[0]


def test_export_refuses_to_overwrite_unless_asked(exported, tmp_path):
    """Exporting over an existing file needs overwrite=true."""
    predictor, path, _ = exported["detector"]
    target = tmp_path / "model.onnx"
    target.write_bytes(b"an earlier export the user wants to keep")
    with pytest.raises(UserError, match="already exists.*overwrite=true"):
        export_onnx(predictor, target, check=False)
    assert target.read_bytes() == b"an earlier export the user wants to keep"
    report = export_onnx(predictor, target, check=False, overwrite=True)
    assert report["file"] == str(target) and read_metadata(target)["task"]["task"] == "detection"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"], "no temporary file left behind"


def _with_metadata(source, target, text: str):
    import onnx

    proto = onnx.load(str(source))
    for entry in proto.metadata_props:
        if entry.key == "fashionvision":
            entry.value = text
    onnx.save(proto, str(target))
    return target


@pytest.mark.parametrize("edit, reason", [
    (lambda meta: "{not json", "not valid JSON"),
    (lambda meta: "[1, 2]", "a JSON list"),
    (lambda meta: {**meta, "task": {**meta["task"], "classes": "abc"}}, "task.classes"),
    (lambda meta: {**meta, "input": {**meta["input"], "dtype": "load"}}, "input.dtype"),
    (lambda meta: {**meta, "attributes": {"_parameters": 1}}, "not allowed"),
    (lambda meta: {**meta, "buffers": {"anchors": {"dtype": "float32", "data": [[1e400, 1]]}}}, "not finite"),
    (lambda meta: {**meta, "model_cfg": {**meta["model_cfg"], "name": "resnet"}}, "unknown model"),
    (lambda meta: {key: v for key, v in meta.items() if key != "outputs"}, "outputs.structure"),
])
def test_crafted_onnx_metadata_is_a_clear_error(exported, tmp_path, edit, reason):
    """Crafted metadata gives a UserError (one line in the CLIs), not a traceback."""
    import json

    _, path, _ = exported["detector"]
    meta = read_metadata(path)
    text = edit(meta)
    crafted = _with_metadata(path, tmp_path / "crafted.onnx", text if isinstance(text, str) else json.dumps(text))
    with pytest.raises(UserError, match=reason):
        load_predictor(crafted)
