"""Tidy tables from the store: results.csv, metrics.csv, correlations.csv, and the averages the figures use."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from transferlab import metrics
from transferlab.errors import ConfigError, DataError
from transferlab.experiments.store import Store, run_path

RESULT_COLUMNS = ["attack", "repetition", "surrogate", "fraction", "target", "setting", "budget", "error", "n_points"]
METRIC_COLUMNS = ["attack", "repetition", "surrogate", "fraction", "target", "setting", "S", "R", "V"]
CORRELATION_COLUMNS = ["attack", "budget", "target", "metric", "n_pairs", "pearson_r", "pearson_p", "kendall_tau", "kendall_p"]


#: most models a stored config may name (a config names each model once, from a registry of a dozen)
MAX_STORED_NAMES = 1000


@dataclass
class StoredRun:
    """What a report reads from a run's store, checked (:func:`read_run`)."""

    config: dict[str, Any]
    results: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    sweep: list[dict[str, Any]]
    cells: list[dict[str, Any]]
    versions: dict[str, Any] = field(default_factory=dict)
    last_run: dict[str, Any] = field(default_factory=dict)


def read_run(run_dir: str | Path, need_cells: bool = False) -> StoredRun:
    """A run's store read for a report: every table checked value by value (:meth:`Store.table`), the stored
    config a mapping whose fields a report uses have the right kinds, transfer rows naming their surrogate and
    fraction. An edited or damaged store is a one-line DataError naming the store, never a crash in a figure."""
    if not isinstance(run_dir, (str, os.PathLike)):
        raise ConfigError(f"give a run folder's path (text or a pathlib.Path), got {type(run_dir).__name__}")
    if Path(run_dir).is_file():
        raise ConfigError(f"{run_dir} is a file; give the run folder that holds it (the --out folder of "
                          "`transferlab run`)")
    store = Store(Path(run_dir) / "store.sqlite", create=False)
    try:
        cells = store.table("cells")
        if need_cells and not cells:
            raise ConfigError(f"{run_dir} holds no finished cell yet; run (or resume) the experiment first — the "
                              "outputs there are left as they are")
        config = store.config_data()
        _check_stored_config(config, store.path)
        run = StoredRun(config,
                        sort_rows(store.table("results"), ["setting", "repetition", "surrogate", "fraction", "target",
                                                           "budget"]),
                        sort_rows(store.table("metrics"), ["setting", "repetition", "surrogate", "fraction", "target"]),
                        sort_rows(store.table("sweep"), ["repetition", "weight_decay"]),
                        cells, store.json_meta("versions"), store.json_meta("last_run"))
        for table, rows in (("results", run.results), ("metrics", run.metrics)):
            for row in rows:
                if row["setting"] == "transfer" and (row["surrogate"] is None or row["fraction"] is None):
                    raise DataError(f"{store.path}: a transfer row of table {table!r} (cell {row['cell_id']!r}) names "
                                    "no surrogate or fraction; the store was edited or is damaged: rerun the "
                                    "experiment in a new --out folder")
        seconds = run.last_run.get("seconds", 0.0)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise DataError(f"{store.path}: meta 'last_run' holds seconds {seconds!r}, not a number; the store was "
                            "edited or is damaged: rerun the experiment in a new --out folder")
    finally:
        store.close()
    return run


def _check_stored_config(config: dict[str, Any], path: Path) -> None:
    """The fields of a stored config that a report uses, of the kinds it uses them as."""
    from transferlab.experiments.config import check_name

    def bad(field_name: str, what: str) -> DataError:
        return DataError(f"{path}: the stored config's field {field_name!r} is not {what}; the store was edited or is "
                         "damaged: rerun the experiment in a new --out folder")

    for name in ("surrogates", "targets"):
        names = config.get(name, [])
        if not isinstance(names, list) or len(names) > MAX_STORED_NAMES:
            raise bad(name, f"a list of at most {MAX_STORED_NAMES} model names")
        for item in names:
            try:
                check_name(item, name)
            except ConfigError:
                raise bad(name, "a list of model names") from None
    fractions = config.get("surrogate_fractions", [1.0])
    if not isinstance(fractions, list) or not fractions or len(fractions) > MAX_STORED_NAMES or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1 for f in fractions):
        raise bad("surrogate_fractions", "a list of fractions in (0, 1]")
    if config.get("kind", "evasion") not in ("evasion", "poisoning"):
        raise bad("kind", "evasion or poisoning")
    attack = config.get("attack", {})
    if not isinstance(attack, dict):
        raise bad("attack", "a mapping")
    if not isinstance(attack.get("norm", "2"), (str, int, float)):
        raise bad("attack.norm", "1, 2 or inf")
    attacked = attack.get("attack_class")
    if attacked is not None and (isinstance(attacked, bool) or not isinstance(attacked, (int, str))):
        raise bad("attack.attack_class", "a class name or label")
    detector = config.get("detector") or {}
    if not isinstance(detector, dict):
        raise bad("detector", "a mapping")
    fpr = detector.get("fpr")
    if fpr is not None and (isinstance(fpr, bool) or not isinstance(fpr, (int, float)) or not 0 < fpr < 1):
        raise bad("detector.fpr", "a rate in (0, 1)")


def write_csv(path: Path, rows: Iterable[dict[str, Any]], columns: list[str]) -> None:
    tmp = run_path(path.parent, path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    tmp.replace(path)


def sort_rows(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    def key(row: dict[str, Any]) -> tuple:
        return tuple((row[k] is None, -1 if row[k] is None else row[k]) for k in keys)

    return sorted(rows, key=key)


def mean_by(rows: Iterable[dict[str, Any]], keys: tuple[str, ...], value: str) -> dict[tuple, float]:
    """Mean of ``value`` over repetitions (NaN-aware) for each combination of ``keys``."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for row in rows:
        v = row[value]
        groups[tuple(row[k] for k in keys)].append(np.nan if v is None else float(v))
    return {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in groups.items()}


def transfer_pairs(results: list[dict], metric_rows: list[dict]) -> list[dict[str, Any]]:
    """One row per (surrogate, fraction, target, budget) of the transfer setting: mean error and mean S, R, V."""
    transfer = [r for r in results if r["setting"] == "transfer"]
    errors = mean_by(transfer, ("surrogate", "fraction", "target", "budget"), "error")
    tm = [m for m in metric_rows if m["setting"] == "transfer"]
    means = {name: mean_by(tm, ("surrogate", "fraction", "target"), name) for name in ("S", "R", "V")}
    pairs = []
    for (surrogate, fraction, target, budget), error in errors.items():
        key = (surrogate, fraction, target)
        pairs.append({"attack": transfer[0]["attack"], "surrogate": surrogate, "fraction": fraction, "target": target, "budget": budget,
                      "error": error, **{name: means[name].get(key, np.nan) for name in means}})
    return pairs


def correlations(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's Table 1: for each budget, Pearson and Kendall correlation of each metric with the transfer rate
    across surrogate–target pairs (both surrogate fractions). ``target == "all"`` pools every pair; a row per target
    correlates across surrogates only (R is a pairwise quantity: the paper compares it across surrogates)."""
    rows = []
    attack = pairs[0].get("attack", "evasion") if pairs else "evasion"
    for budget in sorted({p["budget"] for p in pairs}):
        if budget == 0:
            continue
        at = [p for p in pairs if p["budget"] == budget]
        groups = [("all", at)] + [(t, [p for p in at if p["target"] == t]) for t in sorted({p["target"] for p in at})]
        for target, group in groups:
            for name in ("S", "R", "V"):
                if target != "all" and name == "S":
                    continue  # S is a property of the target: constant within a target
                stats = metrics.correlation([p[name] for p in group], [p["error"] for p in group])
                rows.append({"attack": attack, "budget": budget, "target": target, "metric": name, **stats})
    return rows
