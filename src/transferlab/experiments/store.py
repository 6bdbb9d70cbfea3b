"""The results store: one SQLite file per run folder.

A cell's rows are written in one transaction together with its entry in ``cells`` (timing and checksums of the
files it wrote), so a cell is either completely in the store or not at all; a run killed at any moment resumes by
skipping the cells present. Files (models, crafted points) are written under a temporary name and renamed into
place before the transaction, and their SHA-256 is checked when a later run relies on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from transferlab.errors import ConfigError, DataError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY, stage TEXT NOT NULL, seconds REAL NOT NULL, finished REAL NOT NULL,
    files TEXT NOT NULL, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    cell_id TEXT NOT NULL, attack TEXT, repetition INTEGER, surrogate TEXT, fraction REAL, target TEXT,
    setting TEXT, budget REAL, error REAL, n_points INTEGER);
CREATE TABLE IF NOT EXISTS metrics (
    cell_id TEXT NOT NULL, attack TEXT, repetition INTEGER, surrogate TEXT, fraction REAL, target TEXT,
    setting TEXT, S REAL, R REAL, V REAL);
CREATE TABLE IF NOT EXISTS sweep (
    cell_id TEXT NOT NULL, repetition INTEGER, weight_decay REAL, budget REAL, error REAL, S REAL);
"""


#: the columns of each table: (kind, may be NULL). "number" is a finite int or float (SQLite stores NaN as NULL, so
#: S, R and V, which may be NaN, may be NULL), "whole" an int, "text" text, "json" text holding a JSON object
COLUMNS: dict[str, dict[str, tuple[str, bool]]] = {
    "meta": {"key": ("text", False), "value": ("text", False)},
    "cells": {"cell_id": ("text", False), "stage": ("text", False), "seconds": ("number", False),
              "finished": ("number", False), "files": ("json", False), "info": ("json", False)},
    "results": {"cell_id": ("text", False), "attack": ("text", False), "repetition": ("whole", False),
                "surrogate": ("text", True), "fraction": ("number", True), "target": ("text", False),
                "setting": ("text", False), "budget": ("number", False), "error": ("number", False),
                "n_points": ("whole", False)},
    "metrics": {"cell_id": ("text", False), "attack": ("text", False), "repetition": ("whole", False),
                "surrogate": ("text", True), "fraction": ("number", True), "target": ("text", False),
                "setting": ("text", False), "S": ("number", True), "R": ("number", True), "V": ("number", True)},
    "sweep": {"cell_id": ("text", False), "repetition": ("whole", False), "weight_decay": ("number", False),
              "budget": ("number", False), "error": ("number", False), "S": ("number", True)},
}

_KIND_NAMES = {"number": "a number", "whole": "a whole number", "text": "text", "json": "a JSON object"}


def _value_problem(value: Any, kind: str, nullable: bool) -> str | None:
    """Why a stored value does not fit its column (None when it does)."""
    if value is None:
        return None if nullable else "NULL"
    if kind == "text":
        return None if isinstance(value, str) else type(value).__name__
    if kind == "json":
        if not isinstance(value, str):
            return type(value).__name__
        try:
            return None if isinstance(json.loads(value), dict) else "JSON that is not an object"
        except ValueError:
            return "text that is not JSON"
    if isinstance(value, (bytes, str)):
        return "text" if isinstance(value, str) else "bytes"
    if kind == "whole":
        return None if isinstance(value, int) else type(value).__name__
    if not isinstance(value, (int, float)):
        return type(value).__name__
    return None if value == value and abs(value) != float("inf") else "a number that is not finite"


def run_path(run_dir: str | os.PathLike, rel: str) -> Path:
    """``run_dir / rel``, refused (DataError) unless it lies inside the run folder with no symbolic link on the way:
    what a run writes or deletes (models, points, the store, the report) stays in its folder, whatever a name or a
    planted link says (a link ``models/x -> /elsewhere`` would make the run delete and overwrite /elsewhere)."""
    root = Path(run_dir).resolve()
    relative = Path(rel)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise DataError(f"{rel!r} is not a path inside the run folder {root}; names are never paths")
    path = root
    for part in relative.parts:
        path = path / part
        if path.is_symlink():
            raise DataError(f"{path} is a symbolic link; a run folder holds no links (a link could make the run write "
                            "or delete outside it): remove it, or choose another --out folder")
    if not path.resolve().is_relative_to(root):
        raise DataError(f"{path} leads outside the run folder {root}; remove it or choose another --out folder")
    return path


def check_run_folder(run_dir: str | os.PathLike) -> None:
    """Refuse a run folder holding a symbolic link anywhere (see :func:`run_path`), before the run writes to it."""
    root = Path(run_dir)
    for folder, subfolders, files in os.walk(root):
        for name in [*subfolders, *files]:
            if os.path.islink(os.path.join(folder, name)):
                raise DataError(f"{os.path.join(folder, name)} is a symbolic link; a run folder holds no links (a "
                                "link could make the run write or delete outside it): remove it, or choose another "
                                "--out folder")


def saved_model_files(path: Path) -> list[Path]:
    """The files of a saved model: the file itself (a ``.skops`` or ``.onnx`` file), or every file of a
    ``models.save`` folder, sorted by name; none where the path does not exist."""
    return [path] if path.is_file() else sorted(p for p in path.glob("*") if p.is_file()) if path.is_dir() else []


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Store:
    def __init__(self, path: str | os.PathLike, create: bool = True) -> None:
        """Open (or, with ``create``, create) a store; a file that is not a transferlab store is a clear error."""
        self.path = Path(path)
        for file in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            if file.is_symlink():
                raise DataError(f"{file} is a symbolic link; a run folder holds no links (SQLite would write where it "
                                "points): remove it, or rerun the experiment in a new --out folder")
        if not create and not self.path.is_file():
            raise ConfigError(f"{self.path.parent} holds no transferlab run (store.sqlite is missing); run "
                              "`transferlab run` first")
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            if create:
                self.db.executescript(SCHEMA)
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path} is not a readable transferlab store ({exc}); rerun the experiment in a "
                            "new --out folder") from None
        missing = set(COLUMNS) - tables
        if missing:
            raise DataError(f"{self.path} is not a transferlab store (no table {sorted(missing)[0]!r}); rerun the "
                            "experiment in a new --out folder")

    def close(self) -> None:
        self.db.close()

    # ---- identity of the run -------------------------------------------------------------------------
    def claim(self, config_hash: str, config_yaml: str, force: bool, data_fingerprint: str | None = None) -> None:
        """Bind this folder to a config and the data it reads; a folder made by another config or on other data is
        refused unless ``force`` (which discards it)."""
        row = self.db.execute("SELECT value FROM meta WHERE key='config_hash'").fetchone()
        data_row = self.db.execute("SELECT value FROM meta WHERE key='data_fingerprint'").fetchone()
        other_config = row is not None and row[0] != config_hash
        other_data = data_row is not None and data_fingerprint is not None and data_row[0] != data_fingerprint
        if other_config or other_data:
            if not force:
                what = "a different config" if other_config else "other data (the dataset's content differs)"
                raise ConfigError(f"{self.path.parent} holds a run of {what}; choose another --out folder, or pass "
                                  "--force to discard that run and start over")
            with self._transaction():
                for table in ("cells", "results", "metrics", "sweep", "meta"):
                    self.db.execute(f"DELETE FROM {table}")  # noqa: S608 (fixed table names)
        with self._transaction():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('config_hash', ?)", (config_hash,))
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('config_yaml', ?)", (config_yaml,))
            if data_fingerprint is not None:
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('data_fingerprint', ?)", (data_fingerprint,))

    def meta(self, key: str) -> str | None:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path} is corrupt ({exc}); rerun the experiment in a new --out folder") from None
        if row is not None and not isinstance(row[0], str):
            raise DataError(f"{self.path}: meta value {key!r} is {type(row[0]).__name__}, not text; the store was "
                            "edited or is damaged: rerun the experiment in a new --out folder")
        return row[0] if row else None

    def json_meta(self, key: str) -> dict[str, Any]:
        """A meta value holding a JSON object ({} when absent)."""
        text = self.meta(key)
        try:
            value = json.loads(text) if text is not None else {}
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise DataError(f"{self.path}: meta value {key!r} is not a JSON object; the store was edited or is "
                            "damaged: rerun the experiment in a new --out folder")
        return value

    def config_data(self) -> dict[str, Any]:
        """The run's config as stored (a mapping, read with the config's YAML reader; not validated as a config)."""
        from transferlab.experiments.config import parse_yaml

        text = self.meta("config_yaml")
        if text is None:
            raise DataError(f"{self.path} holds no config (meta 'config_yaml' is missing); rerun the experiment in a "
                            "new --out folder")
        try:
            data = parse_yaml(text, f"{self.path} (meta 'config_yaml')")
        except ConfigError as exc:
            raise DataError(f"{exc}; the store was edited or is damaged: rerun the experiment in a new --out "
                            "folder") from None
        if not isinstance(data, dict):
            raise DataError(f"{self.path}: the stored config (meta 'config_yaml') is not a mapping of fields; the "
                            "store was edited or is damaged: rerun the experiment in a new --out folder")
        return data

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # ---- cells ---------------------------------------------------------------------------------------
    def done_cells(self, run_dir: Path) -> set[str]:
        """Cells in the store whose files are all present and intact; a cell whose file is missing or
        corrupt is removed so it runs again."""
        done = set()
        for row in self.table("cells"):
            cell_id, entries = row["cell_id"], json.loads(row["files"])
            if all(_safe_rel(rel) and isinstance(digest, str) and (run_dir / rel).is_file()
                   and not (run_dir / rel).is_symlink() and sha256_file(run_dir / rel) == digest
                   for rel, digest in entries.items()):
                done.add(cell_id)
            else:
                self.forget(cell_id)
        return done

    def forget(self, cell_id: str) -> None:
        with self._transaction():
            for table in ("cells", "results", "metrics", "sweep"):
                self.db.execute(f"DELETE FROM {table} WHERE cell_id=?", (cell_id,))  # noqa: S608

    def record(self, cell_id: str, stage: str, seconds: float, files: dict[str, str], info: dict[str, Any],
               rows: dict[str, Iterable[dict[str, Any]]]) -> None:
        """Write a finished cell and all its rows in one transaction."""
        with self._transaction():
            # a cell's rows are keyed by its id: recording it again replaces them, never duplicates them
            for table in ("results", "metrics", "sweep"):
                self.db.execute(f"DELETE FROM {table} WHERE cell_id=?", (cell_id,))  # noqa: S608
            self.db.execute("INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?, ?, ?)",
                            (cell_id, stage, seconds, time.time(), json.dumps(files), json.dumps(info)))
            for table, table_rows in rows.items():
                for row in table_rows:
                    columns = ["cell_id", *row]
                    placeholders = ", ".join("?" for _ in columns)
                    self.db.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})",  # noqa: S608
                                    (cell_id, *row.values()))

    def table(self, name: str) -> list[dict[str, Any]]:
        """The rows of table ``name``, each value checked against :data:`COLUMNS`: a store is input too (it may have
        been edited), so a value of the wrong kind is a DataError naming table, column and row, not a crash later."""
        spec = COLUMNS[name]
        try:
            cursor = self.db.execute(f"SELECT * FROM {name}")  # noqa: S608 (fixed table names)
            columns = [c[0] for c in cursor.description]
            rows = cursor.fetchall()
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path} is corrupt ({exc}); rerun the experiment in a new --out folder") from None
        missing = [c for c in spec if c not in columns]
        if missing:
            raise DataError(f"{self.path}: table {name!r} has no column {missing[0]!r}; the store was edited or is "
                            "damaged: rerun the experiment in a new --out folder")
        out = []
        for number, values in enumerate(rows, start=1):
            row = dict(zip(columns, values))
            for column, (kind, nullable) in spec.items():
                problem = _value_problem(row[column], kind, nullable)
                if problem is not None:
                    raise DataError(f"{self.path}: table {name!r}, row {number}, column {column!r} holds {problem} "
                                    f"where {_KIND_NAMES[kind]} is expected; the store was edited or is damaged: "
                                    "rerun the experiment in a new --out folder")
            out.append(row)
        return out

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")


def _safe_rel(rel: Any) -> bool:
    """Whether a file path recorded in the store is a plain relative path inside the run folder."""
    return isinstance(rel, str) and bool(rel) and not Path(rel).is_absolute() and ".." not in Path(rel).parts
