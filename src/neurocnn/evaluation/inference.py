"""Inference of one trained network on cache rows: class probabilities and decisions per subject.

Plain evaluation-mode forward passes without gradients (no training loop). Slice models decide by a
majority vote over slices and report the mean slice probability (S4); other models report the softmax
of their logits and decide by its arg-max.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from neurocnn.data.cache import PreparedCohort
from neurocnn.data.dataset import CachedDataset
from neurocnn.errors import NeuroCNNError


def inference_device(accelerator: str = "cpu") -> torch.device:
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


@torch.no_grad()
def predict_proba(
    net: nn.Module,
    cache: PreparedCohort,
    indices: Sequence[int] | np.ndarray,
    *,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    flip: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (n, K) and predicted classes (n,) for cache rows ``indices``, in that order.

    ``flip``: test-time augmentation, the mean probability over each scan and its mirror along the
    first spatial axis (left-right in the RAS cache); the decision is the arg-max of the mean.
    """
    indices = np.asarray(indices, dtype=np.int64)
    n_classes = int(getattr(net, "num_classes", 0)) or None
    if len(indices) == 0:
        return np.zeros((0, n_classes or 0), np.float32), np.zeros(0, np.int64)
    vote = getattr(net, "vote", None)
    if flip and vote is not None:
        raise NeuroCNNError(
            f"{type(net).__name__} decides by a vote over slices; mirrored test-time augmentation is "
            "for networks that see the whole volume"
        )
    was_training = net.training
    net.eval().to(device)
    loader = DataLoader(CachedDataset(cache, indices), batch_size=batch_size, shuffle=False)
    probs, preds = [], []
    try:
        for x, _, _ in loader:
            x = x.to(device)
            if vote is not None:
                result = vote(x)
                p, d = result.probability, result.prediction
            else:
                p = torch.softmax(net(x).float(), dim=1)
                if flip:
                    p = (p + torch.softmax(net(x.flip(2)).float(), dim=1)) / 2
                d = p.argmax(1)
            probs.append(p.float().cpu().numpy())
            preds.append(d.cpu().numpy())
    finally:
        net.train(was_training)
    return np.concatenate(probs), np.concatenate(preds).astype(np.int64)
