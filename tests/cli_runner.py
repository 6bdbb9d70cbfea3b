"""``transferlab ARGS`` run in the test's own process, for the many command-line cases that check a refusal (exit
code 2, one line on stderr, no traceback): an interpreter start imports torch and scikit-learn again, 5–8 s per
case on a slow CI machine, against milliseconds here. What only a real process shows (a kill and resume, workers
that end with their parent, a lock held by another process) and one catalogue case still run as subprocesses.

An uncaught exception fails the calling test, so "no traceback" is checked either way; warnings and log records
of WARNING and above are written to the captured stderr as a process would print them (pytest would otherwise
record them), so they still break "one line". What this does not see: writes of native code to file descriptor 2,
and warnings raised only while a module is first imported (the subprocess catalogue case covers both)."""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import sys
import types
import warnings


def run_in_process(*args: str) -> types.SimpleNamespace:
    """Exit code, stdout and stderr of ``transferlab ARGS`` (as subprocess.run would give them)."""
    from transferlab import cli

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["transferlab", *args]
    code = 0
    # log records of WARNING and above reach stderr, as Python's last-resort handler prints them in a process
    # (pytest's own handler would keep them)
    handler = logging.StreamHandler(err)
    handler.setLevel(logging.WARNING)
    logging.getLogger().addHandler(handler)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("default")  # Python's own filters: once per place, deprecations hidden
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: err.write(
                warnings.formatwarning(message, category, filename, lineno, line))
            try:
                cli.main()
            except SystemExit as exc:
                if isinstance(exc.code, str):  # sys.exit("message"): printed to stderr, code 1
                    err.write(exc.code + "\n")
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
        logging.getLogger().removeHandler(handler)
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def run_subprocess(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """``transferlab ARGS`` as a real process (``python -m transferlab.cli``)."""
    return subprocess.run([sys.executable, "-m", "transferlab.cli", *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)
