"""fashion-download against a loopback HTTP server serving a tiny CCP archive in the real layout."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fashionvision.convert.download import check_ccp_layout, download_ccp, ensure_ccp, is_ccp
from fashionvision.errors import UserError
from fixtures.ccp_archive import TOP, Server, make_ccp_zip

@pytest.fixture(scope="module")
def good_zip(shared_data: Path) -> bytes:
    return make_ccp_zip(shared_data / "ccp")


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.close()


def assert_nothing_left(parent: Path) -> None:
    assert list(parent.iterdir()) == [], f"left behind: {[p.name for p in parent.iterdir()]}"


def test_success_installs_stripped_layout(server: Server, good_zip: bytes, tmp_path: Path):
    server.routes["/ccp.zip"] = (200, good_zip, None)
    parent = tmp_path / "data"
    dest = download_ccp(parent / "ccp", url=server.url("/ccp.zip"),
                        sha256=hashlib.sha256(good_zip).hexdigest(), progress=False)
    assert dest == (parent / "ccp").absolute()
    layout = check_ccp_layout(dest)
    assert (layout.photos, layout.pixel_level, layout.image_level, layout.labels) == (3, 3, 1, 59)
    assert (dest / "photos" / "0001.jpg").is_file() and not (dest / TOP).exists()
    assert sorted(p.name for p in parent.iterdir()) == ["ccp"], "temporary files must be removed"


def test_truncated_download_leaves_nothing(server: Server, good_zip: bytes, tmp_path: Path):
    server.routes["/ccp.zip"] = (200, good_zip[: len(good_zip) // 2], len(good_zip))
    parent = tmp_path / "data"
    with pytest.raises(UserError, match="incomplete|failed"):
        download_ccp(parent / "ccp", url=server.url("/ccp.zip"), progress=False)
    assert_nothing_left(parent)


def test_wrong_sha256_leaves_nothing(server: Server, good_zip: bytes, tmp_path: Path):
    server.routes["/ccp.zip"] = (200, good_zip, None)
    parent = tmp_path / "data"
    with pytest.raises(UserError, match="checksum mismatch"):
        download_ccp(parent / "ccp", url=server.url("/ccp.zip"), sha256="0" * 64, progress=False)
    assert_nothing_left(parent)


@pytest.mark.parametrize(
    "drop, reason",
    [
        (("label_list.mat",), "label_list.mat is missing"),
        (("photos/0002.jpg",), "without a photo"),
        (("annotations/image-level/1005.mat",), "no image-level annotations"),
    ],
)
def test_bad_layout_leaves_nothing(server: Server, shared_data: Path, tmp_path: Path, drop, reason):
    server.routes["/ccp.zip"] = (200, make_ccp_zip(shared_data / "ccp", drop=drop), None)
    parent = tmp_path / "data"
    with pytest.raises(UserError, match=reason):
        download_ccp(parent / "ccp", url=server.url("/ccp.zip"), progress=False)
    assert_nothing_left(parent)


def test_not_a_zip_and_unsafe_member(server: Server, shared_data: Path, tmp_path: Path):
    parent = tmp_path / "data"
    server.routes["/page.html"] = (200, b"<html>rate limited</html>", None)
    with pytest.raises(UserError, match="not a valid zip"):
        download_ccp(parent / "ccp", url=server.url("/page.html"), progress=False)
    assert_nothing_left(parent)
    server.routes["/evil.zip"] = (200, make_ccp_zip(shared_data / "ccp", extra={"../evil.txt": b"x"}), None)
    with pytest.raises(UserError, match="unsafe path"):
        download_ccp(parent / "ccp", url=server.url("/evil.zip"), progress=False)
    assert_nothing_left(parent)
    assert not (tmp_path / "evil.txt").exists()


def test_http_error_and_no_network(server: Server, tmp_path: Path):
    parent = tmp_path / "data"
    with pytest.raises(UserError, match="HTTP 404"):
        download_ccp(parent / "ccp", url=server.url("/missing.zip"), progress=False)
    port = server.httpd.server_address[1]
    server.close()  # nothing listens on the port any more
    server.close = lambda: None  # the fixture's teardown must not close twice
    with pytest.raises(UserError, match="cannot reach"):
        download_ccp(parent / "ccp", url=f"http://127.0.0.1:{port}/ccp.zip", timeout=5, progress=False)
    assert_nothing_left(parent)


def test_ensure_ccp_skips_existing_and_refuses_foreign_folder(server: Server, good_zip: bytes, tmp_path: Path):
    server.routes["/ccp.zip"] = (200, good_zip, None)
    dest = tmp_path / "ccp"
    ensure_ccp(dest, url=server.url("/ccp.zip"), progress=False)
    assert server.hits == 1 and is_ccp(dest)
    ensure_ccp(dest, url=server.url("/ccp.zip"), progress=False)
    assert server.hits == 1, "an installed dataset must not be downloaded again"
    foreign = tmp_path / "other"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists"):
        ensure_ccp(foreign, url=server.url("/ccp.zip"), progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("fashion-download")
    cmd = [exe] if exe else [sys.executable, "-m", "fashionvision.cli.download"]
    return subprocess.run([*cmd, *args, f"hydra.run.dir={cwd / 'run'}"], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_cli_download_then_refuse(server: Server, good_zip: bytes, tmp_path: Path):
    server.routes["/ccp.zip"] = (200, good_zip, None)
    dest = tmp_path / "ccp"
    args = ["ccp", f"dest={dest}", f"sources.ccp.url={server.url('/ccp.zip')}", "progress=false"]
    first = run_cli(args, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "installed" in first.stdout and is_ccp(dest)
    second = run_cli(args, tmp_path)
    assert second.returncode == 0 and "already holds" in second.stdout
    assert server.hits == 1


def test_cli_clear_errors(tmp_path: Path):
    bad = run_cli(["ccp", f"dest={tmp_path / 'ccp'}", "sources.ccp.url=http://127.0.0.1:9/x.zip",
                   "progress=false", "timeout=5"], tmp_path)
    assert bad.returncode == 2
    assert "error: cannot reach" in bad.stderr and "Traceback" not in bad.stderr
    assert "sources.ccp.url=http://127.0.0.1:9/x.zip" in bad.stderr  # the real key, not "the url"
    other = run_cli(["deepfashion"], tmp_path)
    assert other.returncode == 2 and "no public download for 'deepfashion'" in other.stderr
