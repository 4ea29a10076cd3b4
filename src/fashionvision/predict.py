"""Inference on new photos: a loaded model as a :class:`Predictor`, shared by every front end.

``fashion-predict``, ``fashion-compare``, ``fashion-serve`` and ``fashion-export`` all go through
:func:`prepare_images` (the task's own evaluation preprocessing: letterbox for the detector,
long-side resize padded to a multiple of 32 for the U-Net) and :meth:`Task.predict` (decoding,
NMS, mapping back to original pixels). A model can come from a checkpoint, a run folder or an
exported ``.onnx`` file; the postprocessing is the same Python code in every case, so a
PyTorch and an ONNX prediction differ only by the network's numerical noise.

Writing predictions for files, folders and videos lives in :mod:`fashionvision.predict_files`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from fashionvision.errors import UserError
from fashionvision.tasks.base import Task

def _input_size(task: Task) -> int:
    return int(task.model_cfg.get("image_size", 416))


def prepare_image(task: Task, image: np.ndarray, index: int = 0, path: str = "") -> tuple[np.ndarray, dict]:
    """One RGB ``[H, W, 3]`` uint8 image -> the model input (``[h, w, 3]``) and its meta dict.

    The same two steps as the task's evaluation dataset (:class:`~fashionvision.data.dataset.
    FashionDataset` with ``train=False``): resize so the long side is ``image_size`` (as
    :func:`~fashionvision.data.cache.load_resized` does), then letterbox to the square input
    (detector) or to the stride-32 :func:`~fashionvision.data.transforms.padded_shape` (U-Net).
    The meta keys (``path``, ``image_id``, ``orig_size``, ``scale``, ``pad``) are the dataset's,
    so :meth:`Task.predict` maps predictions back exactly as during ``fashion-eval``
    (``tests/test_predict.py`` checks the pixels are identical).
    """
    from fashionvision.data.transforms import letterbox, target_shape

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    size = _input_size(task)
    resize = size / max(height, width)
    new_w, new_h = max(1, round(width * resize)), max(1, round(height * resize))
    resized = image
    if (new_w, new_h) != (width, height):
        interp = cv2.INTER_AREA if resize < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(image, (new_w, new_h), interpolation=interp)
    shape = target_shape(size, new_h, new_w, rect=task.name == "segmentation")
    boxed, _, scale, pad = letterbox(resized, shape)
    meta = {"path": path, "image_id": index, "orig_size": (height, width),
            "scale": float(resize * scale), "pad": (int(pad[0]), int(pad[1]))}
    return boxed, meta


def prepare_images(task: Task, images: Sequence[np.ndarray],
                   paths: Sequence[str] | None = None) -> tuple[torch.Tensor, list[dict]]:
    """RGB uint8 arrays -> (uint8 batch ``[B, 3, H, W]``, metas) ready for :meth:`Task.predict`.

    Images of different shapes (the U-Net keeps aspect ratios) are padded at the bottom and right
    to the largest one; the top-left placement recorded in each meta stays valid.
    """
    if not images:
        raise ValueError("prepare_images needs at least one image")
    prepared = [prepare_image(task, im, i, paths[i] if paths else "") for i, im in enumerate(images)]
    height = max(p[0].shape[0] for p in prepared)
    width = max(p[0].shape[1] for p in prepared)
    batch = torch.full((len(prepared), 3, height, width), 114, dtype=torch.uint8)
    for i, (array, _) in enumerate(prepared):
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
        batch[i, :, : tensor.shape[1], : tensor.shape[2]] = tensor
    return batch, [meta for _, meta in prepared]


def _to_numpy(prediction: dict) -> dict:
    return {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v) for k, v in prediction.items()}


@dataclass
class Predictor:
    """A model ready for photos: its task (classes, preprocessing, decoding) and weights.

    Attributes:
        task: the model family (``task.name`` is ``detection`` or ``segmentation``).
        model: the network, in eval mode on ``device`` (an :class:`~fashionvision.export.OnnxModel`
            for ``.onnx`` files).
        device: where inputs go.
        source: the checkpoint or ONNX file it was loaded from.
    """

    task: Task
    model: nn.Module
    device: torch.device
    source: str
    config: dict = field(default_factory=dict)
    # one forward at a time: the web app calls from several threads
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def kind(self) -> str:
        """``detector`` or ``segmenter`` (what the app and reports call the model)."""
        return "segmenter" if self.task.name == "segmentation" else "detector"

    @property
    def class_names(self) -> list[str]:
        return list(self.task.class_names)

    def default_thresholds(self) -> tuple[float | None, float | None]:
        """The drawn-output thresholds from the model config (None for the segmenter)."""
        if self.task.name != "detection":
            return None, None
        from fashionvision.models.yolo_decode import DRAW_CONF, DRAW_IOU

        return (float(self.task.model_cfg.get("conf", DRAW_CONF)),
                float(self.task.model_cfg.get("iou", DRAW_IOU)))

    @torch.no_grad()
    def predict_batch(self, images: Sequence[np.ndarray], conf: float | None = None,
                      iou: float | None = None, paths: Sequence[str] | None = None) -> list[dict]:
        """Predictions (numpy arrays, original image pixels) for RGB uint8 images."""
        batch, metas = prepare_images(self.task, images, paths)
        with self._lock:
            outputs = self.task.predict(self.model, batch.to(self.device), metas, conf=conf, iou=iou)
        return [_to_numpy(p) for p in outputs]

    def __call__(self, image: np.ndarray, conf: float | None = None, iou: float | None = None) -> dict:
        return self.predict_batch([image], conf, iou)[0]


def resolve_device(device: str | None) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is passed to torch."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise UserError(f"unknown device '{device}' ({exc})") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}' requested but CUDA is not available; use device=cpu")
    return resolved


def load_predictor(path: str | Path, device: str | None = "cpu", dataset_path: str | None = None) -> Predictor:
    """Load a checkpoint file, a run folder (best.pt, else last.pt) or an exported ``.onnx`` file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model '{path}' does not exist (give a checkpoint, a run folder or an .onnx file)")
    if path.suffix.lower() == ".onnx":
        from fashionvision.export import load_onnx

        task, model, config = load_onnx(path, device=str(resolve_device(device)))
        return Predictor(task, model, torch.device("cpu"), str(path), config)
    from fashionvision.engine.checkpoint import load_for_inference

    resolved = resolve_device(device)
    task, model, config = load_for_inference(path, device=str(resolved), dataset_path=dataset_path)
    model.eval()
    return Predictor(task, model, resolved, str(path), dict(config or {}))


def model_info(predictor: Predictor) -> dict[str, Any]:
    """A JSON-able description of a loaded model (for /health, reports and summaries)."""
    return {
        "kind": predictor.kind,
        "task": predictor.task.name,
        "source": predictor.source,
        "model": predictor.task.model_cfg.get("name"),
        "image_size": _input_size(predictor.task),
        "classes": predictor.class_names,
    }
