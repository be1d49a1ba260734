"""How every long-running command stops: SIGINT (Ctrl-C) and SIGTERM (docker stop, systemd)
ask it to finish what it is doing and keep its outputs; a second one aborts.

One rule for `process`, `demo`, `map`, `alerts`, `simulate` and `replay`, so Ctrl-C never
loses what a run has produced.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["ABORT_GRACE_S", "stop_on_signals"]

log = logging.getLogger("trajstream.signals")

ABORT_GRACE_S = 2.0  # after a second signal, exit even if closing the outputs hangs


@contextmanager
def stop_on_signals(finishing: str | None = "the current batch") -> Iterator[threading.Event]:
    """SIGTERM and SIGINT set the returned event; the command finishes ``finishing`` (said
    in the log; None: quietly), flushes and keeps its outputs, and exits 0. A second one
    raises KeyboardInterrupt (outputs discarded, exit 130), and exits within ABORT_GRACE_S
    even if a client call or a flush is stuck. Outside the main thread (signals go there
    only) the event is never set by a signal."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("received %s again: stopping now", name)
            hard = threading.Timer(ABORT_GRACE_S, os._exit, (130,))
            hard.daemon = True
            hard.start()
            raise KeyboardInterrupt
        if finishing is not None:
            log.info("received %s: finishing %s", name, finishing)
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)
