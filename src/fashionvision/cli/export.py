"""fashion-export ckpt=RUN_OR_CKPT [format=onnx] [output=FILE.onnx] [opset=17] [atol=1e-4] [overwrite=false].

Exports the network to ONNX (dynamic batch, height and width) with everything needed to
decode its outputs stored as metadata, then checks onnxruntime against PyTorch. The file goes
beside the checkpoint by default (``RUN/checkpoints/best.onnx``); one sentence says where, how
big, and whether the parity check passed.
"""

from __future__ import annotations

from pathlib import Path

from fashionvision.cli._hydra import run_hydra
from fashionvision.errors import UserError

FORMATS = ("onnx",)


def export(cfg: dict) -> int:
    from fashionvision.engine.checkpoint import resolve_checkpoint
    from fashionvision.inference.export import export_onnx, export_sentence
    from fashionvision.inference.predictor import load_predictor

    fmt = str(cfg.get("format", "onnx")).lower()
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    if str(cfg["ckpt"]).lower().endswith(".onnx"):
        raise UserError(f"'{cfg['ckpt']}' is already an ONNX file; give a checkpoint or a run folder")
    checkpoint = resolve_checkpoint(cfg["ckpt"])
    predictor = load_predictor(checkpoint, device=str(cfg.get("device", "cpu")))
    output = Path(cfg.get("output") or checkpoint.with_suffix(".onnx"))
    report = export_onnx(predictor, output, opset=int(cfg.get("opset", 17)), atol=float(cfg.get("atol", 1e-4)),
                         check=bool(cfg.get("check", True)), overwrite=bool(cfg.get("overwrite", False)))
    print(export_sentence(report))
    return 0


def main() -> None:
    run_hydra("export", export)


if __name__ == "__main__":
    main()
