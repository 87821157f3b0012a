"""Ending a process on a signal by raising KeyboardInterrupt in its main thread, again and again
until the exception is caught where it should be.

Python runs a signal handler between two bytecodes of the main thread, wherever that happens to
be. When that is inside a weakref callback, a __del__ or a garbage-collection pass, an exception
the handler raises is printed as "Exception ignored in ..." and dropped: a server told to stop by
SIGTERM went on serving. So the handler also arms a timer that raises it again, until the code
that handles the interrupt says it has it (`caught()`); after that, further signals are ignored so
the clean-up they asked for is not cut short.
"""
from __future__ import annotations

import signal

RETRY_SECONDS = 0.5


class Interrupt:
    def __init__(self, signals=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP), retry: float = RETRY_SECONDS,
                 on_signal=None, when=None):
        self.signals = tuple(signals)
        self.retry = retry
        self.on_signal = on_signal    # called first, with the signal number (e.g. to cancel a start)
        self.when = when              # raise only while this says so (None: always)
        self.requested = False
        self._caught = False

    def install(self) -> "Interrupt":
        """From the main thread."""
        for signum in self.signals:
            signal.signal(signum, self._handle)
        signal.signal(signal.SIGALRM, self._again)
        return self

    def caught(self) -> None:
        """Say the KeyboardInterrupt arrived (or the process is ending anyway): no more raising."""
        self._caught = True
        signal.setitimer(signal.ITIMER_REAL, 0)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        if self.on_signal is not None:
            self.on_signal(signum)
        self._raise()

    def _again(self, signum, frame) -> None:
        if self.requested:
            self._raise()

    def _raise(self) -> None:
        if self._caught or (self.when is not None and not self.when()):
            return
        signal.setitimer(signal.ITIMER_REAL, self.retry)
        raise KeyboardInterrupt
