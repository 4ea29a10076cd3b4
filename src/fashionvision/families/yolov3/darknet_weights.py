"""Darknet binary weight files (``yolov3.weights``, ``darknet53.conv.74``) and pretrained loading.

The format: a header of three int32 (major, minor, revision) and the number of images seen
during training (int64 when ``major * 10 + minor >= 2``, int32 in older files), then, for
every convolution in cfg order, float32 arrays: with batch norm ``beta, gamma, running mean,
running var`` then the conv weights; without batch norm the conv bias then the weights.

A file stores no shapes, so it is read in three steps, and nothing is written until all
three pass: :func:`~fashionvision.families.yolov3.darknet_layout.infer_layout` finds the
network (width, class count, or backbone only) whose size the file has; :func:`plan_copies`
compares that layout, convolution by convolution, with the model's and decides what to copy
(the three output convolutions are skipped when the class counts differ, since their filters
are per class); only then are the values copied. A file that fits no layout, or a network of
another width, is one :class:`UserError` and the model is left as it was.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fashionvision.errors import UserError
from fashionvision.families.yolov3.darknet_layout import Layout, backbone_layout, full_layout, infer_layout

log = logging.getLogger(__name__)

HEADER_VERSION = (0, 2, 0)  # what Darknet writes today: int64 "seen"


@dataclass
class DarknetFile:
    """A weights file's header and its values (float32, header excluded)."""

    path: Path
    version: str
    seen: int
    header_bytes: int
    values: np.ndarray


@dataclass
class Plan:
    """Which of the model's convolutions take which slice of the file's values."""

    layout: Layout
    copies: list[tuple[str, list[torch.Tensor], int]] = field(default_factory=list)  # name, tensors, start
    skipped: list[str] = field(default_factory=list)
    total_convs: int = 0


def read_file(path: str | os.PathLike) -> DarknetFile:
    """Parse the header as Darknet's ``load_weights`` does; UserError for what cannot be one."""
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < 16:
        raise UserError(f"'{path}' is {len(raw)} bytes: too small to be a Darknet weights file")
    major, minor, revision = (int(v) for v in np.frombuffer(raw[:12], dtype=np.int32))
    if major * 10 + minor >= 2 and major < 1000 and minor < 1000:
        seen, offset = int(np.frombuffer(raw[12:20], dtype=np.int64)[0]), 20
    else:
        seen, offset = int(np.frombuffer(raw[12:16], dtype=np.int32)[0]), 16
    if (len(raw) - offset) % 4:
        raise UserError(f"'{path}': {len(raw) - offset} bytes after the {offset}-byte header are not a "
                        "whole number of float32 values; not a Darknet weights file")
    return DarknetFile(path, f"{major}.{minor}.{revision}", seen, offset,
                       np.frombuffer(raw, dtype=np.float32, offset=offset))


def _model_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d | None]]:
    """The model's convolutions in cfg order, each with its module name (``head1.out``)."""
    if not hasattr(model, "darknet_convs"):
        raise TypeError(f"{type(model).__name__} has no darknet_convs(); not a Darknet-layout model")
    names = {id(m): name for name, m in model.named_modules()}
    named = []
    for conv, bn in model.darknet_convs():
        name = names.get(id(conv), "?")
        named.append((name.removesuffix(".conv") if bn is not None else name, conv, bn))
    return named


def _layer_tensors(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> list[torch.Tensor]:
    """The tensors of one conv in file order."""
    if bn is not None:
        return [bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight]
    return [conv.bias, conv.weight]


def _sizes_expected(model_width: float, model_depth: float, num_classes: int | None) -> str:
    """The value counts a file for this model could have, in words."""
    parts = []
    if num_classes is not None:
        parts.append(f"{full_layout(model_width, model_depth, num_classes).num_values:,} "
                     f"(the full network, {num_classes} classes)")
    coco = full_layout(model_width, model_depth, 80).num_values
    per_class = coco - full_layout(model_width, model_depth, 79).num_values
    parts.append(f"{coco:,} (80 classes, as yolov3.weights; {per_class:,} per class)")
    parts.append(f"{backbone_layout(model_width, model_depth).num_values:,} (the backbone, as darknet53.conv.74)")
    return ", ".join(parts)


def plan_copies(model: nn.Module, weights: DarknetFile) -> Plan:
    """Check the whole file against the model and list the copies; raises before any write.

    Raises:
        UserError: the file's size fits no YOLOv3 layout, fits one of another width or depth,
            or a convolution's shape differs from the model's (other than the output convs).
    """
    width, depth = float(getattr(model, "width", 1.0)), float(getattr(model, "depth", 1.0))
    num_classes = getattr(model, "num_classes", None)
    found = weights.values.size
    where = f"'{weights.path}' ({found:,} float32 values after its {weights.header_bytes}-byte header)"
    layout = infer_layout(found, width, depth)
    if layout is None:
        raise UserError(f"{where} fits no YOLOv3 layout: for model.width={width:g} model.depth={depth:g} "
                        f"expected {_sizes_expected(width, depth, num_classes)}; is it truncated or not a "
                        "Darknet weights file?")
    if (layout.width, layout.depth) != (width, depth):  # the model's own width and depth are tried first
        held = "a Darknet-53 backbone" if layout.backbone_only else f"a YOLOv3 of {layout.num_classes} classes"
        settings = " ".join(f"model.{key}={theirs:g}" for key, theirs, ours in
                            (("width", layout.width, width), ("depth", layout.depth, depth)) if theirs != ours)
        raise UserError(f"{where} holds {held} at width {layout.width:g}, depth {layout.depth:g}; this model has "
                        f"width {width:g}, depth {depth:g}: set {settings} to load it")
    plan = Plan(layout)
    convs = _model_convs(model)
    plan.total_convs = len(convs)
    if len(layout.convs) > len(convs):
        raise UserError(f"{where} holds {len(layout.convs)} convolutions, the model has {len(convs)}")
    start = 0
    for spec, (name, conv, bn) in zip(layout.convs, convs):
        shape = (conv.in_channels, conv.out_channels, conv.kernel_size[0], bn is not None)
        if shape != (spec.c_in, spec.c_out, spec.kernel, spec.batch_norm):
            output_conv = bn is None and not spec.batch_norm and conv.in_channels == spec.c_in
            if not output_conv:
                raise UserError(f"{where}: convolution {spec.name} is {spec.c_in}->{spec.c_out} "
                                f"{spec.kernel}x{spec.kernel} in the file, {name} is {conv.in_channels}->"
                                f"{conv.out_channels} {conv.kernel_size[0]}x{conv.kernel_size[0]} in the model")
            plan.skipped.append(name)
        else:
            plan.copies.append((name, _layer_tensors(conv, bn), start))
        start += spec.num_values
    if start != found:  # infer_layout matched the size, so this would be a bug in the layer table
        raise UserError(f"{where}: the planned layers take {start:,} values; not loaded")
    return plan


def apply_plan(plan: Plan, weights: DarknetFile) -> None:
    """Copy the planned slices (all checks are done: nothing here can fail half way)."""
    with torch.no_grad():
        for _, tensors, pos in plan.copies:
            for t in tensors:
                n = t.numel()
                t.copy_(torch.from_numpy(weights.values[pos:pos + n].copy()).view_as(t))
                pos += n


def read_darknet(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load a Darknet weight file into ``model``: every convolution whose shape fits.

    Returns ``{"loaded_convs", "total_convs", "skipped", "file_classes", "file_width",
    "backbone_only", "seen", "version"}`` and logs one line saying what was loaded.
    """
    weights = read_file(path)
    plan = plan_copies(model, weights)
    apply_plan(plan, weights)
    layout, loaded = plan.layout, len(plan.copies)
    if layout.backbone_only:
        detail = (f"loaded the backbone: {loaded} of {plan.total_convs} convolutions (a backbone-only file, "
                  f"as darknet53.conv.74); the neck and heads start fresh")
    elif plan.skipped:
        detail = (f"loaded {loaded} of {plan.total_convs} convolutions; skipped {', '.join(plan.skipped)} "
                  f"({layout.num_classes} classes in the file, {getattr(model, 'num_classes', '?')} in the model)")
    else:
        detail = f"loaded {loaded} of {plan.total_convs} convolutions"
    log.info("%s: Darknet weights %s (seen %d images): %s", weights.path, weights.version, weights.seen, detail)
    return {"loaded_convs": loaded, "total_convs": plan.total_convs, "skipped": plan.skipped,
            "file_classes": layout.num_classes, "file_width": layout.width,
            "backbone_only": layout.backbone_only, "seen": weights.seen, "version": weights.version}


def write_darknet(model: nn.Module, path: str | os.PathLike, seen: int = 0,
                  num_convs: int | None = None) -> None:
    """Write the model's convolutions (the first ``num_convs``, default all) in Darknet format."""
    pairs = model.darknet_convs()[:num_convs]
    with open(path, "wb") as fh:
        np.array(HEADER_VERSION, dtype=np.int32).tofile(fh)
        np.array([seen], dtype=np.int64).tofile(fh)
        for conv, bn in pairs:
            for t in _layer_tensors(conv, bn):
                t.detach().float().cpu().numpy().astype(np.float32).ravel().tofile(fh)


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
    if not _is_torch_file(path):
        return read_darknet(model, path)  # logs what it loaded and skipped
    report = load_checkpoint_weights(model, path)
    log.info("loaded pretrained weights from %s: %s", path,
             {k: (len(v) if isinstance(v, list) else v) for k, v in report.items()})
    return report
