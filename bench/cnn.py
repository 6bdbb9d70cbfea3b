"""The paper's MNIST89 CNN (the registry's ``cnn``) against its FLOP floor on the CPU: forward passes, input
gradients and training, per point, at one and two torch threads.

    python bench/cnn.py                        # 1,000 points, 1 and 2 threads (about a minute)
    python bench/cnn.py --points 4000 --threads 1 --before

The floor of a computation is its FLOP count (torch's ``FlopCounterMode``: convolutions and matrix products) at
the rate a large matrix product achieves in the same process (``torch.mm`` of two 2048×2048 float32 matrices, the
best of several runs, timed before and after the model at each thread count): the rate the machine's BLAS
reaches, which the convolutions' GEMMs can at best match. Per point it prints the FLOPs of a forward pass, of an
input gradient (the forward pass and the backward pass to the input, weights fixed) and of a training step
(forward, backward to every weight, Adam: ≈ 3× the forward pass); then, per thread count, the matrix product's
GFLOP/s and, for each of the three, the time per point (the best of --repeat runs: ``decision_function`` of all
points, ``input_gradient_tensor`` of all points with their labels, one epoch of ``fit`` over --train-points
rows, mini-batches of 64) and its ratio to the floor. ``--before`` also times the layout used before issue 18
(NCHW weights, ``batch_size`` rows per call) on the same fitted weights. Times are wall clock: on a machine
shared with other work the ratios rise with the load.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from transferlab import datasets, models
from transferlab.models.losses import get_loss


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """The shortest wall time of ``repeat`` calls of ``fn`` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(repeat: int, size: int = 2048) -> float:
    """GFLOP/s of ``torch.mm`` of two size×size float32 matrices (2·size³ FLOPs), the best of ``repeat`` runs."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    out = torch.empty(size, size)
    return 2 * size ** 3 / best_time(lambda: torch.mm(a, b, out=out), max(repeat, 5)) / 1e9


def flops_per_point(model: models.CNN, X: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """FLOPs per point of a forward pass, an input gradient and a training step (64 rows each)."""
    rows = X[:64]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.module_(rows)
    forward = counter.get_total_flops()
    # the gradient's computation as input_gradient_tensor runs it (backward() instead of autograd.grad, which
    # the counter's module hooks do not support)
    leaf = rows.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        get_loss("margin")(model.module_(leaf), y[:64]).sum().backward()
    gradient = counter.get_total_flops()
    module = model.meta_module(model.n_features_in_, model.n_classes_).to_empty(device="cpu")
    module.load_state_dict(model.module_.state_dict())
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-3)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(module(rows), y[:64]).backward()
        optimiser.step()
    train = counter.get_total_flops()
    return {"forward": forward / 64, "gradient": gradient / 64, "train": train / 64}


def before_layout(model: models.CNN) -> models.CNN:
    """A copy of the fitted CNN as it ran before issue 18: NCHW weights, ``batch_size`` rows per call."""

    class Before(models.CNN):
        rows_per_call = property(lambda self: self.batch_size)

        def laid_out(self, module: torch.nn.Module) -> torch.nn.Module:
            return module.to(memory_format=torch.contiguous_format)

        def scores(self, X: torch.Tensor) -> torch.Tensor:
            return self.module_(X)

    copy = Before(**model.get_params())
    for name in ("classes_", "n_classes_", "n_features_in_"):
        setattr(copy, name, getattr(model, name))
    copy.load_state_tensors(model.state_tensors())
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1000, help="points scored and differentiated (default 1000)")
    parser.add_argument("--train-points", type=int, default=1000, help="rows of the timed training epoch")
    parser.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated (default 1,2)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing; the best is shown")
    parser.add_argument("--before", action="store_true",
                        help="also time the layout before issue 18 (NCHW, batch_size rows per call)")
    args = parser.parse_args()
    from transferlab.experiments.executors import tune_malloc

    tune_malloc()  # as experiment cells do
    data = datasets.load("mnist89")  # the embedded 1,000 images; tiled when more points are asked for
    reps = -(-max(args.points, args.train_points) // data.X.shape[0])
    X_all, y_all = np.tile(data.X, (reps, 1)), np.tile(data.y, reps)
    X = torch.as_tensor(X_all[:args.points], dtype=torch.float32)
    y = torch.as_tensor(y_all[:args.points])
    X_train, y_train = X_all[:args.train_points], y_all[:args.train_points]
    model = models.create("cnn", epochs=1).fit(X_train, y_train)
    flops = flops_per_point(model, X, y)
    variants = {"now": model}
    if args.before:
        variants["before"] = before_layout(model)
    layers = [type(m).__name__ for m in model.module_ if not isinstance(m, (torch.nn.Unflatten, torch.nn.Flatten))]
    weights = sum(p.numel() for p in model.module_.parameters())
    print(f"cnn: {models.MODELS['cnn'].description}: {'-'.join(layers)}, {weights:,} weights")
    print(f"data: MNIST89 28×28 ({data.X.shape[0]} embedded images, tiled), {args.points} points scored and "
          f"differentiated, {args.train_points} trained on (one epoch, mini-batches of {model.batch_size_train}); "
          f"best of {args.repeat} runs; torch {torch.__version__}, {torch.get_num_threads()} threads by default")
    print(f"FLOPs per point: forward {flops['forward'] / 1e6:.1f} M, input gradient {flops['gradient'] / 1e6:.1f} M "
          f"({flops['gradient'] / flops['forward']:.2f}× forward), train step {flops['train'] / 1e6:.1f} M "
          f"({flops['train'] / flops['forward']:.2f}× forward)")
    print("floor = FLOPs / the matrix product's GFLOP/s; ratio = time / floor")
    header = (f"{'threads':>7} {'layout':>6} {'mm GFLOP/s':>10} | {'forward ms':>10} {'ratio':>5} | "
              f"{'gradient ms':>11} {'ratio':>5} | {'train ms':>8} {'ratio':>5}")
    print(header)
    print("-" * len(header))
    summary = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        rate_before = matmul_gflops(args.repeat)
        times = {}
        for label, variant in variants.items():
            forward = best_time(lambda: variant.decision_function(X), args.repeat)
            gradient = best_time(lambda: variant.input_gradient_tensor(X, y), args.repeat)
            fitter = type(variant)(**variant.get_params())
            train = best_time(lambda: fitter.fit(X_train, y_train), max(1, args.repeat - 1))
            times[label] = (forward / args.points, gradient / args.points, train / args.train_points)
        rate = max(rate_before, matmul_gflops(args.repeat))
        floors = [flops[k] / (rate * 1e9) for k in ("forward", "gradient", "train")]
        for label, per_point in times.items():
            ratios = [t / f for t, f in zip(per_point, floors)]
            if label == "now":
                summary.append((threads, ratios))
            cells = " | ".join(f"{1e3 * t:{w}.3f} {r:5.2f}" for t, r, w in zip(per_point, ratios, (10, 11, 8)))
            print(f"{threads:>7} {label:>6} {rate:10.1f} | {cells}", flush=True)
    print("ratio to the floor (forward / input gradient / training epoch): "
          + "; ".join(f"{t} thread{'s' if t > 1 else ''} {' / '.join(f'{r:.2f}' for r in ratios)}"
                      for t, ratios in summary))


if __name__ == "__main__":
    main()
