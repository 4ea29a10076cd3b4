"""Drawing helpers (fashionvision.tasks.visualize) and the fashion-show command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashionvision.data.annotations import read_annotations
from fashionvision.cli.show import show
from fashionvision.data.image_io import read_image
from fashionvision.errors import UserError
from fashionvision.tasks.visualize import class_colors, draw_boxes, draw_legend, mask_legend, overlay_mask


def test_class_colors_deterministic_and_distinct():
    a, b = class_colors(59), class_colors(59)
    assert a.shape == (59, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert len({tuple(c) for c in a}) == 59
    np.testing.assert_array_equal(class_colors(10), a[:10])  # a class keeps its colour


def test_draw_boxes_draws_edges_only_and_keeps_input():
    image = np.full((120, 160, 3), 128, np.uint8)
    before = image.copy()
    out = draw_boxes(image, np.array([[20, 60, 100, 110]]), [1], ["a", "b"], scores=[0.9])
    np.testing.assert_array_equal(image, before)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[85, 20] != 128).any() and (out[85, 100] != 128).any()  # left and right edges
    np.testing.assert_array_equal(out[85, 60], [128, 128, 128])  # interior untouched
    assert (out[40:60, 20:60] != 128).any()  # the label sits above the box


def test_overlay_mask_blends_foreground_only():
    image = np.full((10, 10, 3), 100, np.uint8)
    mask = np.zeros((10, 10), np.int64)
    mask[2:5, 2:5] = 3
    mask[8, 8] = 255  # ignore index
    colors = class_colors(4)
    out = overlay_mask(image, mask, alpha=0.5, colors=colors)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])
    np.testing.assert_array_equal(out[8, 8], [100, 100, 100])
    np.testing.assert_allclose(out[3, 3], (100 + colors[3].astype(float)) / 2, atol=1)
    np.testing.assert_array_equal(overlay_mask(image, mask, alpha=0.0), image)
    with pytest.raises(ValueError, match="does not match"):
        overlay_mask(image, mask[:5])


def test_legend_panel_in_corner():
    image = np.full((200, 300, 3), 200, np.uint8)
    out = draw_legend(image, [1, 2], ["bg", "dress", "shoes"])
    assert (out[:20, -20:] != 200).any() and (out[150:, :100] == 200).all()
    mask = np.zeros((200, 300), np.uint8)
    np.testing.assert_array_equal(mask_legend(image, mask, ["bg"]), image)  # background only: no key


def test_show_writes_pngs_and_draws_boxes(hand_converted_ccp: Path, shared_data: Path, tmp_path: Path):
    records = {r.path: r for r in read_annotations(hand_converted_ccp / "train.txt")}
    written = show(hand_converted_ccp, "train", 8, ["photos/0002.jpg"], 0, tmp_path, masks=False)
    assert [p.name for p in written] == ["photos__0002.jpg.png"]
    drawn = np.asarray(Image.open(written[0]).convert("RGB"))
    source = read_image(shared_data / "ccp" / "photos" / "0002.jpg")
    assert drawn.shape == source.shape
    x1, y1, x2, y2, _ = records["photos/0002.jpg"].boxes[0]
    ymid = (y1 + y2) // 2
    assert (drawn[ymid, x1] != source[ymid, x1]).any(), "box edge should be drawn"
    changed = (drawn != source).any(axis=2)
    assert changed.mean() < 0.25, "without masks only edges and labels change"


def test_show_with_masks_overlays_foreground(hand_converted_ccp: Path, shared_data: Path, tmp_path: Path):
    written = show(hand_converted_ccp, "train", 2, None, 0, tmp_path, masks=True)
    assert len(written) == 2
    for path in written:
        stem = path.name.split("__")[1].split(".")[0]
        drawn = np.asarray(Image.open(path).convert("RGB")).astype(int)
        source = read_image(shared_data / "ccp" / "photos" / f"{stem}.jpg").astype(int)
        mask = np.asarray(Image.open(hand_converted_ccp / "masks" / "photos" / f"{stem}.png"))
        assert drawn.shape == source.shape
        changed = (drawn != source).any(axis=2)
        assert changed[mask > 0].mean() > 0.9, "foreground pixels are tinted"
        background_left = mask == 0
        background_left[:, -250:] = False  # legend panel
        assert changed[background_left].mean() < 0.3, "background mostly untouched"


def test_show_random_choice_is_seeded(hand_converted_ccp: Path, tmp_path: Path):
    a = [p.name for p in show(hand_converted_ccp, "train", 2, None, 5, tmp_path / "a", masks=False)]
    b = [p.name for p in show(hand_converted_ccp, "train", 2, None, 5, tmp_path / "b", masks=False)]
    assert a == b
    assert len(show(hand_converted_ccp, "train", 50, None, 0, tmp_path / "c", masks=False)) == 4


def test_show_unknown_image_and_split(hand_converted_ccp: Path, tmp_path: Path):
    with pytest.raises(UserError, match="photos/9999.jpg"):
        show(hand_converted_ccp, "train", 1, ["photos/9999.jpg"], 0, tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        show(hand_converted_ccp, "val", 1, None, 0, tmp_path)


def test_cli_writes_into_run_folder(hand_converted_ccp: Path, tmp_path: Path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "fashionvision.cli.show", f"dataset.path={hand_converted_ccp}", "n=1",
         f"hydra.run.dir={run}"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr
    assert len(list(run.glob("*.png"))) == 1
