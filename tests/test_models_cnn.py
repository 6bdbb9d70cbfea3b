"""The CNN's CPU layout (issue 18): channels-last weights and blocks of CPU_ROWS rows change how its kernels run,
not what it computes."""

import numpy as np
import torch

from transferlab import models
from transferlab.models.losses import get_loss
from transferlab.models.neural import CPU_ROWS

SMALL = {"channels": (4, 4, 4), "dense": 8, "epochs": 1, "batch_size_train": 16, "seed": 2}


def fitted(n: int = 3 * CPU_ROWS + 5) -> tuple[models.CNN, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (n, 144))
    y = (X[:, :72].sum(1) > X[:, 72:].sum(1)).astype(int)
    return models.CNN(**SMALL).fit(X, y), X, y


def nchw_module(model: models.CNN) -> torch.nn.Module:
    """The same weights in NCHW: the computation before the layout."""
    module = model.meta_module(model.n_features_in_, model.n_classes_)
    module.load_state_dict({k: v.clone() for k, v in model.state_tensors().items()}, assign=True)
    return module.eval()


def nchw_scores(model: models.CNN, X: torch.Tensor) -> torch.Tensor:
    """Scores of the same weights in NCHW, all rows in one call."""
    with torch.no_grad():
        return nchw_module(model)(X)


def test_weights_are_channels_last_and_saved_contiguous(tmp_path):
    model, X, _ = fitted()
    convs = [m for m in model.module_ if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs[1:])
    assert all(t.is_contiguous() for t in model.state_tensors().values())
    loaded = models.load(models.save(model, tmp_path / "cnn"))
    assert loaded.module_[3].weight.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(loaded.decision_function(X), model.decision_function(X))


def test_blocks_of_rows_and_layout_leave_scores_and_gradients_as_they_were():
    model, X, y = fitted()
    Xt = torch.as_tensor(X, dtype=torch.float32)
    reference = nchw_scores(model, Xt)
    with torch.no_grad():
        blocked = model.scores(Xt)  # more than CPU_ROWS rows: blocks in inference mode
    assert not blocked.is_inference()
    blocked += 0  # a normal tensor: attacks may update it in place
    np.testing.assert_allclose(blocked.numpy(), reference.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.decision_function(X), reference.double().numpy(), rtol=1e-5, atol=1e-6)
    # the gradient of all rows, in blocks and channels-last, equals autograd's on the NCHW module, and each row's own
    grad = model.input_gradient(X, y)
    xt = Xt.clone().requires_grad_(True)
    get_loss("margin")(nchw_module(model)(xt), torch.as_tensor(y)).sum().backward()
    np.testing.assert_allclose(grad, xt.grad.double().numpy(), rtol=1e-4, atol=1e-6)
    one_by_one = np.vstack([model.input_gradient(X[i:i + 1], y[i:i + 1]) for i in (0, CPU_ROWS, len(X) - 1)])
    np.testing.assert_allclose(grad[[0, CPU_ROWS, len(X) - 1]], one_by_one, rtol=1e-5, atol=1e-7)
    assert grad.shape == X.shape and model.input_gradient(X[:0], y[:0]).shape == (0, X.shape[1])


def test_rows_per_call_bounded_on_the_cpu_only():
    model, _, _ = fitted(40)
    assert model.rows_per_call == min(model.batch_size, CPU_ROWS)
    assert models.CNN(batch_size=10).rows_per_call == 10
    assert models.CNN(device="meta", batch_size=5000).rows_per_call == 5000  # not on the CPU: its batch size
    assert models.MLP(batch_size=5000).rows_per_call == 5000
    assert models.Ensemble([model, models.MLP()], batch_size=4096).rows_per_call == min(model.rows_per_call, 4096)
