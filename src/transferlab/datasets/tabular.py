"""Generic datasets: a user's npz or CSV file, and scikit-learn's shipped datasets for quick checks."""

from __future__ import annotations

import codecs
import csv
import os
import re
import zlib
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from transferlab.datasets import dataset as limits
from transferlab.datasets.dataset import ColumnNames, Dataset, check_width, int32_indexed
from transferlab.errors import DataError


def _encode_labels(raw: np.ndarray, source: str) -> tuple[np.ndarray, list[str]]:
    raw = np.asarray(raw)
    if raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
            bad = raw[~np.isfinite(raw) | (raw != np.round(raw))][0]
            raise DataError(f"{source}: labels must be class labels, got the value {bad!r}; a classification "
                            "dataset needs whole-number or text labels")
        raw = raw.astype(np.int64)
    values, y = np.unique(raw, return_inverse=True)
    if values.size < 2:
        raise DataError(f"{source}: the labels hold a single class ({values.tolist()}); need two or more")
    return y.astype(np.int64), [str(v) for v in values.tolist()]


#: the most an npz file may decompress to (bytes), checked from its zip directory before anything is read
MAX_NPZ_BYTES = 1 << 32
#: the longest cell (characters) a CSV file may hold: numbers and class labels are far shorter; a longer cell is
#: refused, naming its line and column, before it is parsed
MAX_CELL_CHARS = 1_000
#: labels read as integers (int64) when every label matches: ``1``, ``+1``, ``-1``, ``1.0`` (a zero fraction, as the
#: npz loader reads 1.0 as 1); other text labels are class names
_INT_LABEL = re.compile(r"[+-]?[0-9]{1,18}(?:\.0*)?")


def check_npz_size(path: Path, limit: int = MAX_NPZ_BYTES) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Refuse an npz whose members would decompress to more than ``limit`` bytes (a zip bomb), or whose arrays
    declare more data than their member holds (numpy would allocate the declared size first), reading only the zip
    directory and each array's header. Returns ``{array name: (shape, dtype)}``."""
    import zipfile

    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            total = sum(info.file_size for info in infos)
            if total > limit:
                raise DataError(f"{path} would decompress to {total:,} bytes, more than the {limit:,} transferlab "
                                "reads; it is corrupt or not a dataset")
            for info in infos:
                if not info.filename.endswith(".npy"):
                    continue
                key = info.filename[: -len(".npy")]
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                    else:
                        raise DataError(f"{path}: array {key!r} is in npy format {version[0]}.{version[1]}, which "
                                        "transferlab does not read; write it again with numpy.savez")
                    declared = dtype.itemsize
                    for n in shape:
                        declared *= n
                    held = info.file_size - member.tell()
                if dtype.hasobject:
                    raise DataError(f"{path}: array {key!r} holds Python objects, which transferlab never "
                                    "unpickles; save numeric arrays")
                if declared > held:
                    raise DataError(f"{path}: array {key!r} declares shape {shape} ({declared:,} bytes) but holds "
                                    f"{held:,} bytes; the file is corrupt, write it again with numpy.savez")
                headers[key] = (tuple(int(n) for n in shape), dtype)
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error, NotImplementedError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"{path} is not a readable npz file ({reason}); write it again with numpy.savez") from None
    return headers


def load_npz(path: str | os.PathLike, x_key: str = "X", y_key: str = "y", name: str | None = None) -> Dataset:
    """A dataset from an npz file holding a 2-D feature array ``x_key`` and a label array ``y_key``.

    The file is read with ``allow_pickle=False``: object arrays are refused, never unpickled. The arrays' headers
    are checked before any is read: X may have at most :data:`~transferlab.datasets.dataset.MAX_FEATURES` columns
    and take at most :data:`~transferlab.datasets.dataset.MAX_DENSE_BYTES` as float64.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"npz file not found: {path}")
    headers = check_npz_size(path)
    if x_key not in headers or y_key not in headers:
        raise DataError(f"{path} must hold arrays {x_key!r} and {y_key!r}; it holds {sorted(headers)}")
    (x_shape, x_dtype), (y_shape, y_dtype) = headers[x_key], headers[y_key]
    if len(x_shape) != 2 or len(y_shape) != 1:
        raise DataError(f"{path}: {x_key} must be 2-D and {y_key} 1-D, got {x_shape} and {y_shape}")
    _check_npz_dtypes(path, x_key, x_dtype, y_key, y_dtype)
    if x_shape[1] == 0:
        raise DataError(f"{path}: {x_key} has shape {x_shape}, no feature columns; save the features as a 2-D "
                        "array of one row per point and one column per feature")
    check_width(x_shape[1], str(path), f", array {x_key!r}")
    size = x_shape[0] * x_shape[1] * 8
    if size > limits.MAX_DENSE_BYTES:
        raise DataError(f"{path}: {x_key} of shape {x_shape} would take {size:,} bytes as float64, more than the "
                        f"{limits.MAX_DENSE_BYTES:,} transferlab spends on a dense X; use a part of it, or save it as "
                        "svmlight to keep it sparse")
    try:
        with np.load(path, allow_pickle=False) as npz:
            X, raw_y = np.asarray(npz[x_key]), np.asarray(npz[y_key])
    except (OSError, ValueError, zlib.error, EOFError) as exc:
        raise DataError(f"{path} is not a readable npz file ({exc})") from None
    if X.ndim != 2 or raw_y.ndim != 1 or X.shape[1] == 0:
        raise DataError(f"{path}: {x_key} must be 2-D with at least one column and {y_key} 1-D, got {X.shape} and "
                        f"{raw_y.shape}")
    _check_npz_dtypes(path, x_key, X.dtype, y_key, raw_y.dtype)
    y, classes = _encode_labels(raw_y, str(path))
    return Dataset(X.astype(np.float64, copy=False), y, classes, name or path.stem)


def _check_npz_dtypes(path: Path, x_key: str, x_dtype: np.dtype, y_key: str, y_dtype: np.dtype) -> None:
    """Refuse a non-numeric or complex X, and complex labels: casting would drop the imaginary part silently."""
    if not np.issubdtype(x_dtype, np.number):
        raise DataError(f"{path}: {x_key} must be numeric, got dtype {x_dtype}")
    for key, dtype, what in ((x_key, x_dtype, "features"), (y_key, y_dtype, "labels")):
        if dtype.kind == "c":
            raise DataError(f"{path}: {key} is complex (dtype {dtype}); transferlab reads real {what} only and "
                            f"never drops an imaginary part: save {key}.real, or np.abs({key}), if that is what "
                            "you mean")


def label_column_index(label_column: str | int | None, header: list[str], path: Path) -> int:
    """The index of ``label_column`` in ``header``: a column name, an index 0..N-1 (an int, or text of digits),
    or None for the last column. A negative or too large index is an error (no wrap-around: it would silently
    take another column as the labels), and so is a label column named by a name that another column also has
    (chosen by index, or the last column by default, it is unambiguous)."""
    index = _label_index(label_column, header, path)
    same = [c + 1 for c, h in enumerate(header) if h == header[index]]
    if len(same) > 1 and header[index] == label_column:  # chosen by a name that several columns have
        shown = (", ".join(map(str, same[:-1])) + f" and {same[-1]} (counting from 1)" if len(same) <= 5
                 else ", ".join(map(str, same[:5])) + f", ... ({len(same):,} in all, counting from 1)")
        raise DataError(f"{path}, line 1 (the header): columns {shown} are "
                        f"{'all' if len(same) > 2 else 'both'} named {header[index][:60]!r}, the label column's "
                        "name; rename all but one of them, so that the label column is unambiguous")
    return index


def _label_index(label_column: str | int | None, header: list[str], path: Path) -> int:
    """The index :func:`label_column_index` returns, before its check of repeated names."""
    n = len(header)
    if label_column is None:
        return n - 1
    if isinstance(label_column, str) and not re.fullmatch(r"\s*[+-]?[0-9]+\s*", label_column):
        if label_column not in header:
            shown = header if n <= 20 else [*header[:20], "..."]
            raise DataError(f"{path}: no column named {label_column!r}; set label_column= "
                            f"(dataset.options.label_column) to one of the columns {shown}")
        return header.index(label_column)
    if isinstance(label_column, bool) or not isinstance(label_column, (str, int, np.integer)):
        raise DataError(f"label_column (dataset.options.label_column) must be a column name or an index 0..{n - 1}, "
                        f"got {label_column!r}")
    index = int(label_column)
    if not 0 <= index < n:
        raise DataError(f"label_column={label_column!r} (dataset.options.label_column) is out of range: {path} has "
                        f"{n} columns, indices 0..{n - 1} (negative indices are not read); give an index in that "
                        "range or a column name")
    return index


def read_csv_rows(path: Path, label_column: str | int | None) -> tuple[list[str], int, Iterator[tuple[int, list[str]]]]:
    """Open a CSV file (UTF-8) with a header row, streamed: ``(header, label index, rows)``.

    ``header`` holds the stripped header cells and the label index comes from :func:`label_column_index`.
    ``rows`` yields ``(line, cells)`` for each data row, ``line`` being the number of the file's line where the
    row ends; trailing empty lines are dropped, and an empty line between rows, a row shorter or longer than the
    header, or a cell longer than :data:`MAX_CELL_CHARS` raise a :class:`DataError` naming the line. A leading
    UTF-8 byte-order mark (Excel's "CSV UTF-8") is dropped. The header must have at least 2 columns (a label and a
    feature; a file separated by ';' or tabs reads as one column, and the error says so) and at most
    :data:`~transferlab.datasets.dataset.MAX_FEATURES` + 1. Memory: one row at a time.
    """
    if not path.is_file():
        raise DataError(f"CSV file not found: {path}")
    records = _csv_records(path)
    first = next(records, None)
    if first is None:
        raise DataError(f"{path} needs a header row and at least one data row")
    header = [h.strip() for h in first[1]]
    if len(header) < 2:
        separators = [name for char, name in ((";", "';'"), ("\t", "tab")) if char in header[0]]
        hint = (f"its header holds {' and '.join(separators)} characters: save it with ',' between the cells"
                if separators else "add the feature columns, separated from the label by ','")
        raise DataError(f"{path}, line 1 (the header): a single column ({header[0][:60]!r}), no feature columns "
                        f"besides the label; is the file comma-separated? {hint}")
    check_width(len(header) - 1, str(path), ", line 1 (the header)")
    return header, label_column_index(label_column, header, path), records


def _csv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """The non-empty rows of ``path`` with their line numbers, checked as :func:`read_csv_rows` says."""
    width = None
    names: list[str] = []
    blank = 0  # the line of the first empty row of a run not yet followed by a row
    reader = None
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: a leading byte-order mark is dropped
            reader = csv.reader(fh)
            for row in reader:
                line = reader.line_num
                if not row:
                    if width is None:
                        raise DataError(f"{path}, line {line}: empty line before the header; the first line must "
                                        "be the header row")
                    blank = blank or line
                    continue
                if blank:
                    raise DataError(f"{path}, line {blank}: 0 cells but the header has {width}; fix that line")
                if width is not None and len(row) != width:
                    raise DataError(f"{path}, line {line}: {len(row)} cells but the header has {width}; fix that "
                                    "line")
                longest = max(map(len, row))
                if longest > MAX_CELL_CHARS:
                    c = next(c for c, cell in enumerate(row) if len(cell) == longest)
                    column = repr(names[c]) if names else c + 1
                    raise DataError(f"{path}, line {line}, column {column}: a cell of {longest:,} characters, more "
                                    f"than the {MAX_CELL_CHARS:,} a cell may hold; fix that cell")
                if width is None:
                    width, names = len(row), [cell.strip() for cell in row]
                yield line, row
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text (line {_first_non_utf8_line(path)}); save it as UTF-8") from None
    except csv.Error as exc:
        reason = " ".join(str(exc).split())
        line = reader.line_num if reader is not None else 1
        raise DataError(f"{path}, line {line}: not a readable CSV row ({reason}; a cell may hold at most "
                        f"{MAX_CELL_CHARS:,} characters); fix that line") from None


def _first_non_utf8_line(path: Path) -> int:
    """The number of the first line of ``path`` that is not UTF-8 (read only to name it in an error)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    number = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError:
                return number
    return max(number, 1)  # a multi-byte character cut by the end of the file


def load_csv(path: str | os.PathLike, label_column: str | int | None = None, name: str | None = None) -> Dataset:
    """A dataset from a CSV file with a header row; ``label_column`` is a column name or an index 0..N-1 (default:
    the last column).

    Every other column must be numeric; an empty or non-numeric cell, or NaN, is an error naming its line and
    column. Labels are read as integers when every one is an integer (``1``, ``+1``, ``-1``, or ``1.0`` with a zero
    fraction), as text class names otherwise; an empty label cell is an error naming its line. The file is read a
    row at a time into one float64 array (8 bytes per cell).
    """
    path = Path(path)
    header, label_index, rows = read_csv_rows(path, label_column)
    features = [i for i in range(len(header)) if i != label_index]
    values = array("d")
    lines = array("q")
    labels = []
    for line, row in rows:
        try:
            values.extend([float(row[i]) for i in features])
        except ValueError:
            column = next(i for i in features if not _is_number(row[i]))
            raise DataError(f"{path}, line {line}, column {header[column]!r}: a feature cell is empty or not a "
                            f"number ({row[column][:40]!r}); fix that cell") from None
        label = row[label_index].strip()
        if not label:
            raise DataError(f"{path}, line {line}, column {header[label_index]!r}: the label cell is empty; give "
                            "that row its class, or remove the row")
        labels.append(label)
        lines.append(line)
    if not labels:
        raise DataError(f"{path} needs a header row and at least one data row")
    X = np.frombuffer(values, dtype=np.float64) if len(values) else np.empty(0)
    X = X.reshape(len(labels), len(features))
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{path}, line {lines[r]}, column {header[features[c]]!r}: NaN or infinite value; "
                        "remove or impute it")
    numeric = all(_INT_LABEL.fullmatch(s) for s in labels)
    y, classes = _encode_labels(np.array([int(s.partition(".")[0]) for s in labels] if numeric else labels,
                                         dtype=None if numeric else object), str(path))
    return Dataset(X, y, classes, name or path.stem)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def load_svmlight(
    path: str | os.PathLike,
    n_features: int | None = None,
    zero_based: bool | str = "auto",
    name: str | None = None,
) -> Dataset:
    """A dataset from an svmlight/libsvm file (``label index:value ...`` lines), read with scikit-learn.

    X stays a sparse CSR matrix (float64, 32-bit indices as scikit-learn's liblinear and libsvm solvers take); the
    labels are encoded 0..C-1 in sorted order (``classes`` holds the file's labels, e.g. ``["-1", "1"]``);
    ``feature_names`` are ``f0 .. f{d-1}``, made only when asked for (:class:`ColumnNames`). ``n_features`` fixes
    the number of columns (e.g. to match a training file); ``zero_based`` is scikit-learn's (``"auto"`` guesses).
    Memory is that of the non-zeros: nothing is sized by the number of features, which may be at most
    :data:`~transferlab.datasets.dataset.MAX_FEATURES` (a larger index is an error naming its line).
    """
    from sklearn.datasets import load_svmlight_file

    path = Path(path)
    if not path.is_file():
        raise DataError(f"svmlight file not found: {path}")
    if n_features is not None and (isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer))
                                   or n_features < 1):
        raise DataError(f"n_features must be a positive integer (or left out), got {n_features!r}")
    if n_features is not None and n_features > limits.MAX_FEATURES:
        raise DataError(f"n_features={n_features:,} (dataset.options.n_features) is more than the "
                        f"{limits.MAX_FEATURES:,} features transferlab reads (MAX_FEATURES); "
                        "leave it out to take the file's own width")
    try:
        X, raw_y = load_svmlight_file(str(path), n_features=n_features, zero_based=zero_based, dtype=np.float64)
    except OverflowError:
        line, index = _largest_index(path)
        raise DataError(f"{path}, line {line}: feature index {index} does not fit a 32-bit integer, far beyond "
                        f"the {limits.MAX_FEATURES:,} features transferlab reads; the file is corrupt") from None
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(f"{path} is not a readable svmlight/libsvm file ({reason}); each line must read "
                        "'label index:value ...'") from None
    if X.shape[1] > limits.MAX_FEATURES:
        line, index = _largest_index(path)
        raise DataError(f"{path}, line {line}: feature index {index} is beyond the {limits.MAX_FEATURES:,} "
                        "features transferlab reads (MAX_FEATURES); the file is corrupt, or "
                        "renumber its features")
    y, classes = _encode_labels(raw_y, str(path))
    return Dataset(int32_indexed(X.tocsr()), y, classes, name or path.stem, feature_names=ColumnNames(X.shape[1]))


def _largest_index(path: Path) -> tuple[int, str]:
    """The first line of an svmlight file holding its largest feature index, and that index (as text; it may not
    fit any integer type). Read only to name the line of an error."""
    best_line, best = 0, b"0"
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            for token in raw.split(b"#", 1)[0].split()[1:]:
                index = token.partition(b":")[0].lstrip(b"0") or b"0"
                if index.isdigit() and (len(index), index) > (len(best), best):
                    best_line, best = number, index
    return best_line, best.decode()


def load_sklearn(name: str) -> Dataset:
    """scikit-learn's shipped ``breast-cancer`` (binary) or ``digits`` (10 classes, 8x8 images scaled to [0, 1])."""
    from sklearn import datasets as skd

    if name == "breast-cancer":
        bunch = skd.load_breast_cancer()
        X = bunch.data
        X = (X - X.min(axis=0)) / (X.max(axis=0) - X.min(axis=0))  # min-max to [0, 1], so a [0, 1] box applies
        return Dataset(X, bunch.target.astype(np.int64), [str(c) for c in bunch.target_names], name)
    if name == "digits":
        bunch = skd.load_digits()
        return Dataset(bunch.data / 16.0, bunch.target.astype(np.int64), [str(c) for c in range(10)], name,
                       image_shape=(8, 8))
    raise DataError(f"unknown scikit-learn dataset {name!r}")
