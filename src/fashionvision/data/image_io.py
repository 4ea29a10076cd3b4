"""Reading images: the one function every command uses.

Photos from retail catalogues arrive in every mode PIL knows (palette PNGs, RGBA product
cut-outs, 16-bit scans, CMYK JPEGs, phone photos with EXIF rotation). :func:`read_image`
turns all of them into 8-bit RGB arrays the same way everywhere, so training, evaluation
and the app see identical pixels. Bad files are reported by path and never rewritten.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fashionvision.output_guard import atomic_write

# 100 megapixels: far above any fashion photo, far below what would exhaust memory.
DEFAULT_MAX_PIXELS = 100_000_000

#: the longest side a JPEG written here may have (the format's limit is 65,535)
JPEG_MAX_SIDE = 65_500

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class ImageReadError(OSError):
    """An image could not be used; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _why(exc: BaseException) -> str:
    """PIL's reason, with the exception type when the message alone says little."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _open(path: str | os.PathLike, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # PIL warns, then errors, above its own global limit; we apply ours instead,
            # without touching PIL's global state.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError as exc:
        raise ImageReadError(path, "file not found") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"refused: image larger than the pixel limit ({exc})") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageReadError(path, f"not a readable image ({exc})") from exc
    except MemoryError as exc:
        raise ImageReadError(path, "refused: decoding it needs more memory than there is") from exc
    except Exception as exc:  # noqa: BLE001 - PIL's plugins raise ValueError, KeyError, struct.error, ...
        raise ImageReadError(path, f"not a readable image ({_why(exc)})") from exc
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageReadError(
            path,
            f"refused: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
            "(possible decompression bomb; raise max_pixels if the image is genuine)",
        )
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (alpha composited over white)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image)
        if array.dtype != np.uint8:
            array = array.astype(np.float64)
            peak = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
            array = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if mode == "F":
        array = np.asarray(image, dtype=np.float64)
        peak = max(float(array.max()), 1.0)
        return Image.fromarray((np.clip(array / peak, 0, 1) * 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as an ``H x W x 3`` uint8 RGB array.

    EXIF orientation is applied; grayscale, palette, RGBA, CMYK and 16-bit images are
    converted to 8-bit RGB.

    Raises:
        ImageReadError: missing, corrupt, truncated or too large (the reason says which).
    """
    image = _open(path, max_pixels)
    try:
        with image:
            image.load()
            image = ImageOps.exif_transpose(image) or image
            return np.ascontiguousarray(np.asarray(_to_rgb(image)))
    except ImageReadError:
        raise
    except MemoryError as exc:
        raise ImageReadError(path, "refused: decoding it needs more memory than there is") from exc
    except Exception as exc:  # noqa: BLE001 - every way a damaged file fails inside PIL is the file's fault
        raise ImageReadError(path, f"corrupt or truncated image ({_why(exc)})") from exc


def decode_image_bytes(data: bytes, name: str = "<upload>", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Like :func:`read_image` for bytes in memory (uploads); errors name ``name``."""
    import io

    try:
        return read_image(io.BytesIO(data), max_pixels)
    except ImageReadError as exc:
        raise ImageReadError(name, exc.reason) from exc


def image_size(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Return ``(width, height)`` as :func:`read_image` would produce, reading only the header."""
    image = _open(path, max_pixels)
    with image:
        width, height = image.size
        try:
            orientation = image.getexif().get(0x0112, 1)
        except Exception:  # malformed EXIF: PIL's exif_transpose would ignore it too
            orientation = 1
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return width, height


def write_image(path: str | os.PathLike, rgb: np.ndarray, root: str | os.PathLike | None = None) -> None:
    """Write an RGB uint8 array (PNG or JPEG by suffix), creating parent folders.

    Through the output guard: a temporary name then a rename, never through a symbolic link
    that is already there, and (with ``root``) never outside the output folder ``root``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(rgb)
    if path.suffix.lower() in (".jpg", ".jpeg") and max(picture.size) > JPEG_MAX_SIDE:
        # JPEG holds at most 65,535 px a side: a wider drawing is scaled down to fit rather than failing to save
        scale = JPEG_MAX_SIDE / max(picture.size)
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                 Image.Resampling.BILINEAR)
    atomic_write(path, lambda tmp: picture.save(tmp), root)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """All image files below ``folder``, sorted, by suffix."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
