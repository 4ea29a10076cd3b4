"""A crafted ONNX graph is checked before it runs.

Unchecked, a 3 KB model (``ConstantOfShape [1,3,40000,40000]``) drives one prediction to 20 GB,
and an input of another name or an output of another shape ends in a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from fashionvision.errors import UserError  # noqa: E402


@pytest.fixture(scope="module")
def meta(tiny_runs, tmp_path_factory) -> str:
    """The metadata of a genuine export of the tiny detector."""
    from fashionvision.inference.export import export_onnx
    from fashionvision.inference.predictor import load_predictor

    path = tmp_path_factory.mktemp("onnx") / "real.onnx"
    export_onnx(load_predictor(tiny_runs["detector"]), path, check=False)
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return props["fashionvision"]


def _save(graph, meta: str, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = "fashionvision", meta
    onnx.save(model, str(path))
    assert path.stat().st_size < 4096
    return path


def test_a_constant_of_huge_shape_is_refused_before_it_runs(meta, tmp_path):
    from fashionvision.inference.onnx import load_onnx

    shape = helper.make_tensor("shape", TensorProto.INT64, [4], [1, 3, 40000, 40000])
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
             helper.make_node("ReduceSum", ["big"], ["total"], keepdims=1),
             helper.make_node("Add", ["images", "total"], ["out"])]
    graph = helper.make_graph(nodes, "bomb", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], initializer=[shape])
    path = _save(graph, meta, tmp_path / "bomb.onnx")
    with pytest.raises(UserError, match="4800000000 elements") as info:
        load_onnx(path)
    assert "\n" not in str(info.value)


def test_another_input_name_is_refused(meta, tmp_path):
    from fashionvision.inference.onnx import load_onnx

    graph = helper.make_graph([helper.make_node("Identity", ["pixels"], ["out"])], "renamed",
                              [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 64, 64])])
    with pytest.raises(UserError, match="input 'images'"):
        load_onnx(_save(graph, meta, tmp_path / "renamed.onnx"))


def test_outputs_of_another_shape_are_one_line(meta, tmp_path, shared_data):
    """A graph with the right input but one wrong output: refused by count, never a traceback."""
    from fashionvision.inference.onnx import load_onnx

    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "one",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 64, 64])])
    structure = json.loads(meta)["outputs"]
    with pytest.raises(UserError, match="output") as info:
        task, model, _ = load_onnx(_save(graph, meta, tmp_path / "one.onnx"))
        # a count that matches but shapes that do not: the prediction itself says so in one line
        from fashionvision.inference.predictor import Predictor

        Predictor(task, model, "cpu", "one.onnx")(np.zeros((64, 64, 3), np.uint8))
    assert "\n" not in str(info.value), structure
