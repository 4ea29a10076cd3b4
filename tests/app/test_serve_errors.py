"""Every error of the server is ``{"error": ...}`` JSON, never plain text."""

from __future__ import annotations

import io
import zlib

import pytest
from PIL import Image

from fashionvision.app.server import by_kind, create_app
from fashionvision.inference.predictor import load_predictor


@pytest.fixture(scope="module")
def client(tiny_runs):
    from fastapi.testclient import TestClient

    models = by_kind([load_predictor(tiny_runs["detector"])])
    return TestClient(create_app(models, max_upload_mb=0.5, conf=0.001), raise_server_exceptions=False)


def test_404_and_405_use_the_error_shape(client):
    for response, status in [(client.get("/nope"), 404), (client.get("/predict"), 405)]:
        assert response.status_code == status
        assert set(response.json()) == {"error"}, response.text


def test_a_png_with_a_huge_text_chunk_is_a_415_not_a_500(client):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    png = buffer.getvalue()
    body = b"zTXt" + b"comment\x00\x00" + zlib.compress(b"A" * 50_000_000)
    chunk = len(body[4:]).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    response = client.post("/predict", files={"file": ("text.png", png[:33] + chunk + png[33:], "image/png")})
    assert response.status_code == 415 and set(response.json()) == {"error"}, response.text
    assert "text.png" in response.json()["error"]


def test_an_unexpected_failure_is_json_too(client, monkeypatch):
    import fashionvision.app.server as server

    def broken(*args, **kwargs):
        raise RuntimeError("simulated")

    monkeypatch.setattr(server, "run_models", broken)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="PNG")
    response = client.post("/predict", files={"file": ("a.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 500 and set(response.json()) == {"error"}, response.text
