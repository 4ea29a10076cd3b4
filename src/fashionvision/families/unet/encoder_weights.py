"""``model.encoder_weights=PATH``: a local state dict of a segmentation-models-pytorch encoder.

Clusters without internet cannot fetch ``imagenet`` weights when a run starts, so the same
weights are accepted as a file: what ``torch.save(smp_model.encoder.state_dict(), PATH)``
writes, or the files the libraries cache (torchvision's ``resnet50-*.pth`` under
``$TORCH_HOME/hub/checkpoints``, smp's and timm's ``model.safetensors`` in the Hugging Face
cache). The file is loaded strictly: every tensor of the encoder must be in it with its shape,
nothing else but an ImageNet classifier (which the encoders drop) may be, and any mismatch is
one :class:`UserError` naming a few keys before anything is copied. The decoder and the
segmentation head keep their fresh initialisation.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from fashionvision.errors import UserError

log = logging.getLogger(__name__)

#: suffixes that make a value a file even without a folder in it
FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".tar", ".ckpt")
#: ImageNet classifiers in the published files, which the encoders do not have
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.")
#: a timm encoder wrapped by smp holds the timm model under ``model.``
KEY_PREFIXES = ("", "model.")
SHOWN = 3


def is_local_file(value: str) -> bool:
    """Whether an ``encoder_weights`` value names a file rather than a library weights name."""
    return "/" in value or os.sep in value or value.endswith(FILE_SUFFIXES) or Path(value).expanduser().is_file()


def read_state_dict(path: Path, setting: str = "model.encoder_weights") -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or torch file (``weights_only=True``), one-line errors."""
    if not path.is_file():
        raise UserError(f"{setting}='{path}' does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only=True names the class it refused; other unpickling errors are damaged bytes
        reason = ("holds pickled Python objects, refused" if "Unsupported global" in str(exc)
                  else "is not a weights file (corrupt, or another format)")
        raise UserError(f"{setting}='{path}' {reason}; expected a state dict of tensors") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{setting}='{path}' is not a weights file ({first_line})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # timm's and Lightning's training checkpoints
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = type(state).__name__ if not isinstance(state, dict) else "dict that is not only tensors"
        raise UserError(f"{setting}='{path}' holds a {what}, not a state dict of the encoder's tensors")
    return state


def _shown(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def fit_state_dict(encoder: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """``state`` renamed to the encoder's keys, or a UserError naming what does not fit."""
    own = encoder.state_dict()
    prefix = max(KEY_PREFIXES, key=lambda p: sum(p + k in own for k in state))
    state = {prefix + k: v for k, v in state.items()
             if prefix + k in own or not k.startswith(CLASSIFIER_PREFIXES)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(v.shape)} in the file, {tuple(own[k].shape)} in the encoder"
              for k, v in state.items() if k in own and v.shape != own[k].shape]
    if not (missing or unexpected or shapes):
        return state
    problems = [f"{len(found)} {what} ({_shown(found)})" for what, found in
                (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)) if found]
    hint = (" (a whole U-Net? start from it with model.weights=PATH)"
            if any(k.startswith("encoder.") for k in unexpected) else "")
    raise UserError(f"{source} does not fit the encoder: {'; '.join(problems)}{hint}")


def load_encoder_weights(encoder: nn.Module, path: str | os.PathLike, encoder_name: str = "encoder") -> int:
    """Load a local state dict into ``encoder`` strictly; returns the number of tensors loaded."""
    path = Path(path).expanduser()
    source = f"model.encoder_weights='{path}' (encoder {encoder_name})"
    state = fit_state_dict(encoder, read_state_dict(path), source)
    # nn.Module's own method: the encoders' overrides pop classifier keys from the dict
    nn.Module.load_state_dict(encoder, state, strict=True)
    log.info("%s: loaded %d tensors into the encoder; the decoder starts fresh", source, len(state))
    return len(state)
