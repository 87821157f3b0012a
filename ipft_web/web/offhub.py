"""Run a blocking call (compile + attach, detach) without stalling the server's event loop.

The call runs in a native daemon thread in both modes (nothing here monkey-patches threading, so
eventlet mode has native threads too); the caller polls `done` between socketio.sleep() calls, so
it can send progress to the browsers meanwhile. Not eventlet's tpool: its exit handler joins
every pool thread, so Ctrl-C or SIGTERM during the start-up compile (minutes in a slow VM) waited
for the compile. A daemon thread is dropped at exit, and the kernel closes whatever it opened.
"""
from __future__ import annotations

import threading


class Job:
    def __init__(self):
        self.done = False
        self.result = None
        self.error: BaseException | None = None
        self._finished = threading.Event()

    def _run(self, fn):
        try:
            self.result = fn()
        except BaseException as exc:  # handed to the caller, who turns it into one line
            self.error = exc
        finally:
            self.done = True
            self._finished.set()

    def join(self, timeout: float) -> bool:
        """Block (not cooperatively: for the exit path, off the event loop) up to `timeout`
        seconds for the call to end; True if it did."""
        return self._finished.wait(timeout)


def run_off_hub(fn) -> Job:
    job = Job()
    threading.Thread(target=job._run, args=(fn,), name="ipft-web-offhub", daemon=True).start()
    return job


def wait(socketio, job: Job, tick=None, interval: float = 0.1):
    """Sleep (cooperatively) until the job is done, calling tick() every interval."""
    while not job.done:
        if tick is not None:
            tick()
        socketio.sleep(interval)
    if job.error is not None:
        raise job.error
    return job.result
