"""`fashion-train` on a fresh clone: the CCP data is downloaded and converted before training."""

from __future__ import annotations

from pathlib import Path

import pytest

import fashionvision.convert.download as download
from fashionvision.data.annotations import read_annotations
from fashionvision.cli._hydra import compose
from fashionvision.cli.train import ensure_dataset
from fashionvision.errors import UserError
from fixtures.ccp_archive import STEMS, Server, make_ccp_zip


@pytest.fixture()
def server():
    srv = Server()
    yield srv
    srv.close()


def test_missing_ccp_is_downloaded_then_converted(server, shared_data: Path, tmp_path: Path, monkeypatch):
    server.routes["/ccp.zip"] = (200, make_ccp_zip(shared_data / "ccp"), None)
    real = download.ensure_ccp
    monkeypatch.setattr(download, "ensure_ccp",
                        lambda dest, **kw: real(dest, url=server.url("/ccp.zip"), progress=False))
    source, converted = tmp_path / "raw" / "ccp", tmp_path / "converted" / "ccp"
    # the default locations (where a fresh clone's fashion-train converts), moved under tmp_path
    cfg = compose("train", [f"data_dir={tmp_path / 'raw'}", f"converted_dir={tmp_path / 'converted'}"])
    assert cfg["dataset"]["path"] == str(converted)

    ensure_dataset(cfg)

    assert download.is_ccp(source) and server.hits == 1
    paths = [r.path for split in ("train", "val", "test") for r in read_annotations(converted / f"{split}.txt")]
    assert sorted(paths) == [f"photos/{stem}.jpg" for stem in STEMS]
    assert len((converted / "classes.txt").read_text().splitlines()) == 56
    ensure_dataset(cfg)  # already there: nothing fetched again
    assert server.hits == 1


def test_conversion_can_be_refused(tmp_path: Path):
    cfg = compose("train", [f"dataset.path={tmp_path / 'nothing'}", "convert_if_missing=false"])
    with pytest.raises(UserError, match="not a converted dataset"):
        ensure_dataset(cfg)


def test_a_wrong_dataset_path_is_an_error_not_a_download(server, tmp_path: Path, monkeypatch):
    """A typo in dataset.path must not download and convert CCP into that path."""
    server.routes["/ccp.zip"] = (200, b"never fetched", None)
    real = download.ensure_ccp
    monkeypatch.setattr(download, "ensure_ccp",
                        lambda dest, **kw: real(dest, url=server.url("/ccp.zip"), progress=False))
    typo = tmp_path / "nonexistent"
    cfg = compose("train", [f"data_dir={tmp_path / 'raw'}", f"converted_dir={tmp_path / 'converted'}",
                            f"dataset.path={typo}"])
    with pytest.raises(UserError, match="only writes to the default") as info:
        ensure_dataset(cfg)
    assert "\n" not in str(info.value) and "fashion-convert ccp" in str(info.value)
    cfg = compose("train", [f"data_dir={tmp_path / 'raw'}", f"converted_dir={tmp_path / 'converted'}",
                            f"dataset.source={tmp_path / 'typo-source'}"])
    with pytest.raises(UserError, match="downloaded automatically only"):
        ensure_dataset(cfg)
    assert server.hits == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing created, no hidden staging folder


def test_the_cpu_profile_dataset_is_converted_on_the_first_run(shared_data: Path, tmp_path: Path, monkeypatch):
    """A newcomer without CUDA: `fashion-train` picks experiment=yolo_cpu_12m, whose data is
    ccp-416 in the default folders; it is converted, not refused with "only writes to the default 'ccp'"."""
    import fashionvision.convert as convert

    calls = []
    monkeypatch.setattr(convert, "get_converter", lambda name: lambda source, out: calls.append((name, source, out)))
    cfg = compose("train", ["experiment=yolo_cpu_12m", f"data_dir={shared_data}",
                            f"converted_dir={tmp_path / 'converted'}"])
    assert ensure_dataset(cfg) is True
    assert calls == [("ccp", shared_data / "ccp-416", tmp_path / "converted" / "ccp-416")]


def test_stale_staging_folders_are_cleaned_on_the_next_conversion(shared_data: Path, tmp_path: Path):
    """What SIGKILLed conversions leave is removed; live and foreign folders stay."""
    import os
    import subprocess
    import sys
    import time

    from fashionvision.convert import get_converter
    from fashionvision.convert.staging import STALE_AFTER_S, _host

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a process that has exited: its pid is free
    parent = tmp_path / "converted"
    stale = [parent / f".ccp.tmp-{_host()}-{dead}-abcd1234", parent / f".ccp.old-{_host()}-{dead}-abcd1234",
             parent / ".ccp.tmp-oldlegac"]
    kept = [parent / f".ccp.tmp-{_host()}-{os.getppid()}-live0000",  # its owner is running
            parent / f".ccp.tmp-otherhost-{dead}-abcd1234",  # another machine's: only age tells
            parent / ".ccp.tmp-newlegac", parent / ".ccp-416.tmp-oldlegac", parent / "notes"]
    for folder in stale + kept:
        folder.mkdir(parents=True)
        (folder / "part.png").write_bytes(b"x" * 1000)
    old = time.time() - STALE_AFTER_S - 60
    os.utime(parent / ".ccp.tmp-oldlegac", (old, old))
    os.utime(parent / ".ccp-416.tmp-oldlegac", (old, old))

    get_converter("ccp")(shared_data / "ccp-416", parent / "ccp", limit=4, workers=1, progress_bar=False)

    assert (parent / "ccp" / "train.txt").is_file()
    assert not any(p.exists() for p in stale)
    assert all(p.is_dir() for p in kept)
