"""fashion-serve ckpt=RUN_OR_CKPT [ckpt2=RUN_OR_CKPT] [port=8000] [host=127.0.0.1].

Serves the one-page app and the JSON API of :mod:`fashionvision.app.server` with uvicorn.
"""

from __future__ import annotations

import logging

from fashionvision.cli._hydra import run_hydra
from fashionvision.errors import UserError

log = logging.getLogger("fashionvision")


def serve(cfg: dict) -> int:
    import uvicorn

    from fashionvision.app.server import by_kind, create_app
    from fashionvision.predict import load_predictor

    host, port = str(cfg.get("host", "127.0.0.1")), cfg.get("port", 8000)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise UserError(f"port={port!r} is not a TCP port; give an integer in 1..65535 (0: any free port)")
    device = str(cfg.get("device", "cpu"))
    paths = [p for p in (cfg.get("ckpt"), cfg.get("ckpt2")) if p]
    models = by_kind([load_predictor(p, device=device) for p in paths])
    app = create_app(models, max_upload_mb=float(cfg.get("max_upload_mb", 10)), conf=cfg.get("conf"),
                     iou=cfg.get("iou"), max_pixels=int(cfg.get("max_pixels", 40_000_000)),
                     min_area=float(cfg.get("min_area", 0.001)))
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: the app is reachable from other machines", host)
    print(f"serving {', '.join(f'{k}={p.source}' for k, p in models.items())} on http://{host}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level=str(cfg.get("log_level", "info")))
    return 0


def main() -> None:
    run_hydra("serve", serve)


if __name__ == "__main__":
    main()
