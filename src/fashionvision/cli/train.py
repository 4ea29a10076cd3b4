"""fashion-train [model=yolo|unet] [dataset=ccp|...] [trainer=default|smoke|cpu|ddp] [key=value ...]

The run folder is Hydra's run dir (``hydra.run.dir=DIR`` to choose it): ``checkpoints/``,
``tensorboard/``, ``.hydra/config.yaml`` (the composed config), ``train.log`` and
``metrics.json``. With no argument it trains the default model on CCP, converting (and
downloading) the data first when ``dataset.path`` holds no converted folder yet.

Multi-GPU: ``torchrun --nproc_per_node=N -m fashionvision.cli.train trainer=ddp hydra.run.dir=DIR``
(or set ``FASHION_RUN_DIR``); every rank must write into the same folder.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from fashionvision.cli._hydra import run_dir, run_hydra
from fashionvision.errors import UserError

log = logging.getLogger("fashionvision")

RUN_DIR_ENV = "FASHION_RUN_DIR"


def ensure_dataset(cfg: dict) -> None:
    """Convert (and for CCP download) the dataset when ``dataset.path`` is not a converted folder."""
    from fashionvision.engine.build import dataset_ready

    dataset = cfg["dataset"]
    path = Path(dataset["path"])
    if dataset_ready(path):
        return
    name = dataset.get("name", "?")
    how = f"`fashion-convert {name} source={dataset.get('source')} output={path}`"
    if not cfg.get("convert_if_missing", False):
        raise UserError(f"dataset.path='{path}' is not a converted dataset (no train.txt); run {how} "
                        f"or pass convert_if_missing=true")
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise UserError(f"dataset.path='{path}' is not converted yet; under torchrun convert it first with {how}")
    source = Path(dataset.get("source") or "")
    if name == "ccp" and not source.is_dir():
        from fashionvision.download import ensure_ccp

        log.info("CCP not found at %s: downloading it", source)
        ensure_ccp(source)
    if not source.is_dir():
        raise UserError(f"dataset '{name}' is neither converted at '{path}' nor present at dataset.source="
                        f"'{source}'; download it there (see data/README.md) or set dataset.path")
    from fashionvision.convert import get_converter

    log.info("converting %s from %s into %s (first run only)", name, source, path)
    get_converter(name)(source, path)


def check_model_fits_dataset(cfg: dict) -> None:
    """Fail at once (before any download or conversion) when the model cannot use the dataset.

    The task itself decides: it is built over a stand-in holding what the dataset config
    promises (``dataset.has_masks: false`` -> no mask classes), so ``model=unet
    dataset=deepfashion`` stops with the segmentation task's own message.
    """
    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.tasks import task_class

    cls = task_class(cfg["model"]["name"])
    if cfg["dataset"].get("has_masks") is False:
        stand_in = ConvertedDataset.from_classes(["object"], None, {"source_name": cfg["dataset"].get("name")})
        cls(cfg["model"], stand_in, cfg.get("augment"), cfg.get("anchors"))


def train(cfg: dict) -> int:
    """Build the task from the registry, train, write metrics.json; 143 when preempted."""
    from fashionvision.engine import distributed
    from fashionvision.engine.build import build_task
    from fashionvision.engine.trainer import PREEMPTED_EXIT_CODE, Trainer

    folder = run_dir()
    check_model_fits_dataset(cfg)
    ensure_dataset(cfg)
    task = build_task(cfg)
    trainer = Trainer(task, cfg["trainer"], folder, cfg)
    try:
        metrics = trainer.fit()
    finally:
        distributed.shutdown()
    if trainer.status == "preempted":
        log.warning("preempted: checkpoint written to %s; continue with trainer.resume=auto hydra.run.dir=%s",
                    folder / "checkpoints" / "last.pt", folder)
        return PREEMPTED_EXIT_CODE
    if trainer.dist.is_main:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        log.info("done (%s): %s; run folder %s", trainer.status, shown, folder)
    return 0


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
    sys.argv = distributed_overrides(sys.argv, dict(os.environ))
    run_hydra("train", train, dataset_alias=True)


if __name__ == "__main__":
    main()
