"""scripts/readme_figure.py: the README's picture is the detector's drawing beside the segmenter's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("readme_figure", ROOT / "scripts" / "readme_figure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_writes_both_panels_and_the_caption_under_the_size_limit(tiny_runs: dict, tiny_ccp: Path, tmp_path: Path):
    from fashionvision.data.converted import ConvertedDataset

    figure = _script()
    data = ConvertedDataset.open(tiny_ccp)
    photo = data.image_path(data.records("test")[0])
    out = tmp_path / "images" / "example.jpg"
    assert figure.main(["--detector", str(tiny_runs["detector"]), "--segmenter", str(tiny_runs["segmenter"]),
                        "--image", str(photo), "--out", str(out), "--conf", "0.001", "--height", "200",
                        "--caption", "tiny models, one epoch"]) == 0
    picture = np.asarray(Image.open(out))
    assert picture.shape[0] > 200 and picture.shape[1] > 2 * 100  # two panels side by side, a strip under them
    assert out.stat().st_size <= 150_000
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_large_picture_is_recompressed_under_the_limit(tmp_path: Path):
    noise = np.random.default_rng(0).integers(0, 256, (900, 1400, 3), dtype=np.uint8)
    size = _script().write_jpeg(noise, tmp_path / "x.jpg", quality=95, max_bytes=400_000)
    assert size <= 400_000 and (tmp_path / "x.jpg").stat().st_size == size
