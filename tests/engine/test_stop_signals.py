"""StopSignals in-process: the handler a second Ctrl-C needs outlives the training loop.

Found by CI (``tests/test_train_signals.py::test_second_ctrl_c_aborts_at_once``, flaky): on a
tiny model the first Ctrl-C ended the loop within 50 ms, the handlers were restored, and the
second Ctrl-C raised ``KeyboardInterrupt`` inside the loader shutdown (a traceback, exit -2).
"""

from __future__ import annotations

import signal

from fashionvision.engine.signals import StopSignals


def test_after_a_stop_a_second_ctrl_c_is_still_handled() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stops = StopSignals()
    try:
        with stops:
            signal.raise_signal(signal.SIGINT)  # the first Ctrl-C: only a flag
            assert stops.signum == signal.SIGINT
        # the loop is over, the process is on its way out: Ctrl-C must still abort quietly
        assert signal.getsignal(signal.SIGINT) == stops._handle
        assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_without_a_stop_every_handler_is_restored() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with StopSignals():
        assert signal.getsignal(signal.SIGINT) != before[signal.SIGINT]
    assert {s: signal.getsignal(s) for s in before} == before
