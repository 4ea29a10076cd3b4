"""Turn the environment's and the user's faults into one-line ``error:`` messages.

Commands raise :class:`~fashionvision.errors.UserError` for what they check themselves. Two
kinds of fault reach them from below as plain Python exceptions and would otherwise end in a
traceback that helps nobody:

* the file system refusing a write (a run or output folder under a file, ``/dev/full``, a
  full disk, a read-only mount, no permission): :func:`os_error_message`;
* a setting whose value has the wrong type (``workers=abc``, ``model.image_size=big``),
  caught where a command converts it with ``int()``/``float()``: :func:`value_error_message`.

``run_hydra`` also checks the run folder before Hydra creates it (:func:`run_dir_problem`),
because Hydra's own failure there prints a stack trace. ``FASHION_DEBUG=1`` re-raises instead,
for developers who want the traceback.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

#: errno values that mean "this place cannot be written" (or read), never a bug in the code
_FS_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
              errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EFBIG, errno.ENOENT}
_CONVERSION = re.compile(r"invalid literal for int\(\)|could not convert string to float|"
                         r"(int|float)\(\) argument must be")


def os_error_message(exc: BaseException) -> str | None:
    """A one-line message for a file-system refusal, or None for other errors."""
    if not isinstance(exc, OSError) or exc.errno not in _FS_ERRNOS:
        return None
    where = f" '{exc.filename}'" if exc.filename else ""
    hint = {errno.ENOSPC: "free some space or choose another folder",
            errno.EDQUOT: "free some space or choose another folder",
            errno.ENOTDIR: "a part of the path is a file, not a folder",
            errno.EEXIST: "a file of that name is in the way",
            errno.ENOENT: "check the path"}.get(exc.errno, "choose a folder you can write")
    return f"cannot use{where}: {exc.strerror or exc} ({hint})"


def value_error_message(exc: BaseException, overrides: list[str]) -> str | None:
    """A one-line message for a setting of the wrong type, or None for other errors."""
    if not isinstance(exc, (ValueError, TypeError)) or not _CONVERSION.search(str(exc)):
        return None
    given = [a for a in overrides if "=" in a and not a.startswith("hydra.")]
    shown = f" (given: {' '.join(given)})" if given else ""
    return f"a setting has a value of the wrong type: {exc}{shown}"


def run_dir_problem(argv: list[str]) -> str | None:
    """Why the run folder named by ``hydra.run.dir=`` (default ``outputs/``) cannot be created."""
    given = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    if given and "${" in given[-1]:
        return None  # an interpolation: only Hydra can resolve it
    path = Path(given[-1] if given else "outputs")
    where = f"hydra.run.dir='{path}'" if given else f"the run folder '{path.absolute()}'"
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "is" if probe == path else f"lies under '{probe}', which is"
        return f"{where} {what} a file, not a folder; choose another hydra.run.dir"
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        return f"{where} cannot be written (no permission in '{probe}'); choose another hydra.run.dir"
    return None


def debug() -> bool:
    """Developers' switch: show tracebacks instead of one-line messages."""
    return os.environ.get("FASHION_DEBUG", "").lower() in ("1", "true", "yes")
