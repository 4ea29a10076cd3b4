"""fashion-compare runs=DIR: four tiny runs (two per family, two seeds) in one report; the factor
effects against a hand computation; failed runs listed, not evaluated."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from fashionvision.compare.study import Run, factor_effects, find_runs, mean_sd, recipe_table, seed_noise
from fashionvision.compare.study_report import FIGURES, SECTIONS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["trainer=smoke", "trainer.epochs=1", "trainer.limit_images=2", "trainer.log_images=0", "model.image_size=64"]


def _sweep(args: list[str], sweep: Path, monkeypatch) -> None:
    from fashionvision.cli import train

    monkeypatch.setattr(sys, "argv", ["fashion-train", "-m", *args, f"hydra.sweep.dir={sweep}"])
    with pytest.raises(SystemExit) as info:
        train.main()
    assert info.value.code == 0


@pytest.fixture(scope="module")
def study_runs(tiny_ccp, tmp_path_factory) -> list[Path]:
    """Two sweeps: detectors with COCO and k-means anchors (seed 0), a vanilla U-Net with seeds 0 and 1."""
    root = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _sweep(["model=yolo", "model.width=0.0625", "anchors=coco,kmeans", f"dataset.path={tiny_ccp}", *TINY],
               root / "det", monkeypatch)
        _sweep(["model=unet", "model.encoder=vanilla", "model.width=0.125", "trainer.seed=0,1",
                f"dataset.path={tiny_ccp}", *TINY], root / "seg", monkeypatch)
    failed = root / "seg" / "9"  # a job that failed before writing a checkpoint
    (failed / ".hydra").mkdir(parents=True)
    (failed / "job.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: out of memory"}))
    return [root / "det", root / "seg"]


@pytest.mark.slow  # several trainings and evaluations: tens of seconds on 2 cores
def test_the_study_report_has_every_table_and_figure(study_runs, tiny_ccp, tmp_path):
    from fashionvision.cli._hydra import compose
    from fashionvision.cli.compare import compare

    out = tmp_path / "report"
    cfg = compose("compare", [f"runs=[{study_runs[0]},{study_runs[1]}]", f"output={out}", "n_images=2",
                              "device=cpu", "speed.min_seconds=0.05", "speed.max_iters=2"])
    assert compare(cfg) == 0
    report = json.loads((out / "report.json").read_text())
    markdown = (out / "report.md").read_text()
    for section in SECTIONS:
        assert f"## {section}" in markdown, section
    for name in FIGURES.values():
        assert (out / name).stat().st_size > 0 and f"({name})" in markdown
    test_paths = [line.split()[0] for line in (tiny_ccp / "test.txt").read_text().splitlines()]
    assert report["setup"]["images"] == test_paths and report["setup"]["num_runs"] == 5
    runs = report["runs"]
    assert [r["status"] for r in runs].count("failed") == 1
    assert "out of memory" in next(r["error"] for r in runs if r["status"] == "failed")
    ok = [r for r in runs if r["status"] == "ok"]
    assert sorted(r["family"] for r in ok) == ["detector", "detector", "segmenter", "segmenter"]
    for r in ok:
        assert {"map50", "map", "miou_standard", "miou_gt", "pixel_acc"} <= set(r["metrics"])
        assert r["costs"]["params"] > 0 and r["costs"]["gflops"] > 0 and r["costs"]["ms_per_photo"] > 0
        assert r["costs"]["steps"] >= 1 and r["costs"]["train_seconds"] > 0
    study = report["study"]
    det_recipes = [row["recipe"] for row in study["tables"]["detector"]]
    assert det_recipes == ["yolo anchors=coco", "yolo anchors=kmeans"]  # named by the factor that varies
    (seg_row,) = study["tables"]["segmenter"]
    assert seg_row["seeds"] == [0, 1]
    seg_values = [r["metrics"]["miou_standard"] for r in ok if r["family"] == "segmenter"]
    assert seg_row["metrics"]["miou_standard"]["mean"] == pytest.approx(np.mean(seg_values))
    assert seg_row["metrics"]["miou_standard"]["sd"] == pytest.approx(np.std(seg_values, ddof=1))
    assert study["seed_noise"]["segmenter"]["miou_standard"] == pytest.approx(np.std(seg_values, ddof=1))
    # the factor effect by hand: k-means minus COCO, the one pair of runs with seed 0
    det = {r["factors"]["anchors"]: r["metrics"] for r in ok if r["family"] == "detector"}
    effects = {(e["factor"], e["metric"]): e for e in study["effects"]["detector"]}
    assert set(effects) == {("anchors", "map50"), ("anchors", "miou_standard")}
    for metric in ("map50", "miou_standard"):
        e = effects[("anchors", metric)]
        assert (e["reference"], e["level"], e["pairs"]) == ("coco", "kmeans", 1)
        assert e["effect"] == pytest.approx(det["kmeans"][metric] - det["coco"][metric])
    assert study["effects"]["segmenter"] == []  # nothing varied among the segmenters but the seed
    best = study["best"]
    assert best["segmenter"]["recipe"] == seg_row["recipe"]
    assert "best detector" in study["verdict"] and "best segmenter" in study["verdict"]
    assert study["verdict"] in markdown
    assert report["best_pair"]["per_class"] and set(report["best_pair"]["wins"]) == {"ap50", "iou"}


def test_the_two_run_form_still_needs_both_runs(tmp_path):
    from fashionvision.cli._hydra import compose
    from fashionvision.cli.compare import compare
    from fashionvision.errors import UserError

    with pytest.raises(UserError, match="detector=RUN segmenter=RUN"):
        compare(compose("compare", ["detector=x", f"output={tmp_path}"]))
    with pytest.raises(UserError, match="not both"):
        compare(compose("compare", ["detector=x", "segmenter=y", "runs=z", f"output={tmp_path}"]))


def _run(recipe: str, seed: int, value: float, **factors: str) -> Run:
    return Run(Path(f"/runs/{recipe}/{seed}"), family="segmenter", recipe=recipe, seed=seed, factors=factors,
               metrics={"miou_standard": value})


def test_factor_effects_are_paired_over_seeds():
    # three encoders with two seeds each, and one augmentation ablation on resnet50
    runs = [_run("r50", 0, 0.30, encoder="resnet50", augment="default"),
            _run("r50", 1, 0.34, encoder="resnet50", augment="default"),
            _run("mnv2", 0, 0.25, encoder="mobilenet_v2", augment="default"),
            _run("mnv2", 1, 0.31, encoder="mobilenet_v2", augment="default"),
            _run("van", 0, 0.20, encoder="vanilla", augment="default"),
            _run("van", 1, 0.20, encoder="vanilla", augment="default"),
            _run("r50_noaug", 0, 0.22, encoder="resnet50", augment="none"),
            _run("r50_noaug", 1, 0.28, encoder="resnet50", augment="none")]
    effects = {(e["factor"], e["level"]): e for e in factor_effects(runs, "segmenter", "miou_standard")}
    mnv2 = effects[("encoder", "mobilenet_v2")]  # pairs by seed: 0.25-0.30, 0.31-0.34
    assert mnv2["reference"] == "resnet50" and mnv2["pairs"] == 2 and mnv2["paired"]
    assert mnv2["effect"] == pytest.approx(-0.04) and mnv2["spread"] == pytest.approx(np.std([-0.05, -0.03], ddof=1))
    assert effects[("encoder", "vanilla")]["effect"] == pytest.approx(-0.12)
    noaug = effects[("augment", "none")]  # only the resnet50 runs share the other factor
    assert noaug["pairs"] == 2 and noaug["effect"] == pytest.approx(-0.07)
    table = recipe_table(runs, "segmenter")
    assert [r["recipe"] for r in table] == ["r50", "mnv2", "van", "r50_noaug"]
    sds = [np.std(v, ddof=1) for v in ([0.30, 0.34], [0.25, 0.31], [0.20, 0.20], [0.22, 0.28])]
    assert seed_noise(table, "miou_standard") == pytest.approx(np.sqrt(np.mean(np.square(sds))))


def test_unpaired_designs_compare_the_means():
    runs = [_run("a", 0, 0.1, encoder="x"), _run("a", 1, 0.3, encoder="x"), _run("b", 2, 0.5, encoder="y")]
    (effect,) = factor_effects(runs, "segmenter", "miou_standard")
    assert not effect["paired"] and effect["effect"] == pytest.approx(0.3) and effect["spread"] is None
    assert mean_sd([0.1, 0.3]) == {"mean": pytest.approx(0.2), "sd": pytest.approx(np.std([0.1, 0.3], ddof=1)), "n": 2}


def test_find_runs_reads_a_sweep_folder_in_job_order(tmp_path):
    for name in ("10", "2", "1"):
        (tmp_path / "sweep" / name / ".hydra").mkdir(parents=True)
    (tmp_path / "sweep" / "multirun.yaml").write_text("{}")
    (tmp_path / "one" / "checkpoints").mkdir(parents=True)
    found = find_runs([tmp_path / "sweep", tmp_path / "one"])
    assert [p.name for p in found] == ["1", "2", "10", "one"]


def test_the_report_never_goes_inside_its_inputs(tmp_path):
    from fashionvision.compare.study import check_output
    from fashionvision.errors import UserError

    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    for output, word in ((sweep, "is"), (sweep / "report", "lies inside"), (tmp_path, "contains")):
        with pytest.raises(UserError, match=word):
            check_output(output, [sweep, sweep / "0"])
    check_output(tmp_path / "report", [sweep, sweep / "0"])  # beside the runs: fine
