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

import torch
from torch import nn

from fashionvision.errors import UserError
from fashionvision.tasks.base import Task

META_KEY = "fashionvision"


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
        outputs = [torch.from_numpy(o).to(x.device) for o in self.session.run(None, {"images": array})]
        if self.structure == "tensor":
            return outputs[0]
        return tuple(outputs) if self.structure == "tuple" else outputs


def read_metadata(path: str | Path) -> dict:
    """The export metadata of an ``.onnx`` file; clear error when it is not one of ours."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors have no common base class
        raise UserError(f"'{path}' is not a readable ONNX file ({exc})") from exc
    props = {p.key: p.value for p in proto.metadata_props}
    if META_KEY not in props:
        raise UserError(f"'{path}' was not exported by fashion-export (no '{META_KEY}' metadata); "
                        "its classes and decoding are unknown")
    return json.loads(props[META_KEY])


def load_onnx(path: str | Path, device: str = "cpu") -> tuple[Task, OnnxModel, dict]:
    """Rebuild ``(task, model, config)`` from an exported file, without the checkpoint."""
    from fashionvision.families import rebuild_task

    meta = read_metadata(path)
    config = meta.get("config") or {}
    task = rebuild_task(meta["model_cfg"], meta["task"], config, source=f"'{path}'")
    model = OnnxModel(_session(path, device), meta).eval()
    return task, model, config
