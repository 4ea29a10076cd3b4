"""fashion-convert <converter> source=DIR output=DIR [options]; fashion-convert export format=coco|yolo ...

Composes ``configs/convert.yaml``, picks the converter from the registry and hands it plain
arguments: the shared ones (seed, split, workers, progress, limit), the converter's own section
(``ccp.*``, ``coco.*``, ``yolo.*``, ...) and, for the COCO-based converters, the top-level
``annotations=`` and ``images=``. ``export`` is the way out: ``format=coco|yolo
dataset.path=DIR`` with its ``export.*`` section. The output folder is ``output=``, not the
Hydra run folder.
"""

from __future__ import annotations

import inspect

from fashionvision.cli._hydra import run_hydra
from fashionvision.errors import UserError

TOP_LEVEL = ("annotations", "images")  # given as annotations=FILE, not coco.annotations=FILE


def _options(cfg: dict, name: str, function) -> dict:
    """The converter's section plus the top-level keys it takes; unknown keys are refused."""
    options = dict(cfg.get(name) or {})
    accepted = set(inspect.signature(function).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise UserError(f"unknown {name} option(s) {unknown}; valid: {sorted(accepted - {'source', 'output'})}")
    for key in TOP_LEVEL:
        if cfg.get(key) is None:
            continue
        if key not in accepted:
            raise UserError(f"{key}= is for the COCO-based converters (coco, modanet), not {name}")
        options[key] = cfg[key]
    return options


def export(cfg: dict) -> int:
    """Write a converted folder out as COCO JSON or ultralytics' YOLO layout."""
    from fashionvision.convert.export import export as run_export

    path = (cfg.get("dataset") or {}).get("path")
    if not path:
        raise UserError("fashion-convert export needs dataset.path=CONVERTED_DIR (and output=DIR, format=coco|yolo)")
    summary = run_export(path, cfg["output"], format=str(cfg.get("format", "coco")),
                         progress_bar=bool(cfg.get("progress", True)), **dict(cfg.get("export") or {}))
    print(summary.text())
    return 0


def convert(cfg: dict) -> int:
    """Run the chosen converter and print its summary."""
    from fashionvision.convert import get_converter

    name = str(cfg["converter"])
    if name == "export":
        return export(cfg)
    function = get_converter(name)
    options = _options(cfg, name, function)
    summary = function(
        cfg["source"],
        cfg["output"],
        seed=int(cfg.get("seed", 0)),
        split=list(cfg.get("split", (0.8, 0.1, 0.1))),
        workers=int(cfg.get("workers", 2)),
        progress_bar=bool(cfg.get("progress", True)),
        limit=cfg.get("limit"),
        **options,
    )
    print(summary.text())
    return 0


def main() -> None:
    # `fashion-convert ccp ...` -> `converter=ccp ...`
    run_hydra("convert", convert, bare_word_key="converter")


if __name__ == "__main__":
    main()
