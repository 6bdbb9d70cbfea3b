"""User-facing errors: each message says what is wrong and how to fix it (the CLI prints it in one line, exit 2)."""

from __future__ import annotations

from typing import Any


def shown(value: Any, width: int = 40) -> str:
    """``repr(value)`` cut to ``width`` characters, for messages (a 400-digit number or a long list stays
    readable)."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


class TransferlabError(Exception):
    """Base class of the errors caused by the user's input (data, config, names), not by a bug."""


class DataError(TransferlabError, ValueError):
    """A dataset is missing, corrupt, truncated, or holds values transferlab cannot use (NaN, wrong shape)."""


class ConfigError(TransferlabError, ValueError):
    """A configuration, a name or an option is wrong."""
