"""Running an exported ``.onnx`` file like the PyTorch model it came from.

:class:`OnnxModel` is an ``nn.Module`` that returns the same structure as the PyTorch model
(YOLOv3's three raw maps, the U-Net's logits), so the task's own decoding runs unchanged on its
outputs. The task is rebuilt from the file's ``metadata_props`` (written by
:mod:`fashionvision.inference.export`) through the family registry, without the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fashionvision.errors import UserError
from fashionvision.tasks.base import Task

META_KEY = "fashionvision"
#: top-level buffers up to this many elements are copied into the metadata (anchors, strides)
MAX_BUFFER_NUMEL = 4096
_PLAIN = (bool, int, float, str)


def _plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return False


def _session(path: str | Path, device: str):
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise UserError(f"'{path}' is not a usable ONNX model ({exc})") from exc


class OnnxModel(nn.Module):
    """An onnxruntime session behind the PyTorch model's interface (same input, same outputs).

    Top-level buffers and attributes of the original model (e.g. YOLOv3's ``anchors``) are
    restored from the metadata so that the task's decoding code finds them.
    """

    def __init__(self, session: Any, meta: dict):
        super().__init__()
        self.session = session
        # tasks find the model's device through its first parameter; onnxruntime runs on the CPU
        self.device_anchor = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.structure = meta["outputs"]["structure"]
        self.input_dtype = getattr(torch, meta["input"]["dtype"])
        for name, value in meta.get("attributes", {}).items():
            if not hasattr(nn.Module, name):  # never shadow nn.Module's own members
                setattr(self, name, value)
        for name, buf in meta.get("buffers", {}).items():
            self.register_buffer(name, torch.tensor(buf["data"], dtype=getattr(torch, buf["dtype"])))

    def forward(self, x: torch.Tensor) -> Any:
        array = x.detach().to(self.input_dtype).cpu().numpy()
        try:
            results = self.session.run(None, {"images": array})
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors (allocation included) have no common base
            raise UserError(f"the ONNX model failed on this input ({str(exc).strip().splitlines()[0][:300]})") from exc
        outputs = [torch.from_numpy(o).to(x.device) for o in results]
        if self.structure == "tensor":
            return outputs[0]
        return tuple(outputs) if self.structure == "tuple" else outputs


def read_metadata(path: str | Path) -> dict:
    """The export metadata of an ``.onnx`` file; clear error when it is not one of ours."""
    return _read(path)[1]


def _read(path: str | Path) -> tuple[Any, dict]:
    """``(the ModelProto, its checked metadata)``."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors have no common base class
        raise UserError(f"'{path}' is not a readable ONNX file ({exc})") from exc
    props = {p.key: p.value for p in proto.metadata_props}
    if META_KEY not in props:
        raise UserError(f"'{path}' was not exported by fashion-export (no '{META_KEY}' metadata); "
                        "its classes and decoding are unknown")
    try:
        meta = json.loads(props[META_KEY])
    except ValueError as exc:
        raise UserError(f"'{path}': its '{META_KEY}' metadata is not valid JSON ({exc})") from exc
    problem = metadata_problem(meta)
    if problem:
        raise UserError(f"'{path}': damaged or crafted '{META_KEY}' metadata: {problem}")
    return proto, meta


#: dtypes a file may name (resolved with getattr(torch, ...): never an arbitrary attribute)
_DTYPES = ("float32", "float16", "bfloat16", "float64", "uint8", "int8", "int32", "int64", "bool")


def metadata_problem(meta: Any) -> str | None:
    """What is wrong with an export's metadata (it comes from a file: trust nothing), or None."""
    if not isinstance(meta, dict):
        return f"a JSON {type(meta).__name__}, expected an object"
    task, model_cfg = meta.get("task"), meta.get("model_cfg")
    if not isinstance(task, dict) or not isinstance(task.get("classes"), list) or not task["classes"] \
            or not all(isinstance(c, str) for c in task["classes"]):
        return "'task.classes' must be a non-empty list of names"
    mask_classes = task.get("mask_classes")
    if mask_classes is not None and (not isinstance(mask_classes, list)
                                     or not all(isinstance(c, str) for c in mask_classes)):
        return "'task.mask_classes' must be a list of names"
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("name"), str):
        return "'model_cfg.name' is missing"
    if not isinstance(meta.get("config") or {}, dict):
        return "'config' must be an object"
    outputs, inputs = meta.get("outputs"), meta.get("input")
    if not isinstance(outputs, dict) or outputs.get("structure") not in ("tensor", "tuple", "list"):
        return "'outputs.structure' must be tensor, tuple or list"
    if not isinstance(inputs, dict) or inputs.get("dtype") not in _DTYPES:
        return f"'input.dtype' must be one of {', '.join(_DTYPES)}"
    attributes, buffers = meta.get("attributes", {}), meta.get("buffers", {})
    if not isinstance(attributes, dict) or not isinstance(buffers, dict):
        return "'attributes' and 'buffers' must be objects"
    for name, value in [*attributes.items(), *buffers.items()]:
        if not name.isidentifier() or name.startswith("_"):
            return f"attribute or buffer name {name!r} is not allowed"
    for name, value in attributes.items():
        if not _plain(value):
            return f"attribute {name!r} is not a plain value"
    for name, buf in buffers.items():
        if not isinstance(buf, dict) or buf.get("dtype") not in _DTYPES:
            return f"buffer {name!r} has no valid dtype"
        try:
            array = np.asarray(buf.get("data"), dtype=np.float64)
        except (TypeError, ValueError):
            return f"buffer {name!r} holds no numeric array"
        if array.size > MAX_BUFFER_NUMEL or not np.isfinite(array).all():
            return f"buffer {name!r} is too large or not finite"
    return None


#: the most elements one constant, or one shape a graph spells out as a constant, may imply:
#: 2**28 float32 is 1 GB, far above any weight or feature map of our exports, so a crafted graph
#: cannot make the runtime allocate more
MAX_GRAPH_ELEMENTS = 1 << 28
#: operators whose shape-like input (index) makes a tensor of that many elements
_SHAPE_INPUTS = {"ConstantOfShape": 0, "Expand": 1, "Reshape": 1, "Tile": 1, "Resize": 3, "Upsample": 1}
_FLOATS = {1, 10, 11, 16}  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


def graph_problem(proto: Any, meta: dict) -> str | None:
    """What makes an ONNX graph unfit to run as one of our exports, or None.

    Its one input must be ``images`` (N x 3 x H x W, the exported dtype), its outputs as many
    as the export wrote and floating point, and no constant, nor any shape the graph builds
    from constants, may imply more than :data:`MAX_GRAPH_ELEMENTS` elements.
    """
    from onnx import numpy_helper

    graph = proto.graph
    constants = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.t is not None:
                    constants[node.output[0]] = attribute.t
    for name, tensor in constants.items():
        numel = int(np.prod([int(d) for d in tensor.dims], dtype=np.float64))
        if numel > MAX_GRAPH_ELEMENTS:
            return f"constant '{name}' holds {numel} elements (more than {MAX_GRAPH_ELEMENTS})"
    for node in graph.node:
        index = _SHAPE_INPUTS.get(node.op_type)
        if index is None or len(node.input) <= index or node.input[index] not in constants:
            continue
        try:
            values = numpy_helper.to_array(constants[node.input[index]]).astype(np.float64).ravel()
        except Exception:  # noqa: BLE001 - an unreadable constant is a damaged file
            return f"the shape input of {node.op_type} node '{node.name}' is unreadable"
        numel = int(np.prod(np.abs(values[values > 0]))) if values.size else 0
        if numel > MAX_GRAPH_ELEMENTS:
            return (f"{node.op_type} node '{node.name or node.output[0]}' makes a tensor of {numel} elements "
                    f"(more than {MAX_GRAPH_ELEMENTS}): a memory bomb, not a model")
    inputs = [i for i in graph.input if i.name not in constants]
    if [i.name for i in inputs] != ["images"]:
        return f"it must have one input 'images', it has {', '.join(repr(i.name) for i in inputs) or 'none'}"
    tensor_type = inputs[0].type.tensor_type
    dims = list(tensor_type.shape.dim)
    if len(dims) != 4 or (dims[1].HasField("dim_value") and dims[1].dim_value != 3):
        return "its input 'images' must be N x 3 x H x W"
    expected = (meta.get("outputs") or {}).get("names")
    outputs = list(graph.output)
    if meta["outputs"]["structure"] == "tensor" and len(outputs) != 1:
        return f"it must have one output, it has {len(outputs)}"
    if isinstance(expected, list) and len(expected) != len(outputs):
        return f"it has {len(outputs)} output(s), the export wrote {len(expected)}"
    for output in outputs:
        if output.type.tensor_type.elem_type not in _FLOATS:
            return f"output '{output.name}' is not a floating-point tensor"
    return None


def load_onnx(path: str | Path, device: str = "cpu") -> tuple[Task, OnnxModel, dict]:
    """Rebuild ``(task, model, config)`` from an exported file, without the checkpoint.

    The graph is checked (:func:`graph_problem`) before a session is made, so a crafted file
    is refused without running anything.
    """
    from fashionvision.families import rebuild_task

    proto, meta = _read(path)
    problem = graph_problem(proto, meta)
    del proto
    if problem:
        raise UserError(f"'{path}' does not fit a fashion-export model: {problem}")
    config = meta.get("config") or {}
    try:
        task = rebuild_task(meta["model_cfg"], meta["task"], config, source=f"'{path}'")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"'{path}': its metadata does not describe a usable model "
                        f"({type(exc).__name__}: {exc})") from exc
    model = OnnxModel(_session(path, device), meta).eval()
    return task, model, config
