"""ONNX export of a trained model (running the exported file: :mod:`fashionvision.inference.onnx`).

Only the network goes into the graph. Decoding, NMS and mapping back to original pixels stay
in the task's Python code, which runs unchanged on the ONNX outputs: :class:`OnnxModel` is an
``nn.Module`` that returns the same structure as the PyTorch model (YOLOv3's three raw maps, the
U-Net's logits). So the parity of the raw outputs (checked at export, ``max |diff| <= atol``,
1e-4 by default for fp32) is all that separates an ONNX prediction from a PyTorch one.

Everything needed to rebuild the task without the checkpoint is stored in the file's
``metadata_props``: the model config (image size, anchors, thresholds), the class lists, the
task name, and the model's small top-level buffers and attributes that decoding reads (e.g.
YOLOv3's ``anchors`` buffer and ``strides``).

The graph's input is exactly what the task feeds the model (captured by running the task's own
``predict`` once), with dynamic batch, height and width axes.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fashionvision.errors import UserError
from fashionvision.output_guard import Input, check_output, unique_temporary, writable_target
from fashionvision.inference.onnx import MAX_BUFFER_NUMEL, META_KEY, OnnxModel, _plain, _session
from fashionvision.inference.predictor import Predictor, prepare_images
from fashionvision.tasks.base import Task

log = logging.getLogger("fashionvision")

DEFAULT_OPSET = 17
DEFAULT_ATOL = 1e-4


class _Recorder(nn.Module):
    """Wraps a model and records the inputs of its last call (to learn what the task feeds it)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = model
        self.args: tuple = ()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise UserError(f"cannot export: the task calls the model with keyword arguments {sorted(kwargs)}")
        self.args = args
        return self.inner(*args)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)


def model_attributes(model: nn.Module) -> tuple[dict, dict]:
    """Small top-level buffers and plain attributes that decoding may read from the model."""
    buffers = {name: {"data": buf.detach().cpu().tolist(), "dtype": str(buf.dtype).removeprefix("torch.")}
               for name, buf in model.named_buffers(recurse=False) if buf.numel() <= MAX_BUFFER_NUMEL}
    attributes: dict[str, Any] = {}
    for source in (vars(type(model)), vars(model)):
        for name, value in source.items():
            if not name.startswith("_") and name != "training" and _plain(value):
                attributes[name] = list(value) if isinstance(value, tuple) else value
    return buffers, attributes


def example_input(task: Task, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """A synthetic uint8 batch, its metas, and nothing else: export needs shapes, not photos."""
    size = task.image_size
    generator = np.random.default_rng(0)
    # 4:3 portrait, like most fashion photos; the U-Net keeps it, the detector letterboxes it
    images = [generator.integers(0, 256, (size, size * 3 // 4, 3), dtype=np.uint8) for _ in range(batch)]
    uint8, metas = prepare_images(task, images)
    return uint8, uint8, metas


def capture_model_input(task: Task, model: nn.Module, images: torch.Tensor, metas: list[dict]) -> tuple:
    """The positional arguments the task's ``predict`` passes to the model for this batch."""
    recorder = _Recorder(model)
    with torch.no_grad():
        task.predict(recorder, images, metas)
    if not recorder.args:
        raise UserError("cannot export: the task's predict never called the model")
    return tuple(a.detach() for a in recorder.args)


def _flatten(outputs: Any) -> tuple[list[torch.Tensor], str]:
    if isinstance(outputs, torch.Tensor):
        return [outputs], "tensor"
    if isinstance(outputs, (list, tuple)) and all(isinstance(o, torch.Tensor) for o in outputs):
        return list(outputs), type(outputs).__name__
    raise UserError(f"cannot export: the model returns {type(outputs).__name__}, "
                    "expected a tensor or a list/tuple of tensors")


def export_onnx(predictor: Predictor, output: str | Path, opset: int = DEFAULT_OPSET,
                atol: float = DEFAULT_ATOL, check: bool = True, overwrite: bool = False) -> dict:
    """Export ``predictor``'s network to ``output`` and (with ``check``) verify it with onnxruntime.

    Returns a report: the file, opset, input/output shapes, and for the check the maximum
    absolute difference of the raw outputs at batch 1 and batch 2 (dynamic batch) and the
    tolerance. Raises :class:`UserError` when the difference exceeds ``atol``, and when
    ``output`` exists and ``overwrite`` is false. The file is written under a temporary name
    and renamed into place only once it passed the check, so a failed export never replaces
    (or half-writes) an earlier one.
    """
    model = predictor.model.eval()
    if not isinstance(model, nn.Module) or isinstance(model, OnnxModel):
        raise UserError("only a PyTorch checkpoint can be exported (this model is already ONNX)")
    output = Path(output)
    if output.exists() and not overwrite:
        raise UserError(f"'{output}' already exists; pass overwrite=true to replace it, or choose another output=")
    if output.exists() and not output.is_file():
        raise UserError(f"'{output}' exists and is not a file")
    check_output(output, [Input(Path(predictor.source), "checkpoint")])
    writable_target(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_temporary(output)
    try:
        try:
            report = _export_to(predictor, tmp, opset, atol, check)
        except UserError as exc:  # name the file the user asked for, not the temporary one
            raise UserError(str(exc).replace(str(tmp), str(output))) from exc
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()
    report["file"] = str(output)
    return report


def _export_to(predictor: Predictor, output: Path, opset: int, atol: float, check: bool) -> dict:
    import onnx

    task, model = predictor.task, predictor.model.eval()
    device = next(iter(model.parameters())).device
    _, images, metas = example_input(task, batch=1)
    (x,) = capture_model_input(task, model, images.to(device), metas)
    with torch.no_grad():
        reference, structure = _flatten(model(x))
    output_names = [f"output{i}" for i in range(len(reference))]
    spatial = {0: "batch", 2: "height", 3: "width"}
    dynamic_axes = {"images": spatial, **{n: {0: "batch"} for n in output_names}}
    for name, ref in zip(output_names, reference):
        if ref.dim() == 4:
            dynamic_axes[name] = {0: "batch", 2: f"{name}_height", 3: f"{name}_width"}
    # The TorchScript exporter (dynamo=False: the dynamo one needs onnxscript, not a dependency).
    # Its warnings about Python branches on shapes (e.g. the U-Net's "pad if not a multiple of
    # 32") are silenced: inputs are always stride multiples, and check_parity runs a second
    # input size, which would expose any shape baked into the graph.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(model, (x,), str(output), opset_version=int(opset), input_names=["images"],
                          output_names=output_names, dynamic_axes=dynamic_axes, dynamo=False)
    buffers, attributes = model_attributes(model)
    meta = {
        "format": 1,
        "task": task.describe(),
        "config": {k: predictor.config.get(k) for k in ("model", "augment", "anchors", "dataset")},
        "model_cfg": task.model_cfg,
        "input": {"dtype": str(x.dtype).removeprefix("torch."), "example_shape": list(x.shape)},
        "outputs": {"structure": structure, "names": output_names},
        "buffers": buffers,
        "attributes": attributes,
        "source": predictor.source,
    }
    proto = onnx.load(str(output))
    for key, value in {META_KEY: json.dumps(meta), "task_name": task.name,
                       "class_names": json.dumps(task.class_names),
                       "image_size": str(task.image_size)}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(output))
    report = {"file": str(output), "opset": int(opset), "task": task.name, "input_shape": list(x.shape),
              "output_shapes": [list(r.shape) for r in reference], "bytes": output.stat().st_size}
    if check:
        report.update(check_parity(model, output, x, atol))
    return report


def export_sentence(report: dict) -> str:
    """One sentence on an export: the file, its size, and the parity check's result."""
    size = report["bytes"] / 1e6
    text = f"exported {report['file']} ({size:.1f} MB, opset {report['opset']}, {report['task']})"
    diffs = [v for k, v in report.items() if k.startswith("max_abs_diff_")]
    if not diffs:
        return text + "; not checked against PyTorch (check=false)"
    return (text + f"; onnxruntime matches PyTorch: max |diff| {max(diffs):.2g} <= atol {report['atol']:g} "
            f"at batch 1, batch 2 and another input size")


def check_parity(model: nn.Module, onnx_path: str | Path, x: torch.Tensor, atol: float = DEFAULT_ATOL) -> dict:
    """Max |PyTorch - onnxruntime| of the raw outputs at batch 1, batch 2 and another input height.

    Raises :class:`UserError` above ``atol`` or when output shapes differ (a shape baked into
    the graph by tracing would show here).
    """
    session = _session(onnx_path, "cpu")
    inputs = {
        "batch1": x,
        "batch2": torch.cat([x, x.flip(-1)]),  # two different images through the dynamic batch axis
        # another height (stride-32 multiple): the U-Net's rectangular inputs vary per photo
        "other_size": torch.cat([x, x[:, :, :32]], dim=2),
    }
    diffs = {}
    for name, xb in inputs.items():
        with torch.no_grad():
            expected, _ = _flatten(model(xb))
        got = session.run(None, {"images": xb.detach().cpu().numpy()})
        if [tuple(e.shape) for e in expected] != [g.shape for g in got]:
            raise UserError(f"ONNX export of '{onnx_path}' gives other output shapes than PyTorch for input "
                            f"{tuple(xb.shape)}: {[g.shape for g in got]} vs {[tuple(e.shape) for e in expected]}")
        diffs[f"max_abs_diff_{name}"] = max(
            float(np.max(np.abs(e.detach().float().cpu().numpy() - g))) for e, g in zip(expected, got))
    worst = max(diffs.values())
    result = {**diffs, "atol": atol, "parity_ok": worst <= atol}
    if worst > atol:
        raise UserError(f"ONNX export of '{onnx_path}' differs from PyTorch by {worst:.3g} (> atol {atol}); "
                        "the exported file is not trustworthy")
    return result
