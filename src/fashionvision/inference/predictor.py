"""Inference on new photos: a loaded model as a :class:`Predictor`, shared by every front end.

``fashion-predict``, ``fashion-compare``, ``fashion-serve`` and ``fashion-export`` all go through
:func:`prepare_images` (the task's own evaluation preprocessing: letterbox for the detector,
long-side resize padded to a multiple of 32 for the U-Net) and :meth:`Task.predict` (decoding,
NMS, mapping back to original pixels). A model can come from a checkpoint, a run folder or an
exported ``.onnx`` file; the postprocessing is the same Python code in every case, so a
PyTorch and an ONNX prediction differ only by the network's numerical noise.

Writing predictions for files, folders and videos lives in :mod:`fashionvision.inference.files`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from fashionvision.engine.device import resolve_device
from fashionvision.errors import UserError
from fashionvision.tasks.base import Task


def prepare_image(task: Task, image: np.ndarray, index: int = 0, path: str = "") -> tuple[np.ndarray, dict]:
    """One RGB ``[H, W, 3]`` uint8 image -> the model input (``[h, w, 3]``) and its meta dict.

    The same two steps as the task's evaluation dataset (:class:`~fashionvision.data.dataset.
    FashionDataset` with ``train=False``), at the task's ``image_size`` and input shape
    (square letterbox for the detector, stride-32 rectangle for the U-Net); see
    :func:`fashionvision.data.prepare.prepare_image` (``tests/test_predict.py`` checks the pixels
    are identical to the dataset's).
    """
    from fashionvision.data.prepare import prepare_image as prepare

    return prepare(image, task.image_size, task.rect_input, index, path)


def prepare_images(task: Task, images: Sequence[np.ndarray],
                   paths: Sequence[str] | None = None) -> tuple[torch.Tensor, list[dict]]:
    """RGB uint8 arrays -> (uint8 batch ``[B, 3, H, W]``, metas) ready for :meth:`Task.predict`
    (:func:`fashionvision.data.prepare.prepare_batch` at the task's size and input shape)."""
    from fashionvision.data.prepare import prepare_batch

    return prepare_batch(images, task.image_size, task.rect_input, paths)


def _to_numpy(prediction: dict) -> dict:
    return {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v) for k, v in prediction.items()}


@dataclass
class Predictor:
    """A model ready for photos: its task (classes, preprocessing, decoding) and weights.

    Attributes:
        task: the model family (``task.name`` is ``detection`` or ``segmentation``).
        model: the network, in eval mode on ``device`` (an :class:`~fashionvision.inference.onnx.OnnxModel`
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
        return self.task.role

    @property
    def class_names(self) -> list[str]:
        return list(self.task.class_names)

    def default_thresholds(self) -> tuple[float | None, float | None]:
        """The drawn-output thresholds from the model config (None for the segmenter)."""
        return self.task.default_thresholds()

    @torch.no_grad()
    def predict_batch(self, images: Sequence[np.ndarray], conf: float | None = None,
                      iou: float | None = None, paths: Sequence[str] | None = None) -> list[dict]:
        """Predictions (numpy arrays, original image pixels) for RGB uint8 images."""
        batch, metas = prepare_images(self.task, images, paths)
        with self._lock:
            try:
                outputs = self.task.predict(self.model, batch.to(self.device), metas, conf=conf, iou=iou)
            except (RuntimeError, ValueError, IndexError, TypeError) as exc:
                if getattr(self.model, "session", None) is None:
                    raise  # a PyTorch model of ours: a bug, not the file's fault
                # an ONNX file's outputs of another shape than its family decodes: the file's fault, one line
                raise UserError(f"'{self.source}': its outputs do not fit a {self.task.family} model "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc
        return [_to_numpy(p) for p in outputs]

    def __call__(self, image: np.ndarray, conf: float | None = None, iou: float | None = None) -> dict:
        return self.predict_batch([image], conf, iou)[0]


def load_predictor(path: str | Path, device: str | None = "cpu", dataset_path: str | None = None) -> Predictor:
    """Load a checkpoint file, a run folder (best.pt, else last.pt) or an exported ``.onnx`` file."""
    from fashionvision.inference.loading import load_model

    resolved = resolve_device(device, key="device")
    task, model, config = load_model(path, device=resolved, dataset_path=dataset_path)
    # onnxruntime takes CPU tensors whatever device it runs on
    on = torch.device("cpu") if Path(path).suffix.lower() == ".onnx" else resolved
    return Predictor(task, model, on, str(path), dict(config or {}))


def model_info(predictor: Predictor) -> dict[str, Any]:
    """A JSON-able description of a loaded model (for /health, reports and summaries)."""
    return {
        "kind": predictor.kind,
        "task": predictor.task.name,
        "source": predictor.source,
        "model": predictor.task.family,
        "image_size": predictor.task.image_size,
        "classes": predictor.class_names,
    }
