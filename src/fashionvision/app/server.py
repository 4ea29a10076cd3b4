"""``fashion-serve``: a one-page web application and a JSON API over one or two models.

* ``GET /`` the page: upload a photo, pick the detector, the segmenter or both side by side,
  see the drawn result and a table of the items found.
* ``POST /predict`` (multipart field ``file``; ``model=detector|segmenter|both`` as a query or
  form field): JSON with, per model, the items found and the drawn result as an inline
  base64 PNG (``image=false`` leaves the picture out).
* ``GET /health``: status and the loaded models (file names only: no server paths).

Every error answer is ``{"error": "..."}``, request validation (422) included. The interactive
``/docs`` page is off: it loads its scripts from a CDN; ``/openapi.json`` describes the API.

Uploads are refused with 413 past ``max_upload_mb``: on ``Content-Length`` before any byte is
read, and while streaming otherwise (:mod:`fashionvision.app.upload_limit`); anything that does not
decode as an image (through the same reader as every other command) gets 415 with the reason;
an empty upload 400. The server binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
# at module level: FastAPI resolves the endpoints' (string) annotations in this module's namespace
from fastapi import FastAPI, File, Form, HTTPException, Query, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fashionvision.data.image_io import ImageReadError, decode_image_bytes
from fashionvision.errors import UserError
from fashionvision.inference.predictor import Predictor, model_info
from fashionvision.inference.files import describe, draw

log = logging.getLogger("fashionvision")

STATIC_DIR = Path(__file__).resolve().parent / "static"
CHUNK = 1 << 20
KINDS = ("detector", "segmenter")
#: the default pixel limit, sized to what one request costs: ~30 bytes per pixel at the peak
#: for the segmenter with the drawn result (measured: a 6000 x 6000 PNG, 36 Mpx, raised the
#: peak RSS by 1.0 GB), so 16 Mpx stay near 0.5 GB; requests are handled one at a time
MAX_PIXELS = 16_000_000
#: segmenter classes covering less of the image than this are not listed (they read "0.0 %")
MIN_AREA_FRACTION = 0.001


def by_kind(predictors: list[Predictor]) -> dict[str, Predictor]:
    """``{"detector": ..., "segmenter": ...}``; two models of one kind are refused."""
    models: dict[str, Predictor] = {}
    for predictor in predictors:
        if predictor.kind in models:
            raise UserError(f"both '{models[predictor.kind].source}' and '{predictor.source}' are "
                            f"{predictor.kind}s; give one detector and/or one segmenter")
        models[predictor.kind] = predictor
    if not models:
        raise UserError("no model to serve: give ckpt=RUN_OR_CKPT (and optionally ckpt2=...)")
    return models


def png_data_url(image: np.ndarray) -> str:
    """An RGB array as an inline ``data:image/png;base64,...`` URL."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def visible_items(items: list[dict], min_fraction: float = MIN_AREA_FRACTION) -> tuple[list[dict], int]:
    """Segmenter items covering at least ``min_fraction`` of the image, and how many were left out."""
    shown = [item for item in items if item.get("fraction", 1.0) >= min_fraction]
    return shown, len(items) - len(shown)


def run_models(models: dict[str, Predictor], image: np.ndarray, which: str, conf: float | None = None,
               iou: float | None = None, with_image: bool = True,
               min_area: float = MIN_AREA_FRACTION) -> list[dict]:
    """Predict with the chosen model(s); one result dict per model, in KINDS order.

    Segmenter items below ``min_area`` of the image are left out of ``items`` and counted in
    ``hidden_items`` (a few stray pixels of a class are noise, not a finding).
    """
    chosen = [k for k in KINDS if k in models] if which == "both" else [which]
    results = []
    for kind in chosen:
        predictor = models[kind]
        default_conf, default_iou = predictor.default_thresholds()
        prediction = predictor(image, conf=conf if conf is not None else default_conf,
                               iou=iou if iou is not None else default_iou)
        items = describe(predictor, prediction, polygons=False)
        hidden = 0
        if predictor.task.name == "segmentation":
            items, hidden = visible_items(items, min_area)
        result: dict[str, Any] = {"model": kind, "task": predictor.task.name, "items": items,
                                  "hidden_items": hidden, "min_area": min_area}
        if with_image:
            result["image"] = png_data_url(draw(predictor, image, prediction))
        results.append(result)
    return results


def create_app(models: dict[str, Predictor], max_upload_mb: float = 10.0, conf: float | None = None,
               iou: float | None = None, max_pixels: int = MAX_PIXELS, min_area: float = MIN_AREA_FRACTION):
    """The FastAPI application serving ``models`` (see :func:`by_kind`).

    One upload is decoded and predicted at a time (:data:`MAX_PIXELS` explains the budget).
    """
    limit = int(max_upload_mb * 1024 * 1024)
    one_at_a_time = threading.Lock()
    # no /docs or /redoc: both pages load their scripts from a CDN (a page calling out to a
    # third party, and broken offline); /openapi.json still describes the API
    app = FastAPI(title="fashionvision", docs_url=None, redoc_url=None)
    # bodies are bounded before FastAPI spools the multipart form (to memory, then to disk)
    from fashionvision.app.upload_limit import MULTIPART_MARGIN, BodyLimit

    app.add_middleware(BodyLimit, max_body=limit + MULTIPART_MARGIN,
                       message=f"upload larger than the limit of {max_upload_mb:g} MB")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "max_upload_mb": max_upload_mb,
                "models": {k: {key: (Path(v).name if key == "source" else v)  # never the server's paths
                               for key, v in model_info(p).items() if key != "classes"}
                           for k, p in models.items()}}

    @app.exception_handler(StarletteHTTPException)  # FastAPI's own and the router's 404 and 405
    def _http_error(_request: Any, exc: StarletteHTTPException) -> JSONResponse:
        # the page shows `error` verbatim; programs get the status code
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    def _unexpected(_request: Any, exc: Exception) -> JSONResponse:
        # a bug or an exhausted machine: the same {"error": ...} shape, logged with its traceback here
        log.error("request failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        what = "out of memory" if isinstance(exc, MemoryError) else f"internal error ({type(exc).__name__})"
        return JSONResponse({"error": f"the server could not answer this request: {what}"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    def _validation_error(_request: Any, exc: RequestValidationError) -> JSONResponse:
        # the same {"error": ...} shape as every other error (FastAPI's default is {"detail": [...]})
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'request'}: {e.get('msg')}"
                    for e in exc.errors()]
        return JSONResponse({"error": "; ".join(problems) or "invalid request"}, status_code=422)

    @app.post("/predict")
    def predict(file: UploadFile = File(..., description="the photo"),
                model: str | None = Query(None, description="detector | segmenter | both"),
                model_form: str | None = Form(None, alias="model"),
                image: bool = Query(True, description="include the drawn result as a PNG data URL")) -> dict:
        which = model or model_form or ("both" if len(models) > 1 else next(iter(models)))
        if which not in (*KINDS, "both"):
            raise HTTPException(400, f"model must be detector, segmenter or both, not '{which}'")
        if which != "both" and which not in models:
            raise HTTPException(400, f"no {which} is loaded; this server has: {', '.join(models)}")
        data = _read_limited(file, limit)
        name = file.filename or "upload"
        if not data:
            raise HTTPException(400, f"'{name}' is empty")
        with one_at_a_time:  # the memory budget of MAX_PIXELS is per request
            try:
                rgb = decode_image_bytes(data, name=name, max_pixels=max_pixels)
            except ImageReadError as exc:
                # PIL names the in-memory buffer in its message; the user knows it as their file
                reason = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", exc.reason)
                if "cannot identify image file" in reason:  # PIL's words for "no known image format"
                    reason = "its content is not an image format that can be read (JPEG, PNG, WebP, BMP, TIFF, ...)"
                raise HTTPException(415, f"'{name}' is not a usable image: {reason}") from exc
            results = run_models(models, rgb, which, conf, iou, with_image=image, min_area=min_area)
        return {"file": name, "width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "results": results}

    def _read_limited(upload: Any, max_bytes: int) -> bytes:
        chunks, size = [], 0
        while True:
            chunk = upload.file.read(CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > max_bytes:
                raise HTTPException(413, f"upload larger than the limit of {max_upload_mb:g} MB")
            chunks.append(chunk)

    return app
