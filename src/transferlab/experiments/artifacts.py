"""What cells make and the runner stores: trained models and crafted points, as values that travel between
processes and machines, and their files in the run folder.

A cell never touches the run folder. It returns a :class:`ModelArtifact` (a trained model as the files
``transferlab.models.save`` writes, held as bytes, and its extra values such as a detector threshold) or a
:class:`PointsArtifact` (crafted points as arrays); the runner, the folder's one writer, writes each under a
temporary name and renames it into place (:func:`write_artifact`) before it records the cell, so nothing half
written is ever marked complete. A cell that needs a trained model receives the producing cell's artifact: on a
Dask cluster as the future of that cell, locally (and on resume) as the parent read it back from the run folder
(:func:`read_model`), and loads it with :meth:`ModelArtifact.load` either way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from transferlab import models
from transferlab.errors import DataError
from transferlab.experiments.common import Cell, model_device, model_folder
from transferlab.experiments.config import ExperimentConfig
from transferlab.experiments.store import run_path, sha256_file

#: a model artifact's extra values, next to its model files
EXTRA_FILE = "extra.json"


@dataclass(frozen=True)
class ModelArtifact:
    """A trained model as the files of its ``models.save`` folder ({file name: bytes}: spec and safetensors
    weights, or a wrapped model's files) and its ``extra`` values (``extra.json``: a detector's threshold), or None.

    Loading goes through ``models.load``, the loader that checks a saved model as untrusted input, on the very
    bytes the runner stores: a model received from a Dask future and one read back from the run folder are the
    same model."""

    files: dict[str, bytes]
    extra: dict[str, Any] | None = None
    #: SHA-256 of the files (names and bytes): the model's identity, e.g. in a process's cache of loaded models
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        for name in self.files:
            if not isinstance(name, str) or name in ("", ".", "..", EXTRA_FILE) or Path(name).name != name:
                raise DataError(f"{name!r} is not a model file name (a plain name, not {EXTRA_FILE})")
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        object.__setattr__(self, "digest", digest.hexdigest())

    @classmethod
    def of(cls, model: models.Classifier, extra: dict[str, Any] | None = None) -> ModelArtifact:
        """The artifact of a fitted model (saved in a private temporary folder, never in the run folder)."""
        with tempfile.TemporaryDirectory(prefix="transferlab-model-") as tmp:
            folder = models.save(model, Path(tmp) / "model")
            return cls({p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}, extra)

    def load(self, device: str = "cpu") -> models.Classifier:
        """The model, on ``device``."""
        with tempfile.TemporaryDirectory(prefix="transferlab-model-") as tmp:
            folder = Path(tmp)
            for name, data in self.files.items():
                (folder / name).write_bytes(data)
            return models.load(folder, device=device)


@dataclass(frozen=True)
class PointsArtifact:
    """Crafted points and their labels as the named arrays of a compressed npz file (see :func:`point_arrays`)."""

    arrays: dict[str, np.ndarray]


def write_artifact(run_dir: Path, rel: str, artifact: ModelArtifact | PointsArtifact) -> dict[str, str]:
    """Write ``artifact`` at ``rel`` in the run folder under a temporary name, then rename it into place; returns
    {relative path: sha256} of the files written (what the store checks before a later run relies on them)."""
    final = run_path(run_dir, rel)  # inside the run folder, no link on the way: what is deleted below is ours
    final.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(artifact, PointsArtifact):
        tmp = run_path(run_dir, f"{rel}.tmp{os.getpid()}.npz")
        np.savez_compressed(tmp, **artifact.arrays)
        os.replace(tmp, final)
        return {rel: sha256_file(final)}
    tmp = run_path(run_dir, f"{rel}.tmp{os.getpid()}")
    _remove(tmp)
    tmp.mkdir()
    for name, data in artifact.files.items():
        (tmp / name).write_bytes(data)
    if artifact.extra is not None:
        (tmp / EXTRA_FILE).write_text(json.dumps(artifact.extra))
    names = sorted(p.name for p in tmp.iterdir() if p.is_file())
    _remove(final)
    os.replace(tmp, final)
    return {f"{rel}/{name}": sha256_file(final / name) for name in names}


def _remove(path: Path) -> None:
    """Delete a file or folder of the run (``path`` comes from :func:`run_path`: inside the run folder, no link)."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def read_model(run_dir: Path, cell: Cell) -> ModelArtifact:
    """The artifact of train cell ``cell`` as the runner stored it (read by the parent, to hand to later cells).

    Every transfer cell takes every target, so the same folder is read for many cells: the artifact is read (and
    its digest computed) once per folder and file state — the names, sizes and modification times of its files —
    and a folder written again (a cell rerun) is read again."""
    folder = run_path(run_dir, model_folder(cell))
    if not folder.is_dir():
        raise DataError(f"{folder} is missing: the model of {cell.cell_id} is not in the run folder; rerun the "
                        "experiment (its cell runs again)")
    state = tuple((p.name, stat.st_size, stat.st_mtime_ns, stat.st_ino)
                  for p in sorted(folder.iterdir()) if p.is_file() for stat in [p.stat()])
    return _read_model_folder(str(folder), state)


@lru_cache(maxsize=32)
def _read_model_folder(folder: str, state: tuple) -> ModelArtifact:
    """The artifact in ``folder`` (``state``: its files' names, sizes, modification times and inodes, the cache
    key). 32 folders: a repetition's targets and a transfer cell's surrogate draws."""
    path = Path(folder)
    files = {name: (path / name).read_bytes() for name, *_ in state if name != EXTRA_FILE}
    extra = path / EXTRA_FILE
    return ModelArtifact(files, json.loads(extra.read_text()) if any(n == EXTRA_FILE for n, *_ in state) else None)


# ---- a finished run's models and points (audit, tests) -------------------------------------------------------------
def load_model(run_dir: Path, cell: Cell, device: str) -> models.Classifier:
    """The model train cell ``cell`` stored in a run folder, on ``device``."""
    return models.load(run_dir / model_folder(cell), device=device)


def load_trained(run_dir: Path, config: ExperimentConfig, cell: Cell) -> models.Classifier:
    """The model a train cell stored in the run folder, on the model's device (:func:`model_device`)."""
    return load_model(run_dir, cell, model_device(config, cell.model))


def load_extra(run_dir: Path, cell: Cell) -> dict[str, Any]:
    """The extra values (a detector threshold) stored with the model of train cell ``cell``."""
    path = run_dir / model_folder(cell) / EXTRA_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def points_file(cell: Cell) -> str:
    """Where a craft cell's points are stored, relative to the run folder."""
    return "points/" + cell.cell_id.removeprefix("craft/").replace("/", "_") + ".npz"


def points_artifact(image_shape: tuple[int, int] | None = None, **arrays: np.ndarray) -> PointsArtifact:
    """A craft cell's points file; with ``image_shape`` (image data) it also holds the shape, so a report can draw
    the points as images."""
    if image_shape is not None:
        arrays["image_shape"] = np.asarray(image_shape, dtype=np.int64)
    return PointsArtifact(arrays)


def point_arrays(key: str, points: Any) -> dict[str, np.ndarray]:
    """Crafted points as the arrays of a points file: ``key`` as float32 rows for dense points; for scipy sparse
    points (sparse data) ``key_data`` (float32), ``key_indices``, ``key_indptr`` and ``key_shape`` of their CSR
    form (``scipy.sparse.csr_matrix((data, indices, indptr), shape)`` reads them back), so points of 545,334
    binary features take the room of their set features only."""
    import scipy.sparse as sp

    if not sp.issparse(points):
        return {key: np.asarray(points).astype(np.float32)}
    csr = sp.csr_matrix(points)
    return {f"{key}_data": csr.data.astype(np.float32), f"{key}_indices": csr.indices.astype(np.int32),
            f"{key}_indptr": csr.indptr.astype(np.int64), f"{key}_shape": np.asarray(csr.shape, dtype=np.int64)}


def read_points(npz: Any, key: str) -> Any:
    """The points stored under ``key`` by :func:`point_arrays` in an open points file (``np.load(path)``): a dense
    float32 array, or a scipy CSR matrix for points of sparse data."""
    import scipy.sparse as sp

    if key in npz:
        return npz[key]
    if f"{key}_data" not in npz:
        raise KeyError(f"{key} is not in this points file")
    shape = tuple(int(v) for v in npz[f"{key}_shape"])
    return sp.csr_matrix((npz[f"{key}_data"], npz[f"{key}_indices"], npz[f"{key}_indptr"]), shape=shape)
