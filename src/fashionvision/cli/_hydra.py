"""The one place that knows how console scripts become Hydra apps.

Every ``fashion-*`` command is ``run_hydra("<config name>", body)``: the config folder is
resolved to an absolute path inside the installed package (so commands work from any
working directory), a leading bare word such as ``fashion-convert ccp`` becomes an override
(``converter=ccp``), and ``body`` receives the composed config as a plain ``dict``.
Library code never sees an OmegaConf object.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

log = logging.getLogger("fashionvision")


@dataclass
class Outcome:
    """What a command's body may return instead of a bare exit code.

    ``value`` is the job's return value under ``-m``: the number a sweeper (Optuna) optimises,
    and the metric the end-of-sweep summary lists.
    """

    code: int = 0
    value: float | None = None
    metric: str | None = None
    error: str | None = None


def to_plain(cfg: Any) -> dict:
    """Resolve interpolations and return a plain nested dict."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


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


def log_error_to_file(message: str) -> None:
    """Record ``message`` in the run's log file only; the terminal gets the one ``error:`` line.

    Hydra's job logging has a console handler next to the file: logging the refusal through
    it as well printed every error twice (``[...][ERROR] - ...`` and then ``error: ...``).
    """
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger().handlers + log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def run_hydra(config_name: str, body: Callable[[dict], int | Outcome | None], bare_word_key: str | None = None,
              renames: dict[str, str] | None = None, dataset_alias: bool = False) -> None:
    """Run ``body(cfg)`` as a Hydra app; exit with its return code (0 when None).

    Hydra's flags work anywhere on the line (overrides are moved in front of them); the run
    folder is named after the command by the primary config's ``hydra.job.name``. Mistyped
    keys and group options, and errors that are the user's (``UserError``), print one clear
    ``error:`` line instead of a traceback, and so do a run folder that cannot be created, a
    refused write and a setting of the wrong type (:mod:`fashionvision.cli._failures`).

    Under ``-m`` every job's outcome is recorded in its folder and any failure is caught, so
    one failed job does not stop the sweep; the sweep ends with a summary
    (:mod:`fashionvision.cli._sweep`) and exits 1 when a job failed.
    """
    import hydra
    from omegaconf import DictConfig, OmegaConf

    from fashionvision.cli import _failures, _sweep
    from fashionvision.cli._argv import dataset_aliases, group_options, reorder, split_argv
    from fashionvision.cli._hints import groups_text, override_error
    from fashionvision.errors import UserError

    argv = reorder(sys.argv, bare_word_key)
    argv = rename_args(argv, renames)
    if dataset_alias:
        argv = dataset_aliases(argv, group_options(CONFIG_DIR, "dataset"))
    sys.argv = argv
    problem = _failures.run_dir_problem(sys.argv)
    if problem and not _failures.debug():
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    OmegaConf.register_new_resolver(
        "fv_groups", lambda *, _root_: groups_text(dict(_root_.hydra.runtime.choices), CONFIG_DIR), replace=True)
    overrides, flags = split_argv(argv[1:])
    # the check composes this command's own config: not for sweeps, other configs or Hydra's own output
    skip = {"-m", "--multirun", "--hydra-help", "--version", "-sc", "--shell-completion", "-cn", "--config-name",
            "-cp", "--config-path", "-cd", "--config-dir", "--experimental-rerun"}
    if not skip & {f.split("=", 1)[0] for f in flags}:
        problem = override_error(CONFIG_DIR, config_name, overrides)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            sys.exit(2)
    status = {"code": 0}
    multirun = bool({"-m", "--multirun"} & set(flags))

    @hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")
    def _app(cfg: DictConfig) -> float | None:
        if multirun:
            return _sweep.run_job(lambda: _run(cfg))
        outcome = _run(cfg)
        status["code"] = outcome.code
        return outcome.value

    def _run(cfg: DictConfig) -> Outcome:
        try:
            result = body(to_plain(cfg))
            return result if isinstance(result, Outcome) else Outcome(int(result or 0))
        except UserError as exc:
            log_error_to_file(str(exc))
            print(f"error: {exc}", file=sys.stderr)
            return Outcome(2, error=str(exc))
        except (OSError, ValueError, TypeError) as exc:
            message = (_failures.os_error_message(exc) or _failures.value_error_message(exc, sys.argv[1:])
                       if not _failures.debug() else None)
            if message is None:
                raise
            log_error_to_file(message)
            print(f"error: {message}", file=sys.stderr)
            return Outcome(2, error=message)

    _app()
    if multirun:
        status["code"] = 1 if _sweep.LAST_SUMMARY and _sweep.failed(_sweep.LAST_SUMMARY) else 0
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
