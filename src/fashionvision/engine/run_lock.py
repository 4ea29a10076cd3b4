"""One trainer per run folder: a second trainer into the same folder is refused.

Without it, two ``fashion-train ... trainer.resume=auto`` into the same folder would both exit 0
with their checkpoints mixed (``last.pt`` from one, ``last.prev.pt`` from the other) and an
interleaved ``train.log``. The trainer holds an exclusive ``flock`` on ``<run>/.lock``
while it runs; a second one is refused in one line naming the first's PID.

``flock`` rather than a PID file: the kernel drops the lock when its process ends however it
ends (SIGKILL, OOM kill, power cut), so a crashed run never leaves a lock that blocks the
next one; the file left behind is just a name. Holding the lock also proves that the
temporary files in the folder are an interrupted run's leftovers, so they are removed then
(nothing else would ever remove a ``.last.pt.tmp-PID``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sys
from pathlib import Path
from typing import Iterator

from fashionvision.errors import UserError

log = logging.getLogger("fashionvision.engine")

LOCK_NAME = ".lock"
#: temporary names the trainer and the output guard write (``.last.pt.tmp-123``,
#: ``.metrics.json.tmp``, ``.last.pt.k2j4l1.tmp.pt``, ``.results.tmp.png``)
_TEMPORARY = re.compile(r"^\..+\.tmp(-\d+)?(\.[A-Za-z0-9]+)?$")

_held: dict[Path, list] = {}  # folder -> [fd, count]: this process may take its own lock again


def _owner(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return "unknown"
    return text.split()[0] if text else "unknown"


def acquire(folder: str | os.PathLike) -> Path:
    """Take the run folder's lock (creating the folder), or a :class:`UserError` naming its holder."""
    folder = Path(folder)
    key = folder.resolve()
    if int(os.environ.get("RANK", 0)) > 0:
        return key  # a torchrun job's other ranks share rank 0's folder (and its lock)
    if key in _held:
        _held[key][1] += 1
        return key
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise UserError(f"cannot lock the run folder '{folder}' ({path}: {exc.strerror}); "
                        "is the lock file a symbolic link, or the folder read-only?") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _owner(fd)
        os.close(fd)
        raise UserError(f"run folder '{folder}' is in use by another fashion-train (PID {owner}); wait for it "
                        f"to finish or stop it, or train in another folder (hydra.run.dir=DIR)") from None
    except OSError as exc:
        os.close(fd)
        raise UserError(f"cannot lock the run folder '{folder}' ({exc.strerror})") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {os.uname().nodename}\n".encode(), 0)
    _held[key] = [fd, 1]
    remove_stale_temporaries(folder)
    return key


def release(folder: str | os.PathLike) -> None:
    """Give back one :func:`acquire` of ``folder``; the last one unlocks it."""
    key = Path(folder).resolve()
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _held[key]
        os.close(entry[0])  # closing the descriptor drops the flock


@contextlib.contextmanager
def hold_run_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """``with hold_run_folder(run): train()``: the run folder is this process's while the block runs."""
    key = acquire(folder)
    try:
        yield key
    finally:
        release(key)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove temporary files left in ``folder`` and its ``checkpoints/`` by an interrupted run.

    Only called with the folder's lock held: no other trainer can be writing them.
    """
    removed = []
    for place in (Path(folder), Path(folder) / "checkpoints"):
        if not place.is_dir():
            continue
        for entry in place.iterdir():
            if _TEMPORARY.match(entry.name) and entry.is_file() and not entry.is_symlink():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    if removed:
        log.warning("removed %d temporary file(s) left by an interrupted run: %s", len(removed),
                    ", ".join(p.name for p in removed))
    return removed


@contextlib.contextmanager
def hold_given_run_folder(argv: list[str]) -> Iterator[None]:
    """Hold the lock of an existing ``hydra.run.dir=DIR`` before Hydra writes ``.hydra/`` into it.

    The trainer takes the lock again (counted) for the folder Hydra settles on; this earlier
    hold keeps a refused second run from replacing the first one's ``.hydra/config.yaml``.
    Runs before Hydra, so a refusal is printed here as the commands print theirs: one
    ``error:`` line, exit code 2.
    """
    given = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    if not (given and "${" not in given[-1] and Path(given[-1]).is_dir()):
        yield
        return
    try:
        key = acquire(given[-1])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        yield
    finally:
        release(key)
