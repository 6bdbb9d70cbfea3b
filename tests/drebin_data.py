"""Small DREBIN-like data written to a test's tmp folder, in each format the loaders read.

Each writer returns a :class:`Written`: what the loader should give back (dense X in the loader's row and column
order, labels 0 = benign / 1 = malware or the raw labels, feature and row names).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SEND_SMS = "permission::android.permission.SEND_SMS"

#: a few real-looking DREBIN features (the release's eight prefixes), then generated ones
_BASE_FEATURES = [
    SEND_SMS,
    "permission::android.permission.INTERNET",
    "permission::android.permission.READ_PHONE_STATE",
    "api_call::android/telephony/SmsManager;->sendTextMessage",
    "api_call::android/telephony/TelephonyManager;->getDeviceId",
    "intent::android.intent.action.BOOT_COMPLETED",
    "intent::android.intent.action.MAIN",
    "activity::.MainActivity",
    "feature::android.hardware.telephony",
    "provider::.data.Provider",
    "service_receiver::.SmsReceiver",
    "real_permission::android.permission.SEND_SMS",
    "call::getDeviceId",
    "url::http://example.com/gate.php",
]
_FAMILIES = ["FakeInstaller", "DroidKungFu", "Plankton", "Opfake", "GingerMaster"]


@dataclass
class Written:
    """What a writer wrote, as the loader should read it back."""

    X: np.ndarray  # dense 0/1 float64, rows and columns in the loader's order
    y: np.ndarray  # 0 benign / 1 malware (svmlight: the raw labels)
    feature_names: list[str]
    row_names: list[str] = field(default_factory=list)
    dropped: int = 0  # CSV rows holding a '?'


def _features(n: int) -> list[str]:
    extra = [f"api_call::com/example/Lib{i};->call{i % 7}" for i in range(max(n - len(_BASE_FEATURES), 0))]
    return (_BASE_FEATURES + extra)[:n]


def _draw(rng: np.random.Generator, y: np.ndarray, d: int) -> np.ndarray:
    """0/1 features; malware and benign differ: column 0 (SEND_SMS) is on for 80% of malware and 10% of benign,
    the next few columns lean one way or the other, the rest are noise."""
    p = rng.uniform(0.02, 0.3, size=d)
    p_mal = p.copy()
    p_mal[0], p[0] = 0.8, 0.1
    p_mal[1:6] = np.clip(p_mal[1:6] + rng.uniform(-0.2, 0.4, size=min(5, d - 1)), 0.0, 1.0)
    probs = np.where(y[:, None] == 1, p_mal, p)
    return (rng.random((y.size, d)) < probs).astype(np.float64)


def write_drebin_folder(
    folder: str | Path,
    n_apps: int = 300,
    n_malware: int = 100,
    seed: int = 0,
    n_features: int = 40,
    unlisted_malware: int = 0,
) -> Written:
    """Write a DREBIN-layout release into ``folder``: ``feature_vectors/`` (one file per app, named by a SHA-256,
    ``prefix::value`` lines in random order, with blank lines and a repeated line here and there) and
    ``sha256_family.csv`` naming the ``n_malware`` malware apps (plus ``unlisted_malware`` SHA-256 with no file)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    (folder / "feature_vectors").mkdir(parents=True, exist_ok=True)
    shas = [hashlib.sha256(f"app-{seed}-{i}".encode()).hexdigest() for i in range(n_apps)]
    y = np.zeros(n_apps, dtype=np.int64)
    y[rng.choice(n_apps, size=n_malware, replace=False)] = 1
    names = _features(n_features)
    X = _draw(rng, y, n_features)
    for i, sha in enumerate(shas):
        lines = [names[j] for j in np.flatnonzero(X[i])]
        rng.shuffle(lines)
        if lines and i % 7 == 0:
            lines.insert(len(lines) // 2, "")  # a blank line
            lines.append(lines[0])  # a feature listed twice is still a single 1
        (folder / "feature_vectors" / sha).write_text("\n".join(lines) + ("\n" if i % 2 else ""))
    family_rows = [f"{sha},{_FAMILIES[i % len(_FAMILIES)]}" for i, sha in enumerate(shas) if y[i]]
    family_rows += [f"{hashlib.sha256(f'gone-{i}'.encode()).hexdigest()},Gone" for i in range(unlisted_malware)]
    (folder / "sha256_family.csv").write_text("sha256,family\n" + "\n".join(family_rows) + "\n")
    # the loader's order: apps by file name, columns by feature name; a feature no app holds is no column
    rows = np.argsort(shas)
    used = [j for j in range(n_features) if X[:, j].any()]
    cols = sorted(used, key=names.__getitem__)
    return Written(X[rows][:, cols], y[rows], [names[j] for j in cols], [shas[i] for i in rows])


def write_drebin_csv(
    path: str | Path,
    n: int = 300,
    n_missing: int = 2,
    seed: int = 0,
    n_features: int = 25,
    malware_label: str = "S",
    benign_label: str = "B",
) -> Written:
    """Write a DREBIN-215-style CSV: 0/1 feature columns named like the real ones, then ``class`` (``S``/``B``);
    ``n_missing`` rows hold a ``?`` cell. Returns the rows a loader keeps (those without ``?``)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    y[:2] = [0, 1]
    X = _draw(rng, y, n_features)
    names = ["SEND_SMS"] + [f.split("::")[1].replace("/", ".") for f in _features(n_features)[1:]]
    cells = X.astype(int).astype(str).astype(object)
    missing = rng.choice(np.arange(2, n), size=n_missing, replace=False)
    cells[missing, rng.integers(0, n_features, size=n_missing)] = "?"
    labels = np.where(y == 1, malware_label, benign_label)
    lines = [",".join(names + ["class"])] + [",".join(list(row) + [lab]) for row, lab in zip(cells, labels)]
    Path(path).write_text("\n".join(lines) + "\n")
    keep = np.ones(n, dtype=bool)
    keep[missing] = False
    return Written(X[keep], y[keep], names, dropped=n_missing)


def write_svmlight(path: str | Path, n: int = 200, d: int = 30, seed: int = 0, labels: tuple = (-1, 1)) -> Written:
    """Write an svmlight/libsvm file (one-based indices, ``label i:v ...``) of sparse non-negative values."""
    rng = np.random.default_rng(seed)
    X = np.where(rng.random((n, d)) < 0.15, np.round(rng.uniform(0.1, 3.0, size=(n, d)), 3), 0.0)
    X[0, d - 1] = 1.0  # the last column is used, so the loader infers d columns
    y = np.asarray(labels)[rng.integers(0, len(labels), size=n)]
    y[: len(labels)] = labels
    lines = [" ".join([str(label)] + [f"{j + 1}:{X[i, j]:g}" for j in np.flatnonzero(X[i])]) for i, label in
             enumerate(y)]
    Path(path).write_text("\n".join(lines) + "\n")
    return Written(X, y, [f"f{j}" for j in range(d)])
