"""What gets attacked: the paper's model zoo and the classifier interface.

``create(name)`` gives an unfitted classifier with ``fit`` / ``decision_function`` / ``predict`` /
``input_gradient``, a scikit-learn estimator (``clone``, ``GridSearchCV``, labels of any kind); ``wrap(obj)`` adapts a user's fitted scikit-learn model or torch module; ``save``/``load``
persist fitted models without pickle.
"""

from transferlab.models.base import Classifier, NotDifferentiableError, NotFittedError
from transferlab.models.estimator import Estimator
from transferlab.models.ensemble import Ensemble
from transferlab.models.forest import RandomForest
from transferlab.models.io import load, save
from transferlab.models.kernel import KernelSVM
from transferlab.models.linear import LinearClassifier, LinearSVM, Logistic, Ridge
from transferlab.models.losses import LOSSES, cross_entropy_loss, margin_loss
from transferlab.models.neural import CNN, MLP, TorchNet
from transferlab.models.registry import MODELS, create, describe
from transferlab.models.wrap import WrappedModule, wrap

__all__ = ["Classifier", "Estimator", "Ensemble", "NotDifferentiableError", "NotFittedError", "MODELS", "create", "describe", "wrap", "save", "load",
           "LinearClassifier", "LinearSVM", "Logistic", "Ridge", "KernelSVM", "MLP", "CNN", "TorchNet",
           "RandomForest", "WrappedModule", "LOSSES", "margin_loss", "cross_entropy_loss"]
