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

from transferlab.errors import ConfigError

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
            raise ConfigError(f"{self.path} is not a readable transferlab store ({exc}); rerun the experiment in a "
                              "new --out folder") from None
        missing = {"meta", "cells", "results", "metrics", "sweep"} - tables
        if missing:
            raise ConfigError(f"{self.path} is not a transferlab store (no table {sorted(missing)[0]!r}); rerun the "
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
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # ---- cells ---------------------------------------------------------------------------------------
    def done_cells(self, run_dir: Path) -> set[str]:
        """Cells in the store whose files are all present and intact; a cell whose file is missing or
        corrupt is removed so it runs again."""
        done = set()
        for cell_id, files in self.db.execute("SELECT cell_id, files FROM cells").fetchall():
            entries = json.loads(files)
            if all((run_dir / rel).is_file() and sha256_file(run_dir / rel) == digest
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
        try:
            cursor = self.db.execute(f"SELECT * FROM {name}")  # noqa: S608
            columns = [c[0] for c in cursor.description]
            return [dict(zip(columns, row)) for row in cursor.fetchall()]
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path} is corrupt ({exc}); rerun the experiment in a new --out folder") from None

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
