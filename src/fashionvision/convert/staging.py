"""Names of temporary staging folders, and cleaning the ones interrupted runs left.

Conversions build into ``.<name>.tmp-<host>-<pid>-XXXXXXXX`` beside the output and downloads
into ``.<name>.dl-<host>-<pid>-XXXXXXXX.zip.part`` / ``.unpack``, then rename; an error or
Ctrl-C removes them, but SIGKILL, a power cut or an OOM kill cannot, and left alone they would
stay forever (one CCP conversion is hundreds of MB). The owner is in the name, so the next run can
tell a stale folder from one another process is still filling:

* same host and the process is gone -> stale, removed;
* another host, or a name without an owner (written before this scheme): removed only when
  untouched for :data:`STALE_AFTER_S`.

Only names that match these patterns exactly for the given ``<name>`` are ever touched.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path

log = logging.getLogger("fashionvision")

#: age after which a staging folder whose owner cannot be checked counts as abandoned
STALE_AFTER_S = 24 * 3600


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:16] or "host"


def staging_prefix(name: str, kind: str = "tmp") -> str:
    """``.<name>.<kind>-<host>-<pid>-`` for ``tempfile.mkdtemp(prefix=...)``/``mkstemp``."""
    return f".{name}.{kind}-{_host()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _is_stale(path: Path, host: str | None, pid: int | None, now: float) -> bool:
    if host == _host() and pid is not None:
        return pid != os.getpid() and not _pid_alive(pid)
    try:
        age = now - path.lstat().st_mtime
    except OSError:
        return False
    return age > STALE_AFTER_S


def clean_stale_staging(parent: str | os.PathLike, name: str) -> list[Path]:
    """Remove the abandoned staging folders/files of ``name`` in ``parent``; return what was removed."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    owned = re.compile(rf"^\.{re.escape(name)}\.(tmp|old|dl)-([A-Za-z0-9]+)-(\d+)-[A-Za-z0-9_]+(\.zip\.part|\.unpack)?$")
    legacy = re.compile(rf"^\.{re.escape(name)}\.(tmp-|old-)[A-Za-z0-9_]{{8}}$"
                        rf"|^\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}(\.zip\.part|\.unpack)$")
    removed, now = [], time.time()
    for entry in parent.iterdir():
        match = owned.match(entry.name)
        if match:
            stale = _is_stale(entry, match.group(2), int(match.group(3)), now)
        elif legacy.match(entry.name):
            stale = _is_stale(entry, None, None, now)
        else:
            continue
        if not stale:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        if not entry.exists():
            log.warning("removed %s, left behind by an interrupted conversion or download", entry)
            removed.append(entry)
    return removed
