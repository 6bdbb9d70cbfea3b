"""Availability poisoning (paper Section 3.2, Eqs. 5–12): the :class:`Poisoning` attack, its two strategies
(:mod:`.strategies`), one module per surrogate family — :mod:`.logistic`, :mod:`.ridge`, :mod:`.svm`,
:mod:`.svm_rbf`, each with its batched implicit gradient, retraining session and loss — the shared solvers
(:mod:`.solvers`), and the family registry keyed on the model class (:data:`FAMILIES`, :func:`family_for`)."""

from __future__ import annotations

from typing import Any, Callable

from transferlab.attacks.poisoning.attack import Poisoning, PoisoningSettings
from transferlab.attacks.poisoning.base import Family, LinearParams, Session, SessionFit
from transferlab.attacks.poisoning.logistic import LogisticFamily
from transferlab.attacks.poisoning.ridge import RidgeFamily
from transferlab.attacks.poisoning.solvers import signed
from transferlab.attacks.poisoning.strategies import PoisoningResult
from transferlab.attacks.poisoning.svm import SVMFamily
from transferlab.attacks.poisoning.svm_rbf import RBFSVMFamily
from transferlab.errors import ConfigError
from transferlab.models import KernelSVM, LinearSVM, Logistic, Ridge

#: the poisoning family of each model class, built from the model's hyperparameters
FAMILIES: dict[type, Callable[[Any], Family]] = {
    Logistic: lambda model: LogisticFamily(model.C),
    Ridge: lambda model: RidgeFamily(model.alpha),
    LinearSVM: lambda model: SVMFamily(model.C),
    KernelSVM: lambda model: RBFSVMFamily(model.C, model.gamma),
}


def family_for(model: Any) -> Family:
    """The poisoning family of a transferlab classifier (unfitted is fine: only its hyperparameters are used),
    looked up by its class (or the nearest base class in :data:`FAMILIES`)."""
    for cls in type(model).__mro__:
        if cls in FAMILIES:
            return FAMILIES[cls](model)
    raise ConfigError(f"poisoning surrogates are transferlab's logistic, ridge, linear SVM or RBF SVM models (a "
                      f"registry name or models.create(...)), whose retraining the attack differentiates; got "
                      f"{type(model).__name__}")


__all__ = ["Poisoning", "PoisoningSettings", "PoisoningResult", "Family", "Session", "SessionFit", "LinearParams", "LogisticFamily",
           "RidgeFamily", "SVMFamily", "RBFSVMFamily", "FAMILIES", "family_for", "signed"]
