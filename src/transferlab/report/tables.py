"""Tidy tables from the store: results.csv, metrics.csv, correlations.csv, and the averages the figures use."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from transferlab import metrics

RESULT_COLUMNS = ["attack", "repetition", "surrogate", "fraction", "target", "setting", "budget", "error", "n_points"]
METRIC_COLUMNS = ["attack", "repetition", "surrogate", "fraction", "target", "setting", "S", "R", "V"]
CORRELATION_COLUMNS = ["attack", "budget", "target", "metric", "n_pairs", "pearson_r", "pearson_p", "kendall_tau", "kendall_p"]


def write_csv(path: Path, rows: Iterable[dict[str, Any]], columns: list[str]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
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
