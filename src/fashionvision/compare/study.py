"""``fashion-compare runs=DIR``: every run of a study on the same test images, one report.

A study is a set of run folders (a ``fashion-train -m`` sweep folder, or any list of run
folders): detectors and segmenters, several recipes, several seeds. Each run is evaluated once
on exactly the same images through :func:`~fashionvision.compare.evaluation.evaluate_run`
(its own yardstick and the other family's, as in the two-run compare), timed, and described
by what its folder records (``.hydra/hydra.yaml``: the recipe and the config choices;
``metrics.json``: training time and steps; ``job.json``: a failed job). This module turns the
runs into the report's numbers: a table per family (mean and spread over seeds), the effect
of each factor the study varied (paired over the seeds where the design allows), the best
detector against the best segmenter and a verdict. :mod:`fashionvision.compare.study_report`
writes them.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fashionvision.compare.evaluation import RunEvaluation, check_run, count_flops, evaluate_run, time_predict
from fashionvision.errors import UserError

log = logging.getLogger("fashionvision")

FAMILIES = ("detector", "segmenter")
#: each family's own yardstick (what ranks its recipes) and the other family's
PRIMARY = {"detector": "map50", "segmenter": "miou_standard"}
CROSS = {"detector": "miou_standard", "segmenter": "map50"}
#: the numbers of a run, with their labels in the report
METRICS = {"map50": "mAP50", "map": "mAP50-95", "miou_standard": "mIoU", "miou_gt": "mIoU (GT classes)",
           "pixel_acc": "pixel acc"}
COSTS = {"params": "parameters", "gflops": "GFLOPs/img", "train_seconds": "training s", "steps": "steps",
         "ms_per_photo": "ms/photo"}
#: the factors a study may vary: name -> a config group (its choice) or a config key
DEFAULT_FACTORS = {"anchors": "anchors", "augment": "augment", "encoder": "model.encoder"}


@dataclass
class Run:
    """One run folder and what the study report needs of it."""

    folder: Path
    status: str = "ok"                 # ok | failed (no checkpoint, or its job failed)
    family: str | None = None          # detector | segmenter
    model: str | None = None           # the model family's config name
    experiment: str | None = None      # the run's experiment config, if any
    recipe: str = ""                   # the experiment, else the model and the factors that vary
    seed: int | None = None
    factors: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    costs: dict = field(default_factory=dict)
    error: str | None = None
    evaluation: RunEvaluation | None = None

    def summary(self) -> dict:
        return {"folder": str(self.folder), "status": self.status, "family": self.family, "recipe": self.recipe,
                "seed": self.seed, "factors": self.factors, "metrics": self.metrics, "costs": self.costs,
                "error": self.error}


def _is_run(folder: Path) -> bool:
    return (folder / ".hydra").is_dir() or (folder / "checkpoints").is_dir() or (folder / "metrics.json").is_file()


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders: each path is a run folder or a folder of them (a sweep), in job order."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            raise UserError(f"runs: '{path}' is not a folder (give a multirun folder or run folders)")
        if _is_run(path) and not (path / "multirun.yaml").is_file():
            found.append(path)
            continue
        children = [p for p in path.iterdir() if p.is_dir() and _is_run(p)]
        children.sort(key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))
        if not children:
            raise UserError(f"runs: '{path}' holds no run folder (no .hydra/, checkpoints/ or metrics.json)")
        found += children
    return found


def check_output(output: Path, inputs: list[Path]) -> None:
    """Refuse a report folder that is, contains or lies inside an input (the run folders, the
    folders given, the dataset): the report must never mix with or replace what it reads."""
    out = Path(output).resolve()
    for given in inputs:
        folder = Path(given).resolve()
        if out == folder or folder in out.parents or out in folder.parents:
            where = "is" if out == folder else "lies inside" if folder in out.parents else "contains"
            raise UserError(f"output '{output}' {where} the input '{given}'; choose a report folder outside "
                            "the runs and the dataset")


def _read_yaml(path: Path) -> dict:
    import yaml

    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}


def _lookup(config: dict, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def describe_run(folder: Path, config: dict, factors: dict[str, str]) -> tuple[str | None, dict]:
    """``(the run's experiment or None, its factor values)``; a factor the run's config does not
    have (``model.encoder`` of a detector) is None."""
    choices = _read_yaml(folder / ".hydra" / "hydra.yaml").get("hydra", {}).get("runtime", {}).get("choices", {})
    values = {}
    for name, spec in factors.items():
        value = choices.get(spec) if spec in choices else _lookup(config, spec)
        values[name] = None if value is None else str(value)
    experiment = choices.get("experiment")
    return (str(experiment) if experiment and experiment != "null" else None), values


def name_recipes(runs: list["Run"]) -> None:
    """A run without an experiment is named by its model and the factors that vary in its family."""
    for run in runs:
        if run.experiment:
            run.recipe = run.experiment
            continue
        family = [r for r in runs if r.family == run.family]
        varied = [k for k, v in run.factors.items() if v is not None and len({r.factors.get(k) for r in family}) > 1]
        run.recipe = " ".join([run.model or "?", *(f"{k}={run.factors[k]}" for k in varied)])


def load_run(folder: Path, factors: dict[str, str], device: str):
    """``(Run, predictor or None)``: a run without a checkpoint (a failed job) has no predictor."""
    from fashionvision.inference.predictor import load_predictor

    run = Run(folder)
    job = folder / "job.json"
    job_error = json.loads(job.read_text()).get("error") if job.is_file() else None
    metrics_file = folder / "metrics.json"
    trained = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    run.costs = {"train_seconds": trained.get("train_seconds"), "steps": trained.get("steps")}
    if not any((folder / "checkpoints" / n).is_file() for n in ("best.pt", "last.pt")):
        run.status, run.error = "failed", job_error or "no checkpoint in checkpoints/"
        config = _read_yaml(folder / ".hydra" / "config.yaml")
        run.experiment, run.factors = describe_run(folder, config, factors)
        run.model = _lookup(config, "model.name")
        return run, None
    predictor = load_predictor(folder, device=device)
    run.family = predictor.kind
    run.seed = _lookup(predictor.config, "trainer.seed")
    run.experiment, run.factors = describe_run(folder, predictor.config, factors)
    run.model = _lookup(predictor.config, "model.name")
    return run, predictor


def run_metrics(ev: RunEvaluation) -> dict:
    """The report's numbers of one evaluated run (each family's own and the converted yardstick)."""
    det, seg = ev.detection, ev.segmentation
    return {"map50": det["map50"], "map": det["map"], "miou_standard": seg["miou_standard"], "miou_gt": seg["miou_gt_classes"],
            "pixel_acc": seg["pixel_acc"]}


def mean_sd(values: list[float]) -> dict:
    """Mean, sample standard deviation (None for one value) and count."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return {"mean": None, "sd": None, "n": 0}
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "sd": sd, "n": len(values)}


def recipe_table(runs: list[Run], family: str) -> list[dict]:
    """One row per recipe of ``family`` (in the order of the runs): mean and spread over seeds."""
    rows: dict[str, dict] = {}
    for run in runs:
        if run.status == "ok" and run.family == family:
            rows.setdefault(run.recipe, {"recipe": run.recipe, "factors": run.factors, "runs": []})["runs"].append(run)
    table = []
    for row in rows.values():
        members = row.pop("runs")
        row["seeds"] = [r.seed for r in members]
        row["folders"] = [str(r.folder) for r in members]
        row["metrics"] = {k: mean_sd([r.metrics.get(k) for r in members]) for k in METRICS}
        row["costs"] = {k: mean_sd([r.costs.get(k) for r in members]) for k in COSTS}
        table.append(row)
    return table


def seed_noise(table: list[dict], metric: str) -> float | None:
    """The pooled standard deviation over seeds of the recipes run with several seeds."""
    variances = [row["metrics"][metric]["sd"] ** 2 for row in table if row["metrics"][metric]["sd"] is not None]
    return float(math.sqrt(np.mean(variances))) if variances else None


def factor_effects(runs: list[Run], family: str, metric: str) -> list[dict]:
    """The effect of each factor that varies among ``family``'s runs on ``metric``.

    Levels in the order they first appear; the first is the reference. A level's effect is the
    mean of the differences ``metric(level) - metric(reference)`` over the pairs of runs that
    differ in that factor only (same seed, same other factors), with the standard deviation of
    those differences as its spread. Without such pairs (a design that is not crossed) it is
    the difference of the two levels' means, the spread combining their standard errors.
    """
    ok = [r for r in runs if r.status == "ok" and r.family == family]
    effects = []
    names = list(dict.fromkeys(k for r in ok for k in r.factors))
    for name in names:
        levels: list[str] = []
        for r in ok:
            value = r.factors.get(name)
            if value is not None and value not in levels:
                levels.append(value)
        if len(levels) < 2:
            continue
        reference = levels[0]
        for level in levels[1:]:
            def rest(r: Run) -> tuple:
                return (r.seed, tuple(sorted((k, v) for k, v in r.factors.items() if k != name)))
            base = {rest(r): r for r in ok if r.factors.get(name) == reference}
            diffs = [r.metrics[metric] - base[rest(r)].metrics[metric] for r in ok
                     if r.factors.get(name) == level and rest(r) in base]
            if diffs:
                stats = mean_sd(diffs)
                effect = {"effect": stats["mean"], "spread": stats["sd"], "pairs": len(diffs), "paired": True}
            else:
                a = mean_sd([r.metrics[metric] for r in ok if r.factors.get(name) == reference])
                b = mean_sd([r.metrics[metric] for r in ok if r.factors.get(name) == level])
                se = [s["sd"] ** 2 / s["n"] for s in (a, b) if s["sd"] is not None]
                effect = {"effect": b["mean"] - a["mean"], "spread": math.sqrt(sum(se)) if len(se) == 2 else None,
                          "pairs": 0, "paired": False}
            effects.append({"factor": name, "reference": reference, "level": level, "metric": metric, **effect})
    return effects


def _best(table: list[dict], family: str) -> dict | None:
    rows = [r for r in table if r["metrics"][PRIMARY[family]]["mean"] is not None]
    return max(rows, key=lambda r: r["metrics"][PRIMARY[family]]["mean"]) if rows else None


def head_to_head(tables: dict[str, list[dict]]) -> dict | None:
    """The best recipe of each family (by its own yardstick) on both yardsticks, with their costs."""
    det, seg = _best(tables.get("detector", []), "detector"), _best(tables.get("segmenter", []), "segmenter")
    if det is None or seg is None:
        return None
    out = {}
    for family, row in (("detector", det), ("segmenter", seg)):
        out[family] = {"recipe": row["recipe"], "map50": row["metrics"]["map50"],
                       "miou_standard": row["metrics"]["miou_standard"],
                       **{k: row["costs"][k]["mean"] for k in COSTS}}
    return out


def _word(diff: float, noise: float | None) -> str:
    if noise is None:
        return "no seed spread to judge by"
    return "beyond the seed spread" if abs(diff) > 2 * noise else "within the seed spread"


def verdict(best: dict | None, noise: dict) -> str:
    """One paragraph from the numbers: which family wins each yardstick, by how much, at what cost."""
    if best is None:
        return "The study needs at least one detector and one segmenter that trained to give a verdict."
    d, s = best["detector"], best["segmenter"]
    parts = []
    for metric, label, own in (("map50", "boxes (mAP50)", "detector"), ("miou_standard", "masks (mIoU)", "segmenter")):
        dv, sv = d[metric]["mean"], s[metric]["mean"]
        winner = "the detector" if dv > sv else "the segmenter" if sv > dv else "neither family"
        parts.append(f"on {label} {winner} wins, {max(dv, sv):.3f} against {min(dv, sv):.3f} "
                     f"({_word(dv - sv, noise.get(own, {}).get(metric))})")
    cost = []
    for key, label, digits in (("ms_per_photo", "ms per photo", 1), ("gflops", "GFLOPs", 2), ("params", "parameters", 0)):
        if d.get(key) and s.get(key):
            cost.append(f"{d[key]:,.{digits}f} against {s[key]:,.{digits}f} {label}")
    text = (f"The best detector ({d['recipe']}) and the best segmenter ({s['recipe']}), each picked by its own "
            f"yardstick and scored on the same images: " + "; ".join(parts) + ".")
    if cost:
        text += f" The detector costs {', '.join(cost)}."
    if d.get("train_seconds") and s.get("train_seconds"):
        text += f" Training: {d['train_seconds']:.0f} s against {s['train_seconds']:.0f} s."
    return text


def evaluate_study(paths: list[str | Path], dataset: str | None, split: str, limit: int | None, device: str,
                   n_images: int, factors: dict[str, str] | None = None, speed_seconds: float = 0.5,
                   speed_iters: int = 10, output: Path | None = None) -> tuple[dict, dict[str, list[Run]], Any]:
    """Evaluate every run; returns ``(study numbers, runs by family, the dataset)``."""
    from fashionvision.data.converted import ConvertedDataset

    factors = dict(DEFAULT_FACTORS if factors is None else factors)
    runs: list[Run] = []
    data = None
    names = set()
    folders = find_runs(paths)
    if output is not None:
        check_output(output, [*map(Path, paths), *folders, *([Path(dataset)] if dataset else [])])
    for folder in folders:
        run, predictor = load_run(folder, factors, device)
        runs.append(run)
        if predictor is None:
            log.warning("run %s failed (%s): listed, not evaluated", folder, run.error)
            continue
        if data is None:
            dataset = dataset or (predictor.config.get("dataset") or {}).get("path")
            if not dataset:
                raise UserError(f"give dataset.path=DIR: '{folder}' does not record its dataset folder")
            data = ConvertedDataset.open(dataset)
            if output is not None:
                check_output(output, [Path(data.folder)])
        names.add(str((predictor.config.get("dataset") or {}).get("name") or data.name))
        if len(names) > 1:
            raise UserError(f"cannot compare these runs: they were trained on different datasets ({', '.join(sorted(names))})")
        check_run(predictor, data)
        log.info("evaluating %s (%s, %s, seed %s)", folder, run.family, run.experiment or run.model, run.seed)
        run.evaluation = evaluate_run(predictor, data, split, limit, n_images)
        run.metrics = run_metrics(run.evaluation)
        photo_hw = tuple(run.evaluation.samples[0]["image"].shape[:2]) if run.evaluation.samples else (416, 312)
        gflops, _ = count_flops(predictor, photo_hw)
        params = sum(p.numel() for p in predictor.model.parameters()) if hasattr(predictor.model, "parameters") else None
        run.costs.update(params=params, gflops=gflops,
                         ms_per_photo=1000.0 * time_predict(predictor, 1, photo_hw, speed_seconds, speed_iters))
    name_recipes(runs)
    ok = [r for r in runs if r.status == "ok"]
    if not ok:
        raise UserError("no run of the study could be evaluated (every one failed)")
    images = ok[0].evaluation.images
    for r in ok[1:]:
        if r.evaluation.images != images:
            raise UserError(f"run '{r.folder}' was not evaluated on the same images as '{ok[0].folder}'")
    tables = {f: recipe_table(runs, f) for f in FAMILIES}
    noise = {f: {m: seed_noise(tables[f], m) for m in METRICS} for f in FAMILIES}
    effects = {f: [e for m in (PRIMARY[f], CROSS[f]) for e in factor_effects(runs, f, m)] for f in FAMILIES}
    best = head_to_head(tables)
    study = {"tables": tables, "seed_noise": noise, "effects": effects, "best": best,
             "verdict": verdict(best, noise), "images": images, "skipped": ok[0].evaluation.skipped}
    by_family = {f: [r for r in runs if r.family == f] for f in FAMILIES}
    by_family["failed"] = [r for r in runs if r.status != "ok"]
    return study, by_family, data
