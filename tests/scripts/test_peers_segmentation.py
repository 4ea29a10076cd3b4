"""scripts/peers/segmentation.py: our U-Net and the plain smp loop, trained side by side and
scored by our evaluator, end to end on real CCP images at a tiny budget."""

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


def test_decoding_rule_of_our_recipe_is_read_from_its_config():
    module = load_module()
    decoding = module.experiment_decoding("unet_cpu_10m")
    assert decoding == {"logit_adjust": 0.25, "tta_flip": True, "tta_scales": [0.875, 1.0, 1.125]}
    assert module.describe_decoding(decoding) == "logit adjustment 0.25, flip, scales 0.875/1/1.125"
    assert module.describe_decoding({"logit_adjust": 0.0, "tta_flip": False, "tta_scales": None}) == "plain argmax"


def _metrics(miou: float, ms: float) -> dict:
    return {"miou": miou, "miou_gt_classes": miou + 0.01, "pixel_acc": 0.8, "ms_per_image": ms}


def test_rows_hold_the_loop_with_our_decoding_beside_the_plain_rows():
    """The row builder: ours, the plain loop and the loop with our decoding (the compared row),
    each with its test and val figures and its inference ms per photo."""
    module = load_module()
    decoding = module.experiment_decoding("unet_cpu_10m")
    train = {"steps": 10, "epochs": 1.5, "img_per_s": 3.0}
    ours = {"train": train, "scores": {"own": {"test": _metrics(0.06, 90.0), "val": _metrics(0.05, 91.0)}},
            "variants": {"miou_no_tta": 0.04}}
    loop = {"train": train, "scores": {"plain": {"test": _metrics(0.03, 15.0), "val": _metrics(0.031, 15.5)},
                                       "ours": {"test": _metrics(0.04, 92.0), "val": _metrics(0.041, 93.0)}}}
    base = {"family": "segmentation", "budget_s": 600.0, "skipped": None,
            "ours": {"command": "train && eval"}, "peer": {"command": "loop"}}
    rows = module.segmentation_rows("unet_cpu_10m", "mobilenet_v2", decoding, ours, loop, base)
    assert [r["decoding"] for r in rows] == ["own", "plain", "ours"]
    assert [r["compare_row"] for r in rows] == [False, False, True]
    own, plain, same = rows
    assert "+ our decoding: logit adjustment 0.25, flip, scales" in same["name"]
    assert (own["command"], plain["command"]) == ("train && eval", "loop")
    assert (plain["miou"], same["miou"], same["val_miou"]) == (0.03, 0.04, 0.041)
    assert (own["ms_per_image"], plain["ms_per_image"], same["ms_per_image"]) == (90.0, 15.0, 92.0)
    assert same["miou_gt_classes"] == pytest.approx(0.05) and same["pixel_accuracy"] == 0.8
    assert all(r["skipped"] is None and r["steps"] == 10 for r in rows)
    assert own["miou_no_tta"] == 0.04
    # a failed loop leaves its two rows skipped, ours still scored
    base["peer"]["skipped"] = "failed with exit code 1"
    rows = module.segmentation_rows("unet_cpu_10m", "mobilenet_v2", decoding, ours, None, base)
    assert rows[0]["skipped"] is None and rows[1]["skipped"] == rows[2]["skipped"] == "failed with exit code 1"


def test_gpu_loop_is_what_an_smp_user_writes():
    module = load_module()
    gpu, cpu = module.loop_settings("cuda"), module.loop_settings("cpu")
    assert gpu["bf16"] and gpu["channels_last"] and gpu["pin_memory"] and gpu["workers"] >= 1
    assert gpu["batch_size"] == 16 and cpu["batch_size"] == 8
    assert not (cpu["bf16"] or cpu["channels_last"] or cpu["workers"])


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
    assert [r["family"] for r in results] == ["segmentation"] * 3
    assert [r["decoding"] for r in results] == ["own", "plain", "ours"]
    for result in results:
        assert result["skipped"] is None, result
        assert result["steps"] >= 1 and result["img_per_s"] > 0
        for prefix in ("", "val_"):
            assert 0.0 <= result[f"{prefix}miou"] <= result[f"{prefix}miou_gt_classes"] + 1e-9 <= 1.0 + 1e-9
            assert 0.0 <= result[f"{prefix}pixel_accuracy"] <= 1.0 and result[f"{prefix}ms_per_image"] > 0
        assert all(0.0 <= result[k] <= 1.0 for k in ("miou_no_tta", "miou_tta_flip", "miou_tta_flip_scales"))
        assert "OMP_NUM_THREADS=1" in result["command"]
    ours, plain, same = results
    # each scored with its own decoding (the recipe flips at three scales, the plain loop does neither)
    # and every other way
    assert ours["miou"] == pytest.approx(ours["miou_tta_flip_scales"], abs=1e-9)
    assert plain["miou"] == plain["miou_no_tta"]
    assert same["compare_row"] and "our decoding" in same["name"]
    for folder in ("eval_test_no_tta", "eval_test_tta_flip", "eval_test_tta_flip_scales", "eval_val"):
        assert (tmp_path / "peers" / "ours" / folder / "metrics.json").is_file()
    assert "unet_cpu_10m" in ours["command"] and "model.image_size=64" in ours["command"]
    # both were scored by our evaluator on the same 3 test images, at the original resolution
    import cv2

    test_masks = [tiny_ccp / "masks" / (line.split()[0].rsplit(".", 1)[0] + ".png")
                  for line in (tiny_ccp / "test.txt").read_text().splitlines()]
    full_resolution = sum(cv2.imread(str(m), cv2.IMREAD_UNCHANGED).size for m in test_masks)
    for report in (tmp_path / "peers" / "ours" / "eval_test" / "metrics.json",
                   tmp_path / "peers" / "smp_loop" / "eval_test" / "metrics.json",
                   tmp_path / "peers" / "smp_loop" / "eval_test_our_decoding" / "metrics.json"):
        metrics = json.loads(report.read_text())
        assert metrics["images"] == 3
        assert metrics["pixels"] == full_resolution
