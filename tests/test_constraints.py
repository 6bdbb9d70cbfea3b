import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from transferlab.attacks import Binary, Box, FeatureAdditionOnly, L1Ball, L2Ball, LinfBall, Mask

D = 6
floats = st.floats(-3, 3, allow_nan=False, width=64)


@st.composite
def problem(draw):
    n = draw(st.integers(1, 5))
    x0 = draw(arrays(np.float64, (n, D), elements=st.floats(0, 1, width=64)))
    z = draw(arrays(np.float64, (n, D), elements=floats))
    eps = draw(st.floats(0, 3, width=64))
    return torch.as_tensor(z), torch.as_tensor(x0), eps


def domains(eps):
    mask = np.array([True, False, True, True, False, True])
    return [
        L2Ball(eps), LinfBall(eps), L1Ball(eps), Box(0, 1),
        L2Ball(eps) & Box(0, 1), LinfBall(eps) & Box(0, 1), L1Ball(eps) & Box(0, 1),
        L2Ball(eps) & Box(np.full(D, 0.0), np.linspace(0.5, 1, D) + 0.5),
        L2Ball(eps) & Box(0, 1) & FeatureAdditionOnly(), L1Ball(eps) & Box(0, 1) & Mask(mask),
        LinfBall(eps) & Box(0, 1) & FeatureAdditionOnly() & Mask(mask),
    ]


@settings(max_examples=150, deadline=None)
@given(problem())
def test_projection_lands_inside_is_idempotent_and_keeps_interior_points(data):
    z, x0, eps = data
    for domain in domains(eps):
        x = domain.project(z, x0)
        assert bool(domain.contains(x, x0, tol=1e-9).all()), domain
        again = domain.project(x, x0)
        torch.testing.assert_close(again, x, rtol=0, atol=1e-9)
        inside = domain.contains(z, x0, tol=0)
        torch.testing.assert_close(x[inside], z[inside], rtol=0, atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(problem())
def test_linf_box_projection_is_the_closed_form(data):
    z, x0, eps = data
    expected = np.clip(z.numpy(), np.maximum(0, x0.numpy() - eps), np.minimum(1, x0.numpy() + eps))
    np.testing.assert_allclose((LinfBall(eps) & Box(0, 1)).project(z, x0).numpy(), expected)


def _brute_force_projection(z, x0, eps, p, lb=0.0, ub=1.0):
    """Projection onto ball ∩ box of one row by scipy's constrained solver (a slow, independent reference). The ℓ1
    ball is written with linear constraints, x − x0 = s with |s_i| ≤ t_i and Σ t_i ≤ ε over the variables (x, t):
    the same set, without the kinks of Σ|x_i − x0_i| that make SLSQP crawl."""
    from scipy.optimize import minimize

    d = len(z)
    if p == 2:
        cons = [{"type": "ineq", "fun": lambda x: eps ** 2 - np.sum((x - x0) ** 2), "jac": lambda x: -2 * (x - x0)}]
        res = minimize(lambda x: 0.5 * np.sum((x - z) ** 2), x0.copy(), jac=lambda x: x - z,
                       bounds=[(lb, ub)] * d, constraints=cons, method="SLSQP",
                       options={"ftol": 1e-14, "maxiter": 500})
        return res.x
    eye = np.eye(d)
    linear = np.block([[-eye, eye], [eye, eye], [np.zeros((1, d)), -np.ones((1, d))]])  # t ∓ (x − x0) ≥ 0, ε − Σt ≥ 0
    offset = np.concatenate([x0, -x0, [eps]])
    cons = [{"type": "ineq", "fun": lambda w: linear @ w + offset, "jac": lambda w: linear}]
    res = minimize(lambda w: 0.5 * np.sum((w[:d] - z) ** 2), np.concatenate([x0, np.zeros(d)]),
                   jac=lambda w: np.concatenate([w[:d] - z, np.zeros(d)]),
                   bounds=[(lb, ub)] * d + [(0, None)] * d, constraints=cons, method="SLSQP",
                   options={"ftol": 1e-14, "maxiter": 500})
    return res.x[:d]


@pytest.mark.parametrize("p, ball", [(2, L2Ball), (1, L1Ball)], ids=["l2", "l1"])
@settings(max_examples=40, deadline=None)
@given(data=problem())
def test_lp_box_projection_is_the_euclidean_projection(p, ball, data):
    z, x0, eps = data
    x = (ball(eps) & Box(0, 1)).project(z, x0).numpy()
    for i in range(z.shape[0]):
        ref = _brute_force_projection(z[i].numpy(), x0[i].numpy(), eps, p)
        # ours is feasible, so it is optimal iff it is at least as close to z as the reference (whose own slight
        # infeasibility v allows a feasible point within v of it)
        v = max(0.0, np.linalg.norm(ref - x0[i].numpy(), ord=p) - eps)
        assert np.linalg.norm(x[i] - z[i].numpy()) <= np.linalg.norm(ref - z[i].numpy()) + v + 1e-5


@settings(max_examples=100, deadline=None)
@given(problem())
def test_batch_equals_rows_one_at_a_time(data):
    z, x0, eps = data
    for domain in domains(eps):
        whole = domain.project(z, x0)
        rows = torch.cat([domain.project(z[i:i + 1], x0[i:i + 1]) for i in range(z.shape[0])])
        torch.testing.assert_close(whole, rows, rtol=0, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 4), st.integers(0, 6), st.data())
def test_binary_feature_addition_projection(n, k, data):
    x0 = torch.as_tensor(data.draw(arrays(np.float64, (n, D), elements=st.sampled_from([0.0, 1.0]))))
    z = torch.as_tensor(data.draw(arrays(np.float64, (n, D), elements=floats)))
    domain = L1Ball(k) & Box(0, 1) & FeatureAdditionOnly() & Binary()
    x = domain.project(z, x0)
    assert bool(domain.contains(x, x0, tol=0).all())
    assert bool((x >= x0).all()) and bool(((x - x0).sum(1) <= k).all())
    # exact: no feasible binary point is closer to z (brute force over all 2^D points)
    grid = torch.as_tensor(np.array(np.meshgrid(*[[0.0, 1.0]] * D)).reshape(D, -1).T)
    for i in range(n):
        feasible = grid[domain.contains(grid, x0[i].expand_as(grid), tol=0)]
        best = ((feasible - z[i]) ** 2).sum(1).min()
        assert float(((x[i] - z[i]) ** 2).sum()) <= float(best) + 1e-9


def test_bounds_of_one_box_are_its_own_and_kept_for_the_same_points():
    """Intersection.bounds: one Box gives its bounds as broadcast views, equal to the general computation; a second
    call on the same unchanged tensor returns the kept result, a changed tensor gets fresh bounds; check_start still
    refuses points outside the box."""
    from transferlab.attacks.constraints import Intersection

    x0 = 0.2 + 0.5 * torch.rand(3, D, dtype=torch.float64)
    domain = Intersection(L2Ball(0.5), Box(np.linspace(0, 0.1, D), 1.0))
    lb, ub = domain.bounds(x0)
    general = Intersection(L2Ball(0.5), Box(np.linspace(0, 0.1, D), 1.0), Box(None, 2.0)).bounds(x0)
    torch.testing.assert_close(lb, general[0], rtol=0, atol=0)
    torch.testing.assert_close(ub, general[1], rtol=0, atol=0)
    assert domain.bounds(x0)[0] is lb
    x0.mul_(0.8)  # changed in place: fresh bounds
    assert domain.bounds(x0)[0] is not lb
    domain.check_start(x0)
    with pytest.raises(Exception, match="outside the box"):
        domain.check_start(x0 + 1.5)
