"""The reference side of bench/evasion.py and bench/poisoning.py: the same attacks run by the paper authors' library,
secml 0.15.6, on the same points and the same model families.

Not part of transferlab and never imported by it: the benches run it with a separate Python that has secml
(``bash ../shared/tools/secml-venv.sh`` builds one and prints its path), as

    SECML_PYTHON bench/secml_reference.py evasion|poisoning|scoring DATA.npz 'CONFIG-JSON'

(scoring: secml's classifier of a family retrained on the training set plus given poisoning points, for the
poisoning bench's common-classifier table.)

It imports only numpy, secml, the standard library and, for MLPs, torch if that Python has it (secml's own network
classifier needs it: ``SECML_PYTHON -m pip install torch``, then ``SECML_PYTHON -m pip install setuptools==69.5.1``
again, as ``import secml`` needs the old setuptools that torch's install replaces). Inputs come in the .npz (float64
features in [lb, ub], labels 0/1) and the JSON config; one JSON object goes to stdout (everything secml prints goes
to stderr). Times cover the attack only (``attack.run``), never training or data loading: ``wall_s``
(perf_counter) and ``cpu_s`` (process_time).

Model families (parameters as in transferlab's registry):
    svm        CClassifierSVM(C)                         (libsvm, linear kernel; primal for evasion, dual for
                                                          poisoning: CAttackPoisoningSVM needs kernel='linear')
    svm_rbf    CClassifierSVM(C, kernel=CKernelRBF(gamma))
    logistic   CClassifierLogistic(C)                    (scikit-learn liblinear, secml's fixed choice)
    ridge      CClassifierRidge(alpha)                   (scikit-learn RidgeClassifier)
and, for evasion on the very model transferlab attacks (its fitted parameters come in the .npz):
    affine     scores x Wᵀ + b                           (transferlab's fitted linear SVM, logistic or ridge)
    mlp        transferlab's fitted MLP as secml's CClassifierPyTorch when that Python has torch (secml imports
               torchvision only for two names, which stand in where no matching torchvision exists) and the
               config's mlp_backend is "pytorch" (the default), else its layers with forward and backward in numpy
"""

from __future__ import annotations

import contextlib
import json
import sys
import time

import numpy as np


def _torchvision_stand_in() -> None:
    """secml 0.15.6's CClassifierPyTorch imports torchvision for two names only: the ResNet ``BasicBlock`` type (an
    isinstance check when it lists a network's layers) and ``transforms.Lambda`` (reshaping rows to the input
    shape). Where no torchvision matching the installed torch can be imported, these stand in for it."""
    import types

    try:
        import torchvision  # noqa: F401

        return
    except Exception:  # absent, or built for another torch (its C++ operators fail to load)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]

    class BasicBlock:  # no layer of a transferlab MLP is one
        pass

    class Lambda:
        def __init__(self, function):
            self.function = function

        def __call__(self, x):
            return self.function(x)

    modules = {name: types.ModuleType(name) for name in ("torchvision", "torchvision.models",
                                                         "torchvision.models.resnet", "torchvision.transforms",
                                                         "torchvision.transforms.transforms")}
    modules["torchvision.models.resnet"].BasicBlock = BasicBlock
    modules["torchvision.transforms.transforms"].Lambda = Lambda
    modules["torchvision"].models, modules["torchvision"].transforms = modules["torchvision.models"], \
        modules["torchvision.transforms"]
    modules["torchvision.models"].resnet = modules["torchvision.models.resnet"]
    modules["torchvision.transforms"].transforms = modules["torchvision.transforms.transforms"]
    sys.modules.update(modules)


def pytorch_classifier(spec: dict, data: dict):
    """transferlab's fitted MLP as secml's own network classifier, CClassifierPyTorch (float32, as transferlab's);
    None when this Python has no torch."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    _torchvision_stand_in()
    from secml.array import CArray
    from secml.ml.classifiers import CClassifierPyTorch

    name = spec["name"]
    layers = []
    for k in range(spec["layers"]):
        weight = torch.as_tensor(data[f"{name}__W{k}"], dtype=torch.float32)
        linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(torch.as_tensor(data[f"{name}__b{k}"], dtype=torch.float32))
        layers += [linear, nn.ReLU()]
    network = nn.Sequential(*layers[:-1]).eval()
    n_classes, n_features = data[f"{name}__W{spec['layers'] - 1}"].shape[0], data[f"{name}__W0"].shape[1]
    return CClassifierPyTorch(model=network, input_shape=(n_features,), pretrained=True,
                              pretrained_classes=CArray(np.arange(n_classes)), batch_size=128)


def fixed_classifier(spec: dict, data: dict):
    """A secml classifier with transferlab's fitted parameters (``affine``: W, b; ``mlp``: the layers' W_k, b_k,
    when secml's CClassifierPyTorch is not available), differentiable as secml's own classifiers are: ``_forward``
    gives the scores, ``_backward(w)`` the gradient of w·scores at the cached input, in numpy."""
    from secml.array import CArray
    from secml.ml.classifiers import CClassifier

    name = spec["name"]
    layers = [(data[f"{name}__W{k}"], data[f"{name}__b{k}"]) for k in range(spec["layers"])]

    class CClassifierFixed(CClassifier):
        __class_type = "transferlab-fixed"

        def __init__(self):
            super().__init__()
            self._classes = CArray(np.arange(layers[-1][0].shape[0]))
            self._n_features = layers[0][0].shape[1]

        @property
        def _grad_requires_forward(self):
            return True  # the backward pass needs the hidden activations of the input

        def _fit(self, x, y):
            raise NotImplementedError("a fixed classifier is not trained")

        def _forward(self, x):
            a = x.tondarray()
            self._masks = []
            for weight, bias in layers[:-1]:
                z = a @ weight.T + bias
                self._masks.append(z > 0)
                a = np.maximum(z, 0)
            return CArray(a @ layers[-1][0].T + layers[-1][1])

        def _backward(self, w):
            g = w.tondarray().reshape(1, -1) @ layers[-1][0]
            for (weight, _), mask in zip(reversed(layers[:-1]), reversed(self._masks)):
                g = (g * mask) @ weight
            return CArray(g.ravel())

    return CClassifierFixed()


def make_classifier(spec: dict, dual: bool = False):
    from secml.ml.classifiers import CClassifierLogistic, CClassifierRidge, CClassifierSVM
    from secml.ml.kernels import CKernelRBF

    family = spec["family"]
    if family == "svm":
        return CClassifierSVM(C=spec["C"], kernel="linear" if dual else None)
    if family == "svm_rbf":
        return CClassifierSVM(C=spec["C"], kernel=CKernelRBF(gamma=spec["gamma"]))
    if family == "logistic":
        return CClassifierLogistic(C=spec["C"])
    if family == "ridge":
        return CClassifierRidge(alpha=spec["alpha"])
    raise ValueError(f"no secml equivalent for model family {family!r}")


def dataset(X: np.ndarray, y: np.ndarray):
    from secml.array import CArray
    from secml.data import CDataset

    return CDataset(CArray(np.asarray(X, dtype=np.float64)), CArray(np.asarray(y, dtype=int)))


def error(clf, ds) -> float:
    return float(np.mean(clf.predict(ds.X).tondarray().ravel() != ds.Y.tondarray().ravel()))


def run_evasion(data, config: dict) -> dict:
    """For each model: train once, then for each eps run CAttackEvasionPGDLS on the attacked points."""
    from secml.adv.attacks import CAttackEvasionPGDLS

    tr = dataset(data["X_train"], data["y_train"])
    attacked = dataset(data["X_attack"], data["y_attack"])
    solver_params = config.get("solver_params") or None  # None: secml's defaults (COptimizerPGDLS)
    out = {}
    for spec in config["models"]:
        start = time.perf_counter()
        backend = {"svm": "CClassifierSVM", "svm_rbf": "CClassifierSVM (RBF)", "logistic": "CClassifierLogistic",
                   "ridge": "CClassifierRidge", "affine": "affine", "mlp": "mlp"}[spec["family"]]
        if spec["family"] == "mlp" and config.get("mlp_backend", "pytorch") == "pytorch" \
                and (clf := pytorch_classifier(spec, data)) is not None:
            backend = "CClassifierPyTorch"
        elif spec["family"] in ("affine", "mlp"):
            clf = fixed_classifier(spec, data)
            backend += " (numpy)"
        else:
            clf = make_classifier(spec)
            clf.fit(tr.X, tr.Y)
        train_s = time.perf_counter() - start
        double_init = bool(config.get("double_init")) and spec["family"] in ("svm_rbf", "mlp")
        per_eps = {}
        for eps in config["eps"]:
            attack = CAttackEvasionPGDLS(classifier=clf, double_init_ds=tr if double_init else None,
                                         double_init=double_init, distance="l2", dmax=eps,
                                         lb=config["lb"], ub=config["ub"], y_target=None,
                                         solver_params=solver_params)
            iterations, evaluations = [], [0, 0]
            inner = attack._run

            def counted(*args, _inner=inner, _attack=attack, _iters=iterations, _evals=evaluations, **kwargs):
                result = _inner(*args, **kwargs)
                # iterations of the (last) solver run for this point; f_seq holds one value per iteration
                _iters.append(int(_attack._solver.f_seq.size) - 1 if _attack._solver is not None else 0)
                if _attack._solver is not None:  # the solver's own counts of objective and gradient evaluations
                    _evals[0] += int(_attack._solver.f_eval)
                    _evals[1] += int(_attack._solver.grad_eval)
                return result

            attack._run = counted
            wall, cpu = time.perf_counter(), time.process_time()
            y_pred, _scores, adv_ds, _f_obj = attack.run(attacked.X, attacked.Y)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            y_adv = y_pred.tondarray().ravel()
            y_true = attacked.Y.tondarray().ravel()
            # the returned y_pred is the classifier's label on the returned points; check it against a fresh predict
            recheck = clf.predict(adv_ds.X).tondarray().ravel()
            perturbation = np.linalg.norm(adv_ds.X.tondarray() - attacked.X.tondarray(), axis=1)
            per_eps[repr(float(eps))] = {
                "n": int(attacked.num_samples), "wall_s": wall, "cpu_s": cpu,
                "error": float(np.mean(y_adv != y_true)),
                "error_recheck": float(np.mean(recheck != y_true)),
                "mean_iterations": float(np.mean(iterations)) if iterations else 0.0,
                "objective_evaluations": evaluations[0], "gradient_evaluations": evaluations[1],
                "max_iterations_hit": int(sum(i >= attack._solver.max_iter - 1 for i in iterations)),
                "max_perturbation": float(perturbation.max()) if perturbation.size else 0.0,
                "min_x": float(adv_ds.X.min()), "max_x": float(adv_ds.X.max()),
            }
        out[spec["name"]] = {"train_s": train_s, "clean_error": error(clf, attacked), "eps": per_eps,
                             "double_init": double_init, "classifier": backend}
    return out


def run_poisoning(data, config: dict) -> dict:
    """Train the clean classifier, then for each run (number of points, starting points) run the family's
    CAttackPoisoning*; retrain the poisoned training set with secml's classifier and score it on the test set."""
    from secml.adv.attacks import (CAttackPoisoningLogisticRegression, CAttackPoisoningRidge,
                                   CAttackPoisoningSVM)

    tr = dataset(data["X_train"], data["y_train"])
    val = dataset(data["X_val"], data["y_val"])
    ts = dataset(data["X_test"], data["y_test"])
    spec = config["model"]
    attack_class = {"svm": CAttackPoisoningSVM, "svm_rbf": CAttackPoisoningSVM,
                    "logistic": CAttackPoisoningLogisticRegression, "ridge": CAttackPoisoningRidge}[spec["family"]]
    clf = make_classifier(spec, dual=True)
    clf.fit(tr.X, tr.Y)
    runs = []
    for run in config["runs"]:
        attack = attack_class(classifier=clf, training_data=tr, val=val, distance=config["distance"],
                              lb=config["lb"], ub=config["ub"], solver_params=dict(config["solver_params"]),
                              init_type="random", random_seed=config["seed"])
        attack.n_points = run["n_points"]
        init = None
        if run.get("init_key"):
            init = dataset(data[run["init_key"] + "_X"], data[run["init_key"] + "_y"])
        evaluations = [0]
        inner = attack.objective_function

        def counted(*args, _inner=inner, _count=evaluations, **kwargs):
            _count[0] += 1
            return _inner(*args, **kwargs)

        attack.objective_function = counted
        wall, cpu = time.perf_counter(), time.process_time()
        y_pred, _scores, adv_ds, f_opt = attack.run(ts.X, ts.Y, ds_init=init, max_iter=config["passes"])
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        poisoned = clf.deepcopy()
        both = tr.append(adv_ds)
        poisoned.fit(both.X, both.Y)
        moved = np.linalg.norm(adv_ds.X.tondarray() - init.X.tondarray(), axis=1) if init is not None else None
        runs.append({
            "n_points": int(run["n_points"]), "wall_s": wall, "cpu_s": cpu,
            "test_error": error(poisoned, ts),
            # secml's own prediction returned by run(): the classifier it retrains at the end of run()
            "test_error_from_run": float(np.mean(y_pred.tondarray().ravel() != ts.Y.tondarray().ravel())),
            "validation_loss": float(f_opt) if f_opt is not None else None,
            "objective_evaluations": evaluations[0],
            "mean_distance_moved": float(moved.mean()) if moved is not None else None,
            "min_x": float(adv_ds.X.min()), "max_x": float(adv_ds.X.max()),
            # the points themselves, so that the bench can score them with transferlab's classifier too
            "X_p": adv_ds.X.tondarray().tolist(), "y_p": adv_ds.Y.tondarray().ravel().astype(int).tolist(),
        })
    return {"clean_error": error(clf, ts), "runs": runs}


def run_scoring(data, config: dict) -> dict:
    """The test error of secml's classifier of the family retrained on the training set plus each given point set
    (``set{k}_X``, ``set{k}_y``): any library's poisoning points scored by secml's classifier."""
    tr = dataset(data["X_train"], data["y_train"])
    ts = dataset(data["X_test"], data["y_test"])
    errors = []
    for k in range(config["sets"]):
        clf = make_classifier(config["model"], dual=True)
        both = tr.append(dataset(data[f"set{k}_X"], data[f"set{k}_y"]))
        clf.fit(both.X, both.Y)
        errors.append(error(clf, ts))
    return {"test_errors": errors}


def main() -> None:
    if len(sys.argv) != 4 or sys.argv[1] not in ("evasion", "poisoning", "scoring"):
        sys.exit(__doc__)
    task, path, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # whatever secml prints stays off the JSON channel
        try:
            import torch  # noqa: F401  with torch, secml.ml imports its PyTorch classifier, hence torchvision

            _torchvision_stand_in()
        except ImportError:
            pass
        import secml

        with np.load(path) as npz:
            data = {key: npz[key] for key in npz.files}
        result = {"evasion": run_evasion, "poisoning": run_poisoning, "scoring": run_scoring}[task](data, config)
    json.dump({"secml_version": secml.__version__, "numpy_version": np.__version__, "result": result}, stdout)
    stdout.write("\n")


if __name__ == "__main__":
    main()


# ---- the transferlab side: called from the benches (with transferlab's Python), never from secml's --------------

def call(python: str, task: str, arrays: dict, config: dict, threads: int | None = None) -> dict:
    """Run this script with the secml ``python`` on ``arrays`` (written to a temporary .npz) and ``config``;
    returns its JSON. ``threads`` caps the BLAS/OpenMP threads of that process (as ``--threads`` does here)."""
    import os
    import subprocess
    import tempfile

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    if threads:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
            env[name] = str(threads)
    with tempfile.TemporaryDirectory(prefix="secml-ref-") as tmp:
        path = os.path.join(tmp, "data.npz")
        np.savez(path, **arrays)
        proc = subprocess.run([python, os.path.abspath(__file__), task, path, json.dumps(config)],
                              capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"{python} {os.path.basename(__file__)} {task} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fixed_spec(name: str, model) -> tuple[dict, dict] | None:
    """The secml spec and arrays of transferlab's fitted ``model`` itself, for evasion: an ``affine`` classifier
    for linear models (W, b), an ``mlp`` for MLPs (each Linear layer's W, b); None for other models."""
    from transferlab.models.linear import LinearClassifier
    from transferlab.models.neural import MLP

    if isinstance(model, LinearClassifier):
        layers = [(model.coef_, model.intercept_)]
        family = "affine"
    elif isinstance(model, MLP):
        layers = [(m.weight, m.bias) for m in model.module_ if hasattr(m, "weight")]
        family = "mlp"
    else:
        return None
    arrays = {}
    for k, (weight, bias) in enumerate(layers):
        arrays[f"{name}__W{k}"] = weight.detach().double().cpu().numpy()
        arrays[f"{name}__b{k}"] = bias.detach().double().cpu().numpy()
    return {"name": name, "family": family, "layers": len(layers)}, arrays


def spec_for(name: str) -> dict | None:
    """The secml spec of a transferlab registry model (its family and the registry's hyperparameters), or None
    where secml has no equivalent (neural networks, forests)."""
    from transferlab.models.kernel import KernelSVM
    from transferlab.models.linear import LinearSVM, Logistic, Ridge
    from transferlab.models.registry import MODELS

    spec = MODELS[name]
    family = {LinearSVM: "svm", KernelSVM: "svm_rbf", Logistic: "logistic", Ridge: "ridge"}.get(spec.factory)
    return None if family is None else {"name": name, "family": family, **spec.params}
