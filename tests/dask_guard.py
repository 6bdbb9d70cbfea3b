"""A Dask worker preload (``dask worker --preload tests/dask_guard.py``) that makes the run folder a path the
worker cannot reach: an audit hook refuses every file operation (open, listing, creating, renaming, deleting,
SQLite) on a path under ``TRANSFERLAB_FORBIDDEN`` with PermissionError, and logs it to ``TRANSFERLAB_GUARD_LOG``,
so a cell that touched the run folder would fail and say so. The log's first line is written when the guard is
armed (once per process)."""

from __future__ import annotations

import os
import sys

_FORBIDDEN = os.path.realpath(os.environ["TRANSFERLAB_FORBIDDEN"])
_LOG = os.environ["TRANSFERLAB_GUARD_LOG"]
_EVENTS = ("open", "os.", "shutil.", "sqlite3.connect", "glob.", "pathlib.")


def _under(value: object) -> bool:
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    elif isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        return False
    path = os.path.realpath(os.path.abspath(value))
    return path == _FORBIDDEN or path.startswith(_FORBIDDEN + os.sep)


def _hook(event: str, args: tuple) -> None:
    if not event.startswith(_EVENTS) or not any(_under(a) for a in args):
        return
    with open(_LOG, "a") as log:  # the log lies outside the forbidden folder: no recursion
        log.write(f"blocked {event} {args!r}\n")
    raise PermissionError(f"the Dask worker touched the run folder: {event} {args!r}")


if not getattr(sys, "_transferlab_guard", False):  # a worker may import its preload more than once
    sys._transferlab_guard = True
    with open(_LOG, "a") as _log:
        _log.write(f"armed {os.getpid()}\n")
    sys.addaudithook(_hook)
