import numpy as np
import pytest
import torch

from transferlab import datasets

# pytest-xdist runs one process per core: one torch thread each avoids OpenMP threads spinning against each other
torch.set_num_threads(1)


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
