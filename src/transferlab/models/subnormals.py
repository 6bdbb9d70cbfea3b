"""Subnormal floats in the torch-trained networks.

L2 weight decay drives the weights of inputs that never vary (MNIST's border pixels, always 0) towards zero, and
Adam keeps shrinking them until they are subnormal (below float32's smallest normal number, 1.2e-38): a trained
``nn_l`` held tens of thousands of them. Every product with a subnormal takes the CPU's slow path — scoring 1,000
MNIST points took 250 ms instead of 3 ms, and training was twice as slow — while such a product lies far below the
rounding of any sum the network computes. So the networks train with subnormals flushed to zero (the CPU's
flush-to-zero and denormals-are-zero modes, for that block only) and their subnormal weights are set to zero
afterwards, as are a loaded state's. ``torch.set_flush_denormal`` sets the modes of the calling thread only: with
one torch thread (what the experiment cells use) training computes no subnormal at all; with more, the parts of an
operation that torch's other threads compute are not flushed (training is then slower, still deterministic for a
thread count), and the zeroing after training is what keeps scoring on the fast path.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def subnormals_flushed() -> Iterator[None]:
    """Run the block with subnormal results and operands of CPU float operations taken as zero
    (``torch.set_flush_denormal``; for this thread, where the CPU has the modes), off again afterwards."""
    flushed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushed:
            torch.set_flush_denormal(False)


def without_subnormals(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` with its subnormal entries set to zero: the tensor itself where it has none (or is not
    floating), else a copy."""
    if not tensor.is_floating_point():
        return tensor
    subnormal = (tensor != 0) & (tensor.abs() < torch.finfo(tensor.dtype).tiny)
    return tensor.masked_fill(subnormal, 0.0) if bool(subnormal.any()) else tensor
