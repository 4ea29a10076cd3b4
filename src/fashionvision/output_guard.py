"""The one guard every command's output goes through (design rule 12).

Three checks, the same for ``fashion-convert``, ``-eval``, ``-show``, ``-predict``, ``-compare``
and the trainer's writes:

* :func:`check_output`: the output folder is not, does not contain and does not lie inside
  any input the command reads (source photos, converted folders, checkpoints, run folders);
  written there, results would replace or mix with the user's data.
* :func:`writable_target`: a file is never written through a symbolic link that is already
  there (``ln -s ~/important.txt out/0001.jpg.jpg`` must not turn ``important.txt`` into a
  JPEG), nor outside the output folder, nor over a folder, FIFO or device.
* :func:`atomic_write`: every file is written under a unique temporary name in the same
  folder, flushed, then renamed, so a reader sees the old file or the whole new one and two
  writers never share a temporary file.

Every refusal is a :class:`~fashionvision.errors.UserError`: one line, nothing written.
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from fashionvision.errors import UserError


@dataclass(frozen=True)
class Input:
    """One thing a command reads. ``what`` names it in messages ("source photo folder").

    ``subfolders_ok``: a fresh folder *below* this input may take outputs (a run folder's
    ``eval_test/``, which the peer benchmarks use); the input itself and anything holding it
    stay refused. Folders whose whole tree is read (photos, converted datasets) keep False.
    """

    path: Path
    what: str
    subfolders_ok: bool = False


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path)).resolve()


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output(output: str | os.PathLike, inputs: Iterable[Input], name: str = "output") -> None:
    """Refuse ``output`` when it is, contains or lies inside one of ``inputs``.

    Paths are compared after resolving links, so a symbolic link to the photo folder is
    the photo folder. ``name`` is the setting's name in messages (``output``, ``hydra.run.dir``).
    """
    out = _resolved(output)
    for item in inputs:
        if item.path is None:
            continue
        src = _resolved(item.path)
        if out == src:
            relation = "is"
        elif _within(src, out):
            relation = "contains"
        elif _within(out, src) and not (item.subfolders_ok and src.is_dir()):
            relation = "lies inside"
        else:
            continue
        raise UserError(f"{name} '{output}' {relation} the {item.what} '{item.path}', which this command "
                        f"reads; writing there would overwrite or mix with it; choose a folder outside it "
                        f"for {name}")


def writable_target(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """``path`` if a file may be written there, else a :class:`UserError` saying why.

    Refused: an existing symbolic link (at the file, or at any folder between ``root`` and
    it), anything that exists and is not a regular file, and a path that leaves ``root``.
    """
    path = Path(path)
    if os.path.islink(path):
        raise UserError(f"refusing to write '{path}': it is a symbolic link (to '{os.readlink(path)}'); "
                        "outputs are never written through links that are already there; remove it")
    if path.exists() and not path.is_file():  # renaming over a FIFO or device would replace it
        raise OSError(errno.EEXIST, "exists and is not a regular file", str(path))
    if root is not None:
        top = Path(os.path.abspath(root))
        here = Path(os.path.abspath(path))
        if not _within(here, top):
            raise UserError(f"refusing to write '{path}': it lies outside the output folder '{root}'")
        folder = here.parent
        while folder != top and _within(folder, top):
            if os.path.islink(folder):
                raise UserError(f"refusing to write '{path}': its folder '{folder}' is a symbolic link; "
                                "outputs are never written through links that are already there")
            folder = folder.parent
    return path


def unique_temporary(path: str | os.PathLike) -> Path:
    """A new empty file beside ``path``, ``.<name>.<random>.tmp<suffix>``, unique to this call."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object], root: str | os.PathLike | None = None,
                 mode: int = 0o666) -> Path:
    """Call ``write(tmp)`` for a unique temporary ``tmp`` beside ``path``, then rename it to ``path``.

    The target is checked first (:func:`writable_target`); the temporary keeps the suffix, so
    writers that pick a format by name (PIL, matplotlib, OpenCV) still do. ``write`` may return
    False (``cv2.imwrite``'s way of failing): that raises ``OSError``. Any failure removes the
    temporary and leaves the old file in place.
    """
    path = writable_target(path, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_temporary(path)
    try:
        if write(tmp) is False:
            raise OSError(f"could not write '{path}' (full disk or unsupported image?)")
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, mode & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, root: str | os.PathLike | None = None) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), root)


def atomic_write_text(path: str | os.PathLike, text: str, root: str | os.PathLike | None = None) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), root)
