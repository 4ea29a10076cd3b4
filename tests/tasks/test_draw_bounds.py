"""Drawing stays within bounds a JPEG and a memory limit can hold."""

from __future__ import annotations

import tracemalloc

import numpy as np
from PIL import Image

from fashionvision.tasks.visualize import class_colors, overlay_mask


def test_overlay_on_a_big_photo_makes_no_full_size_float_copies():
    """A big overlay makes no float32 copies of the whole photo (a 6000 x 6000 one would need over 6 GB)."""
    image = np.full((3000, 3000, 3), 120, np.uint8)
    mask = np.ones((3000, 3000), np.uint8)  # all foreground: the worst case
    tracemalloc.start()
    try:
        out = overlay_mask(image, mask, alpha=0.5, colors=class_colors(4))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.6 * image.nbytes, f"{peak / image.nbytes:.1f} x the photo"  # the result, and bands
    expected = (120 * 0.5 + class_colors(4)[1].astype(float) * 0.5 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[1500, 1500], expected)
    np.testing.assert_array_equal(out[-1, -1], expected)


def test_a_drawing_wider_than_jpeg_allows_is_written(tmp_path):
    from fashionvision.data.image_io import write_image

    wide = np.zeros((6, 65_600, 3), np.uint8)
    write_image(tmp_path / "wide.jpg", wide)
    with Image.open(tmp_path / "wide.jpg") as written:
        assert written.width <= 65_500 and written.format == "JPEG"


def test_predict_goes_on_past_a_wide_image_and_a_memory_error(tiny_runs, tmp_path, monkeypatch):
    """A 65,600 px wide photo is drawn to fit a JPEG; a MemoryError skips one image, named, and the
    run still ends with summary.json."""
    import json

    from fashionvision.inference import files
    from fashionvision.inference.predictor import load_predictor

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((8, 65_600, 3), 90, np.uint8)).save(photos / "a_wide.png")
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(photos / "b_small.png")
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(photos / "c_small.png")
    predictor = load_predictor(tiny_runs["detector"])
    real_draw = files.draw

    def draw(predictor, image, prediction):
        if image.shape[1] == 40 and draw.calls == 0:
            draw.calls += 1
            raise MemoryError
        return real_draw(predictor, image, prediction)

    draw.calls = 0
    monkeypatch.setattr(files, "draw", draw)
    out = tmp_path / "out"
    summary = files.predict_source(predictor, str(photos), out, progress=False)
    assert summary.ok == 2 and len(summary.skipped) == 1
    assert "b_small.png" in summary.skipped[0]["path"] and "out of memory" in summary.skipped[0]["reason"]
    with Image.open(out / "a_wide.png.jpg") as written:
        assert written.width <= 65_500
    assert json.loads((out / "summary.json").read_text())["ok"] == 2
