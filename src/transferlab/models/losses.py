"""The attacker's losses on decision scores, per sample (batched over rows).

The paper's evasion objective is the margin loss A = max_{c≠y} f_c(x) − f_y(x) (Section 3.1; for a binary
classifier with scores [0, f] this is −y·f with y ∈ {−1, +1}). Cross-entropy is the usual alternative.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from transferlab.errors import ConfigError


def margin_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{c≠y} f_c(x) − f_y(x) for each row: positive when the point is misclassified."""
    true = scores.gather(1, y[:, None]).squeeze(1)
    others = scores.masked_fill(F.one_hot(y, scores.shape[1]).bool(), float("-inf"))
    return others.max(dim=1).values - true


def cross_entropy_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """−log softmax(f(x))_y for each row."""
    return F.cross_entropy(scores, y, reduction="none")


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "margin": margin_loss,
    "cross_entropy": cross_entropy_loss,
}


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}") from None
