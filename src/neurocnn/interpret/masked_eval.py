"""Masked re-evaluation (S3): accuracy of a model on its test inputs multiplied by a group map.

S3 multiplied every validation input by the men's, the women's and the conjoined Meaningful
Perturbation group mask and re-measured accuracy (0.59, 0.59, 0.82): if the model still decides well
on what a map keeps, the map holds the evidence it uses. Maps are scaled to [0, 1] by their maximum
first (``scale=True``), so that the conjoined map (a sum of two maps) does not also rescale the inputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from neurocnn.errors import NeuroCNNError
from neurocnn.interpret.attribution import as_batch, attribution_mode, batch_slices, model_device
from neurocnn.interpret.group import scale_unit

__all__ = ["masked_accuracy"]


def masked_accuracy(
    model: nn.Module,
    inputs: Tensor | np.ndarray,
    labels: np.ndarray | Tensor,
    masks: Mapping[str, np.ndarray],
    *,
    batch_size: int = 16,
    scale: bool = True,
) -> pd.DataFrame:
    """Accuracy and balanced accuracy of ``model`` on ``inputs × mask`` for each mask.

    Parameters
    ----------
    inputs
        (N, C, *spatial) test inputs of this model (never its training subjects).
    labels
        (N,) true class indices.
    masks
        ``{name: (*spatial) map}``; the row ``"none"`` (unmasked inputs) is always added first.
    scale
        Divide each map by its maximum before multiplying.

    Returns
    -------
    pandas.DataFrame
        Columns ``mask, n, accuracy, balanced_accuracy``.
    """
    x = as_batch(inputs)
    y = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).astype(int)
    if len(y) != len(x):
        raise NeuroCNNError(f"masked_accuracy: {len(x)} inputs but {len(y)} labels")
    device = model_device(model)
    rows = []
    for name, m in {"none": None, **dict(masks)}.items():
        if m is not None and tuple(np.shape(m)) != tuple(x.shape[2:]):
            raise NeuroCNNError(
                f"masked_accuracy: mask {name!r} has shape {np.shape(m)}, inputs {tuple(x.shape[2:])}"
            )
        weight = None if m is None else torch.as_tensor(scale_unit(m) if scale else np.asarray(m, np.float32))
        preds = []
        with attribution_mode(model), torch.inference_mode():
            for sl in batch_slices(len(x), batch_size):
                xb = x[sl] if weight is None else x[sl] * weight
                preds.append(model(xb.to(device)).argmax(1).cpu().numpy())
        pred = np.concatenate(preds) if preds else np.zeros(0, int)
        rows.append(
            {
                "mask": name,
                "n": len(y),
                "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
                "balanced_accuracy": _balanced_accuracy(y, pred),
            }
        )
    return pd.DataFrame(rows, columns=["mask", "n", "accuracy", "balanced_accuracy"])


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    recalls = [float((pred[y == k] == k).mean()) for k in np.unique(y)]
    return float(np.mean(recalls)) if recalls else float("nan")
