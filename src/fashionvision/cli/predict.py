"""fashion-predict ckpt=RUN_OR_CKPT_OR_ONNX source=PATH [conf=] [iou=] [output=DIR] [video_stride=N].

Writes one annotated picture and one JSON per image, and for a video an annotated ``.mp4``
and one JSON per frame (see :mod:`fashionvision.inference.files`); unreadable files are
listed, skipped and counted.
"""

from __future__ import annotations

from pathlib import Path

from fashionvision.cli._hydra import run_dir, run_hydra


def predict(cfg: dict) -> int:
    from fashionvision.inference.predictor import load_predictor
    from fashionvision.inference.files import predict_source

    predictor = load_predictor(cfg["ckpt"], device=str(cfg.get("device", "cpu")))
    predictor.task.set_tta(cfg.get("tta_flip"), cfg.get("tta_scales"))
    output = Path(cfg.get("output") or run_dir())
    conf = cfg.get("conf")
    iou = cfg.get("iou")
    summary = predict_source(predictor, str(cfg["source"]), output,
                             conf=float(conf) if conf is not None else None,
                             iou=float(iou) if iou is not None else None,
                             video_stride=int(cfg.get("video_stride", 1)),
                             progress=bool(cfg.get("progress", True)),
                             save_images=bool(cfg.get("save_images", True)),
                             save_frames=bool(cfg.get("save_frames", False)))
    print(summary.text())
    return 0 if summary.ok else 1


def main() -> None:
    run_hydra("predict", predict)


if __name__ == "__main__":
    main()
