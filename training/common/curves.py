"""Training-curve plots (loss/metric per epoch, train vs validation)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def plot_curves(
    history: Sequence[dict[str, float]],
    path: str | Path,
    panels: Sequence[tuple[str, Sequence[str]]],
    title: str = "",
    x_key: str = "epoch",
    x_label: str = "epoch",
) -> Path:
    """Plot one panel per (ylabel, keys) from a per-epoch history list of dicts.

    ``history`` items hold an ``x_key`` entry (``epoch`` by default; the anomaly trainer, which
    validates every few optimiser steps, plots against ``step``) plus metrics; missing keys are
    skipped so the same helper serves sentiment, language models, forecasters and detectors.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    epochs = [h[x_key] for h in history]
    for ax, (ylabel, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            ys = [h.get(key) for h in history]
            if any(y is not None for y in ys):
                ax.plot(epochs, ys, marker="o", label=key)
        ax.set_xlabel(x_label)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
