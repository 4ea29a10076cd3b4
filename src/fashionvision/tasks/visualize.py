"""Drawing boxes, masks and legends on images: shared by show, predict, compare and TensorBoard.

Everything here is pure numpy/OpenCV: RGB ``uint8`` arrays in, new RGB ``uint8`` arrays out
(inputs are never modified). Colours come from :func:`class_colors`, so a class has the same
colour in every picture the toolkit draws.
"""

from __future__ import annotations

import colorsys
from typing import Sequence

import cv2
import numpy as np

_GOLDEN = 0.618033988749895


def class_colors(n: int) -> np.ndarray:
    """A deterministic palette ``[n, 3]`` uint8 (RGB) of distinct, saturated colours.

    Hues step by the golden ratio (neighbouring ids get far-apart hues); saturation and
    brightness cycle through three levels so that colours stay distinct past ~20 classes.
    """
    # colorsys per colour, not cv2 on the whole array: OpenCV's vectorised path rounds
    # differently with the array length, and a class must keep its colour whatever n is
    colors = []
    for i in range(n):
        rgb = colorsys.hsv_to_rgb((i * _GOLDEN) % 1.0, (0.85, 0.6, 1.0)[i % 3], (0.95, 0.8, 0.65)[(i // 3) % 3])
        colors.append([int(round(c * 255)) for c in rgb])
    return np.array(colors, dtype=np.uint8).reshape(n, 3)


def _text_color(rgb: Sequence[int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``rgb``."""
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _font_scale(image: np.ndarray, scale: float | None = None) -> tuple[float, int]:
    side = max(image.shape[:2])
    if scale:
        return scale, max(1, int(round(scale * 2)))
    return max(0.35, side / 1400.0), max(1, int(round(side / 700.0)))


def _label_size(text: str, scale: float, thick: int) -> tuple[int, int]:
    """Width and height of a label: the text plus a one-pixel margin on each side."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    return tw + 2, th + base + 2


def _label(image: np.ndarray, text: str, rect: Sequence[int], color: Sequence[int], scale: float, thick: int) -> None:
    """Text on a filled background filling ``rect`` (x0, y0, x1, y1; see :mod:`fashionvision.tasks.label_layout`)."""
    (_, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x0, y0, x1, y1 = (int(v) for v in rect)
    cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), tuple(int(c) for c in color), -1)
    cv2.putText(image, text, (x0 + 1, y0 + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, _text_color(color),
                thick, cv2.LINE_AA)


def label_texts(labels: Sequence[int], class_names: Sequence[str], scores: Sequence[float] | None) -> list[str]:
    """``"name 0.88"`` (or the name alone without scores) for each box."""
    texts = []
    for i, cls in enumerate(int(c) for c in labels):
        name = class_names[cls] if 0 <= cls < len(class_names) else str(cls)
        texts.append(f"{name} {float(scores[i]):.2f}" if scores is not None else name)
    return texts


def label_rects(image_shape: tuple[int, ...], boxes: np.ndarray, texts: Sequence[str],
                font_scale: float | None = None) -> np.ndarray:
    """Where :func:`draw_boxes` puts each label: ``[N, 4]`` rectangles that never overlap one
    another and lie inside the image (:func:`fashionvision.tasks.label_layout.place_labels`)."""
    from fashionvision.tasks.label_layout import place_labels

    scale, thick = _font_scale(np.empty(tuple(image_shape[:2]) + (0,)), font_scale)
    return place_labels(boxes, [_label_size(t, scale, thick) for t in texts], image_shape)


def draw_boxes(
    image_rgb: np.ndarray, boxes: np.ndarray, labels: Sequence[int], class_names: Sequence[str],
    scores: Sequence[float] | None = None, colors: np.ndarray | None = None, thickness: int | None = None,
    font_scale: float | None = None,
) -> np.ndarray:
    """Draw boxes ``[N, 4]`` (x1, y1, x2, y2 in pixels) with class names (and scores).

    Annotation boxes (inclusive extents) and predictions (continuous corners) can both be
    passed as they are: the one-pixel difference is invisible in a drawing.

    Args:
        colors: ``[num_classes, 3]`` palette; default :func:`class_colors` over ``class_names``.
        font_scale: OpenCV font scale of the labels; default grows with the image size.
    """
    out = np.ascontiguousarray(image_rgb, dtype=np.uint8).copy()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    palette = class_colors(max(len(class_names), 1)) if colors is None else np.asarray(colors)
    scale, thick = _font_scale(out, font_scale)
    line = thickness or max(1, thick + 1)
    colors_of = [tuple(int(c) for c in palette[int(cls) % len(palette)]) for cls in labels]
    for i in range(len(boxes)):  # every box first, so that no box line crosses a label
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), colors_of[i], line)
    texts = label_texts(labels, class_names, scores)
    for i, rect in enumerate(label_rects(out.shape, boxes, texts, font_scale)):
        _label(out, texts[i], rect, colors_of[i], scale, thick)
    return out


#: pixels blended at a time by :func:`overlay_mask` (its float temporaries stay a few MB)
OVERLAY_BAND_PIXELS = 1 << 18


def overlay_mask(
    image_rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.5, ignore_background: bool = True,
    colors: np.ndarray | None = None, ignore_index: int | None = 255,
) -> np.ndarray:
    """Blend a class-index mask ``[H, W]`` over the image with per-class colours.

    Pixels of class 0 (when ``ignore_background``) and of ``ignore_index`` stay untouched.
    """
    image = np.asarray(image_rgb, dtype=np.uint8)
    mask = np.asarray(mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
    num = int(mask[mask != ignore_index].max(initial=0)) + 1 if ignore_index is not None else int(mask.max()) + 1
    palette = class_colors(num) if colors is None else np.asarray(colors, dtype=np.uint8)
    if len(palette) < num:
        raise ValueError(f"mask holds class {num - 1} but the palette has {len(palette)} colours")
    out = image.copy()
    # in bands of rows: float copies of a whole 6000 x 6000 photo would not fit in memory
    rows = max(1, OVERLAY_BAND_PIXELS // max(1, mask.shape[1]))
    for top in range(0, mask.shape[0], rows):
        band = mask[top:top + rows]
        paint = np.ones(band.shape, dtype=bool)
        if ignore_background:
            paint &= band != 0
        if ignore_index is not None:
            paint &= band != ignore_index
        if paint.any():
            colored = palette[band[paint].astype(np.int64)].astype(np.float32)
            pixels = image[top:top + rows][paint].astype(np.float32)
            out[top:top + rows][paint] = (pixels * (1 - alpha) + colored * alpha + 0.5).astype(np.uint8)
    return out


def draw_legend(
    image_rgb: np.ndarray, class_ids: Sequence[int], class_names: Sequence[str],
    colors: np.ndarray | None = None, max_rows: int = 24,
) -> np.ndarray:
    """A colour key for ``class_ids`` drawn in the image's top-right corner on a dimmed panel."""
    out = np.asarray(image_rgb, dtype=np.uint8).copy()
    ids = [int(c) for c in class_ids][:max_rows]
    if not ids:
        return out
    palette = class_colors(max(len(class_names), 1)) if colors is None else np.asarray(colors)
    scale, thick = _font_scale(out)
    names = [class_names[c] if 0 <= c < len(class_names) else str(c) for c in ids]
    sizes = [cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0] for n in names]
    row = max(h for _, h in sizes) + 8
    swatch = row - 4
    width = min(out.shape[1], swatch + 10 + max(w for w, _ in sizes) + 6)
    height = min(out.shape[0], row * len(ids) + 6)
    x0 = out.shape[1] - width
    panel = out[:height, x0:]
    panel[:] = (panel.astype(np.float32) * 0.35).astype(np.uint8)  # dim what lies behind the key
    for r, (cls, name) in enumerate(zip(ids, names)):
        y = 4 + r * row
        color = tuple(int(c) for c in palette[cls % len(palette)])
        cv2.rectangle(out, (x0 + 4, y), (x0 + 4 + swatch, y + swatch), color, -1)
        cv2.putText(out, name, (x0 + swatch + 10, y + swatch - 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thick, cv2.LINE_AA)
    return out


def mask_legend(
    image_rgb: np.ndarray, mask: np.ndarray, class_names: Sequence[str], colors: np.ndarray | None = None,
    ignore_background: bool = True, ignore_index: int | None = 255,
) -> np.ndarray:
    """:func:`draw_legend` for the classes present in ``mask``."""
    present = [int(c) for c in np.unique(mask) if c != ignore_index and not (ignore_background and c == 0)]
    return draw_legend(image_rgb, present, class_names, colors)
