"""fashion-summary model=yolo|unet [num_classes=N] [image_size=S] [dataset=ccp dataset.path=DIR].

Prints parameters and forward GFLOPs (``torch.utils.flop_counter``, one image; a
multiply-add counts as 2 FLOPs) at the configured image size and class count. Generic over
:data:`fashionvision.models.MODELS`. The class count is taken from the dataset folder when it
exists (through the model family's task, so detection counts ``classes.txt`` and
segmentation its mask labels), else from ``num_classes``, else a per-family default.
"""

from __future__ import annotations

from pathlib import Path

from fashionvision.cli._hydra import run_hydra
from fashionvision.errors import UserError

#: class count when neither num_classes nor a dataset folder gives one (COCO; CCP's labels)
DEFAULT_CLASSES = {"yolo": 80, "unet": 59}


def resolve_num_classes(cfg: dict) -> tuple[int, str]:
    """``(count, where it came from)``."""
    name = cfg["model"]["name"]
    if cfg.get("num_classes"):
        return int(cfg["num_classes"]), "num_classes"
    folder = Path(str((cfg.get("dataset") or {}).get("path") or ""))
    if folder.name and (folder / "metadata.json").is_file():
        from fashionvision.data.converted import ConvertedDataset
        from fashionvision.tasks import task_class

        task = task_class(name)(cfg["model"], ConvertedDataset.open(folder), None, {"name": "coco"})
        return len(task.class_names), str(folder)
    if name not in DEFAULT_CLASSES:
        raise UserError(f"no class count for model '{name}': pass num_classes=N")
    return DEFAULT_CLASSES[name], "default"


def summarize_model(model_cfg: dict, num_classes: int, image_size: int) -> dict:
    """Parameters and forward GFLOPs of one ``image_size`` x ``image_size`` image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fashionvision.models import build_model

    model = build_model({**model_cfg, "weights": None}, num_classes).eval()
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, image_size, image_size))
    return {"params": params, "gflops": counter.get_total_flops() / 1e9}


def summary(cfg: dict) -> int:
    model_cfg = dict(cfg["model"])
    size = int(cfg.get("image_size") or model_cfg.get("image_size", 416))
    if size % 32:
        raise UserError(f"image_size={size} must be a multiple of 32")
    num_classes, source = resolve_num_classes(cfg)
    result = summarize_model(model_cfg, num_classes, size)
    extra = ", ".join(f"{k}={model_cfg[k]}" for k in ("encoder", "width", "depth") if k in model_cfg)
    print(f"model {model_cfg['name']} ({extra}), {num_classes} classes ({source}), input {size}x{size}")
    print(f"  parameters {result['params']:,} ({result['params'] / 1e6:.2f} M)")
    print(f"  forward    {result['gflops']:.2f} GFLOPs per image")
    return 0


def main() -> None:
    run_hydra("summary", summary, dataset_alias=True)


if __name__ == "__main__":
    main()
