"""fashion-train [model=yolo|unet] [dataset=ccp|...] [trainer=default|smoke|cpu|ddp] [key=value ...]

The run folder is Hydra's run dir (``hydra.run.dir=DIR`` to choose it): ``checkpoints/``,
``tensorboard/``, ``.hydra/config.yaml`` (the composed config), ``train.log``, ``results.csv``,
``results.png`` and ``metrics.json``. With no argument it trains the default model on CCP,
converting (and downloading) the data first when ``dataset.path`` holds no converted folder
yet; on a machine without CUDA it picks the model's CPU profile (see ``cli/cpu_profile.py``).
``trainer.max_time`` counts from the command start (the conversion excepted); under ``-m``
every job of the sweep has its own clock, from the job's start.

Sweeps: ``fashion-train -m experiment=yolo_kmeans_aug,yolo_coco_aug trainer.seed=0,1`` (or a
grid of ``configs/study/``, a search of ``configs/hparams_search/``): every job its own folder
under ``hydra.sweep.dir`` and its own log, the job's best validation metric returned to the
sweeper, a summary at the end (see ``cli/_sweep.py``); ``trainer.threads`` caps each job's
torch threads so that jobs side by side do not oversubscribe the cores.

Multi-GPU: ``torchrun --nproc_per_node=N -m fashionvision.cli.train trainer=ddp hydra.run.dir=DIR``
(or set ``FASHION_RUN_DIR``); every rank must write into the same folder.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path

from fashionvision.cli._hydra import Outcome, run_dir, run_hydra
from fashionvision.convert.prepare import ensure_dataset
from fashionvision.families import check_model_fits_dataset

log = logging.getLogger("fashionvision")

RUN_DIR_ENV = "FASHION_RUN_DIR"


#: ``time.perf_counter()`` at the process start (Linux: from /proc), for ``trainer.max_time`` of a
#: single run (its budget includes the imports); every job of a sweep starts its own clock
STARTED_AT: float | None = None
#: torch's thread count before any job set ``trainer.threads`` (restored for a job that sets none)
DEFAULT_THREADS: int | None = None
#: the one line saying which CPU profile was picked (logged once the config is known to be valid)
PROFILE_NOTE: str | None = None


def process_started_at() -> float:
    """``time.perf_counter()`` of this process's start, so that the budget includes the imports."""
    now = time.perf_counter()
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
        return now - age if 0 <= age < 600 else now
    except (OSError, ValueError, IndexError):
        return now


def take_clock() -> float:
    """This job's start: the process start for a single run, now for every job of a sweep.

    Under ``-m`` every job starts its own clock, the first included, whatever the launcher:
    joblib and submitit run this module's functions in other processes, pickled with the
    globals of the command's process (its start among them).
    """
    global STARTED_AT
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    started_at, STARTED_AT = STARTED_AT, None
    if started_at is None or HydraConfig.get().mode == RunMode.MULTIRUN:
        return time.perf_counter()
    return started_at


def set_threads(threads: int | None) -> None:
    """``trainer.threads``: torch's intra-op threads for this job (None: the process default)."""
    import torch

    global DEFAULT_THREADS
    if DEFAULT_THREADS is None:
        DEFAULT_THREADS = torch.get_num_threads()
    torch.set_num_threads(int(threads) if threads else DEFAULT_THREADS)


def train(cfg: dict) -> Outcome:
    """Build the task from the registry, train, write metrics.json; 143 (SIGTERM) or 130 (Ctrl-C) when stopped.

    The outcome's value is the best validation metric (what a sweeper optimises). The run folder
    is locked while it runs: a second trainer there is refused, naming the first one's PID.
    """
    from fashionvision.engine.run_lock import hold_run_folder

    with hold_run_folder(run_dir()):
        return _train(cfg)


def _train(cfg: dict) -> Outcome:
    from fashionvision.engine import distributed
    from fashionvision.engine.checkpoint import check_fresh_run_folder
    from fashionvision.engine.config import parse_trainer_config
    from fashionvision.engine.report import final_lines
    from fashionvision.engine.trainer import Trainer
    from fashionvision.families import task_for_config

    started_at = take_clock()
    if PROFILE_NOTE:
        log.info("%s", PROFILE_NOTE)
    folder = run_dir()
    trainer_cfg = parse_trainer_config(cfg["trainer"])
    set_threads(trainer_cfg.threads)
    check_fresh_run_folder(folder, trainer_cfg.resume, trainer_cfg.overwrite)  # before any download
    check_model_fits_dataset(cfg, trainer_cfg)
    before = time.perf_counter()
    if ensure_dataset(cfg):
        started_at += time.perf_counter() - before
    trainer = Trainer(task_for_config(cfg), trainer_cfg, folder, cfg, started_at=started_at, folder_checked=True)
    try:
        trainer.fit()
    finally:
        distributed.shutdown()
    if trainer.status == "preempted":
        log.warning("preempted: checkpoint written to %s; continue with trainer.resume=auto hydra.run.dir=%s",
                    folder / "checkpoints" / "last.pt", folder)
        print(f"stopped: continue with `fashion-train {' '.join(resume_args(command_args(), folder))}`",
              file=sys.stderr)
        return Outcome(trainer.stop_signals.exit_code)  # 143 after SIGTERM, 130 after Ctrl-C
    if trainer.dist.is_main:
        for line in final_lines(trainer, time.perf_counter() - started_at):
            log.info("%s", line)
    best = trainer.best_metric
    return Outcome(0, float(best) if best is not None and math.isfinite(best) else None, trainer.task.primary_metric)


def command_args() -> list[str]:
    """This run's overrides: the command line, or under ``-m`` this job's own (its experiment, seed, ...)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    config = HydraConfig.get()
    if config.mode == RunMode.MULTIRUN:
        return list(config.overrides.task)
    return sys.argv[1:]


def resume_args(argv: list[str], folder: Path) -> list[str]:
    """The same overrides, continuing the run in ``folder`` (what the stop message prints)."""
    keep = [a for a in argv if not a.startswith(("trainer.resume=", "hydra.run.dir=", "hydra.job.name="))]
    return [*keep, "trainer.resume=auto", f"hydra.run.dir={folder}"]


def distributed_overrides(argv: list[str], env: dict) -> list[str]:
    """Under torchrun: one run folder for every rank, and one job log per rank."""
    if int(env.get("WORLD_SIZE", 1)) <= 1:
        return argv
    given = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    if not given and env.get(RUN_DIR_ENV):
        given = [env[RUN_DIR_ENV]]
        argv = [*argv, f"hydra.run.dir={given[0]}"]
    if not given:
        print("error: under torchrun every rank must write into the same folder: pass hydra.run.dir=DIR "
              f"(or set {RUN_DIR_ENV}=DIR)", file=sys.stderr)
        sys.exit(2)
    rank = int(env.get("RANK", 0))
    if rank > 0:  # rank 0 alone writes .hydra/ and train.log
        argv = [*argv, "hydra.output_subdir=null",
                f"hydra.job_logging.handlers.file.filename={Path(given[0]) / f'train_rank{rank}.log'}"]
    return argv


def main() -> None:
    global STARTED_AT, PROFILE_NOTE
    STARTED_AT = process_started_at()
    from fashionvision.cli.cpu_profile import cpu_profile_overrides

    sys.argv = distributed_overrides(sys.argv, dict(os.environ))
    sys.argv, PROFILE_NOTE = cpu_profile_overrides(sys.argv)
    from fashionvision.engine.run_lock import hold_given_run_folder

    with hold_given_run_folder(sys.argv):  # before Hydra writes .hydra/ into a folder in use
        run_hydra("train", train, dataset_alias=True)


if __name__ == "__main__":
    main()
