"""fashion-convert <ccp|deepfashion|fashionpedia> source=DIR output=DIR [options].

Composes ``configs/convert.yaml``, picks the converter from the registry and hands it plain
arguments: the shared ones (seed, split, workers, progress, limit) and the converter's own
section (``ccp.*``, ``deepfashion.*``, ``fashionpedia.*``). The output folder is ``output=``,
not the Hydra run folder.
"""

from __future__ import annotations

import inspect

from fashionvision.cli._hydra import run_hydra
from fashionvision.errors import UserError


def convert(cfg: dict) -> int:
    """Run the chosen converter and print its summary."""
    from fashionvision.convert import get_converter

    name = str(cfg["converter"])
    function = get_converter(name)
    options = dict(cfg.get(name) or {})
    accepted = set(inspect.signature(function).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise UserError(f"unknown {name} option(s) {unknown}; valid: {sorted(accepted - {'source', 'output'})}")
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
