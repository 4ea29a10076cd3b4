"""Downloads that cannot be verified, against loopback HTTP servers.

* A transfer without ``Content-Length`` that is cut early (35,949 of 71,899 bytes) is not
  installed as complete, so the next run does not say there is nothing to do.
* A redirect to another host is not followed silently when no checksum is set.
* A refused archive does not stay in ``.download/`` to be unpacked again on every run.
* The unpacked size of an archive is bounded.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fashionvision.convert.download_resume import RemoteFile, fetch_resumable
from fashionvision.errors import UserError

BODY = os.urandom(71_899)


class Server:
    """``files[path] = bytes``, sent without Content-Length; ``cut[path] = n`` sends only n bytes;
    ``redirect[path] = url`` answers 302."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.redirect: dict[str, str] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server naming)
                if self.path in outer.redirect:
                    self.send_response(302)
                    self.send_header("Location", outer.redirect[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = outer.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)  # no Content-Length: the body ends when the connection does
                self.end_headers()
                self.wfile.write(body[: outer.cut.get(self.path, len(body))])
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.close()


def test_a_cut_transfer_without_length_is_never_installed(server, tmp_path):
    server.files["/train2020.zip"] = BODY
    server.cut["/train2020.zip"] = 35_949
    target = tmp_path / "train2020.zip"
    with pytest.raises(UserError, match="no Content-Length") as info:
        fetch_resumable(RemoteFile(server.url("/train2020.zip"), target), progress=False, retries=0)
    assert "sha256" in str(info.value) and "\n" not in str(info.value)
    assert not target.exists()
    # with a checksum the same server's complete transfer is verifiable, and installed
    del server.cut["/train2020.zip"]
    remote = RemoteFile(server.url("/train2020.zip"), target, sha256=hashlib.sha256(BODY).hexdigest())
    assert fetch_resumable(remote, progress=False, retries=0).read_bytes() == BODY


def test_a_redirect_to_another_host_without_a_checksum_is_said(server, tmp_path, caplog):
    server.files["/real.json"] = b"{}"
    server.redirect["/a.json"] = server.url("/real.json", host="localhost")
    with caplog.at_level(logging.WARNING):
        with pytest.raises(UserError, match="no Content-Length"):
            fetch_resumable(RemoteFile(server.url("/a.json"), tmp_path / "a.json"), progress=False, retries=0)
    assert "redirected to another host" in caplog.text and "localhost" in caplog.text


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_refused_archive_is_removed_not_unpacked_again(server, tmp_path):
    from fashionvision.convert.download_fashionpedia import DOWNLOAD_DIR, Item, download_fashionpedia

    archive = _zip({"../evil.txt": b"x"})
    server.files["/train2020.zip"] = archive
    item = Item("train2020.zip", server.url("/train2020.zip"), unpack_to="train",
                sha256=hashlib.sha256(archive).hexdigest())
    with pytest.raises(UserError, match="unsafe path") as info:
        download_fashionpedia(tmp_path / "fp", [item], progress=False, retries=0)
    assert "removed" in str(info.value)
    assert not (tmp_path / "fp" / DOWNLOAD_DIR / "train2020.zip").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_the_unpacked_size_of_an_archive_is_bounded(tmp_path, monkeypatch):
    from fashionvision.convert import download

    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(_zip({"zeros.bin": bytes(50_000_000)}))  # 50 MB of zeros in ~50 KB
    monkeypatch.setattr(download, "MAX_UNPACK_RATIO", 100)
    with pytest.raises(UserError, match="unpacks to") as info:
        download._safe_extract(bomb, tmp_path / "out")
    assert "\n" not in str(info.value) and not (tmp_path / "out" / "zeros.bin").exists()


def test_a_ccp_mat_is_sized_before_it_is_decoded(synthetic_ccp, tmp_path, monkeypatch):
    """A small .mat may decode to a huge mask: its header is read first."""
    import scipy.io

    from fashionvision.convert import ccp

    monkeypatch.setattr(ccp, "MAX_MASK_PIXELS", 100)
    decoded = []
    real = scipy.io.loadmat
    monkeypatch.setattr(ccp.scipy.io, "loadmat", lambda *a, **k: decoded.append(a) or real(*a, **k))
    summary = ccp.convert(synthetic_ccp, tmp_path / "out", workers=1, progress_bar=False, split=(1, 0, 0))
    label_list = [a for a in decoded if "label_list" in str(a[0])]
    assert len(decoded) == len(label_list)  # no groundtruth was decoded
    assert summary.skipped and all("above the limit of 100" in s.reason for s in summary.skipped)
