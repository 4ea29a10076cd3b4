"""The README's picture: one photo with the detector's boxes beside the same photo with the
segmenter's mask.

    python scripts/readme_figure.py --detector runs/yolo --segmenter runs/unet \
        --image $FASHION_DATA_DIR/ccp-416/photos/0010.jpg [--out docs/images/example.jpg] \
        [--conf 0.25] [--caption "..."] [--height 416] [--quality 85]

``--detector`` and ``--segmenter`` take what ``fashion-predict ckpt=`` takes (a run folder, a
checkpoint or an ``.onnx`` file). Both models go through the package's own prediction and drawing
(:func:`fashionvision.inference.predictor.load_predictor`, each task's ``draw``: the boxes with
class and score of ``tasks/visualize.draw_boxes``, the blended mask and its legend of
``overlay_mask`` / ``mask_legend``), so the picture shows what ``fashion-predict`` delivers. An
optional caption is written in a strip under the two panels (say there what budget trained the
models). The JPEG is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import textwrap
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fashionvision.data.image_io import read_image
from fashionvision.inference.predictor import load_predictor


def _panel(image: np.ndarray, height: int) -> np.ndarray:
    scale = height / image.shape[0]
    return cv2.resize(image, (round(image.shape[1] * scale), height), interpolation=cv2.INTER_AREA)


def _caption(lines: list[str], width: int) -> np.ndarray:
    """White strip with dark text, one line of ``lines`` per row."""
    scale, thick, row = 0.42, 1, 17
    strip = np.full((row * len(lines) + 8, width, 3), 255, dtype=np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(strip, text, (6, 4 + row * (i + 1) - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (30, 30, 30),
                    thick, cv2.LINE_AA)
    return strip


def figure(detector: str, segmenter: str, image_path: str, conf: float | None = None, height: int = 416,
           caption: str = "") -> np.ndarray:
    """The side-by-side picture as an RGB array: boxes | mask, each panel ``height`` pixels tall."""
    image = read_image(image_path)
    panels = []
    for source, threshold in ((detector, conf), (segmenter, None)):
        predictor = load_predictor(source, device="cpu")
        prediction = predictor(image, conf=threshold)
        panels.append(_panel(np.asarray(predictor.task.draw(image, prediction), dtype=np.uint8), height))
    gap = np.full((height, 6, 3), 255, dtype=np.uint8)
    out = np.concatenate([panels[0], gap, panels[1]], axis=1)
    if caption:
        chars = max(20, int(out.shape[1] / 7.6))
        out = np.concatenate([out, _caption(textwrap.wrap(caption, chars), out.shape[1])], axis=0)
    return out


def write_jpeg(image: np.ndarray, out: Path, quality: int = 85, max_bytes: int = 150_000) -> int:
    """Write ``image`` as a JPEG of at most ``max_bytes`` (lowering the quality if needed); its size."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for q in range(quality, 29, -5):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=q, optimize=True)
        if buffer.tell() <= max_bytes:
            break
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(buffer.getvalue())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the picture from a web server
    os.replace(tmp, out)
    return buffer.tell()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detector", required=True, help="detector run folder, checkpoint or .onnx")
    parser.add_argument("--segmenter", required=True, help="segmenter run folder, checkpoint or .onnx")
    parser.add_argument("--image", required=True, help="the photo")
    parser.add_argument("--out", default="docs/images/example.jpg")
    parser.add_argument("--conf", type=float, default=None, help="detector score threshold (default: the model's)")
    parser.add_argument("--height", type=int, default=416, help="height of each panel in pixels")
    parser.add_argument("--caption", default="", help="text under the panels")
    parser.add_argument("--quality", type=int, default=85)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.resolve() == Path(args.image).resolve():
        parser.error("--out must not be the input photo")
    picture = figure(args.detector, args.segmenter, args.image, args.conf, args.height, args.caption)
    size = write_jpeg(picture, out, args.quality)
    print(f"{out}: {picture.shape[1]}x{picture.shape[0]}, {size / 1000:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
