"""The original U-Net (Ronneberger et al., 2015), written here because the libraries have none.

Encoder: at each of five levels two 3x3 convolutions with ReLU, then 2x2 max pooling between
levels; channels double from ``64 * width``: 64, 128, 256, 512, 1024 at ``width=1``.
Decoder: the mirror image, a 2x2 transposed convolution (halving the channels) up to the
next level, concatenation with the encoder's feature map of that level, two 3x3 convolutions
with ReLU; a 1x1 convolution gives the class logits.

Two deliberate differences from the paper, both so that the output has the input's size and
the network trains from scratch in minutes:

* convolutions are padded ("same"), where the paper's were unpadded and cropped the skips;
* ``batch_norm=True`` puts a BatchNorm between each convolution and its ReLU. With
  ``batch_norm=False`` the blocks are exactly the paper's (conv + bias + ReLU).

The input height and width must be multiples of 16 (four poolings);
:class:`fashionvision.families.unet.model.UNet` pads to a multiple of 32 before calling it.
"""

from __future__ import annotations

import torch
from torch import nn

#: channels of the five levels at width 1.0
BASE_CHANNELS = (64, 128, 256, 512, 1024)


def level_channels(width: float) -> list[int]:
    """Channels per level for a width multiplier (at least 4 so tiny test models still work)."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return [max(4, int(round(c * width))) for c in BASE_CHANNELS]


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by (optional BatchNorm and) ReLU."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool):
        layers: list[nn.Module] = []
        for cin in (in_channels, out_channels):
            # A conv followed by BatchNorm needs no bias: the norm's shift replaces it.
            layers.append(nn.Conv2d(cin, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Up(nn.Module):
    """2x2 transposed convolution, concatenation with the skip, then a DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = DoubleConv(out_channels * 2, out_channels, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class VanillaUNet(nn.Module):
    """The original U-Net encoder and its symmetric decoder.

    Args:
        num_classes: output channels (class logits).
        width: channel multiplier; 1.0 gives 64..1024 channels (about 31 M parameters).
        batch_norm: BatchNorm after every convolution (see module docstring).
        in_channels: input channels (3 for RGB).
    """

    #: height and width of the input must be multiples of this
    divisor = 16

    def __init__(self, num_classes: int, width: float = 1.0, batch_norm: bool = True,
                 in_channels: int = 3):
        super().__init__()
        channels = level_channels(width)
        self.inc = DoubleConv(in_channels, channels[0], batch_norm)
        self.downs = nn.ModuleList(
            DoubleConv(channels[i], channels[i + 1], batch_norm) for i in range(len(channels) - 1)
        )
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList(
            Up(channels[i + 1], channels[i], batch_norm) for i in reversed(range(len(channels) - 1))
        )
        self.head = nn.Conv2d(channels[0], num_classes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation suits ReLU networks trained from scratch (the paper's choice too).
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(self.pool(skips[-1])))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)
