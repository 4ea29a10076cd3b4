"""fashion-serve's JSON API: good uploads give items, bad uploads a clear 4xx."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import pytest
from PIL import Image

from fashionvision.app.server import by_kind, create_app
from fashionvision.errors import UserError
from fashionvision.inference.predictor import load_predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tiny_runs) -> dict:
    return by_kind([load_predictor(tiny_runs["detector"]), load_predictor(tiny_runs["segmenter"])])


@pytest.fixture(scope="module")
def client(models):
    from fastapi.testclient import TestClient

    # conf=0.001 so that the untrained tiny detector still lists items
    return TestClient(create_app(models, max_upload_mb=0.5, conf=0.001))


@pytest.fixture(scope="module")
def photo_bytes(shared_data) -> bytes:
    image = Image.open(shared_data / "fashionpedia-sample" / "input.jpg")
    image.thumbnail((200, 200))  # small enough for the 0.5 MB test limit
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def test_health_lists_both_models(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and set(body["models"]) == {"detector", "segmenter"}
    assert body["models"]["detector"]["task"] == "detection"


def test_page_is_served(client):
    response = client.get("/")
    assert response.status_code == 200 and 'id="file"' in response.text and "predict" in response.text


def test_good_upload_returns_items_from_both(client, photo_bytes):
    response = client.post("/predict?model=both", files={"file": ("look.jpg", photo_bytes, "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["file"] == "look.jpg" and body["width"] <= 200 and body["height"] == 200
    assert [r["model"] for r in body["results"]] == ["detector", "segmenter"]
    for result in body["results"]:
        assert result["items"], f"{result['model']} found nothing"
        assert result["image"].startswith("data:image/png;base64,")
        drawn = Image.open(io.BytesIO(base64.b64decode(result["image"].split(",", 1)[1])))
        assert drawn.size[1] == body["height"]
    det, seg = body["results"]
    assert {"class", "score", "box"} <= set(det["items"][0])
    assert {"class", "pixels", "fraction"} <= set(seg["items"][0])


def test_model_chosen_by_form_field(client, photo_bytes):
    response = client.post("/predict", files={"file": ("a.jpg", photo_bytes, "image/jpeg")},
                           data={"model": "segmenter"})
    assert response.status_code == 200
    assert [r["model"] for r in response.json()["results"]] == ["segmenter"]


def test_non_image_upload_is_refused_clearly(client):
    response = client.post("/predict?model=detector",
                           files={"file": ("notes.txt", b"this is plain text, not a photo", "text/plain")})
    assert response.status_code == 415
    error = response.json()["error"]
    assert "'notes.txt' is not a usable image" in error
    assert "the upload" not in error and "BytesIO" not in error and "not an image format" in error


def test_empty_oversized_and_bad_model_are_4xx(client, photo_bytes):
    empty = client.post("/predict", files={"file": ("empty.jpg", b"", "image/jpeg")})
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    big = client.post("/predict", files={"file": ("big.jpg", photo_bytes + b"\0" * 600_000, "image/jpeg")})
    assert big.status_code == 413 and "0.5 MB" in big.json()["error"]
    bad = client.post("/predict?model=classifier", files={"file": ("a.jpg", photo_bytes, "image/jpeg")})
    assert bad.status_code == 400 and "detector, segmenter or both" in bad.json()["error"]
    missing = client.post("/predict")
    assert missing.status_code == 422


def test_two_models_of_one_kind_are_refused(models):
    with pytest.raises(UserError, match="both .* are detectors"):
        by_kind([models["detector"], models["detector"]])


def test_segmenter_table_leaves_out_invisible_classes(client, photo_bytes):
    """Classes under 0.1 % of the image are counted, not listed at "0.0 %"."""
    from fashionvision.app.server import MIN_AREA_FRACTION, visible_items

    response = client.post("/predict?model=segmenter&image=false",
                           files={"file": ("a.jpg", photo_bytes, "image/jpeg")})
    seg = response.json()["results"][0]
    assert all(item["fraction"] >= MIN_AREA_FRACTION for item in seg["items"])
    assert seg["hidden_items"] >= 0 and seg["min_area"] == MIN_AREA_FRACTION
    items = [{"class": "dress", "fraction": 0.3}, {"class": "belt", "fraction": 0.0004},
             {"class": "bag", "fraction": 0.001}]
    shown, hidden = visible_items(items)
    assert [i["class"] for i in shown] == ["dress", "bag"] and hidden == 1
    page = client.get("/").text
    assert "hidden_items" in page and "not listed" in page
def test_validation_errors_use_the_error_shape(client):
    """A 422 answers {"error": ...} like every other error, not FastAPI's {"detail": ...}."""
    response = client.post("/predict", data={"model": "detector"})  # no file
    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"error"} and "file" in body["error"]
    response = client.post("/predict?image=maybe", files={"file": ("a.jpg", b"x", "image/jpeg")})
    assert response.status_code == 422 and set(response.json()) == {"error"} and "image" in response.json()["error"]


def test_health_shows_no_server_paths(client, tiny_runs):
    """/health names the checkpoints without the server's folders."""
    text = client.get("/health").text
    for run in tiny_runs.values():
        assert str(run) not in text and str(run.parent) not in text
    sources = {m["source"] for m in client.get("/health").json()["models"].values()}
    assert all("/" not in s and s for s in sources)


def test_no_docs_page_loading_a_cdn(client):
    """/docs would load its scripts from a CDN; it is off, the page uses none."""
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    assert "cdn" not in client.get("/").text.lower()
    assert client.get("/openapi.json").json()["paths"]["/predict"]


@pytest.fixture()
def watched_tmp(tmp_path, monkeypatch):
    """Every temporary file (the multipart spool's rollover included) lands, visibly, in one folder."""
    import functools
    import tempfile

    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    # Linux TemporaryFile has no name (O_TMPFILE): give it one so that its size can be seen
    monkeypatch.setattr(tempfile, "TemporaryFile",
                        functools.partial(tempfile.NamedTemporaryFile, dir=folder, delete=False))
    return folder


def _spooled(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_large_upload_is_refused_before_it_is_spooled(models, photo_bytes, watched_tmp):
    """50 MB against a 1 MB limit: 413, and nothing near that size reaches the temp folder."""
    from fastapi.testclient import TestClient

    client = TestClient(create_app(models, max_upload_mb=1))
    big = photo_bytes + b"\0" * (50 << 20)
    declared = client.post("/predict", files={"file": ("big.jpg", big, "image/jpeg")})  # with Content-Length
    assert declared.status_code == 413 and "1 MB" in declared.json()["error"]
    assert _spooled(watched_tmp) < (2 << 20)

    # no Content-Length (chunked): the ASGI app is driven directly to count what it pulls
    boundary = "fvboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    pieces = [head, photo_bytes] + [b"\0" * (1 << 20)] * 50 + [f"\r\n--{boundary}--\r\n".encode()]
    pulled, sent = {"bytes": 0}, []

    async def receive():
        if pieces:
            piece = pieces.pop(0)
            pulled["bytes"] += len(piece)
            return {"type": "http.request", "body": piece, "more_body": bool(pieces)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
             "headers": [(b"host", b"test"), (b"transfer-encoding", b"chunked"),
                         (b"content-type", f"multipart/form-data; boundary={boundary}".encode())]}
    asyncio.run(client.app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert "1 MB" in json.loads(sent[1]["body"])["error"]
    assert pulled["bytes"] < (3 << 20)  # reading stopped just past the limit
    assert _spooled(watched_tmp) < (2 << 20)
    ok = client.post("/predict", files={"file": ("small.jpg", photo_bytes, "image/jpeg")})
    assert ok.status_code == 200  # a normal upload still works behind the middleware
