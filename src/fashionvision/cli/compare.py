"""fashion-compare detector=RUN_OR_CKPT segmenter=RUN_OR_CKPT | runs=DIR [dataset.path=DIR] [split=test] [n_images=8].

Two runs: writes report.md, report.json, grid.png and per_class.png (see
:mod:`fashionvision.compare.report`). A study (``runs=`` a ``fashion-train -m`` folder, a run
folder or a list ``runs=[A,B,...]``): every run on the same images, a table per family, the
factor effects, the best of each family head to head, a verdict, recipes.png, per_class.png
and grid.png (see :mod:`fashionvision.compare.study_report`).
"""

from __future__ import annotations

from pathlib import Path

from fashionvision.cli._hydra import run_dir, run_hydra
from fashionvision.errors import UserError


def _study(cfg: dict, output: Path, device: str, limit: int | None) -> int:
    from fashionvision.compare.study import METRICS, PRIMARY
    from fashionvision.compare.study_report import run_study

    runs = cfg["runs"]
    paths = [str(p) for p in runs] if isinstance(runs, (list, tuple)) else [str(runs)]
    speed = cfg.get("speed") or {}
    report = run_study(paths, (cfg.get("dataset") or {}).get("path"), str(cfg.get("split", "test")), output,
                       n_images=int(cfg.get("n_images", 8)), limit=limit, device=device,
                       factors=dict(cfg.get("factors") or {}), speed_seconds=float(speed.get("min_seconds", 1.0)),
                       speed_iters=int(speed.get("max_iters", 20)))
    setup, study = report["setup"], report["study"]
    print(f"study of {setup['num_runs']} runs ({setup['num_failed']} failed) on {setup['num_images']} images "
          f"of split '{setup['split']}':")
    for family, rows in study["tables"].items():
        metric = PRIMARY[family]
        for row in rows:
            stat = row["metrics"][metric]
            spread = f" ± {stat['sd']:.3f}" if stat["sd"] is not None else ""
            print(f"  {family:9s} {row['recipe']:24s} {METRICS[metric]} {stat['mean']:.3f}{spread}  (seeds {row['seeds']})")
    print(study["verdict"])
    print(f"report: {output / 'report.md'}")
    return 0


def compare(cfg: dict) -> int:
    from fashionvision.compare.report import run_compare
    from fashionvision.engine.device import resolve_device

    speed = cfg.get("speed") or {}
    output = Path(cfg.get("output") or run_dir())
    limit = cfg.get("limit_images")
    limit = int(limit) if limit else None
    device = str(resolve_device(cfg.get("device", "auto"), key="device"))
    if cfg.get("runs"):
        if cfg.get("detector") or cfg.get("segmenter"):
            raise UserError("give either runs=DIR (a study) or detector=RUN segmenter=RUN, not both")
        return _study(cfg, output, device, limit)
    if not cfg.get("detector") or not cfg.get("segmenter"):
        raise UserError("give detector=RUN segmenter=RUN (two runs), or runs=DIR (every run of a study: "
                        "a fashion-train -m folder or a list runs=[A,B])")
    report = run_compare(str(cfg["detector"]), str(cfg["segmenter"]), (cfg.get("dataset") or {}).get("path"),
                         str(cfg.get("split", "test")), output, n_images=int(cfg.get("n_images", 8)), limit=limit,
                         device=device, speed_batch_sizes=tuple(int(b) for b in speed.get("batch_sizes", (1, 32))),
                         speed_seconds=float(speed.get("min_seconds", 1.0)),
                         speed_iters=int(speed.get("max_iters", 20)))
    det, seg = report["detection"], report["segmentation"]
    print(f"compared on {report['setup']['num_images']} images of split '{report['setup']['split']}':")
    print(f"  mAP50  detector {det['detector']['map50']:.3f}  segmenter->boxes {det['segmenter']['map50']:.3f}")
    print(f"  mIoU   segmenter {seg['segmenter']['miou']:.3f}  detector->masks {seg['detector']['miou']:.3f}")
    print(f"report: {output / 'report.md'}")
    return 0


def main() -> None:
    # `dataset=DIR` and `data=DIR` are accepted as aliases of `dataset.path=DIR`
    run_hydra("compare", compare, dataset_alias=True)


if __name__ == "__main__":
    main()
