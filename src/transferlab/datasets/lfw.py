"""Labeled Faces in the Wild (LFW) as a binary face task, read from the folders users have.

Layouts read (``path=DIR``):

* the official archives extracted: ``DIR/lfw/``, ``DIR/lfw_funneled/`` or ``DIR/lfw-deepfunneled/``, or ``DIR``
  itself being one of them; each holds ``<Person_Name>/<Person_Name>_NNNN.jpg`` (250×250 RGB JPEGs);
* scikit-learn's cache: ``DIR/lfw_home/lfw_funneled/...`` (``DIR`` is the ``data_home`` given to
  ``fetch_lfw_people``; :func:`download_lfw` fills it) or ``DIR`` being ``lfw_home`` itself.

When several alignments are present, ``lfw_funneled`` (scikit-learn's default) is used, then ``lfw-deepfunneled``,
then ``lfw``; point ``path`` at one of them to choose.

Each face is processed exactly as scikit-learn's ``fetch_lfw_people`` does (``sklearn/datasets/_lfw.py``,
``_load_imgs``): decoded with Pillow, cropped to rows 70:195 and columns 78:172 (``slice_``), resized with Pillow's
bicubic ``Image.resize`` by 0.5 (62×47 pixels; 0.4 gives 50×37), scaled by 1/255 and made grey as the mean of the
three RGB channels, in float32; the rows are those values as float64 in [0, 1], so they equal scikit-learn's.
"""

from __future__ import annotations

import difflib
import operator
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.datasets import dataset as limits
from transferlab.datasets.dataset import Dataset
from transferlab.errors import DataError

#: the alignments of the official archive, in the order preferred when several are present
LFW_FOLDERS = ("lfw_funneled", "lfw-deepfunneled", "lfw")
#: scikit-learn's default crop, as (top, bottom, left, right): rows 70:195, columns 78:172 of the 250×250 image
DEFAULT_CROP = (70, 195, 78, 172)
#: scikit-learn's default resize ratio (62×47 pixels after the default crop)
DEFAULT_RESIZE = 0.5
#: the frame of an LFW image, the crop used for ``crop=None`` (as scikit-learn's ``slice_=None``)
FULL_FRAME = (0, 250, 0, 250)
#: the most pixels an image may have (4096×4096): its size is read from the file's header and checked before it is
#: decoded, so a decompression bomb (a small JPEG declaring 12,000×12,000 pixels) costs nothing. LFW's are 250×250.
MAX_IMAGE_PIXELS = 1 << 24
#: the most pixels a face may have after crop and resize (512×512, twice the side of LFW's 250×250 frame): a large
#: ``resize`` upscales every face into a huge row, refused before any image is read
MAX_FACE_PIXELS = 1 << 18
#: the fewest images a class may have: the target and the surrogate each train on one of them
MIN_IMAGES_PER_CLASS = 2
_HINT = "point path at a folder holding lfw/, lfw_funneled/ or lfw-deepfunneled/ (or scikit-learn's lfw_home/)"


def find_lfw_folder(path: str | os.PathLike) -> Path:
    """The folder of person folders under ``path`` (see the module's docstring for the layouts read)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"LFW folder not found: {root}; {_HINT}")
    for base in (root, root / "lfw_home"):
        for name in LFW_FOLDERS:
            if (base / name).is_dir():
                return base / name
    return root


def list_people(folder: str | os.PathLike) -> dict[str, list[str]]:
    """``{person: sorted JPEG file names}`` for every person folder of ``folder`` holding at least one JPEG,
    people in sorted order. Only names are listed; no image is read."""
    folder = Path(folder)
    people: dict[str, list[str]] = {}
    try:
        entries = sorted((e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name)
        for entry in entries:
            if not entry.is_dir():
                continue
            files = sorted(f.name for f in os.scandir(entry.path)
                           if f.name.lower().endswith((".jpg", ".jpeg")) and f.is_file())
            if files:
                people[entry.name] = files
    except OSError as exc:
        raise DataError(f"cannot list the LFW folder {folder} ({exc}); check its permissions") from None
    if not people:
        archives = sorted(p.name for p in folder.glob("*.tgz"))
        hint = (f"it holds {', '.join(archives)}: extract it there (tar xzf ...)" if archives else _HINT)
        raise DataError(f"{folder} holds no person folders (<Person_Name>/<Person_Name>_NNNN.jpg); {hint}")
    return people


def _normalise_crop(crop: Any) -> tuple[int, int, int, int]:
    """``crop`` as (top, bottom, left, right); also takes scikit-learn's ``slice_`` (a pair of row and column
    slices) and None (the whole 250×250 frame)."""
    if crop is None:
        return FULL_FRAME
    try:
        parts = list(crop)
        if len(parts) == 2 and all(isinstance(s, slice) for s in parts):
            if any(s.step not in (None, 1) for s in parts):
                raise ValueError("slice steps are not supported")
            rows, cols = (s.indices(FULL_FRAME[1]) for s in parts)
            parts = [rows[0], rows[1], cols[0], cols[1]]
        if len(parts) != 4 or any(isinstance(v, bool) for v in parts):
            raise ValueError("four values needed")
        top, bottom, left, right = (operator.index(v) for v in parts)
    except (TypeError, ValueError):
        raise DataError(f"crop must be (top, bottom, left, right) in pixels, e.g. {DEFAULT_CROP}, or a pair of "
                        f"slices as scikit-learn's slice_; got {crop!r}") from None
    if not (0 <= top < bottom and 0 <= left < right):
        raise DataError(f"crop (top, bottom, left, right) needs 0 <= top < bottom and 0 <= left < right; got "
                        f"{(top, bottom, left, right)}")
    return top, bottom, left, right


def _output_size(crop: tuple[int, int, int, int], resize: Any) -> tuple[int, int, float | None]:
    """The (height, width) of a face after ``crop`` and ``resize``, and the ratio (None: no resize); a face of more
    than :data:`MAX_FACE_PIXELS` is refused."""
    top, bottom, left, right = crop
    h, w = bottom - top, right - left
    ratio = None
    if resize is not None:
        try:
            if isinstance(resize, bool):
                raise TypeError
            ratio = float(resize)
        except (TypeError, ValueError):
            raise DataError(f"resize must be a positive number (e.g. 0.5) or None; got {resize!r}") from None
        if not np.isfinite(ratio) or ratio <= 0:
            raise DataError(f"resize must be a positive number (e.g. 0.5) or None; got {resize!r}")
        high, wide = ratio * h, ratio * w
        if high >= 1e9 or wide >= 1e9 or int(high) * int(wide) > MAX_FACE_PIXELS:
            raise DataError(f"resize={resize} (dataset.options.resize) makes each face {int(high):,}×"
                            f"{int(wide):,} pixels, more than the {MAX_FACE_PIXELS:,} (512×512) a face may have; "
                            f"the crop is {h}×{w}, so use a resize of at most {np.sqrt(MAX_FACE_PIXELS / (h * w)):.3g}"
                            " (0.5 gives scikit-learn's 62×47)")
        h, w = int(ratio * h), int(ratio * w)  # as scikit-learn: truncated
        if h < 1 or w < 1:
            raise DataError(f"resize={resize} shrinks the {bottom - top}×{right - left} crop to nothing; use a "
                            "larger resize or crop")
    elif h * w > MAX_FACE_PIXELS:
        raise DataError(f"crop={crop} (dataset.options.crop) with no resize makes each face {h:,}×{w:,} pixels, "
                        f"more than the {MAX_FACE_PIXELS:,} (512×512) a face may have; LFW images are 250×250: "
                        "choose a crop inside them, or a resize below 1")
    return h, w, ratio


def read_faces(files: list[Path], crop: tuple[int, int, int, int] = DEFAULT_CROP,
               resize: float | None = DEFAULT_RESIZE) -> tuple[np.ndarray, tuple[int, int]]:
    """The grey faces of ``files`` as rows of one preallocated float64 array ``(n, h * w)`` and ``(h, w)``.

    One image is decoded at a time (memory: the output plus one image). A file Pillow cannot decode, a truncated
    one, one smaller than the crop, or one whose header declares more than :data:`MAX_IMAGE_PIXELS` (checked before
    decoding) raises a :class:`DataError` naming it; so does an output beyond
    :data:`~transferlab.datasets.dataset.MAX_DENSE_BYTES`, before any image is read. Images are decoded at full
    size: the crop is in pixels of the full image and the values must equal scikit-learn's, which a reduced JPEG
    decoding (Pillow's ``draft``) would change.
    """
    from PIL import Image

    crop = _normalise_crop(crop)
    h, w, ratio = _output_size(crop, resize)
    top, bottom, left, right = crop
    size = len(files) * h * w * 8
    if size > limits.MAX_DENSE_BYTES:
        raise DataError(f"{len(files):,} faces of {h}×{w} pixels would take {size:,} bytes, more than the "
                        f"{limits.MAX_DENSE_BYTES:,} transferlab spends on a dense X; use a smaller resize "
                        "(dataset.options.resize) or crop, or fewer people")
    X = np.empty((len(files), h * w), dtype=np.float64)
    for i, file in enumerate(files):
        try:
            with warnings.catch_warnings():
                # Pillow warns on huge images while opening (and raises beyond twice its own limit): ours is lower
                # and checked just below, before decoding
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(file)
        except Image.DecompressionBombError:
            raise DataError(_too_many_pixels(file, None)) from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"{file} is not a readable JPEG image ({exc}); extract or download LFW again") from None
        try:
            with img:
                if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS:  # from the header: nothing is decoded yet
                    raise DataError(_too_many_pixels(file, img.size))
                if img.size[0] < right or img.size[1] < bottom:
                    raise DataError(f"{file} is {img.size[0]}×{img.size[1]} pixels, smaller than the crop "
                                    f"(top, bottom, left, right) = {crop}; choose a crop that fits")
                img = img.convert("RGB") if img.mode != "RGB" else img
                img = img.crop((left, top, right, bottom))
                if ratio is not None:
                    # scikit-learn calls resize((w, h)) with Pillow's default filter, bicubic for RGB images
                    img = img.resize((w, h), Image.Resampling.BICUBIC)
                face = np.asarray(img, dtype=np.float32)
        except DataError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"{file} is not a readable JPEG image ({exc}); extract or download LFW again") from None
        face /= 255.0  # as scikit-learn: float32 scaling, then the mean of the channels as grey level
        X[i] = face.mean(axis=2).ravel()
    return X, (h, w)


def _too_many_pixels(file: Path, size: tuple[int, int] | None) -> str:
    shown = f"is {size[0]:,}×{size[1]:,} pixels" if size else "declares more pixels than Pillow decodes"
    return (f"{file} {shown}, more than the {MAX_IMAGE_PIXELS:,} transferlab decodes (a decompression bomb, or "
            "not an LFW image: LFW's are 250×250); remove it or point path at LFW")


def _people_arg(people: Any) -> tuple[str, ...]:
    if isinstance(people, str):
        people = (people,)
    try:
        people = tuple(people)
    except TypeError:
        people = ()
    if not people or len(people) > 2 or not all(isinstance(p, str) and p for p in people):
        raise DataError(f"people must be two names (class 0, class 1), e.g. ('George_W_Bush', 'Colin_Powell'), or "
                        f"one name against everyone else with min_faces=N; got {people!r}")
    if len(people) == 2 and people[0] == people[1]:
        raise DataError(f"people names {people[0]!r} twice: fewer than two classes; give two different people")
    return people


def _too_few(person: str, count: int, people: dict[str, list[str]], folder: Path) -> str:
    enough = sorted((p for p in people if len(people[p]) >= MIN_IMAGES_PER_CLASS), key=lambda p: (-len(people[p]), p))
    hint = f", e.g. {', '.join(enough[:3])}" if enough else ""
    return (f"{person} (in people, dataset.options.people) has {count} image in {folder}: a class needs at least "
            f"{MIN_IMAGES_PER_CLASS}, as the target and the surrogate each train on one; name a person with more "
            f"images{hint}")


def _unknown(person: str, people: dict[str, list[str]], folder: Path) -> DataError:
    names = list(people)
    close = difflib.get_close_matches(person, names, n=5, cutoff=0.6)
    if not close:
        close = sorted(names, key=lambda p: (-len(people[p]), p))[:5]
    return DataError(f"unknown person {person!r} in {folder} ({len(names)} people); known people include "
                     f"{', '.join(close)} (names use underscores, as the folder names)")


def load_lfw(path: str | os.PathLike, people: Any, min_faces: int | None = None,
             resize: float | None = DEFAULT_RESIZE, crop: Any = DEFAULT_CROP) -> Dataset:
    """LFW faces as a binary task.

    Parameters
    ----------
    path : the LFW folder (see the module's docstring for the layouts read).
    people : ``(A, B)``: person A is class 0, person B class 1; or ``(A,)`` (or ``"A"``): everyone else is class 0
        ("other"), A class 1. Names as the folders spell them, e.g. ``"George_W_Bush"``.
    min_faces : only people with at least this many images take part (as scikit-learn's
        ``min_faces_per_person``); a named person with fewer is an error. Default: everyone.
    resize : ratio applied to the crop (scikit-learn's ``resize``; 0.5 gives 62×47, 0.4 gives 50×37), None keeps
        the crop's size.
    crop : (top, bottom, left, right) in pixels of the 250×250 image, i.e. rows top:bottom and columns
        left:right (scikit-learn's ``slice_=(slice(top, bottom), slice(left, right))``, which is also accepted);
        default (70, 195, 78, 172); None keeps the whole image.

    Rows are sorted by ``row_names`` (``"<Person>/<file>.jpg"``); only the images used are read, into one array.
    Each class needs at least :data:`MIN_IMAGES_PER_CLASS` images (the target and the surrogate each train on one);
    fewer is an error naming the ``people`` option, raised before any image is read, as are a face larger than
    :data:`MAX_FACE_PIXELS` and an output larger than :data:`~transferlab.datasets.dataset.MAX_DENSE_BYTES`.
    """
    names = _people_arg(people)
    if min_faces is not None and (isinstance(min_faces, bool) or not isinstance(min_faces, (int, np.integer))
                                  or min_faces < 1):
        raise DataError(f"min_faces must be a positive integer, got {min_faces!r}")
    crop = _normalise_crop(crop)
    _output_size(crop, resize)  # check the options before listing a large folder
    folder = find_lfw_folder(path)
    known = list_people(folder)
    least = int(min_faces or 1)
    for person in names:
        if person not in known:
            raise _unknown(person, known, folder)
        if len(known[person]) < least:
            raise DataError(f"{person} has {len(known[person])} images in {folder}, fewer than min_faces={least}; "
                            "lower min_faces (dataset.options.min_faces)")
        if len(known[person]) < MIN_IMAGES_PER_CLASS:
            raise DataError(_too_few(person, len(known[person]), known, folder))
    if len(names) == 2:
        members = {names[0]: 0, names[1]: 1}
        classes = list(names)
        parts = [f"{p} (class {k}, {len(known[p])} images)" for p, k in members.items()]
        task = " vs ".join(parts)
    else:
        others = [p for p, files in known.items() if p != names[0] and len(files) >= least]
        if not others:
            raise DataError(f"fewer than two classes: no one but {names[0]} has at least min_faces={least} images "
                            f"in {folder}; lower min_faces or name two people")
        n_other = sum(len(known[p]) for p in others)
        if n_other < MIN_IMAGES_PER_CLASS:
            raise DataError(f"class 'other' (everyone but {names[0]} with at least min_faces={least} images) has "
                            f"{n_other} image in {folder}: a class needs at least {MIN_IMAGES_PER_CLASS}, as the "
                            "target and the surrogate each train on one; add people to the folder or name two "
                            "people (dataset.options.people)")
        members = {p: 0 for p in others}
        members[names[0]] = 1
        classes = ["other", names[0]]
        task = (f"{names[0]} (class 1, {len(known[names[0]])} images) vs {len(others)} other people with at least "
                f"{least} images (class 0 'other', {n_other} images)")
    rows = sorted(f"{p}/{f}" for p in members for f in known[p])
    X, shape = read_faces([folder / r for r in rows], crop, resize)
    y = np.array([members[r.split("/", 1)[0]] for r in rows], dtype=np.int64)
    top, bottom, left, right = crop
    size = f"resize {resize}" if resize is not None else "no resize"
    description = (f"LFW faces from {folder}: {task}; grey (mean of RGB), crop rows {top}:{bottom} × columns "
                   f"{left}:{right}, {size} -> {shape[0]}×{shape[1]} pixels, values/255 in [0, 1]")
    return Dataset(X, y, classes, "lfw", None, shape, None, rows, description)


def download_lfw(data_home: str | os.PathLike) -> Path:
    """Download LFW (the funneled images) with scikit-learn's ``fetch_lfw_people`` into
    ``data_home/lfw_home`` and return that folder, which ``load("lfw", path=...)`` reads.

    Only called when asked for: loading never downloads. scikit-learn also caches (with joblib, under lfw_home)
    the faces of the people with at least 70 images, which keeps this call's memory small.
    """
    from sklearn.datasets import fetch_lfw_people

    try:
        fetch_lfw_people(data_home=str(data_home), download_if_missing=True, min_faces_per_person=70)
    except (OSError, ValueError) as exc:
        raise DataError(f"could not download LFW into {data_home} ({exc}); check the network, or extract "
                        "lfw-funneled.tgz there by hand") from None
    return Path(data_home) / "lfw_home"
