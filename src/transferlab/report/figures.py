"""Figures as PNG (matplotlib, Agg): transfer matrices (paper Fig. 6), white-box security curves (Fig. 5),
metric-vs-transfer scatter plots, and the MLP weight-decay sweep (Fig. 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from transferlab.report.tables import mean_by  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def transfer_matrices(results: list[dict], surrogates: list[str], targets: list[str], fractions: list[float],
                      budget: float, path: Path, budget_name: str = "ε",
                      error_name: str = "error under attack") -> Path:
    """Mean target error on points crafted against each surrogate (rows) at one budget; one panel per surrogate
    data fraction. The diagonal (surrogate = target algorithm) shows the white-box error, outlined."""
    transfer = mean_by([r for r in results if r["setting"] == "transfer" and r["budget"] == budget],
                       ("surrogate", "fraction", "target"), "error")
    white = mean_by([r for r in results if r["setting"] == "white-box" and r["budget"] == budget],
                    ("target",), "error")
    fig, axes = plt.subplots(1, len(fractions), figsize=(0.55 * len(targets) * len(fractions) + 2.5,
                                                         0.45 * len(surrogates) + 2.2), squeeze=False)
    for ax, fraction in zip(axes[0], fractions):
        grid = np.full((len(surrogates), len(targets)), np.nan)
        for i, s in enumerate(surrogates):
            for j, t in enumerate(targets):
                grid[i, j] = white.get((t,), np.nan) if s == t else transfer.get((s, fraction, t), np.nan)
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="Reds")
        for i in range(len(surrogates)):
            for j in range(len(targets)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{100 * grid[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if grid[i, j] > 0.6 else "black")
                if surrogates[i] == targets[j]:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.5, ec="black"))
        ax.set_xticks(range(len(targets)), targets, rotation=90, fontsize=8)
        ax.set_yticks(range(len(surrogates)), surrogates, fontsize=8)
        ax.set_xlabel("target")
        if ax is axes[0][0]:
            ax.set_ylabel("surrogate")  # once: a label beside the second panel would overlap the first
        ax.set_title(f"{budget_name} = {budget:g}, surrogate data {100 * fraction:.0f}%", fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=f"{error_name} (%/100)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def security_curves(results: list[dict], targets: list[str], path: Path, budget_name: str = "ε (ℓ2 budget)",
                    error_name: str = "white-box test error under attack") -> Path:
    """White-box error under attack vs budget for each target (paper Fig. 5); for poisoning the clean error is the
    point at fraction 0."""
    white = mean_by([r for r in results if r["setting"] in ("white-box", "clean")], ("target", "budget"), "error")
    attacked = {r["target"] for r in results if r["setting"] == "white-box"}
    targets = [t for t in targets if t in attacked]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, t in enumerate(targets):
        points = sorted((b, e) for (name, b), e in white.items() if name == t)
        if points:
            b, e = zip(*points)
            ax.plot(b, e, marker="o", ms=3, label=t, ls="-" if t.endswith("_h") else "--",
                    color=plt.cm.tab10(i // 2 % 10))
    ax.set_xlabel(budget_name)
    ax.set_ylabel(error_name)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def metric_scatter(pairs: list[dict[str, Any]], budget: float, path: Path, budget_name: str = "ε") -> Path:
    """Transfer rate vs S (of the target), R (pair) and V (of the surrogate) across surrogate–target pairs."""
    at = [p for p in pairs if p["budget"] == budget]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    labels = {"S": "S: size of the target's input gradient (Eq. 17)",
              "R": "R: gradient alignment (Eq. 18)", "V": "V: surrogate loss variance (Eq. 19)"}
    for ax, name in zip(axes, ("S", "R", "V")):
        for marker, fraction in zip("os^", sorted({p["fraction"] for p in at}, reverse=True)):
            sel = [p for p in at if p["fraction"] == fraction and np.isfinite(p[name])]
            ax.scatter([p[name] for p in sel], [p["error"] for p in sel], s=14, marker=marker, alpha=0.7,
                       label=f"surrogate data {100 * fraction:.0f}%")
        ax.set_xlabel(labels[name], fontsize=8)
        ax.set_ylabel(f"transfer rate at {budget_name} = {budget:g}")
        if name == "S":
            ax.set_xscale("log")
            # log axes over less than a decade label their minor ticks too, which then overlap
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def weight_decay_sweep(rows: list[dict], path: Path) -> Path:
    """White-box error and S of the MLP as its weight decay grows (paper Fig. 3)."""
    error = mean_by(rows, ("weight_decay",), "error")
    size = mean_by(rows, ("weight_decay",), "S")
    decays = sorted(k[0] for k in error)
    x = np.arange(len(decays))
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    ax.plot(x, [error[(d,)] for d in decays], marker="o", color="tab:red", label="white-box error")
    ax.set_ylabel(f"error under attack (ε = {rows[0]['budget']:g})", color="tab:red")
    ax.set_ylim(-0.02, 1.02)
    twin = ax.twinx()
    twin.plot(x, [size[(d,)] for d in decays], marker="s", color="tab:blue", label="S")
    twin.set_ylabel("S (input gradient size)", color="tab:blue")
    ax.set_xticks(x, [f"{d:g}" for d in decays])
    ax.set_xlabel("MLP weight decay")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def point_strip(rows: list[tuple[str, np.ndarray]], image_shape: tuple[int, int], path: Path, title: str) -> Path:
    """Crafted points drawn as grey images: one row per labelled set of points (e.g. clean, then each budget), the
    same points in each column."""
    n_cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.2 * n_cols + 1.2, 1.35 * len(rows) + 0.4),
                             squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(np.asarray(images[c]).reshape(image_shape), cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
