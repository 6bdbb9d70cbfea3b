"""transferlab: measure and explain how evasion and poisoning attacks transfer.

Built on Demontis et al., "Why Do Adversarial Attacks Transfer? Explaining Transferability of Evasion and
Poisoning Attacks" (USENIX Security 2019).
"""

__version__ = "0.1.0"


def results(run_dir):  # noqa: ANN001, ANN201 (documented in transferlab.report.frames)
    """A run folder's tables as pandas DataFrames: ``transferlab.results("runs/x").results`` (see
    :func:`transferlab.report.frames.results`)."""
    from transferlab.report.frames import results as _results

    return _results(run_dir)


def audit(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 (documented in transferlab.audit)
    """Predict transfer without attacking: see :func:`transferlab.audit.audit`.

    Importing the submodule ``transferlab.audit`` replaces this function by the module as the package's
    attribute; the module is callable (it calls :func:`transferlab.audit.audit`), so ``transferlab.audit(...)``
    works every time, before and after any import of the submodule."""
    from transferlab.audit import audit as _audit

    return _audit(*args, **kwargs)
