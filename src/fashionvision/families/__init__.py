"""Model families in one explicit registry (no import-order magic).

``FAMILIES`` maps the ``model.name`` config value to the family's task class
(``"module:Class"``, imported on demand so `fashion-convert` never loads torch models). A
family is one folder under ``families/`` plus one line here; its task class owns everything
the rest of the toolkit needs to know: its kind (detection or segmentation), default
thresholds, input shape, model, loss and decoding.

Checkpoints and exported files name a family by this key only, so rebuilding a model from
someone else's file can never instantiate arbitrary code (:func:`rebuild_task`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fashionvision.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.tasks.base import Task

FAMILIES: dict[str, str] = {
    "yolo": "fashionvision.families.yolov3.task:YOLOv3Task",
    "unet": "fashionvision.families.unet.task:UNetTask",
}


def family(name: str | None) -> type[Task]:
    """The task class of a family; unknown names list the valid ones."""
    if name not in FAMILIES:
        raise UserError(f"unknown model '{name}'; choose one of: {', '.join(sorted(FAMILIES))}")
    module, attr = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), attr)


def build_task(model_cfg: dict, data: ConvertedDataset, augment_cfg: dict | None = None,
               anchors_cfg: dict | None = None) -> Task:
    """The task of ``model_cfg["name"]`` over ``data``; every config group is parsed (and checked) here."""
    return family(model_cfg.get("name"))(model_cfg, data, augment_cfg, anchors_cfg)


def task_for_config(cfg: dict) -> Task:
    """The task of a composed ``fashion-train`` config (its model, dataset, augment and anchors groups)."""
    from fashionvision.data.converted import ConvertedDataset

    return build_task(cfg["model"], ConvertedDataset.open(cfg["dataset"]["path"]), cfg.get("augment"),
                      cfg.get("anchors"))


def build_model(model_cfg: dict, num_classes: int) -> nn.Module:
    """A fresh network of ``model_cfg["name"]`` for ``num_classes`` classes (no dataset needed)."""
    return family(model_cfg.get("name")).new_model(model_cfg, num_classes)


def rebuild_task(model_cfg: dict, described: dict, config: dict | None = None,
                 dataset_path: str | None = None, source: str = "checkpoint") -> Task:
    """The task a checkpoint or exported file was trained as, from what it stores.

    Args:
        model_cfg: the stored ``model`` config group (its ``name`` picks the family).
        described: the task's :meth:`~fashionvision.tasks.base.Task.describe` (class lists,
            trained anchors).
        config: the stored full config (``augment`` group).
        dataset_path: a converted folder to take the classes from; without it the stored class
            lists stand in for the dataset, so the model works where the data never was.
        source: the file, for error messages.
    """
    from fashionvision.data.converted import ConvertedDataset

    config = config or {}
    model_cfg = dict(model_cfg or {})
    name = model_cfg.get("name") or described.get("model")
    if not name:
        raise UserError(f"{source} does not say which model it holds (no config.model.name)")
    model_cfg["name"] = name
    # never fetch or load other weights: the file's own weights follow
    model_cfg["weights"] = None
    if "encoder_weights" in model_cfg:
        model_cfg["encoder_weights"] = None
    classes = described.get("classes")
    if dataset_path is not None:
        data = ConvertedDataset.open(dataset_path)
    else:
        if classes is None:
            raise UserError(f"{source} stores no class list; pass a dataset path")
        # a segmentation task's classes are the mask labels: both lists come from describe()
        data = ConvertedDataset.from_classes(described.get("det_classes") or classes,
                                             described.get("mask_classes"),
                                             metadata=described.get("metadata"))
    anchors_cfg = config.get("anchors")
    if described.get("anchors"):  # the trained values: never recompute (or write) k-means anchors
        anchors_cfg = {"name": "values", "values": described["anchors"]}
    task = family(name)(model_cfg, data, config.get("augment"), anchors_cfg)
    task.restore(described)
    if classes is not None and list(task.class_names) != list(classes):
        raise UserError(f"{source} predicts {len(classes)} classes but dataset "
                        f"'{dataset_path}' gives {len(task.class_names)} (or other names)")
    return task


def check_model_fits_dataset(cfg: dict, trainer_cfg: Any = None) -> None:
    """Fail at once (before any download or conversion) when the model cannot use the dataset.

    The task itself decides: it is built over a stand-in holding what the dataset config
    promises (``dataset.has_masks: false`` -> no mask classes), so ``model=unet
    dataset=deepfashion`` stops with the segmentation task's own message. ``trainer_cfg``: the
    ``trainer`` group when the caller has parsed it already.
    """
    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.engine.config import parse_trainer_config

    if trainer_cfg is None:  # every group is checked before anything is converted
        parse_trainer_config(cfg["trainer"])
    cls = family(cfg["model"]["name"])
    cls.check_config(cfg["model"], cfg.get("augment"), cfg.get("anchors"))
    if cfg["dataset"].get("has_masks") is False:
        stand_in = ConvertedDataset.from_classes(["object"], None, {"source_name": cfg["dataset"].get("name")})
        cls(cfg["model"], stand_in, cfg.get("augment"), cfg.get("anchors"))
