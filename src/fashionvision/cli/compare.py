"""fashion-compare detector=RUN_OR_CKPT segmenter=RUN_OR_CKPT [dataset.path=DIR] [split=test] [n_images=8].

Writes report.md, report.json, grid.png and per_class.png (see :mod:`fashionvision.compare.evaluation`).
"""

from __future__ import annotations

from pathlib import Path

from fashionvision.cli._hydra import run_dir, run_hydra


def compare(cfg: dict) -> int:
    from fashionvision.compare.report import run_compare
    from fashionvision.engine.device import resolve_device

    speed = cfg.get("speed") or {}
    output = Path(cfg.get("output") or run_dir())
    limit = cfg.get("limit_images")
    report = run_compare(str(cfg["detector"]), str(cfg["segmenter"]), (cfg.get("dataset") or {}).get("path"), str(cfg.get("split", "test")),
                         output, n_images=int(cfg.get("n_images", 8)), limit=int(limit) if limit else None,
                         device=str(resolve_device(cfg.get("device", "auto"), key="device")),
                         speed_batch_sizes=tuple(int(b) for b in speed.get("batch_sizes", (1, 32))),
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
