"""One reader error type for every way an image can be bad.

A seeded fuzz over a few hundred damaged files in several formats: whatever PIL raises inside
(``ValueError``, ``NotImplementedError``, ``KeyError``, ``struct.error``, ``SyntaxError``...),
the reader raises :class:`ImageReadError`, never anything else.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image, features

from fashionvision.data.image_io import ImageReadError, decode_image_bytes, image_size, read_image

FORMATS = ["PNG", "JPEG", "PPM", "IM", "SGI", "BMP", "TIFF", "GIF", "DDS", "TGA", "PCX"]
if features.check("jpg_2000"):
    FORMATS.append("JPEG2000")
if features.check("webp"):
    FORMATS.append("WEBP")


def _seed_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    files = {}
    for name in FORMATS:
        buffer = io.BytesIO()
        image = pixels.convert("RGBA") if name == "DDS" else pixels
        image.save(buffer, format=name)
        files[name] = buffer.getvalue()
    return files


def _mutations(data: bytes, rng: np.random.Generator, count: int):
    for _ in range(count):
        raw = bytearray(data)
        kind = rng.integers(0, 3)
        if kind == 0:  # flip a few bytes, mostly in the header
            for _ in range(int(rng.integers(1, 8))):
                raw[int(rng.integers(0, min(len(raw), 256)))] = int(rng.integers(0, 256))
        elif kind == 1:  # truncate
            raw = raw[: int(rng.integers(1, len(raw)))]
        else:  # random bytes anywhere
            for _ in range(int(rng.integers(1, 32))):
                raw[int(rng.integers(0, len(raw)))] = int(rng.integers(0, 256))
        yield bytes(raw)


def test_fuzzed_images_raise_only_the_reader_error(tmp_path):
    rng = np.random.default_rng(28)
    unexpected, count = [], 0
    for name, data in _seed_files().items():
        for index, damaged in enumerate(_mutations(data, rng, 30)):
            count += 1
            path = tmp_path / f"{name}_{index}.img"
            path.write_bytes(damaged)
            for call in (lambda: decode_image_bytes(damaged, name), lambda: read_image(path),
                         lambda: image_size(path)):
                try:
                    call()
                except ImageReadError:
                    pass
                except BaseException as exc:  # noqa: BLE001 (that is what the test looks for)
                    unexpected.append(f"{name} #{index}: {type(exc).__name__}: {exc}")
    assert count >= 300
    assert not unexpected, unexpected[:10]


def test_a_png_with_a_huge_compressed_text_chunk():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    png = buffer.getvalue()
    text = zlib.compress(b"A" * 50_000_000)  # 50 MB of text in ~50 KB
    body = b"zTXt" + b"comment\x00\x00" + text
    chunk = len(body[4:]).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    crafted = png[:33] + chunk + png[33:]  # after IHDR
    with pytest.raises(ImageReadError):
        decode_image_bytes(crafted, "text.png")
