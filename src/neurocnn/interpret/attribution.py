"""What every attribution method shares: a model frozen for attribution, inputs, targets, batches.

- :func:`attribution_mode` puts a model in evaluation mode with ``requires_grad`` off on every
  parameter (no weight gradient is ever computed) and restores both afterwards.
- :func:`speed_copy` is a private copy of a model for the heavy methods: BatchNorm folded into the
  convolution before it (exact in evaluation mode). The caller's model is never changed.
- Targets: ``None`` means each subject's predicted class; an int means that class for everyone; a
  sequence gives one class per subject.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Collection, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from neurocnn.errors import NeuroCNNError

Target = int | Sequence[int] | np.ndarray | Tensor | None

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@contextlib.contextmanager
def attribution_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluation mode and frozen parameters for the duration of a ``with`` block.

    Parameters
    ----------
    model
        Any network; its training flag and each parameter's ``requires_grad`` are restored on exit,
        also after an exception.
    """
    was_training = model.training
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    model.eval()
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)


def as_batch(inputs: Tensor | np.ndarray, *, name: str = "inputs") -> Tensor:
    """Inputs as a float32 tensor shaped (N, C, *spatial) with 2 or 3 spatial axes.

    Raises
    ------
    NeuroCNNError
        For anything else, saying which shape was expected.
    """
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, Tensor) else inputs)
    if x.dim() not in (4, 5):
        raise NeuroCNNError(
            f"{name}: expected a batch shaped (N, C, X, Y, Z) (or (N, C, X, Y) for 2D), got "
            f"{tuple(x.shape)}; add the batch and channel axes, e.g. x[None, None] for one volume"
        )
    if not x.is_floating_point():
        x = x.float()
    return x.float()


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without either)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def resolve_layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Module]:
    """The module named ``layer`` (default: the model's ``gradcam_layer``) and its name."""
    name = layer if layer is not None else str(getattr(model, "gradcam_layer", "") or "")
    if not name:
        raise NeuroCNNError(
            f"{type(model).__name__} has no gradcam_layer; give layer=, one of: "
            f"{', '.join(n for n, _ in list(model.named_modules())[1:12])}, ..."
        )
    try:
        return name, model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        raise NeuroCNNError(
            f"{type(model).__name__} has no layer {name!r}; layers include {', '.join(names[-12:])}"
        ) from None


def batch_slices(n: int, batch_size: int) -> Iterator[slice]:
    if batch_size < 1:
        raise NeuroCNNError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def predicted_classes(model: nn.Module, inputs: Tensor | np.ndarray, *, batch_size: int = 16) -> Tensor:
    """Arg-max class of the model's output per subject (one forward pass without autograd)."""
    x = as_batch(inputs)
    device = model_device(model)
    out = []
    with attribution_mode(model), torch.inference_mode():
        for sl in batch_slices(len(x), batch_size):
            out.append(model(x[sl].to(device)).argmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def resolve_targets(target: Target, n: int, num_classes: int | None = None) -> Tensor | None:
    """Targets as a (n,) long tensor, or None when the predicted class is to be used."""
    if target is None:
        return None
    if isinstance(target, int | np.integer):
        t = torch.full((n,), int(target), dtype=torch.long)
    else:
        t = torch.as_tensor(np.asarray(target) if not isinstance(target, Tensor) else target)
        t = t.reshape(-1).long()
        if len(t) != n:
            raise NeuroCNNError(f"target: expected one class per subject ({n}), got {len(t)} values")
    if len(t) and (int(t.min()) < 0 or (num_classes is not None and int(t.max()) >= num_classes)):
        raise NeuroCNNError(
            f"target: class indices must lie in 0..{(num_classes or 1) - 1}, got "
            f"{int(t.min())}..{int(t.max())}"
        )
    return t


def speed_copy(model: nn.Module, keep: Collection[str] = ()) -> nn.Module:
    """A copy of ``model`` for attribution: evaluation mode, frozen, BatchNorm folded into convs.

    In evaluation mode ``bn(conv(x))`` is one affine convolution, so folding changes outputs and
    input gradients only by float rounding; it saves the BatchNorm passes forward and backward
    (about a fifth of MriNet's time). Pairs are found inside ``nn.Sequential`` containers that keep
    Sequential's own ``forward`` (the order of calls is then the order of children); the BatchNorm
    becomes ``nn.Identity`` so module names (a Grad-CAM layer) still resolve. Convolutions named
    in ``keep`` (dotted names) are left unfused: their own output is what a caller hooks.
    """
    clone = copy.deepcopy(model).eval()
    # only containers that run their children in order (a subclass may override forward)
    plain = [
        (prefix, m)
        for prefix, m in clone.named_modules()
        if isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward
    ]
    for prefix, seq in plain:
        names = list(seq._modules)
        for a, b in itertools.pairwise(names):
            conv, norm = seq._modules[a], seq._modules[b]
            if (f"{prefix}.{a}" if prefix else a) not in keep and (
                isinstance(conv, _CONVS)
                and isinstance(norm, _NORMS)
                and norm.track_running_stats
                and norm.running_mean is not None
                and conv.out_channels == norm.num_features
            ):
                seq._modules[a] = fuse_conv_bn_eval(conv, norm)
                seq._modules[b] = nn.Identity()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


def spatial_dims(x: Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.dim()))
