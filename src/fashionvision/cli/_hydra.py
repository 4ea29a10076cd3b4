"""The one place that knows how console scripts become Hydra apps.

Every ``fashion-*`` command is ``run_hydra("<config name>", body)``: the config folder is
resolved to an absolute path inside the installed package (so commands work from any
working directory), a leading bare word such as ``fashion-convert ccp`` becomes an override
(``converter=ccp``), and ``body`` receives the composed config as a plain ``dict``.
Library code never sees an OmegaConf object.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

log = logging.getLogger("fashionvision")


def to_plain(cfg: Any) -> dict:
    """Resolve interpolations and return a plain nested dict."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def rewrite_bare_word(argv: list[str], key: str | None) -> list[str]:
    """Turn ``cmd WORD k=v`` into ``cmd key=WORD k=v`` (Hydra rejects bare words)."""
    if key and len(argv) > 1 and "=" not in argv[1] and not argv[1].startswith("-"):
        return [argv[0], f"{key}={argv[1]}", *argv[2:]]
    return argv


def rename_args(argv: list[str], renames: dict[str, str] | None) -> list[str]:
    """``old=V`` -> ``new=V`` for each rename: ``dataset=DIR`` would otherwise be read by Hydra
    as a choice in the ``dataset`` config group."""
    if not renames:
        return argv
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        out.append(f"{renames[key]}={value}" if sep and key in renames else arg)
    return out


def run_dir() -> Path:
    """The current Hydra run folder (where every command writes what it produces)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def run_hydra(config_name: str, body: Callable[[dict], int | None], bare_word_key: str | None = None,
              renames: dict[str, str] | None = None) -> None:
    """Run ``body(cfg)`` as a Hydra app; exit with its return code (0 when None).

    Errors that are the user's (``UserError``) print one clear line instead of a traceback, and
    so do a run folder that cannot be created, a refused write and a setting of the wrong type
    (:mod:`fashionvision.cli._failures`).
    """
    import hydra
    from omegaconf import DictConfig

    from fashionvision.cli import _failures
    from fashionvision.errors import UserError

    sys.argv = rename_args(rewrite_bare_word(sys.argv, bare_word_key), renames)
    problem = _failures.run_dir_problem(sys.argv)
    if problem and not _failures.debug():
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    if not any(a.startswith("hydra.job.name=") for a in sys.argv):
        # run folders are named after the command (outputs/train/..., outputs/eval/...)
        sys.argv.append(f"hydra.job.name={config_name}")
    status = {"code": 0}

    @hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")
    def _app(cfg: DictConfig) -> None:
        try:
            status["code"] = int(body(to_plain(cfg)) or 0)
        except UserError as exc:
            log.error("%s", exc)
            print(f"error: {exc}", file=sys.stderr)
            status["code"] = 2
        except (OSError, ValueError, TypeError) as exc:
            message = (_failures.os_error_message(exc) or _failures.value_error_message(exc, sys.argv[1:])
                       if not _failures.debug() else None)
            if message is None:
                raise
            log.error("%s", message)
            print(f"error: {message}", file=sys.stderr)
            status["code"] = 2

    _app()
    sys.exit(status["code"])


def compose(config_name: str, overrides: list[str] | None = None) -> dict:
    """Compose a config without running an app (tests, notebooks); returns a plain dict.

    ``hydra.runtime`` values are not available here; paths that depend on the run folder
    must be passed explicitly (``output=...``).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=overrides or [])
        container = OmegaConf.to_container(cfg, resolve=False)
        container.pop("hydra", None)
        return OmegaConf.to_container(OmegaConf.create(container), resolve=True)  # type: ignore[return-value]


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
