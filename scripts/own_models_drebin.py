"""The README's "your own detectors" experiment on DREBIN-215: a user's LightGBM detector brought as an ``.onnx``
file and a user's scikit-learn ``Pipeline`` brought as a ``.skops`` file, as targets next to the registry models.

The user's models are trained on apps that the experiment never draws (a seeded hold-out of the CSV), as a
defender's deployed detector would be; the experiment runs on the other apps, written to a CSV of their own.

    python scripts/own_models_drebin.py ../shared/data/drebin215/drebin215.csv OUT_DIR
    transferlab run OUT_DIR/own-models-drebin.yaml --workers 2

Needs the extras ``transferlab[onnx,skops]`` plus ``lightgbm`` and ``onnxmltools`` (the user's side, not
transferlab's).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import yaml

N_HELD_OUT = 3000


def main(csv_path: str, out_dir: str) -> None:
    import lightgbm
    import onnxmltools
    import skops.io
    from onnxmltools.convert.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler

    from transferlab import datasets

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header, *rows = Path(csv_path).read_text().splitlines()
    order = np.random.default_rng(2026).permutation(len(rows))
    held_out, kept = order[:N_HELD_OUT], np.sort(order[N_HELD_OUT:])
    (out / "defender.csv").write_text("\n".join([header, *(rows[i] for i in held_out)]) + "\n")
    (out / "experiment.csv").write_text("\n".join([header, *(rows[i] for i in kept)]) + "\n")

    defender = datasets.load("drebin-csv", path=str(out / "defender.csv"))
    X, y = defender.X.toarray().astype(np.float32), defender.y
    booster = lightgbm.LGBMClassifier(n_estimators=200, num_leaves=31, learning_rate=0.1, random_state=0,
                                      verbose=-1).fit(X, y)
    onnx_model = onnxmltools.convert_lightgbm(booster, initial_types=[("input", FloatTensorType([None, X.shape[1]]))],
                                              zipmap=False, target_opset=15)
    (out / "lightgbm.onnx").write_bytes(onnx_model.SerializeToString())
    pipeline = make_pipeline(MaxAbsScaler(), LogisticRegression(C=1.0, max_iter=2000)).fit(defender.X, y)
    skops.io.dump(pipeline, out / "pipeline.skops")
    print(f"defender models trained on {len(y)} held-out apps: LightGBM accuracy {booster.score(X, y):.3f}, "
          f"pipeline accuracy {pipeline.score(defender.X, y):.3f}")

    config = {
        "name": "own-models-drebin",
        "kind": "evasion",
        "dataset": {"name": "drebin-csv", "path": str((out / "experiment.csv").resolve())},
        "split": {"n_target": 2500, "n_surrogate": 2500, "n_validation": 1000, "n_test": 3000},
        "repetitions": 2,
        "surrogate_fractions": [1.0],
        "surrogates": ["svm_h", "svm_l", "logistic_h", "logistic_l", "svm_rbf_h", "svm_rbf_l", "nn_h", "nn_l"],
        "targets": ["svm_h", "svm_l", "logistic_h", "logistic_l", "svm_rbf_h", "svm_rbf_l", "nn_h", "nn_l",
                    "rf_l", "lightgbm", "pipeline"],
        "saved_models": {"lightgbm": str((out / "lightgbm.onnx").resolve()),
                         "pipeline": str((out / "pipeline.skops").resolve())},
        "attack": {"kind": "feature_addition", "norm": 1, "eps": [0, 1, 2, 5, 10, 20], "lb": 0.0, "ub": 1.0,
                   "feature_addition": True, "binary": True, "attack_class": "malware"},
        "detector": {"fpr": 0.01},
        "variance": {"n_surrogates": 3},
        "keep_points": False,
        "seed": 0,
    }
    (out / "own-models-drebin.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"wrote {out / 'own-models-drebin.yaml'}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
