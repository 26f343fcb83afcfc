"""First hidden layer analysis (S3 appendix): per feature map, mean activation and entropy.

For every subject and every feature map (channel) of the first hidden layer:

- ``mean``: the mean voxel value of the map;
- ``entropy``: the Shannon entropy (bits) of the histogram of the map's voxel values, with ``bins``
  equal bins over that feature's range across all subjects (one binning per feature, so subjects are
  comparable; the S3 code scaled each batch by its own maximum).

The classes are compared per feature and measure with a two-sample test (Welch's t-test by
default, or Mann–Whitney U) and Benjamini–Hochberg FDR correction over all tests.

By default the first hidden layer is the output of the first activation module (ReLU/ELU) that follows
the first convolution; ``layer`` names any other module (``"features.block1"`` for MriNet's pooled
first block, as in the S3 code). Only the network up to that layer runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor, nn

from neurocnn.errors import NeuroCNNError
from neurocnn.interpret.attribution import as_batch, attribution_mode, batch_slices, model_device

__all__ = ["FirstLayerFeatures", "compare_features", "first_layer_features", "plot_first_layer"]


class _Stop(Exception):
    """Raised by the capture hook: nothing after the first hidden layer needs to run."""


class FirstLayerFeatures:
    """Per subject and feature map: ``mean`` and ``entropy`` arrays shaped (N, K)."""

    def __init__(self, layer: str, mean: np.ndarray, entropy: np.ndarray) -> None:
        self.layer, self.mean, self.entropy = layer, mean, entropy


def default_first_layer(model: nn.Module) -> str:
    """Name of the first activation module after the first convolution."""
    seen_conv = False
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            seen_conv = True
        elif seen_conv and isinstance(module, nn.ReLU | nn.ELU | nn.LeakyReLU):
            return name
    raise NeuroCNNError(
        f"{type(model).__name__}: no activation module after a convolution; give layer= explicitly"
    )


def _run_to(model: nn.Module, module: nn.Module, x: Tensor) -> Tensor:
    captured: list[Tensor] = []

    def hook(_m: nn.Module, _args: tuple, output: Tensor) -> None:
        captured.append(output.detach())
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not captured:
        raise NeuroCNNError("the chosen layer did not run in the forward pass")
    return captured[0]


def first_layer_features(
    model: nn.Module,
    inputs: Tensor | np.ndarray,
    *,
    layer: str | None = None,
    bins: int = 256,
    batch_size: int = 16,
) -> FirstLayerFeatures:
    """Mean and entropy of each first-layer feature map for each subject.

    Two passes over the inputs: the first finds each feature's range, the second histograms.
    """
    x = as_batch(inputs)
    name = layer or default_first_layer(model)
    module = model.get_submodule(name)
    device = model_device(model)
    with attribution_mode(model), torch.inference_mode():
        lows, highs, means = [], [], []
        for sl in batch_slices(len(x), batch_size):
            a = _run_to(model, module, x[sl].to(device)).flatten(2).double()
            lows.append(a.amin(2).cpu())
            highs.append(a.amax(2).cpu())
            means.append(a.mean(2).cpu())
        lo = torch.cat(lows).amin(0)
        hi = torch.cat(highs).amax(0)
        span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
        entropies = []
        for sl in batch_slices(len(x), batch_size):
            a = _run_to(model, module, x[sl].to(device)).flatten(2).double().cpu()
            idx = ((a - lo[None, :, None]) / span[None, :, None] * bins).long().clamp_(0, bins - 1)
            counts = torch.zeros(*idx.shape[:2], bins, dtype=torch.float64)
            counts.scatter_add_(2, idx, torch.ones_like(idx, dtype=torch.float64))
            p = counts / counts.sum(2, keepdim=True)
            plogp = torch.where(p > 0, p * torch.log2(p), torch.zeros_like(p))
            entropies.append(-plogp.sum(2))
    return FirstLayerFeatures(name, torch.cat(means).numpy(), torch.cat(entropies).numpy())


def compare_features(
    features: FirstLayerFeatures,
    labels: np.ndarray,
    classes: tuple[str, str] | list[str] = ("0", "1"),
    *,
    test: str = "welch",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Two-sample test between two classes per feature map and measure, FDR-corrected (BH).

    Returns
    -------
    pandas.DataFrame
        Columns ``measure, feature, mean_<class0>, mean_<class1>, statistic, p, q, significant``.
    """
    y = np.asarray(labels).astype(int)
    groups = np.unique(y)
    if len(groups) != 2:
        raise NeuroCNNError(f"compare_features needs exactly two classes, got {len(groups)}")
    if test not in ("welch", "mannwhitney"):
        raise NeuroCNNError(f"test must be 'welch' or 'mannwhitney', got {test!r}")
    rows = []
    for measure, values in (("mean", features.mean), ("entropy", features.entropy)):
        a, b = values[y == groups[0]], values[y == groups[1]]
        for k in range(values.shape[1]):
            if test == "welch":
                res = stats.ttest_ind(a[:, k], b[:, k], equal_var=False)
            else:
                res = stats.mannwhitneyu(a[:, k], b[:, k], alternative="two-sided")
            rows.append(
                {
                    "measure": measure,
                    "feature": k,
                    f"mean_{classes[groups[0]]}": float(a[:, k].mean()),
                    f"mean_{classes[groups[1]]}": float(b[:, k].mean()),
                    "statistic": float(res.statistic),
                    "p": float(res.pvalue),
                }
            )
    table = pd.DataFrame(rows)
    p = table["p"].to_numpy()
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = stats.false_discovery_control(p[ok], method="bh")
    table["q"] = q
    table["significant"] = table["q"] < alpha
    return table


def plot_first_layer(table: pd.DataFrame, path: Path | str) -> Path:
    """Figure: per feature map, the class means of each measure, significant ones starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean_cols = [c for c in table.columns if c.startswith("mean_")]
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.25 * table["feature"].nunique() + 2), 6))
    for ax, measure in zip(axes, ("mean", "entropy"), strict=True):
        part = table[table["measure"] == measure]
        width = 0.4
        for j, col in enumerate(mean_cols):
            ax.bar(part["feature"] + (j - 0.5) * width, part[col], width, label=col.removeprefix("mean_"))
        top = float(np.nanmax(part[mean_cols].to_numpy())) if len(part) else 1.0
        for f in part.loc[part["significant"], "feature"]:
            ax.text(f, top * 1.02, "*", ha="center")
        ax.set_ylabel("mean activation" if measure == "mean" else "entropy (bits)")
        ax.set_xlabel("feature map")
    axes[0].legend(title="class")
    axes[0].set_title("First hidden layer per feature map (* FDR q < 0.05)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
