"""Darknet binary weight files (``darknet53.conv.74``, ``yolov3.weights``) and pretrained loading.

The format: a header of three int32 (major, minor, revision) and the number of images seen
during training (int64 when ``major * 10 + minor >= 2``, int32 in older files), then, for
every convolution in cfg order, float32 arrays: with batch norm ``beta, gamma, running mean,
running var`` then the conv weights; without batch norm the conv bias then the weights.
There is no per-layer header, so the only way to check a file against a model is the layer
order and the total size; :func:`read_darknet` therefore refuses a file whose size does not
match a whole number of our layers.

A file may hold fewer layers than the model (``darknet53.conv.74`` holds the 52 backbone
convs): those are loaded and the rest keep their initialisation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fashionvision.errors import UserError

log = logging.getLogger(__name__)

HEADER_VERSION = (0, 2, 0)  # what Darknet writes today: int64 "seen"


def _conv_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    if hasattr(model, "darknet_convs"):
        return model.darknet_convs()
    raise TypeError(f"{type(model).__name__} has no darknet_convs(); not a Darknet-layout model")


def _layer_tensors(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> list[torch.Tensor]:
    """The tensors of one conv in file order."""
    if bn is not None:
        return [bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight]
    return [conv.bias, conv.weight]


def write_darknet(model: nn.Module, path: str | os.PathLike, seen: int = 0,
                  num_convs: int | None = None) -> None:
    """Write the model's convolutions (the first ``num_convs``, default all) in Darknet format."""
    pairs = _conv_pairs(model)[:num_convs]
    with open(path, "wb") as fh:
        np.array(HEADER_VERSION, dtype=np.int32).tofile(fh)
        np.array([seen], dtype=np.int64).tofile(fh)
        for conv, bn in pairs:
            for t in _layer_tensors(conv, bn):
                t.detach().float().cpu().numpy().astype(np.float32).ravel().tofile(fh)


def read_darknet(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load a Darknet weight file into ``model`` (layers in cfg order).

    Returns ``{"loaded_convs", "total_convs", "seen", "version"}``. Raises :class:`UserError`
    when the file is truncated mid-layer, has more data than the model, or is not a weight file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < 16:
        raise UserError(f"'{path}' is too small to be a Darknet weights file")
    major, minor, revision = np.frombuffer(raw[:12], dtype=np.int32)
    if major * 10 + minor >= 2 and major < 1000 and minor < 1000:
        seen, offset = int(np.frombuffer(raw[12:20], dtype=np.int64)[0]), 20
    else:
        seen, offset = int(np.frombuffer(raw[12:16], dtype=np.int32)[0]), 16
    if (len(raw) - offset) % 4:
        raise UserError(f"'{path}': size is not a whole number of float32 values; not a Darknet file")
    data = np.frombuffer(raw, dtype=np.float32, offset=offset)
    pairs = _conv_pairs(model)
    pos, loaded = 0, 0
    with torch.no_grad():
        for conv, bn in pairs:
            tensors = _layer_tensors(conv, bn)
            need = sum(t.numel() for t in tensors)
            if pos == data.size:
                break
            if pos + need > data.size:
                raise UserError(
                    f"'{path}' ends inside conv layer {loaded} (needs {need} values, "
                    f"{data.size - pos} left): the file does not match this model's layer "
                    "order/width or the class count of its heads")
            for t in tensors:
                n = t.numel()
                t.copy_(torch.from_numpy(data[pos:pos + n].copy()).view_as(t))
                pos += n
            loaded += 1
    if pos != data.size:
        raise UserError(f"'{path}' holds {data.size - pos} more values than this model's "
                        f"{len(pairs)} conv layers: wrong model width or class count")
    return {"loaded_convs": loaded, "total_convs": len(pairs), "seen": seen,
            "version": f"{major}.{minor}.{revision}"}


def _is_torch_file(path: Path) -> bool:
    """Torch saves zip archives (or legacy pickles); Darknet files start with small int32s."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head[:2] == b"PK" or head[:1] == b"\x80"


def load_checkpoint_weights(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load one of our ``.pt`` checkpoints (``weights_only=True``), skipping mismatched layers.

    Uses the engine's reader (EMA weights preferred, clear errors for corrupt files); layers
    whose shape differs (heads trained for another class count) start fresh and are reported.
    The anchors buffer is not taken over: fine-tuning uses the anchors of its own config.
    """
    from fashionvision.engine.checkpoint import load_checkpoint, load_matching, model_state

    state = dict(model_state(load_checkpoint(path)))
    # the anchors buffer belongs to this run's anchors config, not to the starting weights
    state.pop("anchors", None)
    skipped = load_matching(model, state, source=str(path))
    return {"skipped_shape_mismatch": skipped}


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> dict:
    """``model.weights=``: our checkpoint or a Darknet binary file (detected from its bytes)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file '{path}' does not exist")
    if _is_torch_file(path):
        report = load_checkpoint_weights(model, path)
    else:
        report = read_darknet(model, path)
    log.info("loaded pretrained weights from %s: %s", path,
             {k: (len(v) if isinstance(v, list) else v) for k, v in report.items()})
    return report
