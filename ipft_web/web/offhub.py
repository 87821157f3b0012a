"""Run a blocking call (compile + attach, detach) without stalling the server's event loop.

eventlet mode: the call runs in eventlet's native thread pool (eventlet.tpool.execute) from a green
thread; threading mode: in a plain daemon thread. Either way the caller polls `done` between
socketio.sleep() calls, so it can send progress to the browsers meanwhile.
"""
from __future__ import annotations

import threading


class Job:
    def __init__(self):
        self.done = False
        self.result = None
        self.error: BaseException | None = None

    def _run(self, fn):
        try:
            self.result = fn()
        except BaseException as exc:  # handed to the caller, who turns it into one line
            self.error = exc
        finally:
            self.done = True


def run_off_hub(socketio, fn) -> Job:
    job = Job()
    if socketio.async_mode == "eventlet":
        from eventlet import tpool

        def green():
            try:
                tpool.execute(job._run, fn)
            finally:
                job.done = True
        socketio.start_background_task(green)
    else:
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
