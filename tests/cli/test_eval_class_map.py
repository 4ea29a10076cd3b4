"""fashion-eval class_map=: a detector trained on CCP scored on a ModaNet-format folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_ccp_detector_on_modanet_through_the_class_maps(tiny_ccp: Path, tmp_path: Path, capsys):
    from conftest import train_tiny
    from fashionvision.cli._hydra import compose
    from fashionvision.cli.eval import _print, evaluate
    from fashionvision.convert import modanet
    from fixtures.modanet_files import make_modanet

    run = train_tiny("yolo", tiny_ccp, tmp_path / "run")
    modanet.convert(make_modanet(tmp_path / "modanet"), tmp_path / "converted", split=(0, 0, 1), progress_bar=False,
                    workers=1)
    cfg = compose("eval", [f"ckpt={run}", f"dataset.path={tmp_path / 'converted'}", "class_map=auto", "device=cpu",
                           "workers=0", f"output={tmp_path / 'eval'}"])
    report = evaluate(cfg, tmp_path / "eval")
    mapped = report["class_map"]
    assert mapped["model"]["class_map"] == "ccp" and mapped["dataset"]["class_map"] == "modanet"
    assert "swimwear" in mapped["model"]["unmapped"] and mapped["dataset"]["unmapped"] == []
    assert [c["class"] for c in report["per_class"]] == mapped["target"]
    assert sum(c["instances"] for c in report["per_class"]) == 6  # every ModaNet box has a common class
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["class_map"] == mapped
    _print(report, tmp_path / "eval")
    assert "class map ccp (model): unmapped ['bodysuit'" in capsys.readouterr().out


def test_deepfashion2_ap_per_subset_in_the_report(tmp_path: Path):
    from conftest import train_tiny
    from fashionvision.cli._hydra import compose
    from fashionvision.cli.eval import evaluate
    from fashionvision.convert import deepfashion2
    from fixtures.deepfashion2_files import make_deepfashion2

    folder = tmp_path / "df2"
    deepfashion2.convert(make_deepfashion2(tmp_path / "src"), folder, split=(0.5, 0.5, 0), progress_bar=False,
                         workers=1)
    run = train_tiny("yolo", folder, tmp_path / "run")
    cfg = compose("eval", [f"ckpt={run}", f"dataset.path={folder}", "device=cpu", "workers=0",
                           f"output={tmp_path / 'eval'}"])
    report = evaluate(cfg, tmp_path / "eval")
    # the test split is DeepFashion2's validation folder: one skirt, occlusion 1, zoom_in 1, viewpoint 2
    assert report["subsets"]["occlusion"] == {"1": {"map": report["subsets"]["occlusion"]["1"]["map"],
                                                    "map50": report["subsets"]["occlusion"]["1"]["map50"],
                                                    "instances": 1}}
    assert set(report["subsets"]) == {"scale", "occlusion", "zoom_in", "viewpoint"}
    assert report["subsets"]["viewpoint"]["2"]["instances"] == 1
