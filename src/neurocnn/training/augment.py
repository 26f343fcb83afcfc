"""Training-set augmentation: batched flips and integer shifts on the device, MRI-like transforms per
sample through MONAI (TorchIO for motion and ghosting).

Every random choice is drawn from a generator seeded by ``(seed, epoch, cache index)``
(`neurocnn.training.sampling.sample_seed`), never from a global generator, so a subject gets the
same augmentation whatever the batch, the number of workers or DDP processes, and after a resume.

- Sagittal flip: the first spatial axis (x, left-right in the RAS cache).
- Integer shifts: each axis independently, uniform in ``[low, high]`` voxels (S2: -2…3), with zeros
  shifted in (no wrap-around).
- Rotations (each axis uniform in ±``rotate`` degrees) and zooms (each axis uniform in the range):
  `monai.transforms.RandAffine`, zero padding (S1's generator, which never ran in the original).
- Artefacts: bias field `RandBiasField`, Gaussian noise `RandGaussianNoise`, ringing
  `RandGibbsNoise`, k-space spikes `RandKSpaceSpikeNoise` (MONAI); motion and ghosting
  `RandomMotion`, `RandomGhosting` (TorchIO, only when it is installed).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from neurocnn.errors import NeuroCNNError
from neurocnn.training.config import AugmentConfig
from neurocnn.training.sampling import sample_seed


def flip_and_shift(x: Tensor, indices: Tensor, epoch: int, seed: int, config: AugmentConfig) -> Tensor:
    """Random sagittal flips and integer shifts of a batch (B, C, X, Y, Z) on its device."""
    if not config.flip and config.shift is None:
        return x
    b = x.shape[0]
    flips = np.zeros(b, dtype=bool)
    shifts = np.zeros((b, 3), dtype=np.int64)
    for i, index in enumerate(indices.tolist()):
        rng = np.random.default_rng(sample_seed(seed, epoch, index, 0xF1))
        flips[i] = config.flip and rng.random() < 0.5
        if config.shift is not None:
            shifts[i] = rng.integers(config.shift[0], config.shift[1] + 1, size=3)
    if flips.any():
        mask = torch.from_numpy(flips).to(x.device).view(b, *([1] * (x.dim() - 1)))
        x = torch.where(mask, x.flip(2), x)
    if shifts.any():
        x = _shift(x, shifts)
    return x


def _shift(x: Tensor, shifts: np.ndarray) -> Tensor:
    """Translate each sample by integer voxels, filling with zeros: one padded copy, B crops."""
    m = int(np.abs(shifts).max())
    padded = torch.nn.functional.pad(x, (m, m) * 3)
    size = x.shape[2:]
    crops = []
    for i, (sx, sy, sz) in enumerate(shifts.tolist()):
        crops.append(
            padded[
                i,
                :,
                m - sx : m - sx + size[0],
                m - sy : m - sy + size[1],
                m - sz : m - sz + size[2],
            ]
        )
    return torch.stack(crops)


class SampleTransform:
    """Per-sample rotations, zooms and artefacts; called as ``transform(image, seed)``.

    Picklable (built lazily in each worker process).
    """

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config
        self._monai: Any = None
        self._torchio: list[Any] | None = None
        check_available(config)

    def _build(self) -> None:
        from monai.transforms import (
            Compose,
            RandAffine,
            RandBiasField,
            RandGaussianNoise,
            RandGibbsNoise,
            RandKSpaceSpikeNoise,
        )

        c, p = self.config, self.config.probability
        steps: list[Any] = []
        if c.rotate or c.zoom:
            r = math.radians(c.rotate)
            zoom = None if c.zoom is None else ((c.zoom[0] - 1, c.zoom[1] - 1),) * 3
            steps.append(
                RandAffine(
                    prob=p,
                    rotate_range=(r, r, r) if r else None,
                    scale_range=zoom,
                    padding_mode="zeros",
                )
            )
        table = {
            "bias": lambda: RandBiasField(prob=p),
            "noise": lambda: RandGaussianNoise(prob=p, std=0.1),
            "gibbs": lambda: RandGibbsNoise(prob=p, alpha=(0.0, 0.5)),
            "spike": lambda: RandKSpaceSpikeNoise(prob=p),
        }
        steps += [table[a]() for a in c.artefacts if a in table]
        self._monai = Compose(steps) if steps else None
        self._torchio = []
        if {"motion", "ghosting"} & set(c.artefacts):
            import torchio as tio

            if "motion" in c.artefacts:
                self._torchio.append(tio.RandomMotion(p=p))
            if "ghosting" in c.artefacts:
                self._torchio.append(tio.RandomGhosting(p=p))

    def __call__(self, image: Tensor, seed: int) -> Tensor:
        if self._torchio is None:
            self._build()
        out = image
        if self._monai is not None:
            self._monai.set_random_state(seed=seed % (2**32))
            out = torch.as_tensor(self._monai(out)).float()
        if self._torchio:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                for t in self._torchio:
                    out = torch.as_tensor(t(out)).float()
        return out.contiguous()

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "_monai": None, "_torchio": None}


def check_available(config: AugmentConfig) -> None:
    """Refuse early, with the command to run, when a library an option needs is missing."""
    needs_monai = bool(config.rotate or config.zoom or set(config.artefacts) - {"motion", "ghosting"})
    if needs_monai:
        try:
            import monai  # noqa: F401
        except ImportError:
            raise NeuroCNNError(
                "rotations, zooms and the bias/noise/gibbs/spike artefacts use MONAI, which is not "
                "installed; run `pip install monai` or leave these augmentations out"
            ) from None
    if {"motion", "ghosting"} & set(config.artefacts):
        try:
            import torchio  # noqa: F401
        except ImportError:
            raise NeuroCNNError(
                "the motion and ghosting artefacts use TorchIO, which is not installed; run "
                "`pip install torchio` or leave them out (bias, noise, gibbs, spike need only MONAI)"
            ) from None
