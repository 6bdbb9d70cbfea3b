"""DREBIN Android malware data (Arp et al., NDSS 2014), as in the paper's case study (Demontis et al., Sec. 6).

Two formats:

* :func:`load_drebin_folder`, the original release: ``feature_vectors/`` holding one text file per app (named by
  the app's SHA-256, one ``prefix::value`` feature a line) and ``sha256_family.csv`` naming the malware. About
  129,000 apps and 545,000 distinct binary features, read straight into a sparse CSR matrix.
* :func:`load_drebin_csv`, the "DREBIN-215" reduced feature space (Yerima et al.): a CSV of 0/1 columns and a class
  column (``S`` malware, ``B`` benign), ``?`` marking a missing cell.

Both give ``classes = ["benign", "malware"]``, label 1 for malware, and ``feature_names``.
"""

from __future__ import annotations

import csv
import os
from array import array
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from transferlab.datasets import dataset as limits
from transferlab.datasets.dataset import Dataset, int32_indexed
from transferlab.datasets.tabular import read_csv_rows
from transferlab.errors import DataError

CLASSES = ["benign", "malware"]
FAMILY_CSV = "sha256_family.csv"
FEATURE_FOLDER = "feature_vectors"


def _find_release(path: Path) -> tuple[Path, Path]:
    """The ``feature_vectors`` folder and the family CSV of the release at ``path``.

    ``path`` is the release folder (holding ``feature_vectors/`` and ``sha256_family.csv``), or the
    ``feature_vectors`` folder itself with the CSV next to it, in its parent.
    """
    if not path.exists():
        raise DataError(f"DREBIN folder not found: {path}; point path= at the folder holding {FEATURE_FOLDER}/ "
                        f"and {FAMILY_CSV}")
    if not path.is_dir():
        raise DataError(f"{path} is a file, not a folder; point path= at the DREBIN release folder holding "
                        f"{FEATURE_FOLDER}/ and {FAMILY_CSV} (for the DREBIN-215 CSV use dataset 'drebin-csv')")
    if (path / FEATURE_FOLDER).is_dir():
        features, root = path / FEATURE_FOLDER, path
    elif path.name == FEATURE_FOLDER or (path.parent / FAMILY_CSV).is_file():
        features, root = path, path.parent
    elif not any(path.iterdir()):
        raise DataError(f"DREBIN folder {path} is empty; unpack the release there ({FEATURE_FOLDER}/ and "
                        f"{FAMILY_CSV})")
    else:
        raise DataError(f"no {FEATURE_FOLDER}/ folder in {path}; point path= at the DREBIN release folder holding "
                        f"{FEATURE_FOLDER}/ and {FAMILY_CSV}")
    for family_csv in (root / FAMILY_CSV, features / FAMILY_CSV):
        if family_csv.is_file():
            return features, family_csv
    raise DataError(f"no {FAMILY_CSV} in {root}; put the release's {FAMILY_CSV} (header 'sha256,family', one row "
                    f"per malware app) next to {FEATURE_FOLDER}/")


def _read_families(family_csv: Path) -> dict[str, str]:
    """SHA-256 (lower case) -> family name, from the release's ``sha256_family.csv``."""
    with family_csv.open(newline="", encoding="utf-8", errors="backslashreplace") as fh:
        rows = csv.reader(fh)
        header = [cell.strip().lower() for cell in next(rows, [])]
        if header != ["sha256", "family"]:
            raise DataError(f"{family_csv}, line 1: header is {','.join(header)!r}, expected 'sha256,family'; "
                            "fix the header or point path= at the DREBIN release's own CSV")
        families = {}
        for line, row in enumerate(rows, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2 or not row[0].strip():
                raise DataError(f"{family_csv}, line {line}: expected 'sha256,family', got {','.join(row)!r}; "
                                "fix or remove that line")
            families[row[0].strip().lower()] = row[1].strip()
    return families


def _app_files(features: Path) -> list[str]:
    """The names of the per-app files in ``features``, sorted (hidden files, e.g. ``.DS_Store``, and a
    ``sha256_family.csv`` kept in the same folder left out)."""
    with os.scandir(features) as entries:
        names = [e.name for e in entries if not e.name.startswith(".") and e.name != FAMILY_CSV and e.is_file()]
    if not names:
        raise DataError(f"{features} holds no app files; unpack the DREBIN release's feature vectors there (one "
                        "file per app, named by its SHA-256)")
    return sorted(names)


def _malformed_line(file: Path) -> tuple[int, str]:
    """The first line of ``file`` that is not blank and holds no ``::`` (number from 1, text)."""
    with file.open(encoding="utf-8", errors="backslashreplace") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip() and "::" not in line:
                return number, line.strip()
    return 0, ""  # pragma: no cover - only called for a file known to hold one


def load_drebin_folder(path: str | os.PathLike, name: str = "drebin") -> Dataset:
    """The original DREBIN release at ``path`` as a sparse binary dataset (label 1 = malware).

    ``path`` holds ``feature_vectors/`` (one file per app, named by its SHA-256, one ``prefix::value`` feature a
    line, blank lines ignored) and ``sha256_family.csv`` (header ``sha256,family``) naming the malware apps;
    every other app is benign. ``path`` may also be the ``feature_vectors`` folder, with the CSV in its parent.

    Rows are the apps sorted by file name (``row_names``); columns the distinct features sorted by name
    (``feature_names``), so the result does not depend on the order the file system lists the files. X is a
    float64 CSR matrix of ones with 32-bit indices, built file by file: the whole set is never held dense. A
    release with more than :data:`~transferlab.datasets.dataset.MAX_FEATURES` distinct features is refused, naming
    the app file that crossed the bound.
    """
    path = Path(path)
    features, family_csv = _find_release(path)
    families = _read_families(family_csv)
    apps = _app_files(features)

    vocabulary: dict[str, int] = {}  # feature -> column, in order of first appearance (remapped below)
    indices = array("i")
    indptr = array("q", [0])
    add, folder = vocabulary.setdefault, str(features)
    for app in apps:
        file = os.path.join(folder, app)
        try:
            with open(file, "rb", buffering=0) as fh:
                text = fh.read().decode("utf-8", "backslashreplace")
        except OSError as exc:
            raise DataError(f"{file} cannot be read ({exc.strerror}); check its permissions") from None
        lines = set(map(str.strip, text.splitlines()))  # a set: a feature listed twice is still a single 1
        lines.discard("")
        indices.extend([add(feature, len(vocabulary)) for feature in lines])
        indptr.append(len(indices))
        if len(vocabulary) > limits.MAX_FEATURES:
            raise DataError(f"{file}: with this app the release holds more than {limits.MAX_FEATURES:,} distinct "
                            "features, more than transferlab reads (MAX_FEATURES); it is not the DREBIN release, "
                            "or keep fewer feature kinds")

    names = list(vocabulary)
    _check_feature_lines(names, indices, indptr, features, apps)
    # columns in sorted feature order: the result is independent of the order the apps were read
    order = sorted(range(len(names)), key=names.__getitem__)
    new_column = np.empty(len(names), dtype=np.int32)
    new_column[order] = np.arange(len(names), dtype=np.int32)
    column = new_column[np.frombuffer(indices, dtype=np.int32)]
    X = sp.csr_matrix((np.ones(column.size), column, np.frombuffer(indptr, dtype=np.int64)),
                      shape=(len(apps), len(names)))
    X.sort_indices()
    X = int32_indexed(X)  # 32-bit indices, as scikit-learn's liblinear and libsvm solvers take

    is_malware = np.fromiter((app.lower() in families for app in apps), dtype=bool, count=len(apps))
    n_malware = int(is_malware.sum())
    if n_malware == 0:
        raise DataError(f"{family_csv} names no app in {features} (none of its {len(families)} SHA-256 is a file "
                        "name there); check that the CSV belongs to this release")
    if n_malware == len(apps):
        raise DataError(f"every one of the {len(apps)} apps in {features} is named malware by {family_csv}: a "
                        "single class; add the benign apps' feature files")
    unmatched = len(families) - n_malware
    description = (f"DREBIN release at {path}: {len(apps)} apps ({n_malware} malware), {len(names)} features"
                   + (f"; {unmatched} apps of {family_csv.name} have no feature file" if unmatched > 0 else ""))
    return Dataset(X, is_malware.astype(np.int64), list(CLASSES), name, feature_names=[names[i] for i in order],
                   row_names=apps, description=description)


def _check_feature_lines(names: list[str], indices: array, indptr: array, features: Path, apps: list[str]) -> None:
    """Raise a :class:`DataError` naming the first app file (in sorted order) and line that holds no ``::``.

    The check runs on the distinct features only (far fewer than the lines read); the file is found from the
    columns of the matrix only when there is a malformed feature.
    """
    bad = np.flatnonzero(np.fromiter(("::" not in n for n in names), dtype=bool, count=len(names)))
    if bad.size == 0:
        return
    positions = np.flatnonzero(np.isin(np.frombuffer(indices, dtype=np.int32), bad))
    row = int(np.searchsorted(np.frombuffer(indptr, dtype=np.int64), positions[0], side="right") - 1)
    line, text = _malformed_line(features / apps[row])
    raise DataError(f"{features / apps[row]}, line {line}: {text[:80]!r} is not a 'prefix::value' feature "
                    "(e.g. 'permission::android.permission.SEND_SMS'); fix or remove that line")


def load_drebin_csv(
    path: str | os.PathLike,
    label_column: str | int = "class",
    malware_label: str = "S",
    benign_label: str = "B",
    name: str | None = None,
) -> Dataset:
    """A DREBIN-215-style CSV: a header, binary (0/1) feature columns and a class column, as a sparse dataset.

    ``label_column`` is the class column's name or index (0..N-1); its cells are ``malware_label`` (label 1) or
    ``benign_label`` (label 0). A cell holding ``?`` is missing: its row is dropped, and ``description`` says how
    many were. Any other value that is not 0 or 1 is a :class:`DataError` naming its line and column. The file is
    read a row at a time into one byte per cell.
    """
    path = Path(path)
    header, label_index, rows = read_csv_rows(path, label_column)
    feature_index = np.array([i for i in range(len(header)) if i != label_index], dtype=np.intp)
    codes = bytearray()  # b"0", b"1" or b"?" per feature cell, row after row
    labels: list[str] = []
    lines = array("q")
    last = label_index == len(header) - 1
    for line, row in rows:
        cells = row[:-1] if last else row[:label_index] + row[label_index + 1:]
        if _PLAIN.issuperset(cells):
            codes += "".join(cells).encode("ascii")
        else:
            codes += _binary_row(cells, path, line, header, feature_index)
        labels.append(row[label_index].strip())
        lines.append(line)
    if not labels:
        raise DataError(f"{path} needs a header row and at least one data row")
    values = (np.frombuffer(codes, dtype=np.uint8) if codes else np.zeros(0, np.uint8)).reshape(
        len(labels), feature_index.size)
    X = (values == ord("1")).view(np.uint8)
    missing = (values == ord("?")).any(axis=1)
    del values
    classes = np.array(labels, dtype=object)
    missing |= classes == "?"

    keep = ~missing
    classes = classes[keep]
    is_malware, is_benign = classes == malware_label, classes == benign_label
    is_malware, is_benign = is_malware.astype(bool), is_benign.astype(bool)
    unknown = ~(is_malware | is_benign)
    if unknown.any():
        first = int(np.flatnonzero(unknown)[0])
        line = lines[int(np.flatnonzero(keep)[first])]
        raise DataError(f"{path}, line {line}: class label {str(classes[first])!r} is neither the malware label "
                        f"{malware_label!r} nor the benign label {benign_label!r}; set malware_label= and "
                        "benign_label= to the labels your file uses")
    n_malware, n = int(is_malware.sum()), int(keep.sum())
    if n == 0:
        raise DataError(f"{path}: every row holds a missing ('?') cell, none is left; impute the missing cells or "
                        "drop the columns that hold them")
    if n_malware in (0, n):
        raise DataError(f"{path}: all {n} complete rows are {'malware' if n_malware else 'benign'}: a single "
                        f"class; check malware_label={malware_label!r} and benign_label={benign_label!r}")
    X = int32_indexed(sp.csr_matrix(X[keep], dtype=np.float64))
    n_dropped = int(missing.sum())
    description = (f"DREBIN CSV at {path}: {n} apps ({n_malware} malware), {X.shape[1]} features"
                   + (f"; {n_dropped} rows with missing ('?') cells dropped" if n_dropped else ""))
    return Dataset(X, is_malware.astype(np.int64), list(CLASSES), name or path.stem,
                   feature_names=[header[i] for i in feature_index], description=description)


#: the cells of a DREBIN CSV taken as they are; any other cell is parsed by :func:`_binary_row`
_PLAIN = frozenset(("0", "1", "?"))


def _binary_row(cells: list[str], path: Path, line: int, header: list[str], feature_index: np.ndarray) -> bytes:
    """The feature cells of one row as ``b"0"``, ``b"1"`` or ``b"?"`` each: ``"0"``, ``"1"`` and ``"?"`` as they
    are, other cells stripped and parsed (e.g. ``" 1"``, ``"1.0"``); any value that is not 0, 1 or ``?`` is a
    :class:`DataError` naming its line and column."""
    out = bytearray()
    for c, raw in enumerate(cells):
        cell = raw if raw in _PLAIN else raw.strip()
        if cell in _PLAIN:
            out += cell.encode("ascii")
            continue
        try:
            number = float(cell)
        except ValueError:
            number = float("nan")
        if number not in (0.0, 1.0):
            raise DataError(f"{path}, line {line}, column {header[feature_index[c]]!r}: {cell!r} is not 0, 1 or "
                            "'?' (missing); fix that cell or drop the column")
        out += b"1" if number == 1.0 else b"0"
    return bytes(out)
