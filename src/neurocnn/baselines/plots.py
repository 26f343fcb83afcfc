"""Figures of the baselines: feature importances as in Kan et al. 2020, Fig. 1."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def plot_importance(table: pd.DataFrame, path: Path | str, *, title: str, top: int = 20) -> Path:
    """Horizontal bars of the ``top`` features by absolute mean importance, with ± 1 SD over folds.

    ``table`` has columns ``feature, mean, std`` (as feature_importance.csv), sorted by importance.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(rows) + 1.2))
    colours = ["#b2182b" if v < 0 else "#2166ac" for v in rows["mean"]]
    ax.barh(rows["feature"].astype(str), rows["mean"], xerr=rows["std"].fillna(0), color=colours)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("mean over folds (± 1 SD)")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
