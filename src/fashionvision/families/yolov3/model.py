"""YOLOv3: Darknet-53, the YOLOv3 neck and three detection heads (strides 8, 16 and 32).

Layout follows Darknet's ``yolov3.cfg``: after the backbone, a set of five convs (1x1, 3x3,
1x1, 3x3, 1x1) on the stride-32 features feeds a 3x3 conv and the 1x1 output conv of the
stride-32 head; a 1x1 conv of the set's output is upsampled and concatenated with the
backbone's stride-16 features (route ``-1, 61``), and the same again down to stride 8
(route ``-1, 36``). Each output conv has ``3 * (5 + C)`` filters: per anchor x, y, w, h,
objectness and C class logits.

:meth:`YOLOv3.forward` returns the three maps **ordered by stride (8, 16, 32)**, matching the
anchors buffer ``[3 scales, 3 anchors, 2]`` sorted small to large (the smallest anchors go to
the stride-8 head). :meth:`YOLOv3.darknet_convs` lists the 75 convolutions in cfg order (the
order of ``yolov3.weights``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from fashionvision.config import DEFAULT_IMAGE_SIZE
from fashionvision.families.yolov3.darknet import ConvBNAct, Darknet53, scale_channels

#: the published COCO anchors (pixels at 416x416), small to large
COCO_ANCHORS_PX = ((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119),
                   (116, 90), (156, 198), (373, 326))
STRIDES = (8, 16, 32)


class ConvSet(nn.Module):
    """The five-conv set (1x1, 3x3, 1x1, 3x3, 1x1) that precedes each head."""

    def __init__(self, c_in: int, c_mid: int):
        super().__init__()
        c2 = c_mid * 2
        self.convs = nn.Sequential(
            ConvBNAct(c_in, c_mid, 1), ConvBNAct(c_mid, c2, 3), ConvBNAct(c2, c_mid, 1),
            ConvBNAct(c_mid, c2, 3), ConvBNAct(c2, c_mid, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class Head(nn.Module):
    """3x3 conv then the linear 1x1 output conv (with bias, no BN) of one scale."""

    def __init__(self, c_mid: int, num_outputs: int):
        super().__init__()
        self.conv = ConvBNAct(c_mid, c_mid * 2, 3)
        self.out = nn.Conv2d(c_mid * 2, num_outputs, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(x))


class YOLOv3(nn.Module):
    """YOLOv3 on Darknet-53.

    Args:
        num_classes: number of detection classes.
        anchors: nine ``(w, h)`` anchors in pixels, sorted small to large (three per scale).
        width, depth: channel and residual-block multipliers (1.0 = published model).
    """

    num_anchors = 3

    def __init__(self, num_classes: int, anchors: Sequence[Sequence[float]] = COCO_ANCHORS_PX,
                 width: float = 1.0, depth: float = 1.0):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        anchors_t = torch.as_tensor(anchors, dtype=torch.float32).reshape(-1, 2)
        if anchors_t.shape[0] != 9:
            raise ValueError(f"YOLOv3 needs 9 anchors (3 per scale), got {anchors_t.shape[0]}")
        # sort by area so the smallest three always go to the stride-8 head
        anchors_t = anchors_t[torch.argsort(anchors_t.prod(1))]
        self.num_classes = num_classes
        self.strides = STRIDES
        self.width, self.depth = width, depth
        self.register_buffer("anchors", anchors_t.reshape(3, 3, 2))

        self.backbone = Darknet53(width, depth)
        c3, c4, c5 = self.backbone.out_channels
        m1, m2, m3 = (scale_channels(c, width) for c in (512, 256, 128))
        no = self.num_anchors * (5 + num_classes)
        # registration order == yolov3.cfg order (weights files depend on it)
        self.set1 = ConvSet(c5, m1)
        self.head1 = Head(m1, no)
        self.lateral1 = ConvBNAct(m1, m2, 1)
        self.set2 = ConvSet(m2 + c4, m2)
        self.head2 = Head(m2, no)
        self.lateral2 = ConvBNAct(m2, m3, 1)
        self.set3 = ConvSet(m3 + c3, m3)
        self.head3 = Head(m3, no)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.init_output_biases()

    def init_output_biases(self, image_size: int = 416) -> None:
        """Prior biases so training from scratch starts with few, uncertain detections.

        Objectness starts near "about 8 objects per image" spread over each scale's cells and
        class logits near 1/C (the trick popularised by RetinaNet and YOLOv5); without it the
        first steps are dominated by a flood of confident background boxes.
        """
        for head, stride in ((self.head3, 8), (self.head2, 16), (self.head1, 32)):
            bias = head.out.bias.detach().view(self.num_anchors, -1)
            bias[:, 4] = math.log(8 / (image_size / stride) ** 2)
            bias[:, 5:] = math.log(0.6 / max(self.num_classes - 0.99, 0.01))
            head.out.bias.data.copy_(bias.view(-1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` float ``[B, 3, H, W]`` in 0..1, H and W multiples of 32.

        Returns ``[B, 3 * (5 + C), H / s, W / s]`` for s = 8, 16, 32, in that order.
        """
        c3, c4, c5 = self.backbone(x)
        x1 = self.set1(c5)
        p32 = self.head1(x1)
        x2 = self.set2(torch.cat([self.upsample(self.lateral1(x1)), c4], 1))
        p16 = self.head2(x2)
        x3 = self.set3(torch.cat([self.upsample(self.lateral2(x2)), c3], 1))
        p8 = self.head3(x3)
        return [p8, p16, p32]

    def darknet_convs(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
        """All 75 (conv, bn) pairs in ``yolov3.cfg`` order; output convs have bn None."""
        convs = self.backbone.darknet_convs()
        for conv_set, head, lateral in ((self.set1, self.head1, self.lateral1),
                                        (self.set2, self.head2, self.lateral2),
                                        (self.set3, self.head3, None)):
            convs += [(m.conv, m.bn) for m in conv_set.convs]
            convs += [(head.conv.conv, head.conv.bn), (head.out, None)]
            if lateral is not None:
                convs.append((lateral.conv, lateral.bn))
        return convs

    def load_pretrained(self, path: str | Path) -> dict:
        """Load our checkpoint (``.pt``) or a Darknet binary file; returns a small report.

        See :func:`fashionvision.families.yolov3.darknet_weights.load_pretrained`.
        """
        from fashionvision.families.yolov3.darknet_weights import load_pretrained

        return load_pretrained(self, path)


def build_yolov3(model_cfg: dict, num_classes: int) -> nn.Module:
    """The YOLOv3 builder: ``model_cfg`` is the ``model`` config group.

    Uses ``model_cfg["anchors"]`` (nine ``[w, h]`` in pixels, injected by the detection
    task from the ``anchors`` group) when present, else the COCO anchors.
    """
    anchors = model_cfg.get("anchors") or COCO_ANCHORS_PX
    model = YOLOv3(num_classes, anchors, width=float(model_cfg.get("width", 1.0)),
                   depth=float(model_cfg.get("depth", 1.0)))
    model.init_output_biases(int(model_cfg.get("image_size", DEFAULT_IMAGE_SIZE)))
    return model
