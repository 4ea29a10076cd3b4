"""Darknet-53, the YOLOv3 backbone, laid out exactly as the published table.

52 convolutions: a 3x3 conv with 32 filters, then five stages, each a stride-2 3x3 conv
(64, 128, 256, 512, 1024 filters) followed by 1, 2, 8, 8, 4 residual blocks (1x1 conv to half
the channels, 3x3 conv back, added to the input). Every conv is Conv-BN-LeakyReLU(0.1).

Modules are registered in the order of Darknet's ``darknet53.cfg`` so that
:meth:`Darknet53.darknet_convs` lists convolutions in the order of the binary weight files
(``darknet53.conv.74`` holds exactly these 52).

``width`` scales every channel count (never below 8) and ``depth`` the number of residual
blocks per stage (never below 1): tiny models for CPU tests, same topology.
"""

from __future__ import annotations

import torch
from torch import nn

#: residual blocks per stage and output channels of the stage's downsampling conv (published table)
STAGE_BLOCKS = (1, 2, 8, 8, 4)
STAGE_CHANNELS = (64, 128, 256, 512, 1024)


def scale_channels(channels: int, width: float) -> int:
    """Channels after the width multiplier, at least 8 (keeps BN and tiny models sane)."""
    return max(8, int(round(channels * width)))


def scale_depth(blocks: int, depth: float) -> int:
    return max(1, int(round(blocks * depth)))


class ConvBNAct(nn.Module):
    """Darknet's ``[convolutional]`` with ``batch_normalize=1, activation=leaky``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.03)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Residual(nn.Module):
    """1x1 conv to half the channels, 3x3 conv back, plus the input (``[shortcut] from=-3``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvBNAct(channels, channels // 2, 1)
        self.conv2 = ConvBNAct(channels // 2, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class Darknet53(nn.Module):
    """The backbone; ``forward`` returns the stride-8, -16 and -32 feature maps.

    The three outputs are the ends of stages 3, 4 and 5 (Darknet layers 36, 61 and 74), which
    the YOLOv3 neck routes to its heads.
    """

    def __init__(self, width: float = 1.0, depth: float = 1.0, in_channels: int = 3):
        super().__init__()
        c = scale_channels(32, width)
        self.stem = ConvBNAct(in_channels, c, 3)
        stages = []
        for blocks, channels in zip(STAGE_BLOCKS, STAGE_CHANNELS):
            c_out = scale_channels(channels, width)
            layers = [ConvBNAct(c, c_out, 3, stride=2)]
            layers += [Residual(c_out) for _ in range(scale_depth(blocks, depth))]
            stages.append(nn.Sequential(*layers))
            c = c_out
        self.stages = nn.ModuleList(stages)
        #: channels of the three returned feature maps (stride 8, 16, 32)
        self.out_channels = tuple(scale_channels(ch, width) for ch in STAGE_CHANNELS[2:])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        x = self.stages[0](x)
        x = self.stages[1](x)
        c3 = self.stages[2](x)
        c4 = self.stages[3](c3)
        c5 = self.stages[4](c4)
        return c3, c4, c5

    def darknet_convs(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
        """The 52 (conv, bn) pairs in Darknet cfg order (the order of the weight files)."""
        return [(m.conv, m.bn) for m in self.modules() if isinstance(m, ConvBNAct)]
