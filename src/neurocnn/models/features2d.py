"""Deep features of a pre-trained 2D CNN, pooled per subject (S1's "deep feature" baseline).

Hu et al. 2020 compared their 3D CNNs with features of 2D CNNs pre-trained on natural images,
extracted slice by slice and classified with an SVM. `extract_deep_features` does the extraction:
each slice goes through the 2D network, the last convolutional maps are averaged over space into
one vector per slice, and the slice vectors are pooled per subject. The result is a plain
(subjects × features) matrix for scikit-learn.

Weights come from a file the user gives (a state dict, e.g. torchvision's ImageNet weights saved
with ``torch.save(model.state_dict(), path)``; module names match ours). Nothing is downloaded at
run time, and without weights the function refuses rather than computing features of a random
network.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from neurocnn.errors import NeuroCNNError
from neurocnn.models.blocks import NeuroNet
from neurocnn.models.classic2d import BACKBONES_2D, backbone_2d

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POOLS = ("mean", "max", "meanmax")
_FIRST_CONV = {"alexnet": "features.0.weight", "vgg19": "features.0.weight"}


def _first_conv_key(backbone: str) -> str:
    if backbone in _FIRST_CONV:
        return _FIRST_CONV[backbone]
    return "conv1.weight" if backbone.startswith("resnet") else "features.conv0.weight"


def load_backbone(backbone: str, weights: str | Path | None, *, slice_shape: Sequence[int]) -> NeuroNet:
    """The 2D network `backbone` with the weights of the state-dict file `weights`.

    The input channels follow the file (3 for ImageNet weights); the classifier layers of the file
    are ignored, so weights of any number of classes load.
    """
    if backbone not in BACKBONES_2D:
        raise NeuroCNNError(f"unknown 2D network {backbone!r}; choose one of {', '.join(BACKBONES_2D)}")
    if weights is None:
        raise NeuroCNNError(
            f"deep features need pre-trained weights for {backbone}: pass weights=PATH to a state "
            "dict saved with torch.save (e.g. torchvision's ImageNet weights); features of a "
            "randomly initialised network would be meaningless, so none are computed"
        )
    path = Path(weights)
    if not path.is_file():
        raise NeuroCNNError(f"weights file {path} does not exist; give the path to a state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-checkpoint files
        raise NeuroCNNError(f"cannot read weights file {path} as a PyTorch state dict: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise NeuroCNNError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    key = _first_conv_key(backbone)
    if key not in state:
        raise NeuroCNNError(
            f"weights file {path} does not fit {backbone}: it has no {key!r} "
            f"(first keys: {', '.join(list(state)[:3])})"
        )
    in_channels = int(state[key].shape[1])
    net = backbone_2d(backbone, in_channels=in_channels, num_classes=2, input_shape=slice_shape)
    head = net.head_name
    trunk = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    missing, unexpected = net.load_state_dict(trunk, strict=False)
    missing = [k for k in missing if not k.startswith(f"{head}.")]
    if missing or unexpected:
        raise NeuroCNNError(
            f"weights file {path} does not fit {backbone}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return net.eval()


def _prepare(slices: Tensor, in_channels: int, imagenet: bool) -> Tensor:
    """(S, 1, a, b) slices → the network's input: replicate grey to RGB, ImageNet-normalise."""
    if slices.shape[1] != in_channels:
        if slices.shape[1] != 1:
            raise NeuroCNNError(f"the weights expect {in_channels} channels; give single-channel volumes")
        slices = slices.expand(-1, in_channels, -1, -1)
    if imagenet and in_channels == 3:
        mean = torch.tensor(IMAGENET_MEAN, dtype=slices.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=slices.dtype).view(1, 3, 1, 1)
        slices = (slices - mean) / std
    return slices


@torch.no_grad()
def extract_deep_features(
    volumes: Tensor | np.ndarray | Sequence[Any],
    *,
    weights: str | Path | None,
    backbone: str = "vgg19",
    slice_axis: int = 2,
    pool: str = "mean",
    imagenet_normalize: bool = True,
    batch_size: int = 32,
) -> np.ndarray:
    """Per-subject deep features of a pre-trained 2D CNN, shape (subjects, features).

    Parameters
    ----------
    volumes:
        (N, X, Y, Z) or (N, 1, X, Y, Z) array or tensor, one volume per subject.
    weights:
        Path of the state-dict file of `backbone` (required; see the module docstring).
    backbone:
        A 2D network of `classic2d.BACKBONES_2D` (VGG19 by default).
    slice_axis:
        Spatial axis along which slices are taken (2: axial slices of (X, Y, Z) volumes).
    pool:
        How slice vectors become one subject vector: 'mean', 'max' or 'meanmax' (both, concatenated).
    imagenet_normalize:
        Scale each volume to [0, 1] and apply ImageNet's channel mean and std (for 3-channel
        weights), as the pre-trained networks expect.
    batch_size:
        Slices per forward pass.
    """
    if pool not in POOLS:
        raise NeuroCNNError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
    x = torch.as_tensor(np.asarray(volumes) if not isinstance(volumes, Tensor) else volumes)
    x = x.float()
    if x.dim() == 4:
        x = x.unsqueeze(1)
    if x.dim() != 5 or x.shape[1] != 1:
        raise NeuroCNNError(f"volumes must be shaped (N, X, Y, Z) or (N, 1, X, Y, Z), got {tuple(x.shape)}")
    if slice_axis not in (0, 1, 2):
        raise NeuroCNNError(f"slice_axis must be 0, 1 or 2, got {slice_axis!r}")
    slice_shape = [n for i, n in enumerate(x.shape[2:]) if i != slice_axis]
    net = load_backbone(backbone, weights, slice_shape=slice_shape)
    target = net.get_submodule(net.gradcam_layer)
    captured: list[Tensor] = []
    handle = target.register_forward_hook(lambda _m, _i, out: captured.append(out))
    rows = []
    try:
        for volume in x:
            if imagenet_normalize:
                lo, hi = volume.min(), volume.max()
                volume = (volume - lo) / (hi - lo).clamp_min(1e-12)
            slices = volume.movedim(1 + slice_axis, 0)  # (S, 1, a, b)
            vectors = []
            for chunk in slices.split(batch_size):
                captured.clear()
                net(_prepare(chunk, net.in_channels, imagenet_normalize))
                vectors.append(captured[-1].mean(dim=(2, 3)))
            per_slice = torch.cat(vectors)  # (S, F)
            if pool == "mean":
                rows.append(per_slice.mean(0))
            elif pool == "max":
                rows.append(per_slice.amax(0))
            else:
                rows.append(torch.cat([per_slice.mean(0), per_slice.amax(0)]))
    finally:
        handle.remove()
    return torch.stack(rows).numpy()
