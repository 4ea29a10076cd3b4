"""Progress for long steps: a bar on a terminal, a few plain lines elsewhere."""

from __future__ import annotations

import io

import pytest

from fashionvision import progress as P


class _Clock:
    """A fake perf_counter advanced by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(P.time, "perf_counter", fake)
    monkeypatch.delenv(P.PROGRESS_ENV, raising=False)
    return fake


def test_non_terminal_output_has_no_carriage_returns_and_few_lines(clock: _Clock) -> None:
    out = io.StringIO()  # not a terminal, like a log file or a cluster job's output
    bar = P.progress(range(1000), desc="epoch 1", file=out, delay=0.0)
    assert isinstance(bar, P.LineProgress)
    for i, _ in enumerate(bar):
        clock.now += 0.5  # 500 s in all: the 30-s rule adds lines between the 10 % marks
        if i % 100 == 0:
            bar.set_postfix({"loss": f"{1.0 / (i + 1):.3f}"})
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    # at most one line per 10 % mark plus one per 30 s, and the final one
    assert 10 <= len(lines) <= 10 + 500 // 30 + 1, lines
    assert lines[-1].startswith("epoch 1: 1000/1000 (100%), done in 8:20")
    assert "ETA" in lines[0] and "loss=" in lines[1]


def test_quick_steps_stay_silent_and_terminals_get_a_bar(clock: _Clock, monkeypatch) -> None:
    out = io.StringIO()
    for _ in P.progress(range(50), desc="quick", file=out, delay=2.0):
        clock.now += 0.01  # half a second in all: below the delay
    assert out.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    from tqdm.auto import tqdm

    assert isinstance(P.progress(range(3), desc="x", file=Terminal()), tqdm)
    monkeypatch.setenv(P.PROGRESS_ENV, "off")
    assert isinstance(P.progress(range(3), desc="x", file=Terminal()), P.NullProgress)


def test_tracked_loader_keeps_the_loader_attributes(clock: _Clock) -> None:
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(list(range(10)), batch_size=2)
    tracked = P.TrackedLoader(loader, "validate")
    assert tracked.dataset is loader.dataset and len(tracked) == 5
    assert [b.tolist() for b in tracked] == [b.tolist() for b in loader]
    assert isinstance(next(iter(tracked)), torch.Tensor)


def test_conversion_progress_uses_the_helper(clock: _Clock, capsys) -> None:
    from fashionvision.convert.common import progress

    bar = progress(range(20), 20, "ccp", enabled=True)  # pytest's captured stderr is no terminal
    assert isinstance(bar, P.LineProgress)
    assert list(progress(range(3), 3, "ccp", enabled=False)) == [0, 1, 2]
