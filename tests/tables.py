"""Compare the CSV tables of two runs as numbers, never as strings.

Floats computed on two machines (or with two BLAS kernels: another CPU, another ``OPENBLAS_CORETYPE``) agree only
to rounding, so a table is compared row by row, matched on its key columns, with:

* key columns (``attack``, ``repetition``, ``surrogate``, ``fraction``, ``target``, ``setting``, ``budget``, and
  ``metric``/``weight_decay`` where a table has them), names and any other text: exactly;
* counts (``n_points``, ``n_pairs``): exactly, as integers;
* every other number at a stated tolerance: ``rtol``/``atol`` for rows of float64 pipelines (linear, kernel and
  forest models: scikit-learn fits, float64 torch scores and gradients), and the looser ``network_rtol``/
  ``network_atol`` for rows where a float32 network (``nn_*``, ``cnn``) is the surrogate or the target, or for
  correlation rows that pool such pairs. An empty cell (an undefined value: S and R of a forest) matches only an
  empty cell, NaN only NaN.

An ``error`` column is a count over n points: two values differ by at least 1/n or not at all, so ``rtol=1e-9``
compares it exactly, whichever tolerance its row gets.

What determinism means in this project: a run is *identical on one machine* for a seed, whatever the worker count
or executor, and *equal to tolerance across machines*. Tests of the first kind (1 vs 2 workers, dask vs inline,
resume) pass ``**SAME_MACHINE`` (1e-9 everywhere: it holds with identical bits, and a test that is rerun on another
machine compares two runs of that machine); golden tests use the defaults, which hold across machines.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

KEY_COLUMNS = ("attack", "repetition", "surrogate", "fraction", "target", "setting", "budget", "metric",
               "weight_decay")
COUNT_COLUMNS = ("n_points", "n_pairs")
NETWORKS = ("nn_", "cnn")

#: float64 pipelines: rounding differences between BLAS kernels are ~1e-16 relative per operation and grow through
#: the fits and line searches of a run; measured on the golden cases (tests/golden) rerun on an AVX-512 Xeon with
#: OpenBLAS's own kernels and with OPENBLAS_CORETYPE=Haswell, SandyBridge and Prescott: at most 3e-12 relative.
#: (An iterative solver that stops at a gradient tolerance, not at rounding, agrees only to that tolerance: see
#: the poisoning case of the golden test.)
RTOL, ATOL = 1e-9, 1e-12
#: float32 networks: one rounding is 6e-8 relative, and training (epochs of minibatch Adam) and the attack's line
#: search on the network amplify it; measured as above, and with torch's kernels switched from AVX-512 to AVX2 or
#: none (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS): at most 6e-7 relative. 1e-5 leaves a margin of ~20.
NETWORK_RTOL, NETWORK_ATOL = 1e-5, 1e-6
#: two runs on one machine: identical bits are expected; 1e-9 is the stand-in for "identical" that also holds for a
#: value written to and read back from a CSV
SAME_MACHINE = {"rtol": 1e-9, "atol": 1e-12, "network_rtol": 1e-9, "network_atol": 1e-12}


def read_csv(path: Path | str) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts of strings (the header gives the keys)."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def involves_network(row: dict[str, str]) -> bool:
    """Whether a float32 network produced a row's numbers: as surrogate or target, or pooled into an ``all`` row of
    the correlation table."""
    names = [row.get("surrogate") or "", row.get("target") or ""]
    return any(name.startswith(NETWORKS) for name in names) or row.get("target") == "all"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _cell_mismatch(column: str, got: str, want: str, rtol: float, atol: float) -> str | None:
    """Why two cells differ, or None when they agree."""
    if column in KEY_COLUMNS or got == want:
        return None if got == want else f"{got!r} != {want!r}"
    if got == "" or want == "":
        return f"{got!r} != {want!r} (an empty cell matches only an empty cell)"
    a, b = _number(got), _number(want)
    if a is None or b is None:
        return f"{got!r} != {want!r}"
    if column in COUNT_COLUMNS:
        return None if a == b and a == int(a) else f"count {got} != {want}"
    if math.isnan(a) or math.isnan(b):
        return None if math.isnan(a) and math.isnan(b) else f"{got} != {want}"
    if math.isinf(a) or math.isinf(b):
        return None if a == b else f"{got} != {want}"
    if abs(a - b) <= atol + rtol * abs(b):
        return None
    return f"{got} != {want} (|diff| {abs(a - b):.3g} > atol {atol:g} + rtol {rtol:g} * |expected|)"


def assert_tables_equal(actual: Path | str, expected: Path | str, *, rtol: float = RTOL, atol: float = ATOL,
                        network_rtol: float = NETWORK_RTOL, network_atol: float = NETWORK_ATOL) -> None:
    """Assert two CSV tables hold the same rows: the same header, the same key combinations (each as often), and in
    each matched pair of rows equal keys, names and counts and floats within tolerance (see the module docstring).

    Rows are matched on their key columns; rows sharing all keys (a poisoning metrics.csv has one row per budget
    but no budget column) are matched in file order. Every mismatch is listed in the assertion message."""
    got_rows, want_rows = read_csv(actual), read_csv(expected)
    got_header = list(got_rows[0]) if got_rows else _header(actual)
    want_header = list(want_rows[0]) if want_rows else _header(expected)
    assert got_header == want_header, f"{actual}: columns {got_header} != {want_header} of {expected}"
    keys = [c for c in got_header if c in KEY_COLUMNS]

    def grouped(rows: list[dict[str, str]]) -> dict[tuple, list[dict[str, str]]]:
        groups: dict[tuple, list[dict[str, str]]] = defaultdict(list)
        for row in rows:
            groups[tuple(row[k] for k in keys)].append(row)
        return groups

    got, want = grouped(got_rows), grouped(want_rows)
    problems = [f"row {dict(zip(keys, k))} is missing" for k in want if k not in got]
    problems += [f"row {dict(zip(keys, k))} is not expected" for k in got if k not in want]
    for key in want.keys() & got.keys():
        if len(got[key]) != len(want[key]):
            problems.append(f"{len(got[key])} rows with keys {dict(zip(keys, key))}, expected {len(want[key])}")
            continue
        for g, w in zip(got[key], want[key]):
            network = involves_network(w)
            tol = (network_rtol, network_atol) if network else (rtol, atol)
            for column in got_header:
                why = _cell_mismatch(column, g[column], w[column], *tol)
                if why is not None:
                    problems.append(f"{dict(zip(keys, key))} {column}: {why}")
    assert not problems, f"{actual} differs from {expected} in {len(problems)} places:\n  " + "\n  ".join(
        sorted(problems)[:30])


def _header(path: Path | str) -> list[str]:
    with open(path, newline="") as fh:
        return next(csv.reader(fh), [])
