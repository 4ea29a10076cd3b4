"""fashion-anchors dataset=ccp [k=9] [image_size=416] [seed=0] [dataset.path=DIR] [output=FILE]."""

from __future__ import annotations

import shutil
from pathlib import Path

from fashionvision.families.yolov3.anchors import COCO_ANCHORS, compute_anchors, format_anchors, save_anchors
from fashionvision.output_guard import Input, check_output
from fashionvision.cli._hydra import run_dir, run_hydra


#: the files of a converted dataset that fashion-anchors reads or that describe it
CONVERSION_INPUTS = ("metadata.json", "train.txt", "val.txt", "test.txt", "classes.txt", "mask_classes.txt", "masks")


def anchors(cfg: dict) -> int:
    """Compute k-means anchors, print them per scale with mean IoU vs COCO, save them."""
    folder = Path(cfg["dataset"]["path"])
    # beside the split files is the default (dataset.path/anchors_k9_416.json), over one is not
    check_output(cfg["output"], [Input(folder / name, "dataset file") for name in CONVERSION_INPUTS])
    result, info = compute_anchors(folder, k=int(cfg["k"]), image_size=int(cfg["image_size"]),
                                   seed=int(cfg["seed"]), split=cfg["split"])
    print(f"{info['num_boxes']} boxes from {folder} ({cfg['split']} split), image size {cfg['image_size']}")
    print(f"k-means anchors (k={cfg['k']}, seed={cfg['seed']}), small to large:")
    print("\n".join(format_anchors(result)))
    if len(COCO_ANCHORS) == int(cfg["k"]):
        print("COCO anchors:")
        print("\n".join(format_anchors(COCO_ANCHORS)))
    print(f"mean best-anchor IoU: k-means {info['mean_iou']:.4f}  COCO {info['coco_mean_iou']:.4f}")
    output = Path(cfg["output"])
    save_anchors(output, result, info)
    copy = run_dir() / "anchors.json"
    if copy.resolve() != output.resolve():
        shutil.copyfile(output, copy)
    print(f"written to {output} (copy in {copy})")
    return 0


def main() -> None:
    run_hydra("anchors", anchors, dataset_alias=True)


if __name__ == "__main__":
    main()
