"""The quantities that explain transferability (paper Section 4), averaged over the attack points.

- transfer rate: the target's error on points crafted against a surrogate;
- S (Eq. 17): ‖∇_x ℓ(y, x, w)‖_q, the size of the *target's* input gradient, q the dual of the attack norm;
- R (Eq. 18): cos(∇_x ℓ̂, ∇_x ℓ), the alignment of surrogate and target input gradients;
- V (Eq. 19): E_D{ℓ(y, x, ŵ)²} − E_D{ℓ(y, x, ŵ)}², the variance of the surrogate's loss over surrogates trained on
  resampled surrogate data;
- correlations of each with the transfer rates across surrogate–target pairs (Pearson and Kendall with p-values,
  the paper's Table 1).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats


def transfer_rate(target_predictions: np.ndarray, y: np.ndarray) -> float:
    """Fraction of the crafted points the target misclassifies (its error under a transferred attack)."""
    return float(np.mean(np.asarray(target_predictions) != np.asarray(y)))


def gradient_size(target_gradients: np.ndarray, q: float) -> float:
    """S (Eq. 17): mean over points of the dual norm ‖∇_x ℓ‖_q of the target's input gradient."""
    flat = np.asarray(target_gradients).reshape(len(target_gradients), -1)
    return float(np.mean(np.linalg.norm(flat, ord=q, axis=1)))


def gradient_alignment(surrogate_gradients: np.ndarray, target_gradients: np.ndarray) -> float:
    """R (Eq. 18): mean over points of cos(∇ℓ̂, ∇ℓ); points where either gradient is zero count as 0. Each
    cosine is clipped to [−1, 1]: for (nearly) parallel gradients the rounding of the dot product and the norms
    can put it a few ulps outside (a model that is its own surrogate gave R = 1.0000000000000002)."""
    a = np.asarray(surrogate_gradients).reshape(len(surrogate_gradients), -1)
    b = np.asarray(target_gradients).reshape(len(target_gradients), -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.divide((a * b).sum(1), norms, out=np.zeros(len(a)), where=norms > 0)
    return float(np.mean(np.clip(cos, -1.0, 1.0)))


def loss_variance(losses: np.ndarray) -> float:
    """V (Eq. 19): ``losses[k, i]`` is the loss of surrogate k (trained on the k-th resample of the surrogate
    data) at point i; the variance over k, E[ℓ²] − E[ℓ]², averaged over the points. Computed about the mean
    (``np.var``): the same quantity, without the cancellation of the two large terms when the losses are large
    and alike (losses near 1e8 that differ by 1e-4 gave 0.28 instead of 6e-9)."""
    losses = np.asarray(losses, dtype=np.float64)
    return float(np.mean(np.var(losses, axis=0)))


def correlation(metric: Sequence[float], rates: Sequence[float]) -> dict[str, float]:
    """Pearson's r and Kendall's τ (with p-values) between a metric and transfer rates over pairs; NaN entries
    (e.g. S and R of random forests) are left out."""
    x, y = np.asarray(metric, float), np.asarray(rates, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    out = {"n_pairs": int(keep.sum()), "pearson_r": np.nan, "pearson_p": np.nan, "kendall_tau": np.nan,
           "kendall_p": np.nan}
    if x.size >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
        pearson = stats.pearsonr(x, y)
        kendall = stats.kendalltau(x, y)
        out.update(pearson_r=float(pearson.statistic), pearson_p=float(pearson.pvalue),
                   kendall_tau=float(kendall.statistic), kendall_p=float(kendall.pvalue))
    return out
