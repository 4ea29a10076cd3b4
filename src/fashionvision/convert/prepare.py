"""The dataset a training run needs, converted (and for CCP downloaded) on its first run."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fashionvision.errors import UserError

log = logging.getLogger("fashionvision")


def ensure_dataset(cfg: dict) -> bool:
    """Convert (and for CCP download) the dataset when ``dataset.path`` is not a converted folder.

    Returns True when it converted (the time it took is not charged to ``trainer.max_time``).
    """
    from fashionvision.data.converted import dataset_ready

    dataset = cfg["dataset"]
    path = Path(dataset["path"])
    if dataset_ready(path):
        return False
    name = dataset.get("name", "?")
    how = f"`fashion-convert {name} source={dataset.get('source')} output={path}`"
    if not cfg.get("convert_if_missing", False):
        raise UserError(f"dataset.path='{path}' is not a converted dataset (no train.txt); run {how} "
                        f"or pass convert_if_missing=true")
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise UserError(f"dataset.path='{path}' is not converted yet; under torchrun convert it first with {how}")
    # a typo in dataset.path must not become a fresh download and conversion in a new folder:
    # automatic conversion (and download) only into the config's default folders, where the
    # dataset configs and experiments put them (data/converted/ccp, data/converted/ccp-416, ...)
    converted_dir = Path(str(cfg.get("converted_dir", "data/converted")))
    if path.absolute().parent != converted_dir.absolute():
        raise UserError(f"dataset.path='{path}' is not a converted dataset (no train.txt), and automatic "
                        f"conversion only writes to the default folder '{converted_dir}'; check the path, or "
                        f"convert there deliberately with {how}")
    source = Path(dataset.get("source") or "")
    data_dir = Path(str(cfg.get("data_dir", "data")))
    if name == "ccp" and not source.is_dir() and source.absolute().parent != data_dir.absolute():
        raise UserError(f"dataset.source='{source}' does not exist, and CCP is downloaded automatically only "
                        f"into the default folder '{data_dir}'; check the path or run `fashion-download ccp`")
    if name == "ccp" and not source.is_dir():
        from fashionvision.convert.download import ensure_ccp

        log.info("CCP not found at %s: downloading it", source)
        ensure_ccp(source)
    if not source.is_dir():
        raise UserError(f"dataset '{name}' is neither converted at '{path}' nor present at dataset.source="
                        f"'{source}'; download it there (see data/README.md) or set dataset.path")
    from fashionvision.convert import get_converter

    log.info("converting %s from %s into %s (first run only)", name, source, path)
    summary = get_converter(name)(source, path)
    for note in getattr(summary, "notes", []):
        if note.startswith("warning:"):
            log.warning("%s", note.removeprefix("warning: "))
    return True
