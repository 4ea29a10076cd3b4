"""fashion-export ckpt=RUN_OR_CKPT [format=onnx] [output=FILE.onnx] [opset=17] [atol=1e-4] [overwrite=false].

Exports the network to ONNX (dynamic batch, height and width) with everything needed to
decode its outputs stored as metadata, then checks onnxruntime against PyTorch.
"""

from __future__ import annotations

import json
from pathlib import Path

from fashionvision.cli._hydra import run_dir, run_hydra
from fashionvision.errors import UserError

FORMATS = ("onnx",)


def export(cfg: dict) -> int:
    from fashionvision.export import export_onnx
    from fashionvision.predict import load_predictor

    fmt = str(cfg.get("format", "onnx")).lower()
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    if str(cfg["ckpt"]).lower().endswith(".onnx"):
        raise UserError(f"'{cfg['ckpt']}' is already an ONNX file; give a checkpoint or a run folder")
    predictor = load_predictor(cfg["ckpt"], device=str(cfg.get("device", "cpu")))
    output = Path(cfg.get("output") or (run_dir() / "model.onnx"))
    report = export_onnx(predictor, output, opset=int(cfg.get("opset", 17)), atol=float(cfg.get("atol", 1e-4)),
                         check=bool(cfg.get("check", True)), overwrite=bool(cfg.get("overwrite", False)))
    print(json.dumps(report, indent=2))
    return 0


def main() -> None:
    run_hydra("export", export)


if __name__ == "__main__":
    main()
