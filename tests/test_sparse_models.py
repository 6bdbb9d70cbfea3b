"""Sparse data stays sparse into the models: CSR in scikit-learn's index type, a sparse first layer for the MLP,
support vectors kept sparse, sparse and dense inputs giving the same scores and gradients, and every family that
takes sparse data training at DREBIN's full width (545,334 features) without densifying it."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from transferlab import models
from transferlab.errors import DataError
from transferlab.models.inputs import check_X
from transferlab.models.sparse import sparse_linear, sparse_tensor

DREBIN_WIDTH = 545_334


def binary_csr(n: int, d: int, per_row: int, seed: int = 0, int64: bool = True) -> sp.csr_matrix:
    """n rows of ``per_row`` ones at random columns, with int64 indices as scipy's svmlight reader builds them."""
    rng = np.random.default_rng(seed)
    cols = np.concatenate([np.sort(rng.choice(d, per_row, replace=False)) for _ in range(n)])
    X = sp.csr_matrix((np.ones(n * per_row), cols, np.arange(0, n * per_row + 1, per_row)), shape=(n, d))
    if int64:  # scipy picks int32 when it can: set the int64 arrays afterwards
        X.indices, X.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    return X


def labels_of(X: sp.csr_matrix, seed: int = 0) -> np.ndarray:
    w = np.random.default_rng(seed + 1).normal(size=X.shape[1])
    s = X @ w
    return (s > np.median(s)).astype(int)


@pytest.fixture(scope="module")
def small():
    X = binary_csr(80, 300, 12)
    return X, labels_of(X)


# ---- CSR in the index type scikit-learn takes --------------------------------------------------------------------
def test_check_X_gives_canonical_float64_csr_with_int32_indices():
    X = binary_csr(5, 10, 3)
    assert X.indices.dtype == np.int64
    out = check_X(X, allow_sparse=True)
    assert sp.isspmatrix_csr(out) and out.dtype == np.float64
    assert out.indices.dtype == np.int32 and out.indptr.dtype == np.int32 and out.has_canonical_format
    assert X.indices.dtype == np.int64  # the caller's matrix is left as it was
    np.testing.assert_array_equal(out.toarray(), X.toarray())
    messy = sp.csr_matrix((np.array([1.0, 2.0, 3.0]), np.array([4, 1, 4]), np.array([0, 3])), shape=(1, 6))
    clean = check_X(messy, allow_sparse=True)
    assert clean.has_canonical_format and clean.nnz == 2
    np.testing.assert_array_equal(clean.toarray(), messy.toarray())
    for other in (sp.coo_matrix(X), sp.csr_array(X), sp.csc_matrix(X.astype(np.float32))):
        converted = check_X(other, allow_sparse=True)
        assert sp.isspmatrix_csr(converted) and converted.indices.dtype == np.int32
        np.testing.assert_array_equal(converted.toarray(), X.toarray())
    bad = X.copy()
    bad.data[0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        check_X(bad, allow_sparse=True)


def test_more_features_than_a_saved_model_may_have_are_refused_at_fit():
    X = sp.csr_matrix((np.ones(2), ([0, 1], [0, 10_000_000])), shape=(2, 10_000_001))
    with pytest.raises(DataError, match="at most 10,000,000 features"):
        models.create("svm_l").fit(X, np.array([0, 1]))


# ---- the sparse first layer --------------------------------------------------------------------------------------
def test_sparse_linear_gradients_match_autograd_checks():
    X = binary_csr(4, 7, 3)
    X.data = np.random.default_rng(0).normal(size=X.nnz)
    x = sparse_tensor(X, torch.float64)
    weight = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, b: sparse_linear(x, w, b), (weight, bias), fast_mode=True)
    upstream = torch.randn(4, 3, dtype=torch.float64)
    grads = torch.autograd.grad((sparse_linear(x, weight, bias) * upstream).sum(), (weight, bias))
    dense = torch.as_tensor(X.toarray())
    expected = torch.autograd.grad(((dense @ weight.T + bias) * upstream).sum(), (weight, bias))
    torch.testing.assert_close(sparse_linear(x, weight, bias), dense @ weight.T + bias)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name, overrides", [
    ("nn_h", {"epochs": 3, "hidden": (16, 8)}), ("nn_l", {"epochs": 2}), ("svm_l", {}), ("svm_h", {}),
    ("logistic_h", {}), ("ridge_l", {}), ("svm_rbf_h", {}), ("svm_rbf_l", {}), ("rf_l", {"n_estimators": 10}),
])
def test_sparse_and_dense_inputs_give_the_same_model_scores_and_gradients(small, name, overrides):
    X, y = small
    on_sparse = models.create(name, **overrides).fit(X, y)
    on_dense = models.create(name, **overrides).fit(X.toarray(), y)
    float32 = isinstance(on_sparse, models.TorchNet)
    tol = {"rtol": 1e-4, "atol": 1e-5} if float32 else {"rtol": 1e-7, "atol": 1e-8}
    # the same model scores sparse and dense rows alike
    np.testing.assert_allclose(on_sparse.decision_function(X), on_sparse.decision_function(X.toarray()), **tol)
    # and training on sparse rows gives the model training on the dense rows gives
    np.testing.assert_allclose(on_sparse.decision_function(X), on_dense.decision_function(X.toarray()),
                               **({"rtol": 1e-4, "atol": 1e-5} if float32 or name.startswith("ridge") else tol))
    if on_sparse.differentiable:
        rows = X[:7]
        gradient = on_sparse.input_gradient(rows, y[:7])
        assert isinstance(gradient, np.ndarray) and gradient.shape == rows.shape
        np.testing.assert_allclose(gradient, on_sparse.input_gradient(rows.toarray(), y[:7]), **tol)


def test_a_sparse_trained_network_equals_the_dense_trained_one_in_its_weights(small):
    X, y = small
    a = models.MLP(hidden=(8,), epochs=4, seed=3).fit(X, y)
    b = models.MLP(hidden=(8,), epochs=4, seed=3).fit(X.toarray(), y)
    for (name, p), q in zip(a.module_.state_dict().items(), b.module_.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("loss", ["margin", "cross_entropy"])
def test_the_sparse_gradient_path_matches_finite_differences(small, loss):
    X, y = small
    model = models.MLP(hidden=(16, 8), epochs=3).fit(X, y).to(dtype=torch.float64)
    rows, labels = X[:3], y[:3]
    gradient = model.input_gradient(rows, labels, loss)
    rng = np.random.default_rng(0)
    h = 1e-6
    for i in range(rows.shape[0]):
        present = rows[i].indices
        absent = np.setdiff1d(np.arange(X.shape[1]), present)
        coords = np.r_[present[:5], rng.choice(absent, 10, replace=False)]  # stored values and absent features
        directions = np.zeros((coords.size + 2, X.shape[1]))
        directions[np.arange(coords.size), coords] = 1.0
        directions[coords.size:] = rng.normal(size=(2, X.shape[1])) / np.sqrt(X.shape[1])
        base = rows[i].toarray()
        # the perturbed rows are scored through the sparse path too
        plus = model.loss(sp.csr_matrix(base + h * directions), np.full(len(directions), labels[i]), loss)
        minus = model.loss(sp.csr_matrix(base - h * directions), np.full(len(directions), labels[i]), loss)
        numeric = (plus - minus) / (2 * h)
        np.testing.assert_allclose(directions @ gradient[i], numeric, rtol=1e-5,
                                   atol=1e-7 * max(1.0, np.abs(numeric).max()))


def test_gradients_of_many_wide_rows_are_computed_in_blocks(small):
    X, y = small
    model = models.create("svm_l").fit(X, y)
    model.batch_size = 3  # blocks of 3 rows: the result must not depend on the blocks
    np.testing.assert_allclose(model.input_gradient(X, y), models.create("svm_l").fit(X, y).input_gradient(X, y))
    np.testing.assert_allclose(model.decision_function(X), model.decision_function(X.toarray()), rtol=1e-12)


# ---- support vectors stay sparse ---------------------------------------------------------------------------------
def test_a_kernel_svm_fitted_on_sparse_data_keeps_sparse_support_vectors(small, tmp_path):
    X, y = small
    model = models.create("svm_rbf_h").fit(X, y)
    assert model.support_vectors_.layout == torch.sparse_coo
    reference = model.estimator_.decision_function(check_X(X, allow_sparse=True))
    np.testing.assert_allclose(model.decision_function(X)[:, 1], reference, rtol=1e-6, atol=1e-9)
    loaded = models.load(models.save(model, tmp_path / "rbf"))
    assert loaded.support_vectors_.layout == torch.sparse_coo
    np.testing.assert_allclose(loaded.decision_function(X), model.decision_function(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(loaded.input_gradient(X[:4], y[:4]), model.input_gradient(X[:4].toarray(), y[:4]),
                               rtol=1e-9, atol=1e-12)
    dense = models.create("svm_rbf_h").fit(X.toarray(), y)
    assert dense.support_vectors_.layout == torch.strided
    multi = models.create("svm_rbf_l").fit(X, np.arange(X.shape[0]) % 3)
    assert multi.support_vectors_.layout == torch.sparse_coo
    np.testing.assert_allclose(multi.decision_function(X),
                               multi.estimator_.decision_function(check_X(X, allow_sparse=True)), rtol=1e-6, atol=1e-9)


# ---- DREBIN's full width -----------------------------------------------------------------------------------------
FULL_WIDTH = [
    ("svm_l", {}), ("svm_rbf_l", {}), ("logistic_l", {"max_iter": 5}), ("ridge_h", {}),
    ("nn_l", {"hidden": (8,), "epochs": 5}), ("rf_l", {"n_estimators": 5}),
]


@pytest.fixture(scope="module")
def drebin_width():
    """100 apps of ~50 binary features among 545,334, with int64 indices as scipy's svmlight reader gives them;
    the malware (label 1) also holds 5 of 20 telltale features, as DREBIN's SEND_SMS-like permissions."""
    X = binary_csr(100, DREBIN_WIDTH, 50, seed=4)
    y = np.arange(100) % 2
    rng = np.random.default_rng(5)
    telltale = sp.lil_matrix(X.shape)
    for row in np.flatnonzero(y):
        telltale[row, rng.choice(20, 5, replace=False)] = 1.0
    X = (X + telltale.tocsr()).tocsr()
    X.data[:] = 1.0
    X.indices, X.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    return X, y


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # logistic_l stops at max_iter
@pytest.mark.parametrize("name, overrides", FULL_WIDTH, ids=[n for n, _ in FULL_WIDTH])
def test_every_sparse_family_trains_and_scores_at_drebin_width_without_densifying(drebin_width, name, overrides):
    X, y = drebin_width
    dense_bytes = X.shape[0] * X.shape[1] * 8  # 436 MB: what densifying the matrix would take
    tracemalloc.start()
    try:
        model = models.create(name, **overrides).fit(X, y)
        scores = model.decision_function(X)
        if model.differentiable:
            gradient = model.input_gradient(X[:2], y[:2])
            assert gradient.shape == (2, DREBIN_WIDTH)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert scores.shape == (100, 2) and np.isfinite(scores).all()
    if model.differentiable:  # (a forest of 5 trees rarely draws one of 20 telltale features among 545,334)
        assert (scores.argmax(1) == y).mean() > 0.8  # it learnt the telltale features
    assert peak < dense_bytes / 2, f"{name}: {peak / 2**20:.0f} MB traced"


def test_the_network_at_drebin_width_holds_no_dense_copy_of_the_data(drebin_width):
    """numpy allocations of the MLP's training and scoring stay within a small multiple of the CSR matrix (its
    weights are torch tensors, not traced)."""
    X, y = drebin_width
    csr_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    tracemalloc.start()
    try:
        model = models.create("nn_h", hidden=(8,), epochs=2).fit(X, y)
        model.decision_function(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * csr_bytes + (2 << 20), f"{peak / 2**20:.1f} MB traced for a {csr_bytes / 2**20:.2f} MB CSR"
