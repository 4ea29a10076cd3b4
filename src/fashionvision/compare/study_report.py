"""The study report (``fashion-compare runs=DIR``): ``report.md``, ``report.json`` and figures.

Sections: setup (the image list every run was scored on), the runs, a table per family (mean
and spread over seeds of both yardsticks, the costs), the factor effects against the seed
spread, the best detector against the best segmenter, the verdict, and the figures:
``recipes.png`` (each recipe's own metric with error bars and its seeds as dots),
``per_class.png`` (per-class AP50 and IoU of the two best runs) and ``grid.png`` (the image
grid of the two-run compare, for the same two runs). The numbers come from
:mod:`fashionvision.compare.study`; the two figures of the two-run compare are reused as they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from fashionvision.compare.evaluation import combine
from fashionvision.compare.report import draw_grid, per_class_rows, plot_per_class, wins
from fashionvision.compare.study import COSTS, FAMILIES, METRICS, PRIMARY, Run, evaluate_study
from fashionvision.data.annotations import atomic_write_text

log = logging.getLogger("fashionvision")

SECTIONS = ("Setup", "Runs", "Detectors", "Segmenters", "Factor effects", "Best detector against best segmenter",
            "Verdict", "Figures")
FIGURES = {"recipes": "recipes.png", "per_class": "per_class.png", "grid": "grid.png"}
CROSS_NOTE = {"detector": {"miou_standard", "miou_gt", "pixel_acc"}, "segmenter": {"map50", "map"}}


def _stat(stat: dict, digits: int = 3) -> str:
    if stat["mean"] is None:
        return "-"
    text = f"{stat['mean']:,.{digits}f}"
    return text + (f" ± {stat['sd']:,.{digits}f}" if stat["sd"] is not None else "")


def _cost(key: str, stat: dict) -> str:
    digits = {"params": 0, "gflops": 2, "train_seconds": 0, "steps": 0, "ms_per_photo": 1}[key]
    return _stat(stat, digits)


def family_table(family: str, rows: list[dict]) -> list[str]:
    """Markdown rows of one family's recipe table; converted yardsticks are marked."""
    arrow = "boxes->masks" if family == "detector" else "masks->boxes"
    heads = [f"{label} ({arrow})" if key in CROSS_NOTE[family] else label for key, label in METRICS.items()]
    lines = ["| recipe | seeds | " + " | ".join(heads) + " | " + " | ".join(COSTS.values()) + " |",
             "|" + "---|" * (2 + len(METRICS) + len(COSTS))]
    for row in rows:
        seeds = ",".join(str(s) for s in row["seeds"])
        lines.append(f"| {row['recipe']} | {seeds} | " + " | ".join(_stat(row["metrics"][k]) for k in METRICS) + " | "
                     + " | ".join(_cost(k, row["costs"][k]) for k in COSTS) + " |")
    return lines


def render_markdown(report: dict) -> str:
    s, study = report["setup"], report["study"]
    lines = ["# The study", "", "## Setup", "",
             f"- dataset: `{s['dataset']}` ({s['dataset_name']}), split `{s['split']}`, {s['num_images']} images "
             f"(list sha1 `{s['image_list_sha1']}`; every run saw exactly these)",
             f"- runs: {s['num_runs']} ({s['num_failed']} failed), from {', '.join(f'`{p}`' for p in s['paths'])}",
             "- mIoU: over the classes present in the ground truth or the predictions; mIoU (GT classes): "
             "over those of the ground truth only",
             "- mean ± standard deviation over the seeds of each recipe; the converted yardstick of a family "
             "(the detector's boxes painted as masks, the segmenter's masks as boxes) is marked", "",
             "## Runs", "", "| folder | family | recipe | seed | status | own metric |", "|---|---|---|---|---|---|"]
    for r in report["runs"]:
        own = r["metrics"].get(PRIMARY[r["family"]]) if r["family"] else None
        shown = "-" if own is None else f"{METRICS[PRIMARY[r['family']]]} {own:.3f}"
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['error']}"
        lines.append(f"| `{r['folder']}` | {r['family'] or '-'} | {r['recipe']} | {r['seed']} | {status} | {shown} |")
    for family, title in zip(FAMILIES, ("Detectors", "Segmenters")):
        lines += ["", f"## {title}", ""]
        rows = study["tables"][family]
        lines += family_table(family, rows) if rows else [f"No {family} in the study."]
    lines += ["", "## Factor effects", "",
              "Each level against the first level of its factor: the mean difference over pairs of runs that differ "
              "in that factor only (same seed), ± the standard deviation of those differences; the seed spread is "
              "the pooled standard deviation over the seeds of each recipe. A difference within twice the seed "
              "spread is not a finding.", "",
              "| family | factor | level vs reference | metric | effect | pairs | seed spread | reading |",
              "|---|---|---|---|---|---|---|---|"]
    any_effect = False
    for family in FAMILIES:
        for e in study["effects"][family]:
            any_effect = True
            noise = study["seed_noise"][family][e["metric"]]
            spread = f" ± {e['spread']:.3f}" if e["spread"] is not None else ""
            reading = ("no seed spread to judge by" if noise is None else
                       "beyond the seed spread" if abs(e["effect"]) > 2 * noise else "within the seed spread")
            lines.append(f"| {family} | {e['factor']} | {e['level']} vs {e['reference']} | {METRICS[e['metric']]} | "
                         f"{e['effect']:+.3f}{spread} | {e['pairs'] if e['paired'] else 'unpaired'} | "
                         f"{'-' if noise is None else f'{noise:.3f}'} | {reading} |")
    if not any_effect:
        lines.append("| - | no factor varied within a family | | | | | | |")
    lines += ["", "## Best detector against best segmenter", ""]
    best = study["best"]
    if best:
        d, g = best["detector"], best["segmenter"]
        lines += [f"| | detector: {d['recipe']} | segmenter: {g['recipe']} |", "|---|---|---|",
                  f"| mAP50 (boxes) | {_stat(d['map50'])} | {_stat(g['map50'])} (masks->boxes) |",
                  f"| mIoU (masks) | {_stat(d['miou_standard'])} (boxes->masks) | {_stat(g['miou_standard'])} |"]
        for key, label in COSTS.items():
            lines.append(f"| {label} | {_cost(key, {'mean': d[key], 'sd': None})} | "
                         f"{_cost(key, {'mean': g[key], 'sd': None})} |")
    else:
        lines.append("The study needs a detector and a segmenter for this section.")
    lines += ["", "## Verdict", "", study["verdict"], "", "## Figures", ""]
    for name, file in report["figures"].items():
        lines += [f"![{name}]({file})", ""]
    if "grid" in report["figures"]:
        lines.append("Grid columns: original, ground truth, the best detector's boxes, the best segmenter's mask.")
    return "\n".join(lines) + "\n"


def plot_recipes(tables: dict, runs: list[Run], path: Path) -> Path:
    """Each family's own metric per recipe: the mean over seeds with ± one standard deviation, seeds as dots."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    for ax, family in zip(fig.subplots(1, 2), FAMILIES):
        rows, metric = tables[family], PRIMARY[family]
        x = np.arange(len(rows))
        means = [r["metrics"][metric]["mean"] or 0.0 for r in rows]
        errors = [r["metrics"][metric]["sd"] or 0.0 for r in rows]
        ax.bar(x, means, yerr=errors, capsize=4, color="tab:orange" if family == "detector" else "tab:blue", alpha=0.8)
        for i, row in enumerate(rows):
            values = [r.metrics[metric] for r in runs if r.family == family and r.recipe == row["recipe"]
                      and r.status == "ok"]
            ax.scatter([i] * len(values), values, color="black", s=12, zorder=3)
        ax.set_xticks(x, [r["recipe"] for r in rows], rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{family}s: {METRICS[metric]} (mean ± sd over seeds)")
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _best_run(runs: list[Run], recipe: str, family: str) -> Run:
    members = [r for r in runs if r.family == family and r.recipe == recipe and r.status == "ok"]
    return max(members, key=lambda r: r.metrics[PRIMARY[family]])


def run_study(paths: list[str | Path], dataset: str | None, split: str, output: str | Path, n_images: int = 8,
              limit: int | None = None, device: str = "cpu", factors: dict[str, str] | None = None,
              speed_seconds: float = 0.5, speed_iters: int = 10) -> dict:
    """Evaluate every run of the study on the same images and write the report folder."""
    study, by_family, data = evaluate_study(paths, dataset, split, limit, device, n_images, factors,
                                            speed_seconds, speed_iters, output=Path(output))
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    runs = [r for f in (*FAMILIES, "failed") for r in by_family[f]]
    figures = {"recipes": FIGURES["recipes"]}
    plot_recipes(study["tables"], runs, output / FIGURES["recipes"])
    pair = None
    if study["best"]:
        det = _best_run(runs, study["best"]["detector"]["recipe"], "detector")
        seg = _best_run(runs, study["best"]["segmenter"]["recipe"], "segmenter")
        ev = combine(det.evaluation, seg.evaluation)
        rows = per_class_rows(ev, data.classes, data.mask_classes)
        plot_per_class(rows, output / FIGURES["per_class"])
        draw_grid(ev, data.classes, output / FIGURES["grid"], data.mask_classes)
        figures.update(per_class=FIGURES["per_class"], grid=FIGURES["grid"])
        pair = {"detector": str(det.folder), "segmenter": str(seg.folder), "per_class": rows, "wins": wins(rows)}
    images = study.pop("images")
    report = {
        "sections": list(SECTIONS),
        "setup": {"dataset": str(data.folder), "dataset_name": data.name, "split": split, "num_images": len(images),
                  "images": images, "image_list_sha1": hashlib.sha1("\n".join(images).encode()).hexdigest()[:12],
                  "skipped": study.pop("skipped"), "paths": [str(p) for p in paths], "num_runs": len(runs),
                  "num_failed": len(by_family["failed"])},
        "runs": [r.summary() for r in runs],
        "study": study,
        "best_pair": pair,
        "figures": figures,
    }
    atomic_write_text(output / "report.json", json.dumps(report, indent=1, default=float) + "\n")
    atomic_write_text(output / "report.md", render_markdown(report))
    log.info("study report written to %s", output)
    return report
