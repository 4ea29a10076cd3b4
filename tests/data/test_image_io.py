"""read_image: EXIF orientation, every pixel mode to 8-bit RGB, bad files named and untouched, bombs refused."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashionvision.data.image_io import ImageReadError, decode_image_bytes, image_size, read_image


def red_left_blue_right(width: int = 40, height: int = 20) -> Image.Image:
    array = np.zeros((height, width, 3), np.uint8)
    array[:, : width // 2] = (255, 0, 0)
    array[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(array)


def test_exif_orientation_applied(tmp_path: Path):
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    red_left_blue_right().save(path, exif=exif.tobytes(), quality=95)
    rgb = read_image(path)
    assert rgb.shape == (40, 20, 3) and rgb.dtype == np.uint8
    assert image_size(path) == (20, 40), "header size must match what read_image returns"
    # the stored left (red) half is on top once rotated clockwise
    assert rgb[5, 10, 0] > 200 and rgb[5, 10, 2] < 60
    assert rgb[35, 10, 2] > 200 and rgb[35, 10, 0] < 60


def save_mode(path: Path, mode: str) -> np.ndarray:
    """Save a small image in ``mode`` and return the RGB it should read back as."""
    if mode == "L":
        Image.fromarray(np.array([[0, 128], [255, 64]], np.uint8), "L").save(path)
        return np.repeat(np.array([[0, 128], [255, 64]], np.uint8)[..., None], 3, axis=2)
    if mode == "RGBA":
        rgba = np.array([[[255, 0, 0, 255], [0, 0, 255, 0]]], np.uint8)
        Image.fromarray(rgba, "RGBA").save(path)
        return np.array([[[255, 0, 0], [255, 255, 255]]], np.uint8)  # transparent -> white
    if mode == "P":
        image = Image.new("P", (2, 1))
        image.putpalette([0, 255, 0, 10, 20, 30] + [0] * 762)
        image.putdata([0, 1])
        image.save(path)
        return np.array([[[0, 255, 0], [10, 20, 30]]], np.uint8)
    if mode == "P-transparent":
        image = Image.new("P", (2, 1))
        image.putpalette([0, 255, 0, 10, 20, 30] + [0] * 762)
        image.putdata([0, 1])
        image.save(path, transparency=1)
        return np.array([[[0, 255, 0], [255, 255, 255]]], np.uint8)
    if mode == "I;16":
        values = np.array([[0, 65535, 32896]], np.uint16)
        Image.fromarray(values).save(path)  # uint16 -> a 16-bit PNG
        return np.repeat(np.array([[0, 255, 128]], np.uint8)[..., None], 3, axis=2)
    if mode == "LA":
        la = np.array([[[100, 255], [100, 0]]], np.uint8)
        Image.fromarray(la, "LA").save(path)
        return np.array([[[100] * 3, [255] * 3]], np.uint8)
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "P-transparent", "I;16", "LA"])
def test_modes_become_8bit_rgb(tmp_path: Path, mode: str):
    path = tmp_path / "img.png"
    expected = save_mode(path, mode)
    rgb = read_image(path)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    np.testing.assert_allclose(rgb.astype(int), expected.astype(int), atol=1)


def test_16bit_png_really_is_16bit(tmp_path: Path):
    path = tmp_path / "deep.png"
    save_mode(path, "I;16")
    with Image.open(path) as image:
        assert image.mode.startswith("I")  # the fixture exercises the 16-bit path


def test_cmyk_jpeg(tmp_path: Path):
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    rgb = read_image(path)
    assert rgb.shape == (8, 8, 3) and rgb[4, 4, 0] > 200 and rgb[4, 4, 1] < 60


def assert_refused_untouched(path: Path, fragment: str, **kwargs) -> None:
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    with pytest.raises(ImageReadError) as info:
        read_image(path, **kwargs)
    assert str(path) in str(info.value) and info.value.path == str(path)
    assert fragment in info.value.reason
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime, "source must not be modified"


def test_truncated_jpeg(tmp_path: Path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:800])
    assert_refused_untouched(path, "truncated")


def test_not_an_image_and_missing(tmp_path: Path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image")
    assert_refused_untouched(path, "not a readable image")
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "absent.jpg")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` but holds no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_decompression_bomb_header_refused(tmp_path: Path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(50_000, 50_000))
    assert_refused_untouched(path, "refused")
    with pytest.raises(ImageReadError, match="refused"):
        image_size(path)


def test_max_pixels_limit_on_real_image(tmp_path: Path):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 50)).save(path)
    assert_refused_untouched(path, "exceeds the limit of 4000", max_pixels=4000)
    assert read_image(path).shape == (50, 100, 3)


def test_decode_bytes_names_the_upload():
    with pytest.raises(ImageReadError) as info:
        decode_image_bytes(b"garbage", name="upload.jpg")
    assert info.value.path == "upload.jpg"
