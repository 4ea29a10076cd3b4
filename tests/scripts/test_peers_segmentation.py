"""scripts/peers/segmentation.py: our U-Net and the plain smp loop, trained side by side and
scored by our evaluator, end to end on real CCP images at a tiny budget (issue 9)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_module():
    spec = importlib.util.spec_from_file_location("peers_segmentation", ROOT / "scripts" / "peers" / "segmentation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loop_uses_the_encoder_of_our_recipe():
    module = load_module()
    assert module.experiment_for("cpu") == "unet_cpu_10m"
    assert module.experiment_for("cuda") == "unet_ccp_130s"
    assert module.experiment_encoder("unet_cpu_10m") == "mobilenet_v2"
    assert module.experiment_encoder("unet_ccp_130s") == "resnet50"
    assert module.experiment_tta_scales("unet_cpu_10m") == [0.875, 1.0, 1.125]
    assert module.experiment_tta_scales("unet_ccp_130s") is None


@pytest.mark.slow
@pytest.mark.parametrize("side_by_side", [True, False])
def test_run_segmentation_end_to_end(tiny_ccp: Path, tmp_path: Path, side_by_side: bool):
    module = load_module()
    results = module.run_segmentation(tiny_ccp, "test", budget_s=3.0, image_size=64, threads=1,
                                      out_dir=tmp_path / "peers", device="cpu", quick=True,
                                      side_by_side=side_by_side)
    ours_scored = (tmp_path / "peers" / "ours" / "eval_test" / "metrics.json").stat().st_mtime
    loop_trained = (tmp_path / "peers" / "smp_loop" / "smp_unet.pt").stat().st_mtime
    # one after another: the loop starts only once ours is trained and scored
    assert (loop_trained > ours_scored) == (not side_by_side)
    assert [r["family"] for r in results] == ["segmentation", "segmentation"]
    keys = {"name", "family", "budget_s", "steps", "epochs", "img_per_s", "miou", "pixel_accuracy",
            "command", "skipped", "miou_no_tta", "miou_tta_flip", "miou_tta_flip_scales"}
    for result in results:
        assert set(result) == keys, result
        assert result["skipped"] is None, result
        assert result["steps"] >= 1 and result["img_per_s"] > 0
        assert 0.0 <= result["miou"] <= 1.0 and 0.0 < result["pixel_accuracy"] <= 1.0
        assert all(0.0 <= result[k] <= 1.0 for k in ("miou_no_tta", "miou_tta_flip", "miou_tta_flip_scales"))
        assert "OMP_NUM_THREADS=1" in result["command"]
    ours, loop = results
    # each scored with its own decoding (the recipe flips at three scales, the loop does neither)
    # and every other way
    assert ours["miou"] == pytest.approx(ours["miou_tta_flip_scales"], abs=1e-9)
    assert loop["miou"] == loop["miou_no_tta"]
    for folder in ("eval_test_no_tta", "eval_test_tta_flip", "eval_test_tta_flip_scales"):
        assert (tmp_path / "peers" / "ours" / folder / "metrics.json").is_file()
    assert "unet_cpu_10m" in ours["command"] and "model.image_size=64" in ours["command"]
    # both were scored by our evaluator on the same 3 test images, at the original resolution
    import cv2

    test_masks = [tiny_ccp / "masks" / (line.split()[0].rsplit(".", 1)[0] + ".png")
                  for line in (tiny_ccp / "test.txt").read_text().splitlines()]
    full_resolution = sum(cv2.imread(str(m), cv2.IMREAD_UNCHANGED).size for m in test_masks)
    for report in (tmp_path / "peers" / "ours" / "eval_test" / "metrics.json",
                   tmp_path / "peers" / "smp_loop" / "eval_test" / "metrics.json"):
        metrics = json.loads(report.read_text())
        assert metrics["images"] == 3
        assert metrics["pixels"] == full_resolution
