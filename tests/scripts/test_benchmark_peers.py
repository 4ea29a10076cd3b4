"""scripts/benchmark_peers.py end to end on CPU at a tiny budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_peers_runs_end_to_end_with_peers_skipped(tiny_ccp: Path, tmp_path: Path):
    out = tmp_path / "peers.json"
    env = {**os.environ, "FASHION_PEERS_DISABLE": "ultralytics", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark_peers.py"), "--family", "det", "--dataset", str(tiny_ccp),
         "--split", "test", "--budget-det", "4s", "--image-size", "64", "--threads", "1", "--side-by-side",
         "--device", "cpu", "--quick", "--out", str(out), "--work", str(tmp_path / "work")],
        env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["threads"] == 1 and report["side_by_side"] and report["budgets_s"] == {"det": 4.0}
    assert report["machine"]["torch"] and report["date"]
    ours, *peers = report["results"]
    assert ours["family"] == "detection" and ours["skipped"] is None and ours["seeds"] == [0]
    assert ours["steps"]["mean"] >= 1 and ours["epochs"]["mean"] >= 1 and ours["img_per_s"]["mean"] > 0
    test, val = ours["map50"]["mean"], ours["val_map50"]["mean"]
    assert 0.0 <= test <= 1.0 and 0.0 <= val <= 1.0 and ours["map50_95"]["mean"] <= test + 1e-9
    assert "fashionvision.cli.train" in ours["command"] and "experiment=yolo_cpu_12m" in ours["command"]
    assert [p["config"] for p in peers] == ["sgd", "adamw", "auto"]
    assert all(p["name"].startswith("ultralytics YOLOv8n (") and "FASHION_PEERS_DISABLE" in p["skipped"]
               for p in peers)
    assert "skipped: ultralytics disabled" in proc.stdout
    assert "| detection | ultralytics YOLOv8n (optimizer=SGD lr0=0.01 momentum=0.937 nbs=16) |" in report["markdown"]
    assert report["seeds"] == [0] and report["verdicts"] == {} and len(report["per_seed"]) == 4
    probe = report["host_probe_ms"]
    assert probe["start"] > 0 and probe["end"] > 0 and "ResNet-18" in probe["what"]
    assert "host probe" in report["markdown"]


def test_missing_segmentation_module_is_reported_as_skipped(monkeypatch):
    sys.path.insert(0, str(REPO / "scripts"))
    import benchmark_peers

    monkeypatch.setattr(benchmark_peers, "REPO", Path("/nonexistent"))
    func, reason = benchmark_peers.load_family("seg")
    assert func is None and "segmentation.py is not there" in reason


def test_ultralytics_absence_is_detected(monkeypatch):
    sys.path.insert(0, str(REPO / "scripts"))
    from peers import detection

    monkeypatch.setenv("FASHION_PEERS_DISABLE", "ultralytics")
    assert "FASHION_PEERS_DISABLE" in detection.ultralytics_missing()
    monkeypatch.delenv("FASHION_PEERS_DISABLE")
    monkeypatch.setattr(detection.importlib.util, "find_spec", lambda name: None)
    assert "pip install" in detection.ultralytics_missing()


def test_host_probe_times_the_machine_and_restores_the_thread_count():
    sys.path.insert(0, str(REPO / "scripts"))
    import benchmark_peers

    before = torch.get_num_threads()
    one = benchmark_peers.host_probe(threads=1, repeats=1)
    assert torch.get_num_threads() == before
    assert 0 < one < 60_000
    info = {"machine": {"cpu": "x", "cpu_count": 2, "torch": "t"}, "threads": 1, "side_by_side": False,
            "split": "test", "dataset": "d", "host_probe_ms": {"start": one, "end": 2 * one}}
    assert f"host probe {one:.0f} / {2 * one:.0f} ms at start / end" in benchmark_peers.markdown([], info)
    del info["host_probe_ms"]  # the JSONs written before the probe existed still print
    assert "host probe" not in benchmark_peers.markdown([], info)


def _parsed_worker(detection, contestant, tmp_path: Path, monkeypatch, seed: int = 0):
    """The worker command the driver builds for ``contestant``, parsed by the worker's own
    parser (``main``), the work function replaced: the Namespace the contestant would run with."""
    worker = detection._worker_command(contestant, tmp_path, "test", 60, 256, 1, tmp_path / "o", "cpu", False,
                                       seed=seed)
    seen = {}
    work = "work_ours" if contestant.kind == "ours" else "work_ultralytics"
    monkeypatch.setattr(detection, work, lambda a: seen.setdefault("args", a) and {})
    assert detection.main(worker[2:]) == 0  # after the interpreter and the script
    return seen["args"]


def test_peer_runs_in_every_configuration_its_users_pick(tmp_path: Path, monkeypatch):
    """SGD with ultralytics' own hyperparameters and AdamW at 1e-3, both with nbs = the batch
    (no gradient accumulation), and optimizer=auto as ultralytics ships it: all three in one
    benchmark, checked through the worker's argument parser."""
    sys.path.insert(0, str(REPO / "scripts"))
    from peers import detection

    ours, *peers = detection.contestants("cpu")
    assert [p.config for p in peers] == ["sgd", "adamw", "auto"] and ours.config is None
    assert len({p.folder for p in peers}) == 3  # each configuration its own run folder
    expected = {"sgd": {"optimizer": "SGD", "lr0": 0.01, "momentum": 0.937, "nbs": 16},
                "adamw": {"optimizer": "AdamW", "lr0": 0.001, "nbs": 16},
                "auto": {"optimizer": "auto"}}
    for peer in peers:
        a = _parsed_worker(detection, peer, tmp_path, monkeypatch)
        assert a.peer_config == peer.config and a.batch == 16
        args = detection.ultralytics_train_args(a, tmp_path / "data.yaml")
        assert {k: args[k] for k in expected[peer.config]} == expected[peer.config]
        if peer.config != "auto":
            assert args["nbs"] == args["batch"]  # ultralytics accumulates nbs / batch batches: 1 = none
        else:
            assert "nbs" not in args and "lr0" not in args  # ultralytics' defaults (nbs=64)
        assert args["epochs"] == 1000 and args["time"] == pytest.approx(60 / 3600) and not args["pretrained"]
    # a subset, e.g. the explicit optimizers only, and an unknown name refused
    assert [c.config for c in detection.contestants("cpu", ["sgd"])] == [None, "sgd"]
    with pytest.raises(ValueError, match="unknown peer configuration"):
        detection.contestants("cpu", ["sgd", "lion"])
    with pytest.raises(SystemExit):
        detection.parser().parse_args(["ultralytics", "--peer-config", "lion"])


def test_side_by_side_never_puts_more_threads_than_cores_to_work():
    sys.path.insert(0, str(REPO / "scripts"))
    from peers import detection

    assert detection.slots(1, side_by_side=True, cores=2) == 2  # ours beside one peer, then the next two
    assert detection.slots(2, side_by_side=True, cores=2) == 1
    assert detection.slots(1, side_by_side=False, cores=16) == 1


def test_peer_predict_decodes_with_multi_label_nms_as_its_val_does():
    pytest.importorskip("ultralytics")
    sys.path.insert(0, str(REPO / "scripts"))
    from peers import detection
    from ultralytics.utils import nms

    calls = []
    original = nms.non_max_suppression
    nms.non_max_suppression = lambda *args, **kwargs: calls.append(kwargs)
    try:
        undo = detection.multi_label_nms()
        nms.non_max_suppression(None, 0.001, 0.6, max_det=300)
        undo()
        assert calls == [{"max_det": 300, "multi_label": True, "max_time_img": 60.0}]
        assert nms.non_max_suppression is not original and nms.non_max_suppression(None) is None
    finally:
        nms.non_max_suppression = original
    assert (detection.EVAL_CONF, detection.EVAL_IOU, detection.MAX_DET) == (0.001, 0.6, 300)


def test_seed_reaches_every_detection_contestant(tmp_path: Path, monkeypatch):
    """--seed must reach our trainer.seed and ultralytics' seed=, so repeat seeds measure the noise."""
    sys.path.insert(0, str(REPO / "scripts"))
    from peers import detection

    ours, peer, *_ = detection.contestants("cpu")
    worker = detection._worker_command(ours, tmp_path, "test", 60, 256, 2, tmp_path / "o", "cpu", False, seed=3)
    parser_args = worker[2:]  # after the interpreter and the script
    seen = {}

    def fake_worker(a):
        seen["args"] = a
        return {}

    monkeypatch.setattr(detection, "work_ours", fake_worker)
    assert detection.main(parser_args) == 0
    a = seen["args"]
    assert a.seed == 3
    train, evaluate = detection.ours_commands(a, tmp_path / "run")
    assert "trainer.seed=3" in train and "split=test" in evaluate
    assert "split=val" in detection.ours_commands(a, tmp_path / "run", "val")[1]
    a.model, a.quick, a.peer_config = peer.model, False, peer.config
    assert detection.ultralytics_train_args(a, tmp_path / "data.yaml")["seed"] == 3
    a.seed = 0  # the default adds nothing to our command line (the config's seed 0 applies)
    assert not any(arg.startswith("trainer.seed") for arg in detection.ours_commands(a, tmp_path / "run")[0])


@pytest.mark.slow
def test_step_parts_script_times_before_and_after_and_writes_json(tmp_path: Path):
    """scripts/bench_step_parts.py (results in ``benchmarks/HISTORY.md``) runs at a toy size and records each part
    of the step both ways, with the machine and the command."""
    import importlib.util

    path = REPO / "scripts" / "bench_step_parts.py"
    spec = importlib.util.spec_from_file_location("bench_step_parts", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "parts.json"
    threads = torch.get_num_threads()
    try:
        assert module.main(["--threads", "1", "--batch", "2", "--crop", "64", "--repeats", "1",
                            "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    record = json.loads(out.read_text())
    assert set(record["results"]) == {"optimizer_step", "ema_update", "cross_entropy_fwd_bwd", "whole_step"}
    for row in record["results"].values():
        assert row["before_ms"] > 0 and row["after_ms"] > 0
        assert row["speedup"] == pytest.approx(row["before_ms"] / row["after_ms"], abs=0.01)
    assert record["machine"]["cpu_count"] >= 1 and "--crop 64" in record["command"]


def _row(name, kind, runs, family="detection", **extra):
    return [{"name": name, "family": family, "kind": kind, "seed": seed, "skipped": None, "budget_s": 720.0,
             **values, **extra} for seed, values in runs.items()]


def test_seeds_are_summarised_and_the_peer_is_chosen_on_val():
    """Mean, std, min and max over seeds per contestant; the peer configuration compared is the
    best on val, even where another one scores higher on test."""
    sys.path.insert(0, str(REPO / "scripts"))
    import benchmark_peers as bp

    rows = (_row("ours", "ours", {1: {"map50": 0.06, "val_map50": 0.05}, 2: {"map50": 0.05, "val_map50": 0.05},
                                  3: {"map50": 0.07, "val_map50": 0.06}})
            + _row("yolo sgd", "ultralytics", {1: {"map50": 0.03, "val_map50": 0.04},
                                               2: {"map50": 0.03, "val_map50": 0.04},
                                               3: {"map50": 0.03, "val_map50": 0.04}}, config="sgd")
            + _row("yolo auto", "ultralytics", {1: {"map50": 0.05, "val_map50": 0.01},
                                                2: {"map50": 0.05, "val_map50": 0.01},
                                                3: {"map50": 0.05, "val_map50": 0.01}}, config="auto"))
    results = bp.aggregate(rows)
    assert [r["name"] for r in results] == ["ours", "yolo sgd", "yolo auto"]
    ours = results[0]
    assert ours["seeds"] == [1, 2, 3] and ours["map50"]["n"] == 3
    assert ours["map50"]["mean"] == pytest.approx(0.06) and ours["map50"]["std"] == pytest.approx(0.01)
    assert (ours["map50"]["min"], ours["map50"]["max"]) == (0.05, 0.07)
    assert "map50_95" not in ours and "miou" not in ours  # no seed has them
    chosen = bp.choose_compared(results)["detection"]
    assert chosen["peer"]["name"] == "yolo sgd"  # best on val, not on test
    assert [r.get("compared") for r in results] == [True, True, False]
    judged = bp.verdicts(results)["detection"]
    assert judged["ratio"] == pytest.approx(2.0) and judged["verdict"] == "win"  # 0.05 / 0.03 > 1.5
    table = bp.markdown(results, {"machine": {"cpu": "x", "cpu_count": 2, "torch": "t"}, "threads": 1,
                                  "side_by_side": True, "split": "test", "dataset": "d", "seeds": [1, 2, 3],
                                  "verdicts": {"detection": judged}})
    assert "0.0600 ± 0.0100 [0.0500, 0.0700]" in table and "yolo sgd **(compared)**" in table
    assert "**win**" in table


def test_segmentation_compares_ours_with_the_loop_decoded_alike():
    sys.path.insert(0, str(REPO / "scripts"))
    import benchmark_peers as bp

    runs = {s: {"miou": 0.06, "val_miou": 0.05} for s in (1, 2, 3)}
    rows = (_row("ours", "ours", runs, family="segmentation", decoding="own")
            + _row("loop plain", "peer", {s: {"miou": 0.03, "val_miou": 0.09} for s in (1, 2, 3)},
                   family="segmentation", decoding="plain", compare_row=False)
            + _row("loop + ours", "peer", {s: {"miou": 0.05, "val_miou": 0.05} for s in (1, 2, 3)},
                   family="segmentation", decoding="ours", compare_row=True))
    judged = bp.verdicts(bp.aggregate(rows))["segmentation"]
    assert judged["peer"] == "loop + ours" and judged["figure"] == "miou"
    assert judged["verdict"] == "miss" and judged["ratio"] == pytest.approx(1.2)


def test_a_ratio_is_a_win_only_when_the_seed_spread_clears_the_target():
    sys.path.insert(0, str(REPO / "scripts"))
    from benchmark_peers import verdict

    clear = verdict([0.060, 0.055, 0.065], [0.030, 0.032, 0.034])
    assert clear["verdict"] == "win" and clear["low"] == pytest.approx(0.055 / 0.034) and clear["low"] > 1.5
    # the same mean ratio (about 1.9x) with a seed spread that reaches below 1.5x is no win
    spread = verdict([0.060, 0.040, 0.080], [0.030, 0.032, 0.034])
    assert spread["ratio"] == pytest.approx(0.060 / 0.032) and spread["low"] < 1.5 < spread["high"]
    assert spread["verdict"] == "within spread"
    short = verdict([0.040, 0.042, 0.044], [0.030, 0.032, 0.034])
    assert short["high"] < 1.5 and short["verdict"] == "miss"
    assert verdict([0.09, 0.09], [0.01, 0.01])["verdict"] == "too few seeds"
    assert verdict([0.01, 0.01, 0.01], [0.0, 0.0, 0.0])["verdict"] == "win"  # a peer at 0 everywhere
    assert verdict([], [0.1])["verdict"] == "no data"
    assert verdict([0.15] * 3, [0.1] * 3, target=1.5)["verdict"] == "win"  # exactly 1.5x (in float: 1.4999...)
