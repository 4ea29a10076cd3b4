"""Download Fashionpedia (the study's dataset) into the layout ``fashion-convert fashionpedia`` reads.

The public release is four files: ``instances_attributes_train2020.json`` and
``instances_attributes_val2020.json`` (annotations), ``train2020.zip`` (images, unpacked into
``train/``) and ``val_test2020.zip`` (unpacked into ``test/``); several GB in all. Each item is
fetched resumably (:mod:`fashionvision.convert.download_resume`, ``.part`` files under
``<dest>/.download/``) and installed on its own by one rename, so an interrupted run leaves
finished items in place, resumes the one it was on, and never shows a half-unpacked folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fashionvision.convert.download import _safe_extract, _strip_top_folder
from fashionvision.convert.download_resume import RemoteFile, fetch_resumable
from fashionvision.errors import UserError

log = logging.getLogger(__name__)

DOWNLOAD_DIR = ".download"


@dataclass
class Item:
    """One published file: ``unpack_to`` names the folder a zip becomes (None: kept as is)."""

    file: str
    url: str
    unpack_to: str | None = None
    size: int | None = None
    sha256: str | None = None

    def installed(self, dest: Path) -> bool:
        return (dest / self.unpack_to).is_dir() if self.unpack_to else (dest / self.file).is_file()


def missing_items(dest: str | os.PathLike, items: list[Item]) -> list[Item]:
    """The items not yet installed in ``dest``."""
    return [item for item in items if not item.installed(Path(dest))]


def _unpack(archive: Path, dest: Path, folder: str) -> None:
    """Unzip ``archive`` beside ``dest/folder`` and rename the result into place."""
    unpack = Path(tempfile.mkdtemp(dir=dest, prefix=f".{folder}.", suffix=".unpack"))
    try:
        _safe_extract(archive, unpack)
        root = _strip_top_folder(unpack)
        if not any(root.iterdir()):
            raise UserError(f"archive {archive.name} is empty")
        os.replace(root, dest / folder)
    finally:
        shutil.rmtree(unpack, ignore_errors=True)


def download_fashionpedia(dest: str | os.PathLike, items: list[Item], timeout: float = 60.0,
                          progress: bool = True, retries: int = 3) -> list[str]:
    """Fetch and install every missing item into ``dest``; return the names installed now.

    Raises:
        UserError: a download that fails after its retries (its ``.part`` is kept for the next
            run), a size or checksum mismatch, or a bad archive.
    """
    dest = Path(dest).absolute()
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / DOWNLOAD_DIR
    done = []
    for item in missing_items(dest, items):
        if item.unpack_to and (dest / item.unpack_to).exists():
            raise UserError(f"'{dest / item.unpack_to}' exists but is not a folder; move it away")
        target = staging / item.file if item.unpack_to else dest / item.file
        if item.unpack_to and target.is_file():
            log.info("%s already downloaded; unpacking it", target)
        else:
            log.info("downloading %s", item.url)
            fetch_resumable(RemoteFile(item.url, target, item.size, item.sha256), timeout=timeout,
                            progress=progress, retries=retries)
        if item.unpack_to:
            try:
                _unpack(target, dest, item.unpack_to)
            except UserError as exc:  # kept, it would be refused again on every run
                target.unlink(missing_ok=True)
                raise UserError(f"{exc}; the downloaded {item.file} was removed (the next run downloads it "
                                "again)") from exc
            target.unlink()
        done.append(item.unpack_to + "/" if item.unpack_to else item.file)
    if staging.is_dir() and not any(staging.iterdir()):
        staging.rmdir()
    return done


def items_from_config(files: dict) -> list[Item]:
    """``sources.fashionpedia.files`` (name -> {file, url, unpack_to, size, sha256}) as items."""
    items = []
    for name, spec in files.items():
        if not spec.get("url"):
            raise UserError(f"sources.fashionpedia.files.{name}.url is not set")
        items.append(Item(file=str(spec["file"]), url=str(spec["url"]), unpack_to=spec.get("unpack_to"),
                          size=int(spec["size"]) if spec.get("size") else None, sha256=spec.get("sha256")))
    return items
