"""Sparse rows in torch: scipy CSR rows as torch sparse tensors, and the affine first layer x Wᵀ + b of sparse rows
(differentiable in W and b, never densifying x), which the linear models, the RBF SVM and the MLP score and train
sparse data through."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch



def sparse_tensor(X: sp.csr_matrix, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """Canonical CSR rows as a coalesced torch sparse COO tensor (its own index arrays: O(nnz) memory)."""
    X = X.tocsr()
    rows = np.repeat(np.arange(X.shape[0], dtype=np.int64), np.diff(X.indptr))
    index = torch.from_numpy(np.vstack([rows, X.indices.astype(np.int64)]))
    values = torch.from_numpy(np.asarray(X.data)).to(dtype)
    return torch.sparse_coo_tensor(index, values, X.shape, is_coalesced=True,
                                   check_invariants=False).to(device)


class _SparseLinear(torch.autograd.Function):
    """x Wᵀ + b for sparse rows x; the backward pass writes Wᵀ's gradient only at the columns the rows hold."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.sparse.mm(x, weight.T) + bias

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_weight = grad_bias = None
        if ctx.needs_input_grad[1]:
            rows, cols = x.indices()
            # dL/dW[:, j] = Σ_rows dL/dz[row] · x[row, j]: one column update per stored value
            grad_weight = torch.zeros_like(weight).index_add_(1, cols, (grad[rows] * x.values()[:, None]).T)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return None, grad_weight, grad_bias


def sparse_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x Wᵀ + b of a torch sparse COO batch x (n, d) with W (k, d): differentiable in W and b, never densifies x."""
    return _SparseLinear.apply(x, weight, bias)
