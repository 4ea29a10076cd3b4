"""U-Net segmenters: the original encoder (``vanilla``) or a segmentation-models-pytorch encoder.

``build_unet(model_cfg, num_classes)`` is the ``unet`` entry of
:data:`fashionvision.families.FAMILIES`. Every variant is wrapped in :class:`UNet`, which

* takes RGB floats in [0, 1] (``[B, 3, H, W]``) and applies the ImageNet mean/std itself, so
  that the task, exported models and the app all feed the same thing and pretrained
  encoders see the statistics they were trained with;
* pads height and width to a multiple of 32 (the encoders downsample five times) and crops
  the logits back, so any input size works;
* returns class logits ``[B, num_classes, H, W]``.

Config keys (``configs/model/unet.yaml``): ``encoder`` (vanilla | mobilenet_v2 | resnet50, or
any other segmentation-models-pytorch encoder name), ``encoder_weights`` (null | imagenet, or
a local state dict of the encoder: :mod:`fashionvision.families.unet.encoder_weights`),
``width`` and ``batch_norm`` (vanilla only), ``decoder_channels`` (library encoders),
``weights`` (a local file to start from, loaded by the engine through
:meth:`UNet.load_pretrained`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fashionvision.errors import UserError
from fashionvision.families.unet.encoder_weights import is_local_file, load_encoder_weights
from fashionvision.families.unet.vanilla import VanillaUNet

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UNet(nn.Module):
    """Normalise, pad to a multiple of ``divisor``, run ``net``, crop the logits back.

    Args:
        net: a module mapping normalised ``[B, 3, H, W]`` (H, W multiples of ``divisor``)
            to logits ``[B, C, H, W]``.
        num_classes: C, recorded for callers.
        divisor: padding multiple (32 for five downsamplings).
    """

    def __init__(self, net: nn.Module, num_classes: int, divisor: int = 32):
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.divisor = divisor
        # Not persistent: state dicts stay those of the plain network, so weights move freely
        # between this wrapper and a bare segmentation-models-pytorch Unet.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C, H, W]`` for RGB images in [0, 1] of any size ``H x W``."""
        height, width = images.shape[-2:]
        x = (images - self.mean) / self.std
        pad_h = (-height) % self.divisor
        pad_w = (-width) % self.divisor
        if pad_h or pad_w:
            # Zero after normalisation = the mean colour: the least surprising filler.
            x = F.pad(x, (0, pad_w, 0, pad_h))
        weight = next(self.net.parameters())
        if weight.dim() == 4 and not weight.is_contiguous() \
                and weight.is_contiguous(memory_format=torch.channels_last):
            # The engine converts the model to channels_last on CUDA; feed it the same layout
            # so cuDNN does not convert on every convolution.
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self.net(x)
        if pad_h or pad_w:
            logits = logits[..., :height, :width]
        return logits

    def load_pretrained(self, path: str | os.PathLike) -> list[str]:
        """``model.weights=PATH``: the engine's fine-tuning hook (see :func:`load_weights`).

        Returns the names of the file's tensors that were not used.
        """
        return load_weights(self, path)


def _library_unet(encoder: str, encoder_weights: str | None, num_classes: int,
                  decoder_channels: list[int] | None) -> nn.Module:
    """A segmentation-models-pytorch Unet; download failures become a UserError."""
    import segmentation_models_pytorch as smp

    kwargs = {}
    if decoder_channels:
        kwargs["decoder_channels"] = tuple(int(c) for c in decoder_channels)
    try:
        return smp.Unet(encoder_name=encoder, encoder_weights=encoder_weights, in_channels=3,
                        classes=num_classes, **kwargs)
    except KeyError as exc:  # the library's "wrong encoder / weights name"
        raise UserError(f"model.encoder={encoder} model.encoder_weights={encoder_weights}: "
                        f"{exc.args[0] if exc.args else exc}") from None
    except Exception as exc:  # noqa: BLE001 - any network/cache failure of the weights download
        if encoder_weights is None:
            raise
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(
            f"could not get the '{encoder_weights}' weights of encoder '{encoder}' "
            f"({type(exc).__name__}: {first_line}). This machine may have no network access: "
            "train from scratch with model.encoder_weights=null, or start from local files with "
            "model.encoder_weights=PATH (the encoder's state dict) or model.weights=PATH"
        ) from None


def build_unet(model_cfg: dict, num_classes: int) -> UNet:
    """Build the U-Net described by the ``model`` config group (a plain dict).

    Raises:
        UserError: unknown encoder, failed pretrained-weights download, unreadable weights.
    """
    if num_classes < 2:
        raise UserError(f"a segmenter needs at least 2 classes (background + one), got {num_classes}")
    encoder = str(model_cfg.get("encoder", "resnet50"))
    encoder_weights = model_cfg.get("encoder_weights") or None
    if encoder == "vanilla":
        if encoder_weights is not None:
            raise UserError("the vanilla U-Net encoder has no pretrained weights; "
                            "set model.encoder_weights=null (or use model.weights=PATH)")
        net: nn.Module = VanillaUNet(num_classes, width=float(model_cfg.get("width", 1.0)),
                                     batch_norm=bool(model_cfg.get("batch_norm", True)))
    elif encoder_weights is not None and is_local_file(str(encoder_weights)):
        net = _library_unet(encoder, None, num_classes, model_cfg.get("decoder_channels"))
        load_encoder_weights(net.encoder, encoder_weights, encoder)
    else:
        net = _library_unet(encoder, encoder_weights, num_classes, model_cfg.get("decoder_channels"))
    # ``model.weights`` is not loaded here: the engine calls :meth:`UNet.load_pretrained` when
    # training starts, and inference rebuilds the model before loading a checkpoint's weights.
    return UNet(net, num_classes)


def load_weights(model: UNet, path: str | os.PathLike) -> list[str]:
    """Load a local weights file into ``model``, skipping tensors whose shapes differ.

    Accepts a bare ``state_dict`` of :class:`UNet` (keys ``net.*``), of the inner network (a
    plain segmentation-models-pytorch Unet or :class:`VanillaUNet`), of an encoder alone
    (keys without the ``encoder.`` prefix), or a fashionvision checkpoint (EMA weights
    preferred). Files are read with ``weights_only=True``: a file carrying pickled code is
    refused.

    Returns:
        the skipped tensors (also logged).
    """
    from fashionvision.engine.checkpoint import load_checkpoint, load_matching, model_state

    path = Path(path)
    if not path.is_file():
        raise UserError(f"model.weights: file '{path}' does not exist")
    return load_matching(model, model_state(load_checkpoint(path)), source=f"model.weights '{path}'",
                         prefixes=("", "net.", "net.encoder."))
