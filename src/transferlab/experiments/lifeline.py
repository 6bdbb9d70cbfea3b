"""A worker's lifeline to the run that started it, in a module of its own that imports nothing heavy: a spawned
worker unpickles its initializer right after importing the parent's ``__main__`` (for the ``transferlab`` command,
a fraction of a second), so the parent-death signal is armed before the cells' torch and scikit-learn are imported
(seconds on a busy machine, during which a killed run would leave its workers behind)."""

from __future__ import annotations

import os
import signal
import threading
import time


def end_with_parent(parent_pid: int) -> None:
    """Make a worker process end when the run that started it ends, even by kill -9 (which lets no cleanup run):
    Linux's PR_SET_PDEATHSIG where available, and everywhere a watchdog thread that polls the parent.

    A worker ignores Ctrl-C, which the terminal sends to the whole process group: the run decides (it stops its
    workers and exits; a resume recomputes the cells they had not finished). Workers interrupted while importing
    torch to read their first cell used to print tracebacks. From here on: a spawned worker first imports the
    parent's ``__main__`` (for the ``transferlab`` command a fraction of a second; for a user's script that
    imports torch at its top, seconds), and a Ctrl-C before that still interrupts it there."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="end-with-parent").start()
