"""A run's tables as pandas DataFrames, for notebooks: ``transferlab.results(run_dir)``.

pandas is an optional dependency (``pip install 'transferlab[pandas]'``); the tables come from the run's store
alone, exactly as the report's CSV files do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferlab.errors import ConfigError
from transferlab.report.tables import (CORRELATION_COLUMNS, METRIC_COLUMNS, RESULT_COLUMNS, correlations, read_run,
                                       transfer_pairs)


@dataclass
class RunResults:
    """The tables of one run: ``results`` (one row per target, setting and budget), ``metrics`` (S, R, V per
    surrogate–target pair), ``correlations`` (the paper's Table 1, per target and pooled), ``pairs`` (mean transfer
    rate with mean S, R, V per pair and budget), ``sweep`` (Fig. 3, if run) and the run's ``config``."""

    results: Any
    metrics: Any
    correlations: Any
    pairs: Any
    sweep: Any
    config: dict = field(default_factory=dict)


def results(run_dir: str | Path) -> RunResults:
    """Read a run folder's store into DataFrames (see :class:`RunResults`); a store whose values were edited (text
    in a numeric column, a config that is not a mapping) is a :class:`~transferlab.errors.DataError`."""
    try:
        import pandas as pd
    except ImportError:
        raise ConfigError("transferlab.results needs pandas: pip install 'transferlab[pandas]'") from None
    run = read_run(run_dir)  # an edited or damaged store is a DataError naming it
    config, rows, metric_rows, sweep = run.config, run.results, run.metrics, run.sweep
    pairs = transfer_pairs(rows, metric_rows)
    frame = lambda data, columns: pd.DataFrame(data, columns=columns)  # noqa: E731
    return RunResults(
        results=frame(rows, RESULT_COLUMNS),
        metrics=frame(metric_rows, METRIC_COLUMNS),
        correlations=frame(correlations(pairs), CORRELATION_COLUMNS),
        pairs=pd.DataFrame(pairs),
        sweep=frame(sweep, ["repetition", "weight_decay", "budget", "error", "S"]),
        config=config,
    )
