"""The threat-model pieces of the malware case study and the registry that builds them from config names."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from transferlab import attacks, models
from transferlab.attacks import Box, FeatureAdditionOnly, L1Ball, L2Ball, LinfBall, Mask, Quantize
from transferlab.errors import ConfigError

D = 6


@st.composite
def grid_problem(draw):
    """x0 on the 8-bit grid, a crafted point inside Φ(x0) (the projection of an arbitrary z)."""
    n = draw(st.integers(1, 4))
    x0 = draw(arrays(np.int64, (n, D), elements=st.integers(0, 255))) / 255.0
    z = draw(arrays(np.float64, (n, D), elements=st.floats(-2, 2, width=64)))
    eps = draw(st.floats(0, 2, width=64))
    return torch.as_tensor(z), torch.as_tensor(x0), eps


@settings(max_examples=150, deadline=None)
@given(grid_problem())
def test_quantised_points_lie_on_the_grid_and_inside_the_domain(data):
    z, x0, eps = data
    mask = np.array([True, False, True, True, False, True])
    for ball in (L2Ball(eps), LinfBall(eps), L1Ball(eps)):
        for extra in ((), (FeatureAdditionOnly(),), (Mask(mask),)):
            domain = attacks.Intersection(ball, Box(0, 1), *extra, Quantize(255))
            x = domain.quantize(domain.project(z, x0), x0)
            assert torch.allclose(x * 255, torch.round(x * 255), atol=1e-7)
            assert bool(domain.contains(x, x0, tol=1e-9).all()), domain


def test_quantize_is_a_no_op_without_the_piece():
    domain = L2Ball(1.0) & Box(0, 1)
    x = torch.rand(3, D, dtype=torch.float64)
    assert domain.quantize(x, x) is x
    with pytest.raises(ConfigError, match="quantize"):
        Quantize(0)


def _linear(w, b=0.0):
    model = models.LinearSVM()
    model.n_classes_, model.n_features_in_ = 2, len(w)
    model.set_parameters(np.vstack([np.zeros(len(w)), w]), np.array([0.0, b]))
    return model


@pytest.mark.parametrize("seed", range(8))
def test_greedy_feature_addition_is_optimal_for_a_linear_model(seed):
    """Brute force over every set of at most eps addable features (malware attacked: maximise −f)."""
    rng = np.random.default_rng(seed)
    d = 7
    w = rng.normal(size=d)
    model = _linear(w, 0.3)
    x0 = (rng.random((4, d)) < 0.4).astype(float)
    mask = rng.random(d) < 0.8
    y = np.ones(4, dtype=int)
    for eps in (0, 1, 2, 3, 5):
        attack = attacks.FeatureAddition(eps=eps, constraints=(Mask(mask),))
        x_adv = attack.run(model, x0, y).x_adv
        for row, start in zip(x_adv, x0):
            addable = [i for i in range(d) if start[i] == 0 and mask[i]]
            best = max(-(w @ _add(start, s)) for k in range(min(eps, len(addable)) + 1)
                       for s in itertools.combinations(addable, k))
            assert -(w @ row) == pytest.approx(best, abs=1e-12)
            assert set(np.unique(row)) <= {0.0, 1.0} and (row >= start).all() and (row - start).sum() <= eps
            assert (row[~mask] == start[~mask]).all()


def _add(x, features):
    out = x.copy()
    out[list(features)] = 1
    return out


def test_feature_addition_on_a_nonlinear_model_stays_in_the_domain_and_raises_the_loss():
    rng = np.random.default_rng(0)
    X = (rng.random((200, 12)) < 0.3).astype(float)
    y = (X[:, :3].sum(1) >= 1).astype(int)
    model = models.create("svm_rbf_h").fit(X, y)
    attack = attacks.FeatureAddition(eps=3, features_per_step=2)
    r = attack.run(model, X[y == 1][:20], y[y == 1][:20])
    start = X[y == 1][:20]
    assert ((r.x_adv - start) >= 0).all() and ((r.x_adv - start).sum(1) <= 3).all()
    assert (r.objective >= r.objective_start - 1e-12).all()


def test_feature_addition_needs_the_l1_budget():
    with pytest.raises(ConfigError, match="norm 1"):
        attacks.FeatureAddition(norm=2, eps=1)


def test_registry_builds_attacks_and_pieces_by_name():
    pieces = attacks.threat_model(feature_addition=True, binary=True, mask=[True, False], quantize=None)
    assert [type(p).__name__ for p in pieces] == ["FeatureAdditionOnly", "Binary", "Mask"]
    attack = attacks.evasion_attack("pgd_line_search", norm=2, eps=1.0, constraints=pieces[:1], max_iter=5)
    assert isinstance(attack, attacks.PGDLineSearch) and attack.settings.max_iter == 5
    with pytest.raises(ConfigError, match="unknown attack kind"):
        attacks.evasion_attack("cw", norm=2, eps=1.0)
    with pytest.raises(ConfigError, match="attack.solver"):
        attacks.evasion_attack("pgd", norm=2, eps=1.0, no_such_setting=3)
    mask = attacks.manipulable_mask(["permission::A", "api_call::b", "intent::c"], ["permission::", "intent::"])
    assert mask.tolist() == [True, False, True]
    with pytest.raises(ConfigError, match="matches no feature"):
        attacks.manipulable_mask(["a", "b"], ["url::"])


def _schema_members():
    """The members of the config schema's attack union: {kind: (member schema, its solver's schema)}."""
    from transferlab.experiments.config import ExperimentConfig

    schema = ExperimentConfig.model_json_schema()
    defs = schema["$defs"]
    resolve = lambda node: defs[node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node  # noqa: E731
    union = schema["properties"]["attack"]
    members = {}
    for option in union.get("oneOf", union.get("anyOf", [])):
        member = resolve(option)
        members[member["properties"]["kind"]["const"]] = (member, resolve(member["properties"]["solver"]))
    return members


def test_the_config_schema_lists_every_registry_attack_with_its_own_settings():
    """The config's attack section is a union on kind built from the registry: each attack's member has exactly
    the evasion fields, and its solver is the attack's own settings model (every field, its bounds)."""
    from transferlab.attacks.poisoning import PoisoningSettings

    members = _schema_members()
    assert set(members) == {*attacks.EVASION_ATTACKS, "poisoning"}
    for kind, attack in attacks.EVASION_ATTACKS.items():
        member, solver = members[kind]
        assert set(solver["properties"]) == set(attack.Settings.model_fields), kind
        assert {"eps", "norm", "double_init", "warm_start", "quantize"} <= set(member["properties"])
        assert "fractions" not in member["properties"]
    assert members["pgd_line_search"][1]["properties"]["grid"]["maximum"] == 64
    member, solver = members["poisoning"]
    assert set(solver["properties"]) == set(PoisoningSettings.model_fields)
    assert "fractions" in member["properties"] and not {"eps", "double_init", "norm"} & set(member["properties"])


def test_a_new_attack_is_one_module_and_one_registry_line(tmp_path):
    """An attack defined in its own module (with its settings model) and added to EVASION_ATTACKS appears in the
    config schema, is validated by the config (a bad setting named) and is built from it: no other edit."""
    import subprocess
    import sys

    (tmp_path / "toy_attack.py").write_text('''
from pydantic import Field, StrictInt
from transferlab.attacks.fgsm import FGSM
from transferlab.attacks.settings import AttackSettings

class ToySettings(AttackSettings):
    rounds: StrictInt = Field(2, ge=1, le=9)

class Toy(FGSM):
    Settings = ToySettings
''')
    script = '''
import toy_attack
from transferlab.attacks import registry
registry.EVASION_ATTACKS["toy"] = toy_attack.Toy                        # the one registry line
from transferlab.errors import ConfigError
from transferlab.experiments import evasion
from transferlab.experiments.config import ExperimentConfig, parse_config
base = {"split": {"n_target": 10, "n_surrogate": 10, "n_test": 5}, "surrogates": ["svm_l"], "targets": ["svm_l"]}
config = parse_config({**base, "attack": {"kind": "toy", "eps": [0, 1], "solver": {"rounds": 3}}})
attack = evasion.make_attack(config, 1.0)
assert isinstance(attack, toy_attack.Toy) and attack.settings.rounds == 3
assert "ToySettings" in ExperimentConfig.model_json_schema()["$defs"]
try:
    parse_config({**base, "attack": {"kind": "toy", "eps": [1], "solver": {"rounds": 10}}})
except ConfigError as exc:
    assert "attack.solver.rounds" in str(exc), exc
else:
    raise AssertionError("rounds: 10 was accepted")
print("ok")
'''
    env = {"PYTHONPATH": f"{tmp_path}:{':'.join(sys.path)}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_bounds_and_masks_of_another_shape_or_nan_are_one_line_errors():
    """A per-feature bound or mask with another number of values than the features, or a NaN bound (which made
    every comparison false, so the attack moved nothing), is a ConfigError saying what to give."""
    from transferlab.errors import DataError

    rng = np.random.default_rng(0)
    X = rng.uniform(size=(60, 10))
    y = (X[:, 0] > 0.5).astype(int)
    model = models.create("svm_h").fit(X, y)
    for settings, message in [({"lb": np.zeros(3)}, r"box bound lb has shape \(3,\); give one value, or one per "
                                                    r"feature \(shape \(10,\)\)"),
                              ({"constraints": (Mask(np.ones(3, dtype=bool)),)}, r"mask has shape \(3,\)")]:
        with pytest.raises(ConfigError, match=message):
            attacks.PGD(norm=2, eps=1.0, **settings).run(model, X[:5], y[:5])
    for bound in (float("nan"), np.full(10, np.nan)):
        with pytest.raises(ConfigError, match="box bound lb holds NaN"):
            Box(bound, 1.0)
        with pytest.raises(ConfigError, match="box bound ub holds NaN"):
            attacks.PGD(norm=2, eps=1.0, lb=0.0, ub=bound)
    # a binary threat model on points that are not binary: refused, never rounded (ε = 0 moved them by 0.3)
    binary = (rng.uniform(size=(200, 10)) > 0.6).astype(float)
    model = models.create("svm_h").fit(binary, (binary[:, :3].sum(1) >= 1).astype(int))
    halves = np.full((3, 10), 0.3)
    with pytest.raises(DataError, match="threat model is binary .* binarise the data"):
        attacks.FeatureAddition(eps=0).run(model, halves, np.ones(3, dtype=int))
    with pytest.raises(DataError, match="threat model is binary"):  # ε = 0 of a curve refuses them as well
        attacks.security_curve(attacks.FeatureAddition(), model, halves, np.ones(3, dtype=int), [0])
    assert np.array_equal(attacks.FeatureAddition(eps=0).run(model, binary[:3], np.ones(3, dtype=int)).x_adv,
                          binary[:3])
