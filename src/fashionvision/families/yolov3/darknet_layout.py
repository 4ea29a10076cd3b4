"""The layer table of Darknet's ``yolov3.cfg`` and the file layouts it implies.

A Darknet weights file stores no shapes: only float32 values, convolution after convolution
in cfg order (per convolution BN beta, gamma, running mean, running var, or a bias for the
three linear output convs, then the kernel). Its size is therefore the one clue to what it
holds. For a given width (channel multiplier) and depth the count is ``fixed + per_class * C``
for a C-class network, or ``fixed_backbone`` for a backbone-only file (``darknet53.conv.74``),
so :func:`infer_layout` recovers the file's width and class count from its size alone (for
the model's own width and a few common ones: a size cannot tell every width apart).

The table is written out here from the published cfg rather than read from our modules, so
that a model whose layers drift from the cfg order is caught by the comparison in
:mod:`fashionvision.families.yolov3.darknet_weights` instead of silently mis-loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from fashionvision.families.yolov3.darknet import STAGE_BLOCKS, STAGE_CHANNELS, scale_channels, scale_depth

#: convolutions of Darknet-53 at depth 1.0 (``darknet53.conv.74`` = the layers up to 74)
BACKBONE_CONVS = 52
NUM_ANCHORS = 3
#: widths tried, in this order, when a file does not fit the model's own width. Few on purpose:
#: every extra candidate is one more chance that a damaged file's size fits a network by luck
COMMON_WIDTHS = (1.0, 0.5, 0.25, 0.75, 0.125, 0.375, 1.25, 1.5, 2.0)
#: class counts believed: COCO has 80, Open Images 601; YOLO9000-style files are not YOLOv3
MAX_CLASSES = 1000

@dataclass(frozen=True)
class ConvSpec:
    """One ``[convolutional]`` section: its name in our model, shape and BN flag."""

    name: str
    c_in: int
    c_out: int
    kernel: int
    batch_norm: bool = True

    @property
    def num_values(self) -> int:
        """float32 values the section takes in a weights file."""
        per_channel = 4 if self.batch_norm else 1  # beta, gamma, mean, var | bias
        return self.c_out * (per_channel + self.c_in * self.kernel * self.kernel)


@dataclass(frozen=True)
class Layout:
    """What a weights file holds: a network's convolutions, all or the backbone's."""

    width: float
    depth: float
    num_classes: int | None  # None: backbone only
    convs: tuple[ConvSpec, ...]

    @property
    def backbone_only(self) -> bool:
        return self.num_classes is None

    @property
    def num_values(self) -> int:
        return sum(c.num_values for c in self.convs)


def backbone_convs(width: float, depth: float = 1.0) -> list[ConvSpec]:
    """Darknet-53 (``darknet53.cfg``): a 3x3 stem, then per stage a stride-2 3x3 and residual pairs."""
    c = scale_channels(32, width)
    convs = [ConvSpec("backbone.stem", 3, c, 3)]
    for s, (blocks, channels) in enumerate(zip(STAGE_BLOCKS, STAGE_CHANNELS)):
        c_out = scale_channels(channels, width)
        convs.append(ConvSpec(f"backbone.stages.{s}.0", c, c_out, 3))
        for b in range(1, scale_depth(blocks, depth) + 1):
            convs += [ConvSpec(f"backbone.stages.{s}.{b}.conv1", c_out, c_out // 2, 1),
                      ConvSpec(f"backbone.stages.{s}.{b}.conv2", c_out // 2, c_out, 3)]
        c = c_out
    return convs


def yolov3_convs(width: float, depth: float, num_classes: int) -> list[ConvSpec]:
    """All convolutions of ``yolov3.cfg`` (layers 0-105), 75 at depth 1.0."""
    convs = backbone_convs(width, depth)
    c3, c4, c5 = (scale_channels(c, width) for c in STAGE_CHANNELS[2:])
    outputs = NUM_ANCHORS * (5 + num_classes)
    c_in = c5
    for i, (mid, routed) in enumerate(zip((512, 256, 128), (None, c4, c3)), start=1):
        m = scale_channels(mid, width)
        if routed is not None:  # [route] -1, 61 (or 36): upsampled lateral + backbone features
            c_in = scale_channels(mid, width) + routed
        convs += [ConvSpec(f"set{i}.convs.0", c_in, m, 1), ConvSpec(f"set{i}.convs.1", m, 2 * m, 3),
                  ConvSpec(f"set{i}.convs.2", 2 * m, m, 1), ConvSpec(f"set{i}.convs.3", m, 2 * m, 3),
                  ConvSpec(f"set{i}.convs.4", 2 * m, m, 1),
                  ConvSpec(f"head{i}.conv", m, 2 * m, 3),
                  ConvSpec(f"head{i}.out", 2 * m, outputs, 1, batch_norm=False)]
        if i < 3:  # the 1x1 conv before [upsample]
            convs.append(ConvSpec(f"lateral{i}", m, scale_channels(mid // 2, width), 1))
    return convs


def full_layout(width: float, depth: float, num_classes: int) -> Layout:
    return Layout(width, depth, num_classes, tuple(yolov3_convs(width, depth, num_classes)))


def backbone_layout(width: float, depth: float) -> Layout:
    return Layout(width, depth, None, tuple(backbone_convs(width, depth)))


def class_count_for(num_values: int, width: float, depth: float) -> int | None:
    """The class count C for which a full network at this width holds ``num_values``, if any."""
    one, two = full_layout(width, depth, 1).num_values, full_layout(width, depth, 2).num_values
    per_class, fixed = two - one, one - (two - one)
    extra = num_values - fixed
    if extra <= 0 or extra % per_class:
        return None
    classes = extra // per_class
    return classes if 1 <= classes <= MAX_CLASSES else None


def infer_layout(num_values: int, width: float = 1.0, depth: float = 1.0) -> Layout | None:
    """The layout that holds exactly ``num_values`` values, or None.

    ``width`` and ``depth`` (the model's) are tried first, then the common widths, each at the
    model's depth and at the published depth 1.0; a full network of 1 to ``MAX_CLASSES``
    classes or a backbone-only file.
    """
    for w in dict.fromkeys((width, *COMMON_WIDTHS)):
        for d in dict.fromkeys((depth, 1.0)):
            backbone = backbone_layout(w, d)
            if backbone.num_values == num_values:
                return backbone
            classes = class_count_for(num_values, w, d)
            if classes is not None:
                return full_layout(w, d, classes)
    return None
