"""Resumable downloads and `fashion-download fashionpedia`, against a loopback HTTP server with Range support.

The served files are the official Fashionpedia sample (its JSON as both annotation files, its two
images zipped as train2020.zip / val_test2020.zip in the release's layout), so the installed
folder is converted by the real converter afterwards.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fashionvision.convert.download_resume import RemoteFile, fetch_resumable
from fashionvision.errors import UserError


class RangeServer:
    """Serves ``files[path] = bytes`` on 127.0.0.1 with HTTP Range; ``truncate[path] = n`` cuts the
    next n responses for that path in half (the connection closes early); ``requests`` records
    ``(path, Range header)``."""

    def __init__(self, ignore_range: bool = False):
        self.files: dict[str, bytes] = {}
        self.truncate: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server naming)
                rng = self.headers.get("Range")
                outer.requests.append((self.path, rng))
                body = outer.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng and not ignore_range else 0
                if start >= len(body) and rng and not ignore_range:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if rng and not ignore_range:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if outer.truncate.get(self.path, 0) > 0:
                    outer.truncate[self.path] -= 1
                    payload = payload[: len(payload) // 2]
                self.wfile.write(payload)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    s = RangeServer()
    yield s
    s.close()


BODY = os.urandom(3 << 20) + b"end"  # a few chunks of the 1 MiB read size


def test_resume_after_a_truncated_transfer(server: RangeServer, tmp_path: Path):
    server.files["/big.bin"] = BODY
    server.truncate["/big.bin"] = 1
    remote = RemoteFile(server.url("/big.bin"), tmp_path / "big.bin", size=len(BODY),
                        sha256=hashlib.sha256(BODY).hexdigest())
    with pytest.raises(UserError, match="incomplete .* run the command again to resume"):
        fetch_resumable(remote, progress=False, retries=0)
    part = tmp_path / "big.bin.part"
    assert not remote.target.exists(), "an incomplete file must never get its final name"
    assert 0 < part.stat().st_size < len(BODY)
    kept = part.stat().st_size
    fetch_resumable(remote, progress=False, retries=0)  # a later run
    assert remote.target.read_bytes() == BODY and not part.exists()
    assert server.requests[-1] == ("/big.bin", f"bytes={kept}-"), "only the missing bytes are asked for"


def test_retries_resume_within_one_run(server: RangeServer, tmp_path: Path):
    server.files["/big.bin"] = BODY
    server.truncate["/big.bin"] = 2
    target = fetch_resumable(RemoteFile(server.url("/big.bin"), tmp_path / "big.bin"), progress=False,
                             retries=3, retry_wait=0)
    assert target.read_bytes() == BODY
    assert [r for _, r in server.requests][0] is None and all(r for _, r in server.requests[1:])
    assert len(server.requests) == 3


def test_server_without_range_support_starts_again(tmp_path: Path):
    plain = RangeServer(ignore_range=True)
    try:
        plain.files["/big.bin"] = BODY
        (tmp_path / "big.bin.part").write_bytes(BODY[:1000] + b"garbage")
        target = fetch_resumable(RemoteFile(plain.url("/big.bin"), tmp_path / "big.bin"), progress=False, retries=0)
        assert target.read_bytes() == BODY
    finally:
        plain.close()


def test_complete_part_file_is_not_downloaded_again(server: RangeServer, tmp_path: Path):
    server.files["/big.bin"] = BODY
    (tmp_path / "big.bin.part").write_bytes(BODY)  # killed after the last byte, before the rename
    target = fetch_resumable(RemoteFile(server.url("/big.bin"), tmp_path / "big.bin"), progress=False, retries=0)
    assert target.read_bytes() == BODY


def test_size_and_checksum_are_checked(server: RangeServer, tmp_path: Path):
    server.files["/big.bin"] = BODY
    with pytest.raises(UserError, match="the configuration expects 5"):
        fetch_resumable(RemoteFile(server.url("/big.bin"), tmp_path / "a.bin", size=5), progress=False)
    with pytest.raises(UserError, match="checksum mismatch"):
        fetch_resumable(RemoteFile(server.url("/big.bin"), tmp_path / "b.bin", sha256="0" * 64), progress=False)
    assert not (tmp_path / "b.bin").exists() and not (tmp_path / "b.bin.part").exists()
    with pytest.raises(UserError, match="HTTP 404"):
        fetch_resumable(RemoteFile(server.url("/nope"), tmp_path / "c.bin"), progress=False)


# --- fashion-download fashionpedia, end to end ------------------------------------------------

def _zip(folder: str, files: dict[str, Path]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(f"{folder}/", b"")
        for name, path in files.items():
            zf.write(path, f"{folder}/{name}")
    return buffer.getvalue()


def serve_fashionpedia(server: RangeServer, sample: Path) -> None:
    """The release's four files under /annotations and /images, built from the official sample:
    its first image as the train split, its second as val (in val_test2020.zip, like the release)."""
    coco = json.loads((sample / "sample.json").read_text())
    for split, image, folder, archive in (("train", coco["images"][0], "train", "train2020"),
                                          ("val", coco["images"][1], "test", "val_test2020")):
        part = {**coco, "images": [image], "annotations": [a for a in coco["annotations"]
                                                            if a["image_id"] == image["id"]]}
        server.files[f"/annotations/instances_attributes_{split}2020.json"] = json.dumps(part).encode()
        server.files[f"/images/{archive}.zip"] = _zip(folder, {image["file_name"]: sample / image["file_name"]})


def run_module(module: str, args: list[str], cwd: Path, data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "FASHION_DATA_DIR": str(data)}
    return subprocess.run([sys.executable, "-m", module, *args, f"hydra.run.dir={cwd / 'run'}"], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.slow  # ~10 s: three subprocesses (download interrupted, resumed, then convert)
def test_fashion_download_fashionpedia_resumes_then_converts(server: RangeServer, shared_data: Path,
                                                             tmp_path: Path):
    sample = shared_data / "fashionpedia-sample"
    serve_fashionpedia(server, sample)
    server.truncate["/images/val_test2020.zip"] = 1
    data = tmp_path / "data"
    args = ["fashionpedia", f"sources.fashionpedia.base_url={server.url()}", "progress=false", "retries=0"]
    first = run_module("fashionvision.cli.download", args, tmp_path, data)
    assert first.returncode == 2 and "error:" in first.stderr and "Traceback" not in first.stderr
    dest = data / "fashionpedia"
    assert (dest / "instances_attributes_train2020.json").is_file() and (dest / "train").is_dir()
    assert not (dest / "test").exists(), "a half-downloaded archive must not be unpacked"
    assert (dest / ".download" / "val_test2020.zip.part").is_file()

    second = run_module("fashionvision.cli.download", args, tmp_path, data)
    assert second.returncode == 0, second.stderr
    assert "installed" in second.stdout
    assert ("/images/val_test2020.zip", f"bytes={len(server.files['/images/val_test2020.zip']) // 2}-") \
        in server.requests
    assert [p.name for p in (dest / "test").iterdir()] == ["000000010223.jpg"]
    assert not (dest / ".download").exists()
    hits = len(server.requests)
    third = run_module("fashionvision.cli.download", args, tmp_path, data)
    assert third.returncode == 0 and "nothing to do" in third.stdout and len(server.requests) == hits

    converted = tmp_path / "converted"
    convert = run_module("fashionvision.cli.convert", ["fashionpedia", f"output={converted}", "workers=1",
                                                      "progress=false"], tmp_path, data)
    assert convert.returncode == 0, convert.stderr
    assert (converted / "metadata.json").is_file()
    assert (converted / "test.txt").read_text().split()[0] == "test/000000010223.jpg"
    assert "000000009813.jpg" in (converted / "train.txt").read_text() + (converted / "val.txt").read_text()


def test_fashionpedia_items_from_the_config(tmp_path: Path):
    from fashionvision.cli._hydra import compose
    from fashionvision.convert.download_fashionpedia import items_from_config, missing_items

    cfg = compose("download", ["dataset=fashionpedia", "sources.fashionpedia.base_url=http://h"])
    items = items_from_config(cfg["sources"]["fashionpedia"]["files"])
    assert {i.url for i in items} == {"http://h/annotations/instances_attributes_train2020.json",
                                      "http://h/annotations/instances_attributes_val2020.json",
                                      "http://h/images/train2020.zip", "http://h/images/val_test2020.zip"}
    assert {i.unpack_to for i in items} == {None, "train", "test"}
    assert cfg["dest"].endswith("fashionpedia")
    (tmp_path / "train").mkdir()
    assert len(missing_items(tmp_path, items)) == 3
