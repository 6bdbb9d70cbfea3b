import copy
from collections.abc import Mapping

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from transferlab import datasets, models

# pytest-xdist runs one process per core: one torch thread each avoids OpenMP threads spinning against each other
torch.set_num_threads(1)
# and one BLAS thread: OpenBLAS threads spinning against the other worker made scikit-learn's lbfgs ~5x slower
threadpool_limits(1)


@pytest.fixture(scope="session")
def mnist89():
    return datasets.load("mnist89")


@pytest.fixture(scope="session")
def small_split(mnist89):
    """A small, fixed split of the embedded MNIST89 for fast model tests."""
    return datasets.split(mnist89, n_target=200, n_surrogate=200, n_test=100, n_validation=100, seed=0)


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)


# quick training settings for the networks in tests (the registry's defaults are the paper's)
FAST = {"nn_h": {"epochs": 3}, "nn_l": {"epochs": 3}, "cnn": {"epochs": 4, "batch_size_train": 16, "channels": (8, 8, 8), "dense": 16}}


class Copies(Mapping):
    """Read-only view of fitted models that hands out a deep copy of a model each time it is looked up: a test may
    change its copy (dtype, device, batch size, a refit) without changing what any other test sees."""

    def __init__(self, fitted: dict[str, models.Classifier]) -> None:
        self._fitted = fitted

    def __getitem__(self, name: str) -> models.Classifier:
        return copy.deepcopy(self._fitted[name])

    def __iter__(self):
        return iter(self._fitted)

    def __len__(self) -> int:
        return len(self._fitted)


@pytest.fixture(scope="session")
def _fitted_once(small_split):
    """Every registry model, fitted once per session on the small split (networks with the FAST settings)."""
    return {name: models.create(name, **FAST.get(name, {})).fit(small_split.target.X, small_split.target.y)
            for name in models.MODELS}


@pytest.fixture()
def fitted(_fitted_once):
    """The fitted registry models of :func:`_fitted_once`, each lookup a fresh copy (test order cannot matter)."""
    return Copies(_fitted_once)


def as_float64(model):
    """A float64 copy of a model (networks train in float32; finite differences need float64). The model passed in
    is left as it is."""
    model = copy.deepcopy(model)
    if isinstance(model, models.TorchNet):
        model.to(dtype=torch.float64)
    return model


def finite_difference_check(model, X, y, loss, n_coords=40, h=1e-6):
    """Compare input_gradient with central differences of the loss computed from decision_function, on random
    coordinates and along random directions."""
    rng = np.random.default_rng(0)
    grad = model.input_gradient(X, y, loss=loss)
    assert grad.shape == X.shape
    coords = rng.choice(X.shape[1], n_coords, replace=False)
    directions = np.zeros((n_coords + 3, X.shape[1]))
    directions[np.arange(n_coords), coords] = 1.0
    directions[n_coords:] = rng.normal(size=(3, X.shape[1])) / np.sqrt(X.shape[1])
    for i in range(X.shape[0]):
        plus = model.loss(X[i] + h * directions, np.full(len(directions), y[i]), loss)
        minus = model.loss(X[i] - h * directions, np.full(len(directions), y[i]), loss)
        numeric = (plus - minus) / (2 * h)
        analytic = directions @ grad[i]
        np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-6 * max(1.0, np.abs(numeric).max()))
