"""`fashion-train` on a fresh clone: the CCP data is downloaded and converted before training."""

from __future__ import annotations

from pathlib import Path

import pytest

import fashionvision.convert.download as download
from fashionvision.data.annotations import read_annotations
from fashionvision.cli._hydra import compose
from fashionvision.cli.train import ensure_dataset
from fashionvision.errors import UserError
from test_download import STEMS, Server, make_ccp_zip


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
    cfg = compose("train", [f"dataset.source={source}", f"dataset.path={converted}"])

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
