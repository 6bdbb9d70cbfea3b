"""Model files from elsewhere without pickle: .skops (trusted types, checked trees), .onnx (ONNX Runtime black boxes,
networks converted to torch), and models.save / models.load of every wrapped model."""

import re
import copy
import io
import json
import warnings
import zipfile

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from torch import nn

from transferlab import models
from transferlab.errors import ConfigError, DataError
from transferlab.models import NotDifferentiableError, external, onnx_torch
from transferlab.models.blackbox import BlackBoxClassifier
from transferlab.models.external import load_external
from transferlab.models.onnx_runtime import OnnxClassifier
from transferlab.models.wrap import SklearnModel, WrappedModule


def stable_id(estimator) -> str:
    """A test id that is the same in every pytest-xdist worker (no memory addresses of lambdas)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", str(estimator))[:40]

sio = pytest.importorskip("skops.io")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def data(n_classes, n=90, seed=0):
    return make_classification(n, 6, n_informative=4, n_redundant=0, n_classes=n_classes, n_clusters_per_class=1,
                               random_state=seed)


def softmax(scores):
    e = np.exp(scores - scores.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def assert_gradient_matches(model, X, y, h=1e-6, rtol=1e-5):
    grad = model.input_gradient(X, y)
    directions = np.vstack([np.eye(X.shape[1]), np.random.default_rng(1).normal(size=(3, X.shape[1]))])
    for i in range(X.shape[0]):
        labels = np.full(len(directions), y[i])
        numeric = (model.loss(X[i] + h * directions, labels) - model.loss(X[i] - h * directions, labels)) / (2 * h)
        np.testing.assert_allclose(directions @ grad[i], numeric, rtol=rtol,
                                   atol=1e-7 * max(1.0, np.abs(numeric).max()))


def onnx_bytes(module, n_features, dynamic=True):
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(2, n_features),), buffer, dynamo=False, input_names=["input"],
                          output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None)
    return buffer.getvalue()


# ---- .skops ------------------------------------------------------------------------------------------------------
SKOPS = [RandomForestClassifier(5, random_state=0), GradientBoostingClassifier(n_estimators=5, random_state=0),
         HistGradientBoostingClassifier(max_iter=5), KNeighborsClassifier(3, algorithm="kd_tree"),
         KNeighborsClassifier(3, algorithm="brute"), make_pipeline(StandardScaler(), SVC()),
         MLPClassifier((5,), max_iter=50, random_state=0)]


@pytest.mark.parametrize("estimator", SKOPS, ids=stable_id)
def test_skops_files_load_as_wrapped_models(tmp_path, estimator):
    X, y = data(3)
    est = copy.deepcopy(estimator).fit(X, y)
    sio.dump(est, tmp_path / "model.skops")
    model = load_external(tmp_path / "model.skops")
    assert model.differentiable == (isinstance(est, MLPClassifier) or hasattr(est, "steps"))
    np.testing.assert_allclose(model.decision_function(X), models.wrap(est).decision_function(X), rtol=1e-12,
                               atol=1e-12)
    assert np.array_equal(model.predict(X), est.predict(X))


class Custom(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return np.full((len(X), len(self.classes_)), 1 / len(self.classes_))


def test_skops_with_untrusted_types_is_refused(tmp_path):
    X, y = data(2)
    sio.dump(Custom().fit(X, y), tmp_path / "custom.skops")
    with pytest.raises(DataError, match=r"custom.skops holds types transferlab does not trust: .*Custom.*trusted="):
        load_external(tmp_path / "custom.skops")
    lightgbm = pytest.importorskip("lightgbm")
    sio.dump(lightgbm.LGBMClassifier(n_estimators=3, n_jobs=1, verbose=-1).fit(X, y), tmp_path / "lgbm.skops")
    with pytest.raises(DataError, match=r"lightgbm\.basic\.Booster.*export the model to ONNX"):
        load_external(tmp_path / "lgbm.skops")


def test_corrupt_and_oversized_skops_files(tmp_path, monkeypatch):
    X, y = data(2)
    good = tmp_path / "good.skops"
    sio.dump(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y), good)
    whole = good.read_bytes()
    for name, content in (("garbage", b"not a zip at all"), ("truncated", whole[:len(whole) // 2]), ("empty", b"")):
        (tmp_path / f"{name}.skops").write_bytes(content)
        with pytest.raises(DataError, match=f"{name}.skops is not a valid .skops file"):
            load_external(tmp_path / f"{name}.skops")
    broken = io.BytesIO()
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(broken, "w") as target:
        for info in source.infolist():
            target.writestr(info, b"{" if info.filename == "schema.json" else source.read(info))
    (tmp_path / "schema.skops").write_bytes(broken.getvalue())
    with pytest.raises(DataError, match="not a valid .skops file"):
        load_external(tmp_path / "schema.skops")
    with pytest.raises(DataError, match="more than the 100"):
        load_external(good, max_bytes=100)
    monkeypatch.setattr(external, "MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(DataError, match="unpacks to"):
        load_external(good)
    with pytest.raises(DataError, match="does not exist"):
        load_external(tmp_path / "missing.skops")


def _crafted(tmp_path, estimator, edit):
    est = copy.deepcopy(estimator)
    edit(est)  # never scored: scikit-learn would read outside the arrays
    sio.dump(est, tmp_path / "crafted.skops")
    return tmp_path / "crafted.skops"


def test_skops_trees_are_checked_before_use(tmp_path):
    X, y = data(2)
    forest = RandomForestClassifier(3, random_state=0).fit(X, y)
    boosted = HistGradientBoostingClassifier(max_iter=3).fit(X, y)
    pipeline = make_pipeline(StandardScaler(), GradientBoostingClassifier(n_estimators=3)).fit(X, y)
    edits = [(forest, lambda e: e.estimators_[1].tree_.children_left.__setitem__(0, 10 ** 6)),
             (forest, lambda e: e.estimators_[0].tree_.children_right.__setitem__(0, 0)),  # a cycle
             (forest, lambda e: e.estimators_[2].tree_.feature.__setitem__(0, 6)),
             (pipeline, lambda e: e[-1].estimators_[1, 0].tree_.feature.__setitem__(0, 40)),
             (boosted, lambda e: e._predictors[1][0].nodes["left"].__setitem__(0, 4000)),
             (boosted, lambda e: e._predictors[0][0].nodes["feature_idx"].__setitem__(0, 6))]
    for estimator, edit in edits:
        with pytest.raises(DataError, match="outside the model"):
            load_external(_crafted(tmp_path, estimator, edit))


def test_refused_and_unknown_files(tmp_path):
    (tmp_path / "net.pt2").write_bytes(b"PK")
    with pytest.raises(ConfigError, match=r"net.pt2: transferlab does not load .pt2 files \(torch.export.load "
                                          "unpickles.*torch.onnx.export"):
        load_external(tmp_path / "net.pt2")
    (tmp_path / "model.txt").write_text("")
    with pytest.raises(ConfigError, match="unknown model file type .txt"):
        load_external(tmp_path / "model.txt")


# ---- .onnx: ONNX Runtime ----------------------------------------------------------------------------------------
def _skl2onnx(estimator, X, **options):
    skl2onnx = pytest.importorskip("skl2onnx")
    return skl2onnx.to_onnx(estimator, X[:1].astype(np.float32), options=options or None).SerializeToString()


@pytest.mark.filterwarnings("ignore:Attribute `prob:FutureWarning")  # skl2onnx reads SVC.probA_
@pytest.mark.parametrize("n_classes", [2, 3])
def test_skl2onnx_models_run_as_black_boxes(tmp_path, n_classes):
    X, y = data(n_classes)
    labels = np.array(["ham", "spam", "eggs"])[y]
    cases = [(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, labels), {}),  # ZipMap output
             (RandomForestClassifier(5, random_state=0).fit(X, y), {"zipmap": False}),
             (SVC().fit(X, y), {"zipmap": False} if n_classes > 2 else {})]
    for estimator, options in cases:
        path = tmp_path / f"{type(estimator).__name__}.onnx"
        path.write_bytes(_skl2onnx(estimator, X, **options))
        model = load_external(path)
        assert isinstance(model, OnnxClassifier) and not model.differentiable
        assert list(model.classes_) == list(estimator.classes_)
        scores = model.decision_function(X)
        if isinstance(estimator, SVC):
            assert model.output_kind_ == "scores"
            expected = estimator.decision_function(X)
            np.testing.assert_allclose(scores[:, 1] if n_classes == 2 else scores, expected, rtol=1e-4, atol=1e-4)
        else:
            assert model.output_kind_ == "probabilities"
            np.testing.assert_allclose(softmax(scores), estimator.predict_proba(X), atol=1e-5)
        assert np.array_equal(model.classes_[model.predict(X)], estimator.predict(X))
        model.batch_size = 7
        np.testing.assert_allclose(model.decision_function(X), scores, rtol=1e-12)
        with pytest.raises(NotDifferentiableError, match="differentiable surrogate"):
            model.input_gradient(X[:2], np.zeros(2, dtype=int))
        with pytest.raises(ConfigError, match="cannot be retrained"):
            model.fit(X, y)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_lightgbm_through_onnxmltools(tmp_path, n_classes):
    lightgbm = pytest.importorskip("lightgbm")
    onnxmltools = pytest.importorskip("onnxmltools")
    from onnxmltools.convert.common.data_types import FloatTensorType

    X, y = data(n_classes)
    est = lightgbm.LGBMClassifier(n_estimators=10, min_child_samples=5, n_jobs=1, verbose=-1).fit(X, y)
    proto = onnxmltools.convert_lightgbm(est, initial_types=[("input", FloatTensorType([None, 6]))], zipmap=False)
    (tmp_path / "lgbm.onnx").write_bytes(proto.SerializeToString())
    model = load_external(tmp_path / "lgbm.onnx")
    assert isinstance(model, OnnxClassifier)
    np.testing.assert_allclose(softmax(model.decision_function(X)), est.predict_proba(X.astype(np.float32)),
                               atol=1e-5)
    assert np.array_equal(model.predict(X), est.predict(X))
    with pytest.raises(DataError, match=r"lgbm.onnx takes rows of 6 features .* but X has shape \(4, 5\)"):
        model.decision_function(X[:4, :5])


def _graph_model(nodes, inputs, outputs, initializers=()):
    helper = onnx.helper
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_bad_onnx_files(tmp_path, monkeypatch):
    helper, T = onnx.helper, onnx.TensorProto
    torch.manual_seed(0)
    good = onnx_bytes(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)), 6)
    for name, content in (("garbage", b"\x08\x07garbage"), ("truncated", good[:len(good) // 2]), ("empty", b"")):
        (tmp_path / f"{name}.onnx").write_bytes(content)
        with pytest.raises(DataError, match=f"{name}.onnx is not a valid ONNX model"):
            load_external(tmp_path / f"{name}.onnx")
    (tmp_path / "net.onnx").write_bytes(good)
    for differentiable in (True, False):
        with pytest.raises(DataError, match=r"net.onnx .*6 features.* has shape \(3, 5\)"):
            load_external(tmp_path / "net.onnx", differentiable=differentiable).decision_function(np.zeros((3, 5)))
    symbolic = _graph_model([helper.make_node("Relu", ["x"], ["y"])],
                            [helper.make_tensor_value_info("x", T.FLOAT, ["n", "d"])],
                            [helper.make_tensor_value_info("y", T.FLOAT, ["n", "d"])])
    (tmp_path / "symbolic.onnx").write_bytes(symbolic)
    with pytest.raises(DataError, match="symbolic.onnx: input 'x' has shape .*fixed feature shape"):
        load_external(tmp_path / "symbolic.onnx")
    # a small graph whose Concats double a tensor each time: refused before the tensor is made
    nodes = [helper.make_node("Concat", [f"t{i}", f"t{i}"], [f"t{i + 1}"], axis=1) for i in range(40)]
    nodes[0].input[:] = ["x", "x"]
    doubling = _graph_model(nodes, [helper.make_tensor_value_info("x", T.FLOAT, ["n", 4])],
                            [helper.make_tensor_value_info("t40", T.FLOAT, ["n", "w"])])
    (tmp_path / "doubling.onnx").write_bytes(doubling)
    monkeypatch.setattr(onnx_torch, "MAX_TENSOR_ELEMENTS", 1 << 16)
    with pytest.raises(DataError, match="doubling.onnx: operator Concat would make a tensor of"):
        load_external(tmp_path / "doubling.onnx", differentiable=True)


# ---- .onnx: networks converted to torch ----------------------------------------------------------------------------
def test_torch_network_exported_to_onnx_is_differentiable(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8), nn.LeakyReLU(0.1), nn.Linear(8, 3))
    (tmp_path / "net.onnx").write_bytes(onnx_bytes(net, 6))
    model = load_external(tmp_path / "net.onnx")
    assert isinstance(model, WrappedModule) and model.differentiable and model.n_classes_ == 3
    X, y = data(3)
    original = models.wrap(net, n_classes=3, n_features=6)
    np.testing.assert_allclose(model.decision_function(X), original.decision_function(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.input_gradient(X[:10], y[:10]), original.input_gradient(X[:10], y[:10]),
                               rtol=1e-4, atol=1e-6)
    double = onnx_torch.torch_from_onnx((tmp_path / "net.onnx").read_bytes(), "net.onnx", dtype=torch.float64)
    assert_gradient_matches(double, X[:3], y[:3])


def test_torch_cnn_exported_to_onnx():
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Unflatten(1, (1, 12, 12)), nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, stride=2), nn.Sigmoid(), nn.Flatten(), nn.Linear(16, 1))
    model = external.load_onnx(onnx_bytes(cnn, 144), "cnn.onnx")
    assert isinstance(model, WrappedModule)
    X = np.random.default_rng(0).normal(size=(5, 144))
    with torch.no_grad():
        logits = cnn(torch.as_tensor(X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(model.decision_function(X), np.c_[np.zeros(5), logits], rtol=1e-5, atol=1e-6)
    assert model.input_gradient(X, np.ones(5, dtype=int)).shape == X.shape


def test_unsupported_operators_are_listed():
    class Sorting(nn.Module):
        def forward(self, x):
            return torch.stack([x.sort(1).values[:, 0], x.cumsum(1)[:, -1]], 1)

    data_ = onnx_bytes(Sorting(), 4)
    with pytest.raises(ConfigError, match=r"sorting.onnx: operators CumSum, TopK have no torch conversion.*Gemm"):
        external.load_onnx(data_, "sorting.onnx", differentiable=True)
    black_box = external.load_onnx(data_, "sorting.onnx")
    assert isinstance(black_box, OnnxClassifier)
    X = np.random.default_rng(0).normal(size=(3, 4))
    np.testing.assert_allclose(black_box.decision_function(X)[:, 1], np.cumsum(X, 1)[:, -1], rtol=1e-5)


# ---- models.save / models.load of wrapped models ---------------------------------------------------------------
def test_saved_pipeline_is_its_torch_parameters(tmp_path):
    X, y = data(3)
    est = make_pipeline(StandardScaler(), SVC(kernel="poly", degree=2)).fit(X, y)
    model = models.wrap(est)
    folder = models.save(model, tmp_path / "svc")
    assert sorted(p.name for p in folder.iterdir()) == ["recipe.skops", "spec.json", "weights.safetensors"]
    loaded = models.load(folder)
    assert isinstance(loaded, SklearnModel) and repr(loaded) == "SklearnModel(Pipeline(StandardScaler, SVC))"
    np.testing.assert_allclose(loaded.decision_function(X), model.decision_function(X), rtol=1e-12)
    assert np.array_equal(loaded.predict(X), est.predict(X))
    np.testing.assert_allclose(loaded.input_gradient(X[:5], y[:5]), model.input_gradient(X[:5], y[:5]), rtol=1e-12)
    loaded.fit(X[:50], y[:50])  # its recipe, an unfitted clone, is retrained
    assert np.array_equal(loaded.predict(X), loaded.estimator_.predict(X))


def test_saved_black_boxes_and_onnx_models(tmp_path):
    X, y = data(2)
    forest = models.wrap(RandomForestClassifier(5, random_state=0).fit(X, y))
    loaded = models.load(models.save(forest, tmp_path / "forest"))
    assert isinstance(loaded, BlackBoxClassifier)
    np.testing.assert_array_equal(loaded.decision_function(X), forest.decision_function(X))
    (tmp_path / "lr.onnx").write_bytes(_skl2onnx(LogisticRegression().fit(X, y), X, zipmap=False))
    ort_model = models.load(tmp_path / "lr.onnx")
    assert isinstance(ort_model, OnnxClassifier)
    again = models.load(models.save(ort_model, tmp_path / "ort"))
    np.testing.assert_array_equal(again.decision_function(X), ort_model.decision_function(X))
    lightgbm = pytest.importorskip("lightgbm")
    boosted = models.wrap(lightgbm.LGBMClassifier(n_estimators=3, n_jobs=1, verbose=-1).fit(X, y))
    with pytest.raises(ConfigError, match="export it to ONNX"):
        models.save(boosted, tmp_path / "lgbm")


def test_saved_wrapped_torch_module(tmp_path):
    torch.manual_seed(0)
    net = models.wrap(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2)).double(), n_classes=2, n_features=6)
    folder = models.save(net, tmp_path / "net")
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "spec.json"]
    loaded = models.load(folder)
    assert isinstance(loaded, WrappedModule) and loaded.dtype == torch.float64
    X, y = data(2)
    np.testing.assert_allclose(loaded.decision_function(X), net.decision_function(X), rtol=1e-12)
    np.testing.assert_allclose(loaded.input_gradient(X, y), net.input_gradient(X, y), rtol=1e-12)

    class Sorting(nn.Module):
        def forward(self, x):
            return x.sort(1).values[:, :2]

    with pytest.raises(ConfigError, match=r"cannot save WrappedModule\(Sorting.*TopK.*safetensors"):
        models.save(models.wrap(Sorting(), n_classes=2, n_features=6), tmp_path / "sorting")


def test_tampered_saved_models(tmp_path):
    from safetensors.torch import load_file, save_file

    X, y = data(2)
    folder = models.save(models.wrap(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)), tmp_path / "m")
    weights = load_file(str(folder / "weights.safetensors"))
    weights["0.sub"] = torch.full_like(weights["0.sub"], float("nan"))
    save_file(weights, str(folder / "weights.safetensors"))
    with pytest.raises(DataError, match="NaN"):
        models.load(folder)
    weights["0.sub"] = torch.zeros(4, dtype=torch.float64)  # 4 features for a model of 6
    save_file(weights, str(folder / "weights.safetensors"))
    with pytest.raises(DataError, match="does not fit its spec"):
        models.load(folder)
    spec = json.loads((folder / "spec.json").read_text())
    spec["pieces"][0]["type"] = "Eval"
    (folder / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match="does not fit its spec"):
        models.load(folder)
    (folder / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(DataError, match="corrupt"):
        models.load(folder)
