"""A full disk while saving, and checkpoints that are not what they seem."""

from __future__ import annotations

import logging
import os
import resource
import signal

import pytest
import torch

from fashionvision.engine import checkpoint as ck
from fashionvision.errors import UserError


def _state(value: float, size: int = 16) -> dict:
    return {"epoch": int(value), "model": {"w": torch.full((size,), value)}, "config": {"model": {"name": "yolo"}}}


def test_full_disk_while_saving_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    """``RLIMIT_FSIZE`` below the checkpoint's size: ``torch.save`` raises, the old file stays."""
    path = tmp_path / "last.pt"
    ck.save_checkpoint(path, _state(1.0))
    good = path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(UserError) as info:
            ck.save_checkpoint(path, _state(2.0, size=1_000_000))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "intact" in message
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the partial file is gone


def test_ccp_mask_write_failure_is_one_line(synthetic_ccp, tmp_path, monkeypatch):
    """``cv2.imwrite`` returning False (full disk) stops the conversion in one line, output untouched."""
    from fashionvision.convert import ccp

    monkeypatch.setattr(ccp.cv2, "imwrite", lambda *args, **kwargs: False)
    with pytest.raises(UserError, match="could not write the mask") as info:
        ccp.convert(synthetic_ccp, tmp_path / "out", workers=1, progress_bar=False)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no output, no staging folder left


def test_random_bytes_are_not_called_an_attack_and_the_previous_is_offered(tmp_path):
    path = tmp_path / "last.pt"
    ck.save_checkpoint(path, _state(1.0))
    ck.save_checkpoint(path, _state(2.0))
    path.write_bytes(os.urandom(4096))
    with pytest.raises(UserError) as info:
        ck.load_checkpoint(path)
    message = str(info.value)
    assert "pickled" not in message and "not a PyTorch checkpoint" in message, message
    assert "last.prev.pt" in message


@pytest.mark.parametrize("entry", ["config", "task"])
def test_a_checkpoint_whose_config_is_a_list_says_so(tmp_path, entry):
    path = tmp_path / "odd.pt"
    torch.save({"model": {"w": torch.zeros(1)}, entry: [1, 2]}, path)
    with pytest.raises(UserError, match=f"'{entry}' is a list"):
        ck.load_checkpoint(path)


def test_resume_auto_falls_back_to_the_previous_checkpoint(tmp_path, caplog):
    folder = tmp_path / "run" / ck.CHECKPOINT_DIR
    ck.save_checkpoint(folder / ck.LAST, _state(1.0))
    ck.save_checkpoint(folder / ck.LAST, _state(2.0))
    (folder / ck.LAST).write_bytes(os.urandom(1000))
    with caplog.at_level(logging.WARNING, logger="fashionvision.engine"):
        found = ck.find_resume_checkpoint(tmp_path / "run")
    assert found == folder / ck.PREV
    assert "last.pt" in caplog.text and "unreadable" in caplog.text and "last.prev.pt" in caplog.text
    assert ck.load_checkpoint(found)["epoch"] == 1
    (folder / ck.PREV).write_bytes(b"also broken")
    with pytest.raises(UserError, match="no readable checkpoint"):
        ck.find_resume_checkpoint(tmp_path / "run")
