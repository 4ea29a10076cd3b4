"""Progress for every long step: a tqdm bar on a terminal, a plain line now and then elsewhere.

Why one helper: silence for minutes reads as a hang, but a bar redrawn with carriage returns
is only right on a terminal; in a log file or a cluster job it leaves hundreds of ``\\r``
frames. :func:`progress` picks by the stream: a tqdm bar (with its ETA) when the stream is a
terminal, else a plain line every 10 % or every 30 s (whichever comes first) with the count,
elapsed time, ETA and the postfix values. Training epochs, validation, ``fashion-eval``,
``fashion-compare``, conversion and ``fashion-predict`` all go through it.

``FASHIONVISION_PROGRESS=bar|lines|off`` forces one behaviour (e.g. ``lines`` under a terminal
multiplexer whose scrollback is kept, ``off`` for quiet scripts).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator, TextIO

PROGRESS_ENV = "FASHIONVISION_PROGRESS"
#: a plain line at least every this fraction of the total ...
LINE_EVERY_FRACTION = 0.1
#: ... or every this many seconds, whichever comes first
LINE_EVERY_SECONDS = 30.0


def format_seconds(seconds: float) -> str:
    """``75`` -> ``1:15``, ``3725`` -> ``1:02:05`` (as tqdm writes them)."""
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class NullProgress:
    """The iterable itself, with the bar's methods doing nothing (other ranks, ``enabled=False``)."""

    def __init__(self, iterable: Iterable | None = None):
        self.iterable = iterable if iterable is not None else ()

    def __iter__(self) -> Iterator:
        return iter(self.iterable)

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress:
    """Plain progress lines for streams that are not terminals (log files, cluster jobs).

    A line is written when the count crosses the next 10 % of ``total`` or ``every_seconds``
    have passed since the last line, once ``delay`` seconds have passed (quick steps stay
    silent); :meth:`close` writes a last line when any was written. No carriage returns.
    """

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, file: TextIO,
                 unit: str = "it", delay: float = 0.0, every_fraction: float = LINE_EVERY_FRACTION,
                 every_seconds: float = LINE_EVERY_SECONDS):
        self.iterable = iterable if iterable is not None else ()
        self.total = int(total) if total else None
        self.desc, self.file, self.unit, self.delay = desc, file, unit, float(delay)
        self.every_fraction, self.every_seconds = float(every_fraction), float(every_seconds)
        self.n = 0
        self.postfix = ""
        self.started = time.perf_counter()
        self._last_line = self.started
        self._next_mark = self.every_fraction
        self.lines = 0
        self._closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def set_postfix(self, values: dict | None = None, refresh: bool = False, **kwargs: Any) -> None:
        values = {**(values or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.started < self.delay:
            return
        fraction = self.n / self.total if self.total else None
        due = now - self._last_line >= self.every_seconds
        if fraction is not None and fraction >= self._next_mark:
            due = True
        if due and not (fraction is not None and fraction >= 1.0):  # the end is close()'s line
            self._write(now)
        if fraction is not None:
            while self._next_mark <= fraction:
                self._next_mark += self.every_fraction

    def _write(self, now: float, done: bool = False) -> None:
        elapsed = now - self.started
        if self.total:
            count = f"{self.n}/{self.total} ({100.0 * self.n / self.total:.0f}%)"
        else:
            count = f"{self.n} {self.unit}"
        if done:
            timing = f"done in {format_seconds(elapsed)}"
        else:
            timing = f"{format_seconds(elapsed)} elapsed"
            if self.total and self.n:
                timing += f", ETA {format_seconds(elapsed / self.n * (self.total - self.n))}"
        text = f"{self.desc}: {count}, {timing}" + (f", {self.postfix}" if self.postfix else "")
        print(text, file=self.file, flush=True)
        self._last_line = now
        self.lines += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        now = time.perf_counter()
        if self.lines or (now - self.started >= self.delay and self.n and self.delay > 0):
            self._write(now, done=True)


def _mode(file: TextIO) -> str:
    forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if forced in ("bar", "lines", "off"):
        return forced
    isatty = getattr(file, "isatty", None)
    try:
        return "bar" if isatty is not None and isatty() else "lines"
    except ValueError:  # a closed stream
        return "off"


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", *,
             enabled: bool = True, unit: str = "it", file: TextIO | None = None, delay: float = 2.0,
             leave: bool = False) -> Any:
    """A progress wrapper around ``iterable`` (or a manual one: ``update(n)``, ``close()``).

    Args:
        total: the expected count (``len(iterable)`` when it has one).
        enabled: ``False`` gives a silent stand-in with the same methods.
        file: the stream (default ``sys.stderr``); a terminal gets a tqdm bar, anything else
            plain lines (see :class:`LineProgress`).
        delay: seconds before anything is shown (steps shorter than this stay silent).
        leave: keep the finished bar on the terminal.
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    file = file if file is not None else sys.stderr
    mode = _mode(file) if enabled else "off"
    if mode == "off":
        return NullProgress(iterable)
    if mode == "lines":
        return LineProgress(iterable, total, desc, file, unit=unit, delay=delay)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=file, dynamic_ncols=True, leave=leave,
                mininterval=0.5, delay=delay)


class TrackedLoader:
    """A data loader whose iteration shows progress; every other attribute is the loader's.

    Tasks' ``evaluate`` read ``loader.dataset``, so validation and ``fashion-eval`` get a bar
    without any change to the tasks.
    """

    def __init__(self, loader: Any, desc: str, enabled: bool = True, unit: str = "batch"):
        self.loader, self.desc, self.enabled, self.unit = loader, desc, enabled, unit

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        bar = progress(self.loader, total=len(self.loader), desc=self.desc, enabled=self.enabled, unit=self.unit)
        try:
            yield from bar
        finally:
            bar.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["loader"], name)
