"""Stop signals during training: finish the step, checkpoint, exit.

``timeout``, Slurm, container stops, ``kill -- -PGID`` and Ctrl-C all signal the whole
process group, DataLoader workers included. A worker killed by SIGTERM makes the main process
die with ``RuntimeError: DataLoader worker ... is killed by signal`` before it can save, and a
Ctrl-C raised ``KeyboardInterrupt`` wherever the main process happened to be. So:

* loader workers ignore SIGTERM and SIGINT (:func:`ignore_stop_signals`, called by every
  ``worker_init_fn``); the main process alone decides, and shuts them down normally;
* in the main process the first SIGTERM or SIGINT only raises a flag (:class:`StopSignals`):
  the trainer finishes the step in flight, writes ``last.pt`` and returns, and the CLI exits
  143 (SIGTERM) or 130 (SIGINT) after printing the command that continues the run;
* a second Ctrl-C aborts at once (exit 130, no traceback); checkpoints are written
  atomically, so the last good one survives that too.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any, Callable

log = logging.getLogger("fashionvision.engine")

#: shell convention: 128 + signal number
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}


def ignore_stop_signals() -> None:
    """In a loader worker: leave SIGTERM and SIGINT to the main process."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def shutdown_loader_workers(*loaders: Any) -> None:
    """Stop the persistent workers of ``loaders`` now.

    Workers that ignore SIGTERM cannot be left to interpreter exit: ``multiprocessing`` ends
    daemonic children with SIGTERM and then waits for them, forever. Shutting them down the
    DataLoader's own way (a sentinel on their queues, then join) works whatever they ignore.
    """
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None)
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if callable(shutdown):
            shutdown()
        if iterator is not None:
            loader._iterator = None


class StopSignals:
    """Turns the first SIGTERM/SIGINT into a flag; a second SIGINT exits at once.

    Use as a context manager around the training loop (handlers are installed only in the
    main thread, where Python delivers signals, and restored on exit). ``on_stop`` is called
    once with the signal number when the first one arrives.
    """

    def __init__(self, on_stop: Callable[[int], None] | None = None):
        self.on_stop = on_stop
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def exit_code(self) -> int:
        """143 after SIGTERM, 130 after SIGINT (143 when none came: preempted by a peer rank)."""
        return EXIT_CODES.get(self.signum, 143) if self.signum is not None else 143

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            name = signal.Signals(signum).name
            hint = " (Ctrl-C again aborts at once)" if signum == signal.SIGINT else ""
            log.warning("%s received: finishing the step, then writing a checkpoint%s", name, hint)
            if self.on_stop is not None:
                self.on_stop(signum)
        elif signum == signal.SIGINT:
            # the user insists: no checkpoint, no traceback; the last one written is intact
            print("\naborted (second Ctrl-C): the last checkpoint written is kept", file=sys.stderr, flush=True)
            os._exit(130)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        """Restore the previous handlers, except SIGINT once a stop signal came.

        After a stop the process is on its way out (shutting loader workers down, printing the
        resume command); a second Ctrl-C there must still abort quietly with 130, not raise
        ``KeyboardInterrupt`` in whatever runs at that moment.
        """
        for signum, previous in self._previous.items():
            if not (signum == signal.SIGINT and self.signum is not None):
                signal.signal(signum, previous)
        self._previous.clear()
