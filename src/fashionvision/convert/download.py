"""Download the public Clothing Co-Parsing repository and install it where converters look.

The sequence is built so that nothing half-done ever looks like a dataset:

1. stream the archive to a temporary file in ``dest``'s parent (hashing as it goes) and
   check its length against ``Content-Length`` and, when configured, its SHA-256;
2. unpack into a temporary folder next to it, refusing members that would escape it;
3. strip the archive's single top-level folder (``clothing-co-parsing-master/``) and check
   the CCP layout (:func:`check_ccp_layout`);
4. rename the checked folder to ``dest`` in one step (same filesystem, so atomic).

Every temporary file and folder is removed on success and on failure; ``dest`` is created
only by the final rename.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fashionvision.errors import UserError

log = logging.getLogger(__name__)

CCP_URL = "https://github.com/bearpaw/clothing-co-parsing/archive/refs/heads/master.zip"
CHUNK = 1 << 20


@dataclass
class CcpLayout:
    """Counts found by :func:`check_ccp_layout`."""

    photos: int
    pixel_level: int
    image_level: int
    labels: int


def check_ccp_layout(folder: str | os.PathLike) -> CcpLayout:
    """Check that ``folder`` holds CCP in its original layout; raise UserError saying what is wrong.

    Checks: ``label_list.mat`` readable with a non-empty ``label_list``; at least one photo,
    one pixel-level and one image-level annotation; every pixel-level ``.mat`` has its photo.
    """
    import scipy.io

    folder = Path(folder)
    label_file = folder / "label_list.mat"
    if not label_file.is_file():
        raise UserError(f"'{folder}' is not a CCP dataset: label_list.mat is missing")
    try:
        labels = scipy.io.loadmat(label_file)["label_list"].size
    except Exception as exc:  # scipy raises several types for corrupt files
        raise UserError(f"'{label_file}' is unreadable: {exc}") from exc
    photos = {p.stem for p in (folder / "photos").glob("*.jpg")}
    pixel = sorted(p.stem for p in (folder / "annotations" / "pixel-level").glob("*.mat"))
    image = list((folder / "annotations" / "image-level").glob("*.mat"))
    counts = {"label names": labels, "photos": len(photos), "pixel-level annotations": len(pixel),
              "image-level annotations": len(image)}
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        raise UserError(f"'{folder}' is not a complete CCP dataset: no {', no '.join(empty)}")
    orphans = [stem for stem in pixel if stem not in photos]
    if orphans:
        raise UserError(
            f"'{folder}' is not a complete CCP dataset: {len(orphans)} pixel-level annotation(s) "
            f"without a photo (first: {orphans[0]}.mat)"
        )
    return CcpLayout(len(photos), len(pixel), len(image), labels)


def is_ccp(folder: str | os.PathLike) -> bool:
    """True when ``folder`` passes :func:`check_ccp_layout`."""
    try:
        check_ccp_layout(folder)
        return True
    except UserError:
        return False


def _fetch(url: str, target: Path, timeout: float, progress: bool) -> str:
    """Stream ``url`` into ``target``; return the SHA-256 hex digest. Raises UserError."""
    from tqdm import tqdm

    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with open(target, "wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                                  desc="download", disable=not progress) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise UserError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise UserError(f"cannot reach {url} ({exc.reason}); check the network or the address") from exc
    except (socket.timeout, TimeoutError) as exc:
        raise UserError(f"download of {url} timed out after {timeout} s") from exc
    except (OSError, http.client.HTTPException) as exc:  # reset or short read mid-transfer, disk full
        raise UserError(f"download of {url} failed after {received} bytes: {exc}") from exc
    # http.client returns a short body without complaint when the server closes early
    if total is not None and received != total:
        raise UserError(f"download of {url} is incomplete: got {received} of {total} bytes")
    return digest.hexdigest()


#: an archive that unpacks to more than this many times its packed size (and above MIN_BOMB_BYTES)
#: is refused: photos and JSON compress 1-10x, a decompression bomb 1000x
MAX_UNPACK_RATIO = 200
MIN_BOMB_BYTES = 10_000_000


def _check_unpacked_size(archive: Path, infos: list[zipfile.ZipInfo], folder: Path) -> None:
    """Refuse an archive whose members unpack to more than the disk holds, or far more than it weighs.

    ``zipfile`` stops each member at its declared size, so the declared sizes bound the whole.
    """
    unpacked = sum(info.file_size for info in infos)
    packed = max(1, sum(info.compress_size for info in infos))
    probe = folder if folder.exists() else folder.parent
    free = shutil.disk_usage(probe).free
    if unpacked > free:
        raise UserError(f"archive {archive.name} unpacks to {unpacked / 1e9:.2f} GB, {free / 1e9:.2f} GB are free "
                        f"in {probe}; free some space")
    if unpacked > MIN_BOMB_BYTES and unpacked / packed > MAX_UNPACK_RATIO:
        raise UserError(f"archive {archive.name} unpacks to {unpacked} bytes from {packed} ({unpacked // packed}x, "
                        f"more than {MAX_UNPACK_RATIO}x): a decompression bomb, not a dataset; refusing it")


def _safe_extract(archive: Path, folder: Path) -> None:
    """Unzip ``archive`` into ``folder``, refusing absolute or ``..`` member names and bombs."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                parts = PurePosixPath(name.replace("\\", "/")).parts
                if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise UserError(f"archive {archive.name} holds an unsafe path '{name}'; refusing it")
            _check_unpacked_size(archive, zf.infolist(), folder)
            zf.extractall(folder)
    except zipfile.BadZipFile as exc:
        raise UserError(f"downloaded file is not a valid zip archive ({exc})") from exc


def _strip_top_folder(folder: Path) -> Path:
    """The archive's single top-level folder if it has exactly one entry that is a folder."""
    entries = [p for p in folder.iterdir() if p.name != "__MACOSX"]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder


def download_ccp(
    dest: str | os.PathLike, url: str = CCP_URL, sha256: str | None = None, timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download, check and install CCP into ``dest`` (see module docstring). Returns ``dest``.

    Raises:
        UserError: network/HTTP failure, truncated download, checksum mismatch, bad archive or
            layout, or ``dest`` already exists and is not an empty folder.
    """
    dest = Path(dest).absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(f"'{dest}' already exists and is not a CCP dataset; move it away or choose another dest")
    dest.parent.mkdir(parents=True, exist_ok=True)
    from fashionvision.convert.staging import clean_stale_staging, staging_prefix

    clean_stale_staging(dest.parent, dest.name)  # what SIGKILLed earlier downloads left behind
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=staging_prefix(dest.name, "dl"), suffix=".zip.part")
    os.close(fd)
    archive = Path(tmp_name)
    unpack = Path(tempfile.mkdtemp(dir=dest.parent, prefix=staging_prefix(dest.name, "dl"), suffix=".unpack"))
    try:
        log.info("downloading %s", url)
        digest = _fetch(url, archive, timeout, progress)
        if sha256 and digest.lower() != sha256.lower():
            raise UserError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {digest}")
        _safe_extract(archive, unpack)
        archive.unlink()
        root = _strip_top_folder(unpack)
        layout = check_ccp_layout(root)
        if dest.is_dir():
            dest.rmdir()  # empty (checked above); rename needs it gone
        os.replace(root, dest)
        log.info("CCP installed in %s: %s", dest, layout)
        return dest
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(unpack, ignore_errors=True)


def ensure_ccp(
    dest: str | os.PathLike, url: str = CCP_URL, sha256: str | None = None, timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Return ``dest`` if it already holds CCP, else download it there first."""
    if is_ccp(dest):
        return Path(dest)
    return download_ccp(dest, url=url, sha256=sha256, timeout=timeout, progress=progress)
